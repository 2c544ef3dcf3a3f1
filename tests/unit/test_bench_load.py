"""bench/load.py and bench/governance.py are scripts, not tests: here only that they start
and know their options (and that the generated audit log is a valid chain)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from bench.lib.governance import write_log
from pypid.events import EventLog

REPO = Path(__file__).resolve().parents[2]


def test_load_help_runs() -> None:
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "load.py"), "--help"],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    for option in ("--seconds", "--files", "--clients", "--upload-rate", "--max-growth-mb"):
        assert option in proc.stdout


def test_governance_help_runs() -> None:
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "governance.py"), "--help"],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    for option in ("--baseline", "--entries", "--page-files", "--yanked", "--rounds"):
        assert option in proc.stdout


def test_governance_writes_a_log_that_verifies(tmp_path: Path) -> None:
    """The bench's generated log (written directly, not appended) is a valid chain."""
    write_log(tmp_path / "log", 2000)
    assert EventLog(tmp_path / "log").verify() == (2000, None)
