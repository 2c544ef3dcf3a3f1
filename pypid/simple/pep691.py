"""The PEP 691 shape of the index (API 1.4: PEP 700's fields, PEP 792's project status):
the one dict both renderers work from."""

from __future__ import annotations

import functools
import re
import time
from typing import Any
from urllib.parse import quote

from pypid.index import FileEntry, Index

API_VERSION = "1.4"
_URL_SAFE = re.compile(r"[A-Za-z0-9_.~-]+")  # what quote() leaves alone


def project_page(index: Index, project: str) -> dict[str, Any] | None:
    """The detail page of a project, or None if it has no files. A quarantined project
    lists none (PEP 792): its page says so, and its files are not served."""
    entries = index.files(project)
    if entries is None:
        return None
    status, reason = index.marks.status(project)
    if status == "quarantined":
        entries = ()
    project_status = {"status": status, "reason": reason} if reason else {"status": status}
    return {
        "meta": {"api-version": API_VERSION},
        "name": project,
        "project-status": project_status,
        "files": [file_dict(entry) for entry in entries],
        "versions": list(dict.fromkeys(entry.version for entry in entries)),  # Version order
    }


def index_page(index: Index) -> dict[str, Any]:
    """The project list."""
    return {"meta": {"api-version": API_VERSION},
            "projects": [{"name": name} for name in index.projects()]}


def file_dict(entry: FileEntry) -> dict[str, Any]:
    metadata: dict[str, str] | bool = (
        {"sha256": entry.metadata_sha256} if entry.metadata_sha256 else False)
    return {
        "filename": entry.filename,
        "url": "../../packages/" + (entry.filename if _URL_SAFE.fullmatch(entry.filename)
                                    else quote(entry.filename)),
        "hashes": {"sha256": entry.sha256},
        "requires-python": entry.requires_python,
        "core-metadata": metadata,
        "data-dist-info-metadata": metadata,
        "yanked": _yanked_value(entry.yanked),
        "size": entry.size,
        "upload-time": format_upload_time(entry.upload_time),
    }


def _yanked_value(yanked: str | None) -> bool | str:
    if yanked is None:
        return False
    return yanked or True


def format_upload_time(timestamp: float) -> str:
    """PEP 700's UTC form with a literal Z.

    >>> format_upload_time(0.5)
    '1970-01-01T00:00:00.500000Z'
    """
    seconds = int(timestamp // 1)  # floor: before 1970 too
    micros = int(round((timestamp - seconds) * 1e6))
    if micros >= 1_000_000:
        seconds, micros = seconds + 1, micros - 1_000_000
    day, second = divmod(seconds, 86400)
    return (f"{_utc_date(day)}T{second // 3600:02d}:{second // 60 % 60:02d}:{second % 60:02d}"
            f".{micros:06d}Z")


@functools.lru_cache(maxsize=4096)
def _utc_date(day: int) -> str:
    """The date of a day since the epoch (strftime costs more than the rest of a page line)."""
    return time.strftime("%Y-%m-%d", time.gmtime(day * 86400))
