"""Load and validate /etc/pypid.toml into a frozen Config, from one schema table.

The table ``SCHEMA`` is the single description of every key: its default, its
check and its help line. It drives validation, ``pypid check-config`` and the
shipped, commented ``etc/pypid.toml``. This module imports no other pypid module.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pypid import config_checks as check

try:
    import tomllib
except ModuleNotFoundError:  # Python < 3.11
    import tomli as tomllib  # type: ignore[no-redef]

DEFAULT_PATH = Path("/etc/pypid.toml")
ENV_VAR = "PYPID_CONFIG"
LOG_LEVELS = ("debug", "info", "warning", "error")
UPSTREAM_MODES = ("redirect", "off", "cache")
BACKENDS = ("local", "s3")


class ConfigError(Exception):
    """Every problem found in a config file, one line each."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class Key:
    """One config key: where it lives, its default, its check and its help line."""

    section: str
    name: str
    default: Any
    check: Callable[[Any], Any]
    help: str

    @property
    def dotted(self) -> str:
        return f"{self.section}.{self.name}"


SCHEMA: tuple[Key, ...] = (
    Key("server", "host", "0.0.0.0", check.host_value,  # noqa: S104 - listening everywhere is the contract
        'address to listen on ("::" for IPv6 + IPv4)'),
    Key("server", "port", 8080, check.int_between(0, 65535), "TCP port (0: any free port)"),
    Key("server", "workers", 2, check.int_between(1, 64), "gunicorn worker processes"),
    Key("server", "url_prefix", "", check.url_prefix,
        'mount the whole index under a path, e.g. "/pypi"'),
    Key("server", "trusted_proxies", ("127.0.0.1",), check.networks,
        "X-Forwarded-* is believed only from these addresses or networks"),
    Key("server", "tls_cert", "", check.optional_file,
        'certificate (PEM), e.g. "/etc/ssl/certs/pypid.pem"; with tls_key: serve HTTPS'),
    Key("server", "tls_key", "", check.optional_file,
        'its private key, e.g. "/etc/ssl/private/pypid.key"'),
    Key("storage", "backend", "local", check.one_of(BACKENDS),
        '"local": root is a directory; "s3": an S3-compatible bucket ([storage.s3])'),
    Key("storage", "root", "/var/lib/pypid/packages", check.path_value,
        'the package directory (sub-folders are indexed too); backend "s3": this node\'s '
        "rebuildable caches"),
    Key("storage", "overwrite", False, check.bool_value, "may an upload replace an existing file?"),
    Key("storage", "max_upload_mb", 1024, check.int_between(1, 1024 * 1024),
        "largest accepted upload, in MiB"),
    Key("storage.s3", "endpoint", "", check.endpoint,
        'the store\'s URL, e.g. "http://127.0.0.1:8333"; "": AWS itself. Credentials come '
        "from the AWS environment variables or shared files, never this file"),
    Key("storage.s3", "bucket", "pypid", check.bucket, "the bucket every node shares"),
    Key("storage.s3", "prefix", "", check.prefix_value,
        'a folder in the bucket, e.g. "pypi" ("": all of it)'),
    Key("storage.s3", "region", "us-east-1", check.host_value, "the bucket's region"),
    Key("storage.s3", "cache_dir", "/var/lib/pypid/s3-cache", check.path_value,
        "this node's bounded read-through copy of hot files"),
    Key("storage.s3", "cache_max_gb", 10, check.int_between(1, 1024 * 1024),
        "largest size of that copy, in GiB (least recently used files go first)"),
    Key("auth", "htpasswd", "/etc/pypid.htpasswd", check.path_value,
        "Apache htpasswd file (pypid user add NAME)"),
    Key("auth", "protect", ("upload",), check.protect,
        'which actions need a login: any of "upload", "download", "list"'),
    Key("auth", "admins", (), check.users,
        "users who may manage every project (yank, remove, status, owners, audit)"),
    Key("auth", "project_owners", True, check.bool_value,
        "only a project's owners and admins may upload to it or manage it (the first "
        "uploader owns a new project); false: any logged-in user may"),
    Key("upstream", "url", "https://pypi.org/simple/", check.upstream_url,
        "where unknown projects are sent"),
    Key("upstream", "mode", "redirect", check.one_of(UPSTREAM_MODES),
        '"redirect": unknown projects redirect to url; "off": 404; "cache": mirror them'),
    Key("upstream", "cache_root", "/var/lib/pypid/cache", check.path_value,
        'mode "cache": where mirrored pages and files are kept (backend "s3": shared in the '
        'bucket too)'),
    Key("upstream", "page_ttl", 600, check.int_between(0, 7 * 24 * 3600),
        "seconds a mirrored page is used before it is revalidated upstream"),
    Key("upstream", "timeout", 15, check.int_between(1, 3600),
        "seconds an upstream request may go without progress"),
    Key("upstream", "file_hosts", ("files.pythonhosted.org",), check.hosts,
        "hosts file links may point to besides upstream's own"),
    Key("upstream", "offline", False, check.bool_value,
        'mode "cache": never contact upstream, serve what the cache holds'),
    Key("upstream", "min_age_days", 0, check.int_between(0, 3650),
        "cooldown: hide upstream files uploaded less than N days ago (0: off)"),
    Key("upstream", "min_age_exempt", (), check.requirement_specs,
        'requirement specs the cooldown lets through, e.g. ["urllib3==2.5.1"]'),
    Key("upstream", "merge", (), check.str_list,
        "project names (globs) whose upstream files are listed beside local ones"),
    Key("upstream", "cache_max_gb", 0, check.int_between(0, 1024 * 1024),
        "0: no limit; else least recently used, unpinned files are evicted"),
    Key("metrics", "allow", ("127.0.0.1", "::1"), check.networks,
        "addresses or networks that may read /metrics ([] : nobody)"),
    Key("log", "level", "info", check.one_of(LOG_LEVELS), "debug | info | warning | error"),
    Key("log", "access_log", True, check.bool_value,
        "one line per request, to stderr (the journal under systemd)"),
)
SECTIONS: tuple[str, ...] = tuple(dict.fromkeys(key.section for key in SCHEMA))


