"""Build a corpus alone: ``python bench/corpus.py [--projects N | --files N] [--force]``."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo: bench.lib, tests

from bench.lib.corpus import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
