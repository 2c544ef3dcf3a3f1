"""What makes the tail of project pages: pypid's worker loop timed from inside, under wrk.

    python bench/tail.py [--files 54307] [--connections 256] [--duration 10] [--src DIR]

The library is bench/lib/tail.py. See bench/README.md.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo: bench.lib, tests

from bench.lib.tail import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
