"""What governance costs: uploads with their audit lines against a baseline, `pypid audit
--verify` of a million entries, a project page with many yanked files.

    python bench/governance.py [uploads] [verify] [yanked] [--rounds 3] [--baseline 38b858a]

The library is bench/lib/governance.py. See bench/README.md.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo: bench.lib, tests

from bench.lib.governance import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
