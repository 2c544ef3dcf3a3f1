"""Config: every problem at once, one line each naming the key; shipped file == defaults."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pypid import config as config_module
from pypid.cli import main
from pypid.config import SCHEMA, SHIPPED_HEADER, ConfigError, defaults, load_config, render_toml

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "etc" / "pypid.toml"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "pypid.toml"
    path.write_text(text)
    return path


def test_shipped_file_is_the_rendered_defaults() -> None:
    assert SHIPPED.read_text() == SHIPPED_HEADER + "\n" + render_toml(commented=True)


def test_shipped_file_uncommented_equals_defaults(tmp_path: Path) -> None:
    lines = []
    for line in SHIPPED.read_text().splitlines():
        match = re.match(r"^# ([a-z_]+ = .*)$", line)
        lines.append(match.group(1) if match else line)
    uncommented = write(tmp_path, "\n".join(lines))
    keys_in_file = {m.group(1) for m in re.finditer(r"^([a-z_]+) = ", uncommented.read_text(),
                                                     re.MULTILINE)}
    assert keys_in_file == {key.name for key in SCHEMA}
    assert load_config(uncommented) == defaults()


def test_every_key_has_help_and_a_valid_default() -> None:
    for key in SCHEMA:
        assert key.help
        assert key.check(key.default) == key.default


GOOD = [
    ("empty", "", {}),
    ("port", "[server]\nport = 9000", {"server.port": 9000}),
    ("ipv6-host", '[server]\nhost = "::"', {"server.host": "::"}),
    ("prefix-trailing-slash", '[server]\nurl_prefix = "/pypi/"', {"server.url_prefix": "/pypi"}),
    ("proxies-cidr", '[server]\ntrusted_proxies = ["10.0.0.0/8", "::1"]',
     {"server.trusted_proxies": ("10.0.0.0/8", "::1")}),
    ("protect-all", '[auth]\nprotect = ["upload", "download", "list"]',
     {"auth.protect": ("upload", "download", "list")}),
    ("protect-none", "[auth]\nprotect = []", {"auth.protect": ()}),
    ("upstream-slash-added", '[upstream]\nurl = "http://mirror.local/simple"',
     {"upstream.url": "http://mirror.local/simple/"}),
    ("upstream-off", '[upstream]\nmode = "off"', {"upstream.mode": "off"}),
    ("mirror", '[upstream]\nmode = "cache"\ncache_root = "/srv/c"\npage_ttl = 0\noffline = true\n'
     'min_age_days = 7\nmin_age_exempt = ["urllib3==2.5.1", "idna>=3"]\nmerge = ["corp-*"]\n'
     'file_hosts = []',
     {"upstream.mode": "cache", "upstream.cache_root": "/srv/c", "upstream.page_ttl": 0,
      "upstream.offline": True, "upstream.min_age_days": 7,
      "upstream.min_age_exempt": ("urllib3==2.5.1", "idna>=3"), "upstream.merge": ("corp-*",),
      "upstream.file_hosts": ()}),
    ("log", '[log]\nlevel = "debug"\naccess_log = false',
     {"log.level": "debug", "log.access_log": False}),
    ("s3", '[storage]\nbackend = "s3"\n[storage.s3]\nendpoint = "http://127.0.0.1:8333/"\n'
     'bucket = "team-pypi"\nprefix = "/pypi/"\ncache_max_gb = 2',
     {"storage.backend": "s3", "storage.s3.endpoint": "http://127.0.0.1:8333",
      "storage.s3.bucket": "team-pypi", "storage.s3.prefix": "pypi",
      "storage.s3.cache_max_gb": 2}),
    ("s3-inline-table", '[storage]\ns3 = { bucket = "b-1" }', {"storage.s3.bucket": "b-1"}),
]


@pytest.mark.parametrize(("case", "text", "expected"), GOOD, ids=[row[0] for row in GOOD])
def test_valid(tmp_path: Path, case: str, text: str, expected: dict[str, object]) -> None:
    loaded = config_module.as_dotted(load_config(write(tmp_path, text)))
    wanted = config_module.as_dotted(defaults()) | expected
    assert loaded == wanted


BAD = [
    ("unknown-key", "[server]\nprot = 1", ['server.prot: unknown key (did you mean "port"?)']),
    ("unknown-section", "[storag]\nroot = 'x'",
     ['storag: unknown section (did you mean "storage"?)']),
    ("unknown-no-hint", "[server]\nzzz = 1", ["server.zzz: unknown key"]),
    ("wrong-type", '[server]\nport = "80"', ["server.port: must be a whole number, not a string"]),
    ("bool-for-int", "[server]\nworkers = true", ["server.workers: must be a whole number"]),
    ("port-range", "[server]\nport = 70000", ["server.port: must be between 0 and 65535"]),
    ("workers-zero", "[server]\nworkers = 0", ["server.workers: must be between 1 and 64"]),
    ("prefix-relative", '[server]\nurl_prefix = "pypi"',
     ["server.url_prefix: must be empty or start"]),
    ("proxy-garbage", '[server]\ntrusted_proxies = ["nope"]',
     ["server.trusted_proxies: 'nope' is not an IP address or network"]),
    ("tls-missing-file", '[server]\ntls_cert = "/nonexistent.pem"\ntls_key = "/nonexistent.key"',
     ["server.tls_cert: no such file", "server.tls_key: no such file"]),
    ("overwrite-type", '[storage]\noverwrite = "yes"',
     ["storage.overwrite: must be true or false"]),
    ("upload-limit", "[storage]\nmax_upload_mb = 0", ["storage.max_upload_mb: must be between"]),
    ("protect-unknown", '[auth]\nprotect = ["uplaod"]', ["auth.protect: 'uplaod' is not one of"]),
    ("protect-not-list", '[auth]\nprotect = "upload"', ["auth.protect: must be a list of strings"]),
    ("mode", '[upstream]\nmode = "proxy"', ['upstream.mode: must be one of "redirect", "off"']),
    ("url", '[upstream]\nurl = "ftp://x/"', ["upstream.url: must be an http or https URL"]),
    ("mirror-keys", '[upstream]\ntimeout = 0\nfile_hosts = ["a b"]\nmin_age_days = -1\n'
     'min_age_exempt = ["urllib3", "==1"]\nmerge = "x"\ncache_root = ""',
     ["upstream.timeout: must be between 1", "upstream.file_hosts: is not a host name",
      "upstream.min_age_days: must be between 0", "upstream.min_age_exempt: 'urllib3' names no",
      "upstream.merge: must be a list", "upstream.cache_root: must not be empty"]),
    ("exempt-garbage", '[upstream]\nmin_age_exempt = ["==1"]',
     ["upstream.min_age_exempt: '==1' is not a requirement spec"]),
    ("level", '[log]\nlevel = "loud"', ["log.level: must be one of"]),
    ("section-not-table", "server = 1", ["server: must be a table"]),
    ("backend", '[storage]\nbackend = "gcs"', ['storage.backend: must be one of "local", "s3"']),
    ("s3-unknown-key", "[storage.s3]\nbuckett = 'x'",
     ['storage.s3.buckett: unknown key (did you mean "bucket"?)']),
    ("s3-bucket", "[storage.s3]\nbucket = 'B'", ["storage.s3.bucket: must be 3 to 63"]),
    ("s3-endpoint-login", "[storage.s3]\nendpoint = 'http://key:secret@x'",
     ["storage.s3.endpoint: must not hold a login"]),
    ("s3-not-table", "[storage]\ns3 = 1", ["storage.s3: must be a table"]),
    ("control-char", '[storage]\nroot = "/a\\u0007b"',
     ["storage.root: must not contain control"]),
    ("many-at-once", "[server]\nprot = 1\nworkers = 0\n[log]\nlevel = 3",
     ["server.prot: unknown key", "server.workers: must be between",
      "log.level: must be a string"]),
]


@pytest.mark.parametrize(("case", "text", "fragments"), BAD, ids=[row[0] for row in BAD])
def test_invalid_reports_every_problem(tmp_path: Path, case: str, text: str,
                                       fragments: list[str]) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    problems = info.value.problems
    assert len(problems) == len(fragments)
    for problem, fragment in zip(problems, fragments, strict=True):
        assert problem.startswith(f"{path}: ")
        assert fragment in problem
        assert "\n" not in problem


@pytest.mark.parametrize(("case", "text", "fragment"), [
    ("toml-syntax", "[server\nport = 1", "invalid TOML"),
    ("not-utf8", b"\xff\xfe[server]", "not UTF-8"),
])
def test_unparseable_file(tmp_path: Path, case: str, text: str | bytes, fragment: str) -> None:
    path = tmp_path / "pypid.toml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert len(info.value.problems) == 1
    assert fragment in info.value.problems[0]


def test_named_missing_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        load_config(tmp_path / "absent.toml")


def test_env_var_names_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYPID_CONFIG", str(write(tmp_path, "[server]\nport = 1234")))
    assert load_config().server.port == 1234


def test_unnamed_default_path_may_be_missing(monkeypatch: pytest.MonkeyPatch,
                                            tmp_path: Path) -> None:
    monkeypatch.delenv("PYPID_CONFIG", raising=False)
    monkeypatch.setattr(config_module, "DEFAULT_PATH", tmp_path / "absent.toml")
    assert load_config() == defaults()


def test_overrides_are_checked(tmp_path: Path) -> None:
    path = write(tmp_path, "[server]\nport = 1")
    assert load_config(path, {"server.port": 0}).server.port == 0
    with pytest.raises(ConfigError) as info:
        load_config(path, {"server.port": -1})
    assert info.value.problems == ["command line: server.port: must be between 0 and 65535, not -1"]


def test_endpoint_secret_never_repeated(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, "[storage.s3]\nendpoint = 'http://key:hunter2@x'"))
    assert "hunter2" not in str(info.value)


def test_tls_needs_both(tmp_path: Path) -> None:
    cert = tmp_path / "c.pem"
    cert.write_text("x")
    with pytest.raises(ConfigError, match="set both or neither"):
        load_config(write(tmp_path, f'[server]\ntls_cert = "{cert}"'))


def test_check_config_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config", "--config", str(write(tmp_path, "[server]\nport = 9001"))]) == 0
    out = capsys.readouterr().out
    assert "port = 9001" in out
    assert 'root = "/var/lib/pypid/packages"' in out


def test_check_config_broken_exits_78(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "[server]\nprot = 1\nworkers = 0")
    assert main(["--config", str(path), "check-config"]) == 78
    err = capsys.readouterr().err.splitlines()
    assert err == [f'{path}: server.prot: unknown key (did you mean "port"?)',
                   f"{path}: server.workers: must be between 1 and 64, not 0"]
