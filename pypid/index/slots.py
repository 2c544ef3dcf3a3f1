"""Which files are "the same file" of a release: ``ReleaseSlot``, and finding its holders.

``overwrite = false`` freezes a release only if ``FOO-1.0-py3-none-any.whl``
cannot sit beside ``foo-1.0-py3-none-any.whl``, nor ``foo-1.0.0.zip`` beside
``foo-1.0.tar.gz``: names and versions compare normalized, as PyPI compares them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, NamedTuple

from packaging.tags import Tag
from packaging.utils import canonicalize_version, parse_wheel_filename
from packaging.version import Version

from pypid.distfile import SDIST, WHEEL, InvalidFilenameError, NormalizedName, parse_filename

if TYPE_CHECKING:
    from pypid.index.model import ReadModel


class ReleaseSlot(NamedTuple):
    """The place a file takes in its release.

    Names and versions are normalized (PEP 503, PEP 440: ``1.0 == 1.0.0``). A
    release has one sdist whatever its archive format (PyPI's rule); a wheel is
    one per build tag and set of tags (``py2.py3`` is ``py3.py2``).
    """

    project: NormalizedName
    version: Version
    kind: str
    build: tuple[()] | tuple[int, str]
    tags: frozenset[Tag]


def release_slot(filename: str) -> ReleaseSlot:
    """The slot ``filename`` takes; raise InvalidFilenameError (a ValueError).

    >>> release_slot("FOO-1.0.0.zip") == release_slot("foo-1.0.tar.gz")
    True
    >>> release_slot("foo-1.0-py3-none-any.whl") == release_slot("foo-1.0-py2-none-any.whl")
    False
    """
    dist = parse_filename(filename)
    if dist.kind == SDIST:
        return ReleaseSlot(dist.project, dist.version, SDIST, (), frozenset())
    _name, _version, build, tags = parse_wheel_filename(filename)
    return ReleaseSlot(dist.project, dist.version, WHEEL, build, tags)


def slot_name(filename: str) -> str:
    """``filename``'s slot as one text, the same for every spelling (for a claim on it
    that decides across nodes); InvalidFilenameError for no distribution.

    >>> slot_name("Foo_Bar-1.0.tar.gz") == slot_name("foo.bar-1.0.0.zip")
    True
    >>> slot_name("foo-1.0-1-py3-none-any.whl")
    'foo/1/wheel/1/py3-none-any'
    """
    slot = release_slot(filename)
    build = "".join(str(part) for part in slot.build)
    tags = ".".join(sorted(str(tag) for tag in slot.tags))
    return f"{slot.project}/{canonicalize_version(slot.version)}/{slot.kind}/{build}/{tags}"


def file_name_start(project: NormalizedName) -> re.Pattern[str]:
    """Matches the start of every file name that may belong to ``project``: any case, any
    run of ``-_.`` between its parts. A cheap filter to run before ``release_slot``.

    >>> bool(file_name_start(NormalizedName("foo-bar")).match("Foo__Bar-1.0.tar.gz"))
    True
    """
    parts = (re.escape(part) for part in project.split("-"))
    return re.compile("[-_.]+".join(parts) + "-", re.IGNORECASE | re.ASCII)


def holders(index: ReadModel, filename: str, recorded: Iterable[str] | None = None
            ) -> list[str]:
    """Relative paths of the files that hold ``filename``'s slot now, ``filename`` itself
    first if it is there, the rest sorted.

    The index knows every folder, but another process's upload of a moment ago may not
    have reached it: ``recorded`` names the uploads the event log holds (caught up under
    the publish lock), and those still on disk count; without it the folder uploads go
    to is read from disk (a scan of every name in it, slow in a big root).
    """
    slot = release_slot(filename)
    found = {entry.relpath for entry in index.files(slot.project) or ()
             if _holds(entry.filename, slot)}
    if recorded is not None:
        found.update(relpath for relpath in _upload_paths(index, recorded)
                     if relpath not in found and _holds(relpath, slot)
                     and index.root.exists(relpath))
    else:
        start = file_name_start(slot.project)
        found.update(index.root.upload_neighbours(
            filename, lambda name: bool(start.match(name)) and _holds(name, slot)))
    return sorted(found, key=lambda relpath: (relpath.rsplit("/", 1)[-1] != filename, relpath))


def _upload_paths(index: ReadModel, names: Iterable[str]) -> Iterator[str]:
    for name in names:
        try:
            yield index.root.upload_relpath(name)
        except ValueError:  # not a name uploads use (an edited log): it holds nothing
            continue


def _holds(name: str, slot: ReleaseSlot) -> bool:
    try:
        return release_slot(name) == slot
    except InvalidFilenameError:
        return False
