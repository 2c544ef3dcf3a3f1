"""bench/load.py and bench/governance.py are scripts, not tests: here only that they start
and know their options (and that the generated audit log is a valid chain)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bench.lib.governance import write_log
from pypid.events import EventLog

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(("script", "options"), [
    ("load.py", ("--seconds", "--files", "--clients", "--upload-rate", "--max-growth-mb")),
    ("governance.py", ("--baseline", "--entries", "--page-files", "--yanked", "--rounds")),
])
def test_help_runs(script: str, options: tuple[str, ...]) -> None:
    proc = subprocess.run([sys.executable, str(REPO / "bench" / script), "--help"],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    for option in options:
        assert option in proc.stdout


def test_governance_writes_a_log_that_verifies(tmp_path: Path) -> None:
    """The bench's generated log (written directly, not appended) is a valid chain."""
    write_log(tmp_path / "log", 2000)
    assert EventLog(tmp_path / "log").verify() == (2000, None)
