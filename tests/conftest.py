"""Shared test settings."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.s3store import Store, start_store, stop_store

# Cheap bcrypt for test users (production uses 12 rounds).
os.environ.setdefault("PYPID_BCRYPT_ROUNDS", "4")


@pytest.fixture(scope="session")
def s3_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    """One SeaweedFS for the session (tests use their own prefix in its bucket)."""
    store = start_store(tmp_path_factory.mktemp("seaweedfs"))
    try:
        yield store
    finally:
        stop_store(store)
