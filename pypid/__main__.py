"""``python -m pypid``: the same as the ``pypid`` command."""

import sys

from pypid.cli import main

sys.exit(main())
