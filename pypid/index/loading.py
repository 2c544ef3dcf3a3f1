"""The bulk load: the whole root compared with the cache, in the master before workers fork."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from pypid.cachedb import FileRow
from pypid.storage import FileStat

if TYPE_CHECKING:
    from pypid.index.model import ReadModel as Index

log = logging.getLogger("pypid.index")

BATCH_ROWS = 500  # new rows written to the cache per transaction


def load(index: Index, progress: Callable[[int, int], None] | None = None) -> None:
    """Scan the whole root; hash only what the cache does not already know.

    A file whose cached row still matches its identity costs one stat; the rest
    are read (``progress(done, total)`` after each) and their rows cached.
    """
    index.ledger.catch_up()
    index.apply_marks(index.ledger.marks)
    with index.loading():
        stats = {stat.relpath: stat for stat in index.root.iter_files()}
        to_read: list[tuple[FileStat, FileRow | None]] = []
        gone: list[FileRow] = []
        for row in index.cache.iter_files():
            stat = stats.pop(row.relpath, None)
            if stat is None:
                gone.append(row)
            elif row.identity == stat.identity:
                index.show(stat, row)
            else:
                to_read.append((stat, row))
        to_read.extend((stat, None) for stat in stats.values())
        del stats
        new_rows = []
        for done, (stat, old) in enumerate(to_read, 1):
            row = index.examine(stat, old)
            if row is not None:
                new_rows.append(row)
                index.show(stat, row)
            if len(new_rows) >= BATCH_ROWS:
                index.cache.put(new_rows)
                new_rows = []
            if progress is not None:
                progress(done, len(to_read))
        index.cache.put(new_rows)
        index.cache.forget((row.relpath, row.identity) for row in gone)
    log.info("indexed %d files of %d projects in %s (%d new or changed)",
             index.file_count(), index.project_count(), index.root.path, len(to_read))