@dataclass(frozen=True)
class ServerConfig:
    host: str
    port: int
    workers: int
    url_prefix: str
    trusted_proxies: tuple[str, ...]
    tls_cert: str
    tls_key: str


@dataclass(frozen=True)
class S3Config:
    endpoint: str
    bucket: str
    prefix: str
    region: str
    cache_dir: str
    cache_max_gb: int


@dataclass(frozen=True)
class StorageConfig:
    backend: str
    root: str
    overwrite: bool
    max_upload_mb: int
    s3: S3Config


@dataclass(frozen=True)
class AuthConfig:
    htpasswd: str
    protect: tuple[str, ...]
    admins: tuple[str, ...]
    project_owners: bool


@dataclass(frozen=True)
class UpstreamConfig:
    url: str
    mode: str
    cache_root: str
    page_ttl: int
    timeout: int
    file_hosts: tuple[str, ...]
    offline: bool
    min_age_days: int
    min_age_exempt: tuple[str, ...]
    merge: tuple[str, ...]
    cache_max_gb: int


@dataclass(frozen=True)
class MetricsConfig:
    allow: tuple[str, ...]


@dataclass(frozen=True)
class LogConfig:
    level: str
    access_log: bool


@dataclass(frozen=True)
class Config:
    """The effective settings; ``source`` is the file they came from (None: defaults only)."""

    server: ServerConfig
    storage: StorageConfig
    auth: AuthConfig
    upstream: UpstreamConfig
    metrics: MetricsConfig
    log: LogConfig
    source: Path | None = field(default=None, compare=False)

    @property
    def root(self) -> Path:
        return Path(self.storage.root)


# Inner tables first: a section's dataclass holds its sub-tables' (storage.s3 -> storage).
_SECTION_CLASSES = {
    "storage.s3": S3Config, "server": ServerConfig, "storage": StorageConfig,
    "auth": AuthConfig, "upstream": UpstreamConfig, "metrics": MetricsConfig,
    "log": LogConfig,
}


def defaults() -> Config:
    """The settings that apply when the file sets nothing."""
    return _build({key.dotted: key.default for key in SCHEMA}, None)


def resolve_path(explicit: str | os.PathLike[str] | None) -> tuple[Path, bool]:
    """Which file to read, and whether the user named it (a named file must exist).

    ``--config`` wins over ``$PYPID_CONFIG``, which wins over /etc/pypid.toml.
    """
    if explicit:
        return Path(explicit), True
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env), True
    return DEFAULT_PATH, False


