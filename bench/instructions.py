"""Instructions a request costs, pypid's worker and nginx, counted by callgrind.

    python bench/instructions.py [--files 54307] [--requests 3000] [--src DIR] [--no-nginx]

The library is bench/lib/instructions.py. See bench/README.md.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo: bench.lib, tests

from bench.lib.instructions import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
