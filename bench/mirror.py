"""Mirror benchmark (issue 15): cached mirrored pages and files against local ones, the first
byte of an uncached file, and 50 clients on one uncached 50 MB file.

    python3 bench/mirror.py [--files 1000] [--rounds 3] [--duration 5] [--clients 50]

The library is bench/lib/mirror.py. See bench/README.md.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo: bench.lib, tests

from bench.lib.mirror import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
