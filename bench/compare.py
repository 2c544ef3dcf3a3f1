"""Side by side: ``python bench/compare.py [options]`` is ``python bench/run.py --compare``."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo: bench.lib, tests

from bench.lib.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["--compare", *sys.argv[1:]]))
