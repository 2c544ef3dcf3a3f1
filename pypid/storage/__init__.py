"""Where the distribution files live: one interface (``base.Storage``), backends beside it."""

from pypid.storage.base import (
    CACHE_DIRNAME,
    FileIdentity,
    FileStat,
    Incoming,
    NoSpaceError,
    Shelf,
    Storage,
    StorageError,
    TooLargeError,
    UnavailableError,
    UnsafePathError,
)
from pypid.storage.incoming import IncomingFile
from pypid.storage.local import PackageRoot

__all__ = ["CACHE_DIRNAME", "FileIdentity", "FileStat", "Incoming", "IncomingFile",
           "NoSpaceError", "PackageRoot", "Shelf", "Storage", "StorageError", "TooLargeError",
           "UnavailableError", "UnsafePathError"]
