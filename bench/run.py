"""pypid benchmark: start-up time, memory and throughput on a synthetic corpus.

    python bench/run.py [--projects 10000] [--rounds 3] [--duration 10]
                        [--connections 32] [--workers N] [--keep]
    python bench/run.py --compare [--quick | --smoke]     pypid, pypiserver, nginx
    python bench/run.py --baseline REF [--smoke]          this checkout against commit REF

The library is bench/lib/ (cli.py parses these flags). See bench/README.md.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo: bench.lib, tests

from bench.lib.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
