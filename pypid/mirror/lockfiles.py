"""The releases a lock file pins, for ``pypid mirror add --lock``: PEP 751 ``pylock.toml``
and ``uv.lock``. Every file a lock lists, for every platform, by its sha256; packages that
do not come from an index (directories, VCS, editable) are left out."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from pypid.distfile import normalize
from pypid.mirror.priming import Pinned, PrimingError

try:
    import tomllib
except ModuleNotFoundError:  # Python < 3.11
    import tomli as tomllib  # type: ignore[no-redef]


def read_lock(path: Path) -> list[Pinned]:
    """The pinned releases of ``path`` (pylock.toml, pylock.*.toml or uv.lock)."""
    try:
        data = tomllib.loads(path.read_text("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise PrimingError(f"{path}: not a TOML lock file: {exc}") from None
    if "lock-version" in data:  # PEP 751: [[packages]], hashes = {sha256 = ...}
        pins = _pins(data.get("packages"), lambda p: True,
                     lambda f: _hash(f.get("hashes")))
    elif isinstance(data.get("package"), list):  # uv: [[package]], hash = "sha256:..."
        pins = _pins(data["package"], _from_registry, lambda f: _uv_hash(f.get("hash")))
    else:
        raise PrimingError(f"{path}: neither a pylock.toml (lock-version) nor a uv.lock")
    if not pins:
        raise PrimingError(f"{path}: lists no files from an index")
    return pins


def _pins(packages: object, wanted: Callable[[dict[str, Any]], bool],
          file_hash: Callable[[dict[str, Any]], str | None]) -> list[Pinned]:
    """One exact pin per package with a version and hashed files (wheels and sdist)."""
    pins = []
    for package in _tables(packages):
        version = package.get("version")
        if not wanted(package) or not isinstance(version, str):
            continue
        files = [*_tables(package.get("wheels")), *_tables([package.get("sdist")])]
        hashes = frozenset(h for h in map(file_hash, files) if h)
        if hashes:
            pins.append(Pinned(normalize(str(package.get("name", ""))), version, hashes,
                               exact=True))
    return pins


def _from_registry(package: dict[str, Any]) -> bool:
    """uv: only index packages (not the project itself, a path, git, ...)."""
    source = package.get("source")
    return isinstance(source, dict) and "registry" in source


def _tables(value: object) -> list[dict[str, Any]]:
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


def _hash(hashes: object) -> str | None:
    value = hashes.get("sha256") if isinstance(hashes, dict) else None
    return value.lower() if isinstance(value, str) else None


def _uv_hash(value: object) -> str | None:
    if isinstance(value, str) and value.startswith("sha256:"):
        return value[7:].lower()
    return None
