"""A map from names to a few distinct values, kept as numbers instead of strings.

For a fact kept of every file ever uploaded, in every process, for good (its uploader,
in ``pypid.index.ledger``): a dict of file names costs ~190 B a file and grows each
process's heap with every upload; this costs ~12 B. Each name is kept as its hash, in
an array sorted by it beside an array of value numbers; the newest few in a small dict
until they are merged in.

A name is known by its hash only (Python's, keyed with the process's secret): two names
with one hash would share a value. At a million names the odds that any two do are
~1 in 40 million, and nobody outside the process can make them meet.
"""

from __future__ import annotations

from array import array
from bisect import bisect_left

MERGE_AT_LEAST = 1024  # the newest names kept apart before a merge ...
MERGE_AT_MOST = 16384  # ... up to this many (a 64th of all names between)


class HashedValues:
    """``name -> value`` with few distinct values (logins); lookups may run in any
    thread while one thread writes."""

    __slots__ = ("_numbered", "_recent", "_table", "_values")

    def __init__(self) -> None:
        self._values: list[str] = []
        self._numbered: dict[str, int] = {}
        self._table: tuple[array[int], array[int]] = (array("q"), array("I"))
        self._recent: dict[int, int] = {}

    def get(self, name: str) -> str | None:
        wanted = hash(name)
        number = self._recent.get(wanted)  # read before the table: a merge swaps it first
        if number is None:
            hashes, numbers = self._table
            at = bisect_left(hashes, wanted)
            if at == len(hashes) or hashes[at] != wanted:
                return None
            number = numbers[at]
        return self._values[number]

    def set(self, name: str, value: str) -> None:
        """Only one thread at a time (the caller's lock)."""
        number = self._numbered.get(value)
        if number is None:
            number = self._numbered[value] = len(self._values)
            self._values.append(value)
        self._recent[hash(name)] = number
        if len(self._recent) >= min(MERGE_AT_MOST,
                                    max(MERGE_AT_LEAST, len(self._table[0]) >> 6)):
            self._merge()

    def _merge(self) -> None:
        old_hashes, old_numbers = self._table
        hashes, numbers = array("q"), array("I")
        done = 0
        for key_hash, number in sorted(self._recent.items()):
            at = bisect_left(old_hashes, key_hash, done)
            hashes.extend(old_hashes[done:at])
            numbers.extend(old_numbers[done:at])
            hashes.append(key_hash)
            numbers.append(number)
            done = at + 1 if at < len(old_hashes) and old_hashes[at] == key_hash else at
        hashes.extend(old_hashes[done:])
        numbers.extend(old_numbers[done:])
        self._table = (hashes, numbers)  # a reader between these two lines finds the
        self._recent = {}  # names in both: the same values
