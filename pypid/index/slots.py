"""Which files are "the same file" of a release: ``ReleaseSlot``, and finding its holders.

``overwrite = false`` freezes a release only if ``FOO-1.0-py3-none-any.whl``
cannot sit beside ``foo-1.0-py3-none-any.whl``, nor ``foo-1.0.0.zip`` beside
``foo-1.0.tar.gz``: names and versions compare normalized, as PyPI compares them.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, NamedTuple

from packaging.tags import Tag
from packaging.utils import parse_wheel_filename
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


def file_name_start(project: NormalizedName) -> re.Pattern[str]:
    """Matches the start of every file name that may belong to ``project``: any case, any
    run of ``-_.`` between its parts. A cheap filter to run before ``release_slot``.

    >>> bool(file_name_start(NormalizedName("foo-bar")).match("Foo__Bar-1.0.tar.gz"))
    True
    """
    parts = (re.escape(part) for part in project.split("-"))
    return re.compile("[-_.]+".join(parts) + "-", re.IGNORECASE | re.ASCII)


def holders(index: ReadModel, filename: str) -> list[str]:
    """Relative paths of the files that hold ``filename``'s slot now, ``filename`` itself
    first if it is there, the rest sorted.

    The index knows every folder (but another worker's upload of a moment ago may not
    have reached it); the folder uploads go to is read from disk as well.
    """
    slot = release_slot(filename)
    start = file_name_start(slot.project)
    found = {entry.relpath for entry in index.files(slot.project) or ()
             if _holds(entry.filename, slot)}
    found.update(index.root.upload_neighbours(
        filename, lambda name: bool(start.match(name)) and _holds(name, slot)))
    return sorted(found, key=lambda relpath: (relpath.rsplit("/", 1)[-1] != filename, relpath))


def _holds(name: str, slot: ReleaseSlot) -> bool:
    try:
        return release_slot(name) == slot
    except InvalidFilenameError:
        return False
