"""`pypid export` on one server's root and `pypid import` into another while it runs:
the files, yank marks, statuses and owners arrive, pip installs them with no upstream,
the audit log shows each import, a second import changes nothing, and a bundle with one
corrupted member imports nothing."""

from __future__ import annotations

import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.builders import make_wheel
from tests.integration.harness import STARTED, start_server, stop
from tests.integration.helpers import JSON_TYPE, Server, get
from tests.integration.test_governance import install, page, pypid, until
from tests.integration.test_uploads import add_user

pytestmark = pytest.mark.server


def started(work: Path) -> Server:
    root = work / "packages"
    root.mkdir(parents=True)
    srv = start_server(work, root, settings={"auth": {"htpasswd": str(work / "htpasswd")}})
    STARTED.append(srv)
    return srv


@pytest.fixture(scope="module")
def sites(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Server]]:
    a, b = started(tmp_path_factory.mktemp("site-a")), started(tmp_path_factory.mktemp("site-b"))
    try:
        yield a, b
    finally:
        stop(a.proc)
        stop(b.proc)


def config(server: Server) -> Path:
    return server.root.parent / "pypid.toml"


def files(server: Server, project: str) -> dict[str, object]:
    """File name -> yank mark on the project's page ({} while it is not there yet)."""
    resp = get(server.url(f"/simple/{project}/"), Accept=JSON_TYPE)
    if resp.status != 200:
        return {}
    return {f["filename"]: f["yanked"] for f in resp.json()["files"]}


def test_a_bundle_carries_files_and_their_facts(sites: tuple[Server, Server],
                                                tmp_path: Path) -> None:
    a, b = sites
    for version in ("1.0", "2.0"):
        make_wheel(a.root, "carried", version)
    make_wheel(a.root, "retired", "1.0")
    for server, users in ((a, ("alice", "bob")), (b, ("alice",))):
        for user in users:
            add_user(config(server), user, "secret")
    until(lambda: len(files(a, "carried")) == 2, "A never listed its files")
    pypid(a, "yank", "carried==2.0", "--reason", "broken build")
    pypid(a, "status", "retired", "archived", "--reason", "use carried")
    pypid(a, "owner", "add", "carried", "alice")
    pypid(a, "owner", "add", "carried", "bob")
    bundle = tmp_path / "site.tar"
    done = pypid(a, "export", str(bundle), "--project", "carried", "--project", "retired")
    assert "3 files" in done.stdout

    imported = pypid(b, "import", str(bundle))
    assert "3 files imported, 0 already here" in imported.stdout
    assert "no user named 'bob'" in imported.stderr  # B lacks bob: reported, skipped
    until(lambda: files(b, "carried") == {"carried-1.0-py3-none-any.whl": False,
                                          "carried-2.0-py3-none-any.whl": "broken build"},
          "B never showed the imported files with their yank mark")
    until(lambda: page(b, "retired")["project-status"]
          == {"status": "archived", "reason": "use carried"}, "B never showed the status")
    versions, _ = install(b, tmp_path, "pip", "carried")
    assert versions["carried"] == "1.0"  # 2.0 is yanked
    versions, _ = install(b, tmp_path, "pip", "carried==2.0", "retired")
    assert versions == {"carried": "2.0", "retired": "1.0"}
    audit = pypid(b, "audit").stdout
    assert audit.count(" import project=") == 3
    assert "owner-add project=carried" in audit and "alice" in audit
    upload_times = [f["upload-time"] for f in page(a, "carried")["files"]]  # type: ignore[index]
    assert [f["upload-time"] for f in page(b, "carried")["files"]] == upload_times  # type: ignore[index]

    again = pypid(b, "import", str(bundle))
    assert "0 files imported, 3 already here" in again.stdout
    assert pypid(b, "audit").stdout == audit

    make_wheel(a.root, "fresh", "1.0")
    corrupt = tmp_path / "corrupt.tar"
    pypid(a, "export", str(corrupt), "--project", "fresh", "--project", "carried")
    with tarfile.open(corrupt) as tar:
        at = tar.getmember("fresh-1.0-py3-none-any.whl").offset_data
    with open(corrupt, "r+b") as handle:
        handle.seek(at + 10)
        byte = handle.read(1)
        handle.seek(at + 10)
        handle.write(bytes([byte[0] ^ 0xFF]))
    refused = pypid(b, "import", str(corrupt), check=False)
    assert refused.returncode == 1
    assert refused.stderr.count("\n") == 1 and "fresh-1.0-py3-none-any.whl: sha256" in \
        refused.stderr
    assert not (b.root / "fresh-1.0-py3-none-any.whl").exists()
    assert pypid(b, "audit").stdout == audit
