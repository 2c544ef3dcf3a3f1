"""pypid load run: one worker, 100 clients, pages, downloads and uploads; RSS and PSS sampled.

    python bench/load.py [--files 1000] [--seconds 180] [--clients 100] [--upload-rate 3]
                         [--workers 1]

Exits 1 on any failed request, or a worker RSS or the PSS of master and workers that
grows after the warm-up.
The library is bench/lib/ (load.py parses these flags). See bench/README.md.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo: bench.lib, tests

from bench.lib.load import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
