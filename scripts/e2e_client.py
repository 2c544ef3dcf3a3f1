"""scripts/e2e-debian's client side on the host: HTTP checks, a load loop, the demo wheel.

    e2e_client.py get URL [TEXT]          200, and TEXT in the body if given
    e2e_client.py refused URL             nothing answers there any more
    e2e_client.py load SECONDS THREADS MAX URL...   GETs from THREADS threads; prints
                                          "N requests, M failed"
    e2e_client.py wheel DIR               writes the demo wheel, prints its path

Standard library plus tests/builders.py (the one wheel builder of tests, bench and
e2e), found from this file's path: run it as ``python3 -I scripts/e2e_client.py``.
Exit status 1 with one line on a failed check.
"""

from __future__ import annotations

import sys
import threading
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.builders import make_wheel  # noqa: E402 - needs the repository on sys.path

DEMO_NAME = "pypid-e2e-demo"
DEMO_VERSION = "1.0"
DEMO_PAYLOAD = b"uploaded by scripts/e2e-debian\n"  # the check looks for it in payload.bin
TIMEOUT = 10

# No proxy: the index under test is on this host.
_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def get(url: str, text: str | None = None) -> None:
    try:
        with _opener.open(url, timeout=TIMEOUT) as answer:
            body = answer.read().decode("utf-8", "replace")
    except OSError as exc:
        sys.exit(f"GET {url}: {exc}")
    if text and text not in body:
        sys.exit(f"GET {url}: 200 but no {text!r} in the page")
    print(f"GET {url}: 200")


def refused(url: str) -> None:
    try:
        _opener.open(url, timeout=5).close()
    except OSError as exc:
        print(f"GET {url}: {exc}")
        return
    sys.exit(f"GET {url}: something still answers there")


def load(seconds: float, threads: int, most: int, urls: Sequence[str]) -> None:
    """GET the urls in turn from each thread until ``seconds`` or ``most`` requests."""
    counts = {"ok": 0, "failed": 0}
    errors: list[str] = []
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def run(offset: int) -> None:
        for i in range(most):
            if time.monotonic() > deadline:
                break
            url = urls[(offset + i) % len(urls)]
            try:
                with _opener.open(url, timeout=TIMEOUT) as answer:
                    answer.read()
                    ok = answer.status == 200
            except OSError as exc:
                ok = False
                with lock:
                    errors.append(f"{url}: {exc}")
            with lock:
                counts["ok" if ok else "failed"] += 1

    pool = [threading.Thread(target=run, args=(n,)) for n in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    print(f"{counts['ok'] + counts['failed']} requests, {counts['failed']} failed")
    for error in errors[:5]:
        print(f"  {error}")


def wheel(directory: str) -> None:
    print(make_wheel(Path(directory), DEMO_NAME, DEMO_VERSION, payload=DEMO_PAYLOAD))


def main(argv: Sequence[str]) -> None:
    if not argv:
        sys.exit(__doc__)
    command, args = argv[0], list(argv[1:])
    if command == "get" and len(args) in (1, 2):
        get(*args)
    elif command == "refused" and len(args) == 1:
        refused(args[0])
    elif command == "load" and len(args) >= 4:
        load(float(args[0]), int(args[1]), int(args[2]), args[3:])
    elif command == "wheel" and len(args) == 1:
        wheel(args[0])
    else:
        sys.exit(f"e2e_client.py: bad arguments: {' '.join(argv)}\n{__doc__}")


if __name__ == "__main__":
    main(sys.argv[1:])
