"""Bundles for networks with no connection: ``manifest`` (what a bundle says), ``sources``
(what can go in, and what was chosen), ``writing`` (``pypid export``) and ``importing``
(``pypid import``: checked whole before anything is added)."""

from __future__ import annotations

from pypid.bundle.manifest import BundleError

__all__ = ["BundleError"]
