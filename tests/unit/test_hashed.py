"""The compact name -> value map the ledger keeps every uploaded file's uploader in."""

from __future__ import annotations

import random

from pypid.index import hashed
from pypid.index.hashed import HashedValues


def test_values_are_found_across_merges_and_replaced_by_a_later_set() -> None:
    values = HashedValues()
    names = [f"p{i % 97}-1.0.{i}-py3-none-any.whl" for i in range(3 * hashed.MERGE_AT_LEAST + 5)]
    expected = {}
    rng = random.Random(7)  # noqa: S311 - a test's fixed draw
    for name in names:
        login = rng.choice(("alice", "bob", "carol"))
        values.set(name, login)
        expected[name] = login
    for name in rng.sample(names, 500):  # replaced: some merged already, some recent
        values.set(name, "dave")
        expected[name] = "dave"
    assert len(set(values._table[0]) | set(values._recent)) == len(names)  # replaced, not added
    assert all(values.get(name) == login for name, login in expected.items())
    assert values.get("absent-1.0.tar.gz") is None
    assert values.get("") is None


def test_merged_names_cost_numbers_not_strings() -> None:
    values = HashedValues()
    for i in range(4 * hashed.MERGE_AT_LEAST):
        values.set(f"name-{i}", "alice")
    hashes, numbers = values._table
    assert len(hashes) == len(numbers) >= 3 * hashed.MERGE_AT_LEAST
    assert list(hashes) == sorted(hashes)
    assert len(values._recent) < hashed.MERGE_AT_LEAST and values._values == ["alice"]
