"""Shared test settings."""

from __future__ import annotations

import os

# Cheap bcrypt for test users (production uses 12 rounds).
os.environ.setdefault("PYPID_BCRYPT_ROUNDS", "4")
