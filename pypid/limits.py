"""This process's own resource limits: as many open files as the system lets it have.

The open-files limit is per process, so it is sized for one gunicorn worker:

    worker_connections (gunicorn's default)   1000   one socket each
    a file being sent from the loop           1000   one per connection at most
    32 threads (server.THREADS_PER_WORKER)     x 8   256   an SQLite connection (db, -wal,
                                                         -shm), an upload's temp file and
                                                         its re-read, the stored file, its
                                                         folder
    files kept open to send again                 32   (worker.sending.KEEP_OPEN)
    fixed                                        ~50   listener, log, pipes, inotify,
                                                         page file, imports
    one worker needs about                     2,350   (the usual soft limit is 1024)

The unit (``LimitNOFILE=16384``) leaves room for many-part upload forms; outside
systemd, ``pypid serve`` raises its soft limit to the hard one at start-up.
"""

from __future__ import annotations

import logging
import resource

log = logging.getLogger("pypid")

NEEDED_OPEN_FILES = 2350  # the sum above
_CEILING = 1 << 20  # the kernel's usual fs.nr_open, for an unlimited hard limit


def raise_open_files_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit; return the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = _CEILING if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:
            log.debug("cannot raise the open files limit to %d: %s", target, exc)
    if soft != resource.RLIM_INFINITY and soft < NEEDED_OPEN_FILES:
        log.warning("only %d open files allowed per process, a worker may need %d "
                    "(raise LimitNOFILE= or ulimit -n)", soft, NEEDED_OPEN_FILES)
    return soft