def load_config(
    path: str | os.PathLike[str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Config:
    """Read, check and freeze the config; raise ConfigError listing every problem.

    ``overrides`` maps dotted keys (``"server.port"``) to values from the command
    line; they are checked like file values. A missing file is an error only when
    the user named it (``--config`` or ``$PYPID_CONFIG``); otherwise the defaults apply.
    """
    file_path, named = resolve_path(path)
    label = str(file_path)
    raw: dict[str, Any] = {}
    problems: list[str] = []
    try:
        with open(file_path, "rb") as handle:
            raw = tomllib.load(handle)
        source: Path | None = file_path
    except FileNotFoundError:
        if named:
            raise ConfigError([f"{label}: no such file"]) from None
        source = None
    except IsADirectoryError:
        raise ConfigError([f"{label}: is a directory, not a TOML file"]) from None
    except PermissionError:
        raise ConfigError([f"{label}: permission denied"]) from None
    except UnicodeDecodeError as exc:
        raise ConfigError([f"{label}: not UTF-8 text ({exc.reason})"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{label}: invalid TOML: {exc}"]) from None

    values = {key.dotted: key.default for key in SCHEMA}
    problems += _collect(raw, values, label)
    for dotted, value in (overrides or {}).items():
        key = _KEYS[dotted]
        try:
            values[dotted] = key.check(value)
        except ValueError as exc:
            problems.append(f"command line: {dotted}: {exc}")
    if bool(values["server.tls_cert"]) != bool(values["server.tls_key"]):
        problems.append(f"{label}: server.tls_cert, server.tls_key: set both or neither")
    if problems:
        raise ConfigError(problems)
    return _build(values, source)


_KEYS = {key.dotted: key for key in SCHEMA}


def _collect(raw: Mapping[str, Any], values: dict[str, Any], label: str,
             parent: str = "") -> list[str]:
    problems = []
    for name, table in raw.items():
        section = parent + name
        if section not in SECTIONS:
            hint = _did_you_mean(section, SECTIONS)
            problems.append(f"{label}: {section}: unknown section{hint}")
            continue
        if not isinstance(table, dict):
            problems.append(f"{label}: {section}: must be a table ([{section}])")
            continue
        problems += _collect_table(section, table, values, label)
    return problems


def _collect_table(section: str, table: Mapping[str, Any], values: dict[str, Any],
                   label: str) -> list[str]:
    problems = []
    names = [key.name for key in SCHEMA if key.section == section]
    inner = {s for s in SECTIONS if s.startswith(section + ".")}
    for name, value in table.items():
        dotted = f"{section}.{name}"
        if dotted in inner:  # a sub-table such as [storage.s3]
            problems += _collect({name: value}, values, label, parent=section + ".")
            continue
        if dotted not in _KEYS:
            problems.append(f"{label}: {dotted}: unknown key{_did_you_mean(name, names)}")
            continue
        try:
            values[dotted] = _KEYS[dotted].check(value)
        except ValueError as exc:
            problems.append(f"{label}: {dotted}: {exc}")
    return problems


def _build(values: Mapping[str, Any], source: Path | None) -> Config:
    sections: dict[str, Any] = {}
    for section, cls in _SECTION_CLASSES.items():
        fields = {key.name: values[key.dotted] for key in SCHEMA if key.section == section}
        inner = {s.rsplit(".", 1)[1]: sections.pop(s) for s in list(sections)
                 if s.startswith(section + ".")}
        sections[section] = cls(**fields, **inner)
    return Config(**sections, source=source)


def as_dotted(config: Config) -> dict[str, Any]:
    """``{"server.port": 8080, ...}`` in schema order."""
    values = {}
    for key in SCHEMA:
        table: Any = config
        for part in key.section.split("."):
            table = getattr(table, part)
        values[key.dotted] = getattr(table, key.name)
    return values


SHIPPED_HEADER = """\
# /etc/pypid.toml: settings of the pypid package index.
# Every key is optional; each line below shows its default. Uncomment to change it,
# then check with `pypid check-config` and apply with `systemctl reload pypid`.
"""


def render_toml(values: Mapping[str, Any] | None = None, *, commented: bool = False) -> str:
    """TOML text for ``values`` (default: the defaults), each key with its help line.

    With ``commented``, every key is commented out: that (after SHIPPED_HEADER) is
    the shipped ``etc/pypid.toml``, and a test keeps the two equal.
    """
    current = dict(values) if values is not None else {k.dotted: k.default for k in SCHEMA}
    lines: list[str] = []
    for section in SECTIONS:
        if lines:
            lines.append("")
        lines.append(f"[{section}]")
        for key in (k for k in SCHEMA if k.section == section):
            value = current[key.dotted]
            entry = f"{key.name} = {toml_value(value)}"
            lines.append(f"{'# ' if commented else ''}{entry:<40} # {key.help}")
    return "\n".join(lines) + "\n"


def toml_value(value: Any) -> str:
    """A TOML literal for a config value.

    >>> toml_value(("upload", "list"))
    '["upload", "list"]'
    """
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        escaped = value.replace("\\", "\\\\").replace('"', '\\"')
        return f'"{escaped}"'
    if isinstance(value, (tuple, list)):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    raise TypeError(f"no TOML form for {value!r}")


def _did_you_mean(word: str, choices: tuple[str, ...] | list[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f' (did you mean "{close[0]}"?)' if close else ""
