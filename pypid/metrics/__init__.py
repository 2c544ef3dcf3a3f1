"""Operators' figures: counted per thread at almost no cost (``tally``), flushed by each
worker to a file and summed over every worker, living or gone (``store``), and written
in Prometheus' text format (``exposition``). Imports no other pypid module, so every
layer may count."""
