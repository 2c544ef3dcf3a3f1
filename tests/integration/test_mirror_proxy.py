"""The mirror's upstream through a forward proxy named by the standard environment
(``https_proxy``, ``http_proxy``, ``no_proxy``), as offline-ish company networks reach
PyPI: a CONNECT tunnel to an https upstream (TLS in front of a second pypid, its
certificate trusted through SSL_CERT_FILE), an absolute-form GET to an http one, a
login in the proxy URL sent as Proxy-Authorization and never logged. All on loopback.
"""

from __future__ import annotations

import base64
import hashlib
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.builders import make_wheel
from tests.integration.connectproxy import ConnectProxy, Seen, TlsFront
from tests.integration.harness import STARTED, launch, start_server, stop, write_config
from tests.integration.helpers import (
    JSON_TYPE,
    Server,
    client_tool,
    get,
    installed_versions,
    run_client,
)

LOGIN = "corp user:s3cret"  # a space: the URL carries it percent-encoded
LOGIN_IN_URL = "corp%20user:s3cret"
NOWHERE = "http://127.0.0.1:9"  # a proxy variable that must not be used


@dataclass
class Net:
    upstream: Server  # plain http pypid
    front: TlsFront  # https in front of it
    proxy: ConnectProxy
    cert: Path
    wheels: dict[str, bytes]
    base: Path


def _certificate(folder: Path) -> tuple[Path, Path]:
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True, timeout=60)
    return cert, key


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Net]:
    base = tmp_path_factory.mktemp("proxied")
    root = base / "upstream-root"
    for name in ("proxied-lib", "tunnel-lib", "plain-lib", "bypass-lib", "refused-lib"):
        make_wheel(root, name, "1.0")
    wheels = {p.name: p.read_bytes() for p in root.iterdir()}
    cert, key = _certificate(base)
    upstream = start_server(base / "upstream", root, settings={"server": {"workers": 1}})
    STARTED.append(upstream)
    front = TlsFront(upstream.port, str(cert), str(key))
    proxy = ConnectProxy()
    try:
        yield Net(upstream, front, proxy, cert, wheels, base)
    finally:
        proxy.close()
        front.close()
        stop(upstream.proc)


@pytest.fixture
def mirrors() -> Iterator[list[Server]]:
    started: list[Server] = []
    try:
        yield started
    finally:
        for server in started:
            stop(server.proc)


def _mirror(net: Net, mirrors: list[Server], name: str, url: str,
            env: dict[str, str]) -> Server:
    work = net.base / name
    work.mkdir()
    (work / "local").mkdir()
    cfg = work / "pypid.toml"
    write_config(cfg, work / "local", url_prefix="", upstream="cache", settings={
        "upstream": {"url": url, "cache_root": str(work / "cache"), "timeout": 5,
                     "file_hosts": []}, "server": {"workers": 1}})
    server = launch(cfg, work / "local", log=work / "server.log", extra_env=env)
    STARTED.append(server)
    mirrors.append(server)
    return server


def _file(net: Net, project: str) -> str:
    return next(n for n in net.wheels if n.startswith(project.replace("-", "_")))


def _fetch_through(server: Server, net: Net, project: str) -> None:
    page = get(server.url(f"/simple/{project}/"), Accept=JSON_TYPE)
    assert page.status == 200, page.describe() + page.text
    (entry,) = page.json()["files"]
    name = _file(net, project)
    assert entry["hashes"]["sha256"] == hashlib.sha256(net.wheels[name]).hexdigest()
    got = get(server.url(f"/packages/{project}/{name}"))
    assert got.status == 200 and got.body == net.wheels[name]


def test_https_upstream_through_a_connect_tunnel_with_a_login(
        net: Net, mirrors: list[Server], tmp_path: Path) -> None:
    https = f"https://127.0.0.1:{net.front.port}/simple/"
    mirror = _mirror(net, mirrors, "tunnel", https, {
        "https_proxy": net.proxy.url(LOGIN_IN_URL), "http_proxy": NOWHERE,
        "SSL_CERT_FILE": str(net.cert)})
    before = len(net.proxy.seen)
    _fetch_through(mirror, net, "tunnel-lib")
    run_client([client_tool("pip"), "install", "--no-cache-dir", "--index-url",
                mirror.index_url, "--target", str(tmp_path / "t"), "proxied-lib"], tmp_path)
    assert installed_versions(tmp_path / "t") == {"proxied-lib": "1.0"}
    basic = "Basic " + base64.b64encode(LOGIN.encode()).decode()
    tunnel = Seen("CONNECT", f"127.0.0.1:{net.front.port}", basic)
    seen = net.proxy.seen[before:]  # two pages, a .metadata and two files: all tunnelled
    assert len(seen) == 5 and set(seen) == {tunnel}, seen
    assert "s3cret" not in mirror.log_text()


def test_http_upstream_through_the_proxy_in_absolute_form(
        net: Net, mirrors: list[Server]) -> None:
    plain = net.upstream.index_url
    mirror = _mirror(net, mirrors, "plain", plain, {
        "http_proxy": net.proxy.url(), "https_proxy": NOWHERE})
    before = len(net.proxy.seen)
    _fetch_through(mirror, net, "plain-lib")
    origin = net.upstream.origin
    assert net.proxy.seen[before:] == [
        Seen("GET", f"{origin}/simple/plain-lib/", None),
        Seen("GET", f"{origin}/packages/{_file(net, 'plain-lib')}", None)]


def test_no_proxy_bypasses_it(net: Net, mirrors: list[Server]) -> None:
    https = f"https://127.0.0.1:{net.front.port}/simple/"
    mirror = _mirror(net, mirrors, "bypass", https, {
        "HTTPS_PROXY": net.proxy.url(), "NO_PROXY": "localhost,127.0.0.1",
        "SSL_CERT_FILE": str(net.cert)})
    before = len(net.proxy.seen)
    _fetch_through(mirror, net, "bypass-lib")
    assert net.proxy.seen[before:] == []


def test_a_refusing_proxy_is_a_502_with_one_line(net: Net, mirrors: list[Server]) -> None:
    https = f"https://127.0.0.1:{net.front.port}/simple/"
    mirror = _mirror(net, mirrors, "refused", https, {
        "https_proxy": net.proxy.url(LOGIN_IN_URL), "SSL_CERT_FILE": str(net.cert)})
    net.proxy.refuse = True
    try:
        resp = get(mirror.url("/simple/refused-lib/"))
    finally:
        net.proxy.refuse = False
    assert resp.status == 502, resp.describe()
    (line,) = resp.text.splitlines()
    assert f"proxy 127.0.0.1:{net.proxy.port}" in line and "403" in line, line
    assert "s3cret" not in resp.text and "s3cret" not in mirror.log_text()
