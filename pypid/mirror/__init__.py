"""The caching mirror (``upstream.mode = "cache"``): upstream client, page and file cache,
cooldown and merge policy. Knows nothing of HTTP answers; ``pypid.simple`` calls it."""

from pypid.growing import BrokenDownload, DownloadError, Follower
from pypid.mirror.service import Mirror
from pypid.mirror.store import PageRecord, UnsafeNameError
from pypid.mirror.translate import UpstreamFile
from pypid.mirror.upstream import UpstreamError

__all__ = ["BrokenDownload", "DownloadError", "Follower", "Mirror", "PageRecord",
           "UnsafeNameError", "UpstreamError", "UpstreamFile"]
