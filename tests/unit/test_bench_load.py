"""bench/load.py is a script, not a test: here only that it starts and knows its options."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_load_help_runs() -> None:
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "load.py"), "--help"],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    for option in ("--seconds", "--files", "--clients", "--upload-rate", "--max-growth-mb"):
        assert option in proc.stdout
