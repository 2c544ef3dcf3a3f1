"""A package root for the web UI's real-server and browser tests: READMEs of every kind
(hostile ones too), dependencies for "used by", a pre-release, odd name spellings."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from pypid.auth import Htpasswd
from tests.builders import make_sdist, make_wheel
from tests.integration.harness import REPO_ROOT, STARTED, start_server, stop
from tests.integration.helpers import Server

HOSTILE_MD = ("# Billing client\n\nPays the bills.\n\n"
              "<script>window.pwned = 1; alert('md')</script>\n"
              "[click me](javascript:window.pwned=2)\n\n"
              '<img alt="" src="data:image/gif;base64,R0lGODlhAQABAAAAACw=" '
              'onerror="window.pwned=3"> <a href="javascript:alert(3)">a</a>\n')
LOGIN = ("alice", "s3cret-pw")
SCREENSHOTS = REPO_ROOT / "build" / "test-artifacts" / "ui"  # git-ignored
SAVED: list[Path] = []  # screenshots saved this session (the summary names the folder)
# Nearly the 8 MB the index reads of a METADATA: cut, and shown as text, never rendered whole.
HUGE_MD = ("<script>window.pwned = 4</script> **bold** [x](javascript:window.pwned=5)\n"
           * 90_000)[: 7 * 1024 * 1024]


def build_site(root: Path) -> None:
    make_wheel(root, "Billing_Client", "1.0", requires_dist=["base>=1"],
               description=("text/markdown", HOSTILE_MD))
    make_wheel(root, "billing-client", "2.0", requires_dist=["base>=1.1"],
               description=("text/markdown", "# Billing client 2\n\nThe *second* one.\n\n"
                            "```python\nimport billing_client\n```\n"))
    make_sdist(root, "billing-client", "2.0")
    make_wheel(root, "base", "1.1", description=("text/x-rst", "Base\n====\n\nThe *base*.\n"))
    make_sdist(root, "base", "1.2rc1")
    make_wheel(root, "app", "0.5", requires_dist=["Billing.Client"],
               description=("text/plain", "Plain <text> here."))
    make_wheel(root, "Mixed_Case.Name", "1.0")
    make_wheel(root, "huge-readme", "1.0", description=("text/markdown", HUGE_MD))


def serve_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server on the UI site, one worker (so one cache), uploads need alice's login."""
    work = tmp_path_factory.mktemp("ui")
    root = work / "packages"
    build_site(root)
    htpasswd = work / "htpasswd"
    os.environ.setdefault("PYPID_BCRYPT_ROUNDS", "4")
    Htpasswd(htpasswd).add(*LOGIN)
    srv = start_server(work, root, settings={
        "auth": {"htpasswd": str(htpasswd)}, "server": {"workers": 1}})
    STARTED.append(srv)
    yield srv
    stop(srv.proc)
