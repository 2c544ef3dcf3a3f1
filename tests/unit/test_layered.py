"""``Layered``: a sealed base under the changes made since."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from pypid.index.layered import Base, Layered


def layered(sealed: dict[str, int]) -> Layered[str, int]:
    def keys() -> Iterator[str]:
        return iter(sealed)
    return Layered(Base(sealed.get, lambda key: key in sealed, keys, len(sealed)))


def test_reads_the_base_until_a_change_covers_it() -> None:
    held = layered({"a": 1, "b": 2})
    assert held.get("a") == 1 and held["b"] == 2 and "c" not in held
    assert len(held) == 2 and held.changes() == 0
    held["a"] = 10  # changed: one key, the same count
    held["c"] = 3  # new
    assert (held["a"], held["c"], len(held)) == (10, 3, 3)
    assert held.pop("b") == 2 and "b" not in held and held.get("b") is None
    assert sorted(held) == ["a", "c"] and len(held) == 2
    held["b"] = 20  # back after it went
    assert held["b"] == 20 and len(held) == 3
    del held["b"]
    with pytest.raises(KeyError):
        held["b"]
    with pytest.raises(KeyError):
        held.pop("b")
    assert held.pop("b", None) is None
    assert dict(held.items()) == {"a": 10, "c": 3}


def test_a_key_the_base_never_held_leaves_nothing_when_it_goes() -> None:
    held = layered({"a": 1})
    for _ in range(3):
        held["new"] = 1
        del held["new"]
    assert held.changes() == 0 and len(held) == 1
    del held["a"]  # the base holds it: marked gone
    assert held.changes() == 1 and len(held) == 0 and list(held) == []


def test_changed_gives_each_change_since_the_seal() -> None:
    held = layered({"a": 1, "b": 2, "c": 3})
    held["b"] = 20
    held["d"] = 4
    del held["c"]
    assert dict(held.changed()) == {"b": 20, "d": 4, "c": None}
