"""The mirror in front of a foreign upstream: a real pypiserver on loopback (PEP 503 HTML
only: no JSON, no sizes, no upload times, no metadata; root-relative ``/packages/`` links
with ``#sha256=`` fragments, files in sub-folders, unknown projects redirected to pypi.org).

pip and uv install through the mirror with pypiserver up, then with it stopped.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.builders import make_sdist, make_wheel
from tests.integration.harness import START_TIMEOUT, STARTED, start_server, stop
from tests.integration.helpers import (
    JSON_TYPE,
    Server,
    client_tool,
    get,
    installed_versions,
    parse_page,
    request,
    run_client,
)

LISTENING = re.compile(rb"Listening at: http://127\.0\.0\.1:(\d+)")
FRAGMENT = re.compile(r'href="(/packages/[^"#]+)#sha256=([0-9a-f]{64})"')


@dataclass
class Foreign:
    proc: subprocess.Popen[bytes]
    url: str  # pypiserver's /simple/
    log: Path
    files: dict[str, bytes]  # file name -> bytes


def _root(root: Path) -> dict[str, bytes]:
    make_wheel(root, "foreign-lib", "1.0")
    make_wheel(root / "sub" / "deeper", "foreign-lib", "1.1")  # /packages/sub/deeper/...
    make_sdist(root, "foreign-lib", "1.1")
    make_wheel(root, "foreign-app", "1.0", requires_dist=("foreign-lib>=1.1",))
    make_wheel(root, "cool-pkg", "1.0")
    make_wheel(root, "cool-pkg", "2.0")
    return {p.name: p.read_bytes() for p in root.rglob("*") if p.is_file()}


def start_pypiserver(root: Path, workdir: Path) -> tuple[subprocess.Popen[bytes], str, Path]:
    """``pypi-server run`` (gunicorn, one worker, no logins, its default fallback to
    pypi.org for unknown projects) on 127.0.0.1:0; its /simple/ URL once it answers."""
    program = client_tool("pypi-server")
    gunicorn = Path(program).with_name("gunicorn")
    args = "--workers 1 --threads 4 -k gthread"
    helptext = subprocess.run([str(gunicorn), "--help"], capture_output=True, text=True,
                              timeout=60, check=False).stdout
    if "--no-control-socket" in helptext:  # gunicorn >= 25 would open one under $HOME
        args += " --no-control-socket"
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "VIRTUAL_ENV", "NOTIFY_SOCKET") and "proxy" not in k.lower()}
    env.update(GUNICORN_CMD_ARGS=args, HOME=str(workdir))
    log = workdir / "pypiserver.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(  # stopped by stop() in the fixture's finally
            [program, "run", "-p", "0", "-i", "127.0.0.1", "--server", "gunicorn",
             "--backend", "simple-dir", "-a", ".", "-P", ".", str(root)],
            cwd=workdir, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=out)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline and proc.poll() is None:
            found = LISTENING.search(log.read_bytes())
            if found:
                url = f"http://127.0.0.1:{int(found.group(1))}/simple/"
                try:
                    if request(url, timeout=2).status == 200:
                        return proc, url, log
                except OSError:
                    pass
            time.sleep(0.1)
        pytest.fail(f"pypiserver did not answer within {START_TIMEOUT}s:\n"
                    f"{log.read_text()[-3000:]}")
    except BaseException:
        stop(proc)
        raise


@pytest.fixture(scope="module")
def foreign(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Foreign]:
    base = tmp_path_factory.mktemp("foreign")
    files = _root(base / "root")
    proc, url, log = start_pypiserver(base / "root", base)
    try:
        yield Foreign(proc, url, log, files)
    finally:
        stop(proc)


def _mirror(base: Path, foreign: Foreign, **upstream: object) -> Server:
    settings = {"url": foreign.url, "cache_root": str(base / "cache"), "page_ttl": 0,
                "timeout": 5, "file_hosts": [], **upstream}
    local = base / "local"
    local.mkdir(parents=True, exist_ok=True)
    server = start_server(base, local, upstream="cache",
                          settings={"upstream": settings})  # type: ignore[dict-item]
    STARTED.append(server)
    return server


@pytest.fixture(scope="module")
def mirror(foreign: Foreign, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = _mirror(tmp_path_factory.mktemp("foreign-mirror"), foreign)
    try:
        yield server
    finally:
        stop(server.proc)


def _json(server: Server, project: str) -> dict:
    resp = get(server.url(f"/simple/{project}/"), Accept=JSON_TYPE)
    assert resp.status == 200, resp.describe() + resp.text
    return resp.json()


def test_page_carries_pypiservers_hashes_with_links_here(foreign: Foreign,
                                                         mirror: Server) -> None:
    theirs = get(foreign.url + "foreign-lib/")
    assert theirs.media_type == "text/html"  # pypiserver has no JSON, whatever we ask
    fragments = {href.rsplit("/", 1)[1]: digest
                 for href, digest in FRAGMENT.findall(theirs.text)}
    assert "/packages/sub/deeper/" in theirs.text  # root-relative, sub-folder kept
    page = _json(mirror, "foreign-lib")
    assert {f["filename"] for f in page["files"]} == set(fragments)
    for f in page["files"]:
        assert f["url"] == f"../../packages/foreign-lib/{f['filename']}"
        assert f["hashes"] == {"sha256": fragments[f["filename"]]}
        assert fragments[f["filename"]] == hashlib.sha256(
            foreign.files[f["filename"]]).hexdigest()
        assert "upload-time" not in f and "size" not in f  # pypiserver gives neither
        assert f["core-metadata"] is False  # nor PEP 658 metadata
    html = get(mirror.url("/simple/foreign-lib/"))
    hrefs = [a.attrs["href"] for a in parse_page(html.text).anchors]
    assert sorted(h.split("#")[0].rsplit("/", 1)[1] for h in hrefs) == sorted(fragments)
    assert all(h.startswith("../../packages/foreign-lib/") for h in hrefs)


def test_file_from_a_sub_folder_streamed_then_cached(foreign: Foreign, mirror: Server) -> None:
    name = "foreign_lib-1.1-py3-none-any.whl"
    url = mirror.url(f"/packages/foreign-lib/{name}")
    first = get(url)  # no size upstream: streamed without a Content-Length
    assert first.status == 200 and first.body == foreign.files[name]
    again = get(url)
    assert again.status == 200 and again.body == foreign.files[name]
    assert again.header("Content-Length") == str(len(foreign.files[name]))
    assert again.header("ETag") == f'"{hashlib.sha256(foreign.files[name]).hexdigest()}"'


def test_project_pypiserver_sends_to_pypi_org_is_not_found(mirror: Server) -> None:
    resp = get(mirror.url("/simple/no-such-project/"))  # pypiserver: 303 to pypi.org
    assert resp.status == 404, resp.describe()
    assert "pypi.org" in mirror.log_text()  # said why, and never went there


def test_cooldown_without_upload_times_lists_nothing_but_exempt(
        foreign: Foreign, tmp_path: Path) -> None:
    cooling = _mirror(tmp_path / "cooling", foreign, min_age_days=3,
                      min_age_exempt=["cool-pkg==1.0"])
    try:
        assert _json(cooling, "foreign-lib")["files"] == []  # no upload time: held back
        refused = get(cooling.url("/packages/foreign-lib/foreign_lib-1.0-py3-none-any.whl"))
        assert refused.status == 403 and "no upload time" in refused.text
        assert [f["filename"] for f in _json(cooling, "cool-pkg")["files"]] == [
            "cool_pkg-1.0-py3-none-any.whl"]
        run_client([client_tool("pip"), "install", "--no-cache-dir", "--index-url",
                    cooling.index_url, "--target", str(tmp_path / "t"), "cool-pkg"], tmp_path)
        assert installed_versions(tmp_path / "t") == {"cool-pkg": "1.0"}  # not 2.0
    finally:
        stop(cooling.proc)


def test_pip_and_uv_through_the_mirror_then_with_pypiserver_stopped(
        foreign: Foreign, mirror: Server, tmp_path: Path) -> None:
    pip, uv = client_tool("pip"), client_tool("uv")
    index = mirror.index_url
    run_client([pip, "install", "--no-cache-dir", "--index-url", index,
                "--target", str(tmp_path / "pip"), "foreign-app"], tmp_path)
    run_client([uv, "pip", "install", "--no-cache", "--index-url", index,
                "--target", str(tmp_path / "uv"), "foreign-app"], tmp_path)
    want = {"foreign-app": "1.0", "foreign-lib": "1.1"}
    assert installed_versions(tmp_path / "pip") == want
    assert installed_versions(tmp_path / "uv") == want
    cache = mirror.log.parent / "cache" / "files"
    for name in ("foreign_app-1.0-py3-none-any.whl", "foreign_lib-1.1-py3-none-any.whl"):
        project = name.split("-")[0].replace("_", "-")
        assert (cache / project / name).read_bytes() == foreign.files[name]
    stop(foreign.proc)  # upstream gone: the cache serves
    run_client([pip, "install", "--no-cache-dir", "--index-url", index,
                "--target", str(tmp_path / "pip2"), "foreign-app"], tmp_path)
    run_client([uv, "pip", "install", "--no-cache", "--index-url", index,
                "--target", str(tmp_path / "uv2"), "foreign-app"], tmp_path)
    assert installed_versions(tmp_path / "pip2") == want
    assert installed_versions(tmp_path / "uv2") == want
    assert "serving the cached page of foreign-app" in mirror.log_text()
    assert get(mirror.url("/health")).json()["upstream"]["reachable"] is False
