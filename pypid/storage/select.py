"""Which backend a config names: ``open_storage``."""

from __future__ import annotations

from pathlib import Path

from pypid.config import Config
from pypid.storage.base import Storage
from pypid.storage.local import PackageRoot
from pypid.storage.s3 import BucketRoot
from pypid.storage.s3cache import FileCache
from pypid.storage.s3client import BucketPlace

GIB = 1024**3


def open_storage(config: Config) -> Storage:
    """The package root (backend "local") or the bucket (backend "s3") of ``config``."""
    if config.storage.backend != "s3":
        return PackageRoot(config.root)
    s3 = config.storage.s3
    place = BucketPlace(s3.endpoint, s3.bucket, s3.prefix, s3.region)
    return BucketRoot(place, config.root, FileCache(Path(s3.cache_dir), s3.cache_max_gb * GIB))
