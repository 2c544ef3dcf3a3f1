"""Which of the master's pages a pypid worker has copied, and what Python objects are on them.

    python bench/cow.py MASTER_PID WORKER_PID [--sample 3000]

Linux, as root. The library is bench/lib/cow.py. See bench/README.md.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo: bench.lib, tests

from bench.lib.cow import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
