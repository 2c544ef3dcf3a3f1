"""``Layered``: a mapping read from a sealed base, under the changes made since.

The index's maps (files by path, by name, by project) hold every file until the seal;
after it they hold only what changed, over ``SealedFiles``' lookups. A key removed
since the seal is marked gone, unless the base surely does not hold it (then it is
forgotten, so files that come and go after the seal leave nothing behind).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, MutableMapping
from typing import Generic, TypeVar

K = TypeVar("K", bound=str)
V = TypeVar("V")

_ABSENT = object()
_GONE = object()  # in the overlay: removed since the seal


class Base(Generic[K, V]):
    """A sealed mapping's reads: ``get`` (None: not held; OSError: cannot be read),
    ``may_hold`` (False: surely not held), ``held`` (its keys) and their count."""

    __slots__ = ("get", "held", "length", "may_hold")

    def __init__(self, get: Callable[[K], V | None], may_hold: Callable[[K], bool],
                 held: Callable[[], Iterator[K]], length: int) -> None:
        self.get = get
        self.may_hold = may_hold
        self.held = held
        self.length = length


class Layered(MutableMapping[K, V]):
    """What ``base`` held, with the changes made since laid over it.

    Readers take no lock (each change is one dict operation); writers hold the index's.
    """

    __slots__ = ("_base", "_length", "_over")

    def __init__(self, base: Base[K, V]) -> None:
        self._base = base
        self._over: dict[K, object] = {}
        self._length = base.length

    def get(self, key: K, default: V | None = None) -> V | None:  # type: ignore[override]
        found = self._over.get(key, _ABSENT)
        if found is _ABSENT:
            held = self._base.get(key)
            return default if held is None else held
        return default if found is _GONE else found  # type: ignore[return-value]

    def __getitem__(self, key: K) -> V:
        found = self.get(key, _ABSENT)  # type: ignore[arg-type]
        if found is _ABSENT:
            raise KeyError(key)
        return found  # type: ignore[return-value]

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self.get(key, _ABSENT) is not _ABSENT  # type: ignore[arg-type]

    def __setitem__(self, key: K, value: V) -> None:
        found = self._over.get(key, _ABSENT)
        if found is _ABSENT:
            base = self._base
            if not base.may_hold(key) or base.get(key) is None:
                self._length += 1
        elif found is _GONE:
            self._length += 1
        self._over[key] = value

    def pop(self, key: K, default: object = _ABSENT) -> V:  # type: ignore[override]
        found = self.get(key, _ABSENT)  # type: ignore[arg-type]
        if found is _ABSENT:
            if default is _ABSENT:
                raise KeyError(key)
            return default  # type: ignore[return-value]
        if self._base.may_hold(key):
            self._over[key] = _GONE
        else:
            self._over.pop(key, None)
        self._length -= 1
        return found  # type: ignore[return-value]

    def __delitem__(self, key: K) -> None:
        self.pop(key)

    def __iter__(self) -> Iterator[K]:
        over = self._over
        for key in self._base.held():
            if key not in over:
                yield key
        for key, value in list(over.items()):
            if value is not _GONE:
                yield key

    def __len__(self) -> int:
        return self._length

    def changes(self) -> int:
        """How many keys changed since the seal (the overlay's size)."""
        return len(self._over)

    def changed(self) -> Iterator[tuple[K, V | None]]:
        """Each key changed since the seal, with its value now (None: removed)."""
        for key, value in list(self._over.items()):
            yield key, (None if value is _GONE else value)  # type: ignore[misc]
