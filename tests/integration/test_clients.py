"""Real pip and uv against the shared server: resolution, Requires-Python, sdist builds."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.integration.helpers import (
    Corpus,
    Server,
    client_tool,
    installed_versions,
    pip_download,
    run_client,
)

pytestmark = pytest.mark.server

REQUESTED = ["app", "sdonly", "Mixed_Case.Name"]
# app 2.0 and lib 2.0 need Python >= 4: both must be skipped.
EXPECTED = {"app": "1.0", "lib": "1.5", "base": "1.1", "sdonly": "1.0", "mixed-case-name": "1.0"}


def test_pip_install(server: Server, tmp_path: Path) -> None:
    target = tmp_path / "target"
    pip = client_tool("pip")
    out = run_client(
        [
            pip,
            "install",
            "--no-cache-dir",
            "--index-url",
            server.index_url,
            "--target",
            str(target),
            *REQUESTED,
        ],
        tmp_path,
    )
    assert installed_versions(target) == EXPECTED, out
    assert '__version__ = "1.0"' in (target / "sdonly" / "__init__.py").read_text()


def test_uv_install(server: Server, tmp_path: Path) -> None:
    target = tmp_path / "target"
    uv = client_tool("uv")
    out = run_client(
        [
            uv,
            "pip",
            "install",
            "--python",
            sys.executable,
            "--index-url",
            server.index_url,
            "--target",
            str(target),
            *REQUESTED,
        ],
        tmp_path,
    )
    assert installed_versions(target) == EXPECTED, out
    assert (target / "sdonly" / "__init__.py").is_file()


def test_pip_download_bytes(server: Server, corpus: Corpus, tmp_path: Path) -> None:
    got, out = pip_download(server.index_url, tmp_path, "app", "lib==1.0", "base",
                            "mixed-case-name", "sdonly==0.9")
    expected = [
        "app-1.0-py3-none-any.whl",
        "lib-1.0-py3-none-any.whl",
        "base-1.1-py3-none-any.whl",
        "mixed_case_name-1.0-py3-none-any.whl",
        "sdonly-0.9.zip",
    ]
    assert sorted(got) == sorted(expected), out
    for name in expected:
        assert got[name] == corpus.by_filename(name).data(), name


def html_find_links(server: Server, projects: list[str]) -> list[str]:
    """--find-links to each project page forced to HTML: the clients' HTML parsers (with
    data-requires-python and data-core-metadata) instead of the JSON they prefer."""
    args: list[str] = []
    for project in projects:
        args += ["--find-links", server.url(f"/simple/{project}/?format=text/html")]
    return args


HTML_EXPECTED = {"app": "1.0", "lib": "1.5", "base": "1.1"}


def test_pip_install_over_html(server: Server, tmp_path: Path) -> None:
    target = tmp_path / "target"
    pip = client_tool("pip")
    links = html_find_links(server, ["app", "lib", "base"])
    out = run_client(
        [pip, "install", "--no-cache-dir", "--no-index", *links, "--target", str(target), "app"],
        tmp_path,
    )
    assert installed_versions(target) == HTML_EXPECTED, out


def test_uv_install_over_html(server: Server, tmp_path: Path) -> None:
    target = tmp_path / "target"
    uv = client_tool("uv")
    links = html_find_links(server, ["app", "lib", "base"])
    out = run_client(
        [
            uv,
            "pip",
            "install",
            "--python",
            sys.executable,
            "--no-index",
            *links,
            "--target",
            str(target),
            "app",
        ],
        tmp_path,
    )
    assert installed_versions(target) == HTML_EXPECTED, out
