"""The simple repository API decided once: a request goes in, an outcome comes out.

No HTTP framework here: the Flask views and the worker's loop both deliver
what this package decides.
"""
