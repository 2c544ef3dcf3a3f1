"""Load and validate /etc/pypid.toml into a frozen Config, from one schema table.

The table ``SCHEMA`` is the single description of every key: its default, its
check and its help line. It drives validation, ``pypid check-config`` and the
shipped, commented ``etc/pypid.toml``. This module imports no other pypid module.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from packaging.requirements import InvalidRequirement, Requirement

try:
    import tomllib
except ModuleNotFoundError:  # Python < 3.11
    import tomli as tomllib  # type: ignore[no-redef]

DEFAULT_PATH = Path("/etc/pypid.toml")
ENV_VAR = "PYPID_CONFIG"
PROTECTABLE = ("upload", "download", "list")
LOG_LEVELS = ("debug", "info", "warning", "error")
UPSTREAM_MODES = ("redirect", "off", "cache")


class ConfigError(Exception):
    """Every problem found in a config file, one line each."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


# -- checks: each takes the raw TOML value and returns the clean one or raises ValueError


def _str(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"must be a string, not {_type_name(value)}")
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise ValueError("must not contain control characters")
    return value


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"must be true or false, not {_type_name(value)}")
    return value


def _int_between(low: int, high: int) -> Callable[[Any], int]:
    def check(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"must be a whole number, not {_type_name(value)}")
        if not low <= value <= high:
            raise ValueError(f"must be between {low} and {high}, not {value}")
        return value

    return check


def _one_of(choices: tuple[str, ...]) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        value = _str(value)
        if value not in choices:
            raise ValueError(f"must be one of {_quoted(choices)}, not {value!r}")
        return value

    return check


def _host(value: Any) -> str:
    value = _str(value).strip()
    if not value:
        raise ValueError("must not be empty")
    if any(c.isspace() for c in value) or "/" in value:
        raise ValueError(f"is not a host name or address: {value!r}")
    return value


def _url_prefix(value: Any) -> str:
    value = _str(value).rstrip("/")
    if value and not value.startswith("/"):
        raise ValueError(f'must be empty or start with "/", e.g. "/pypi", not {value!r}')
    if any(part in (".", "..") for part in value.split("/")) or "//" in value:
        raise ValueError(f"must be a plain path, not {value!r}")
    return value


def _networks(value: Any) -> tuple[str, ...]:
    items = _str_list(value)
    for item in items:
        try:
            ipaddress.ip_network(item, strict=False)
        except ValueError:
            raise ValueError(f"{item!r} is not an IP address or network") from None
    return items


def _str_list(value: Any) -> tuple[str, ...]:
    if not isinstance(value, (list, tuple)):
        raise ValueError(f"must be a list of strings, not {_type_name(value)}")
    return tuple(_str(item) for item in value)


def _optional_file(value: Any) -> str:
    value = _str(value)
    if value and not Path(value).is_file():
        raise ValueError(f"no such file: {value}")
    return value


def _path(value: Any) -> str:
    value = _str(value)
    if not value:
        raise ValueError("must not be empty")
    return value


def _protect(value: Any) -> tuple[str, ...]:
    items = _str_list(value)
    for item in items:
        if item not in PROTECTABLE:
            raise ValueError(f"{item!r} is not one of {_quoted(PROTECTABLE)}")
    if len(set(items)) != len(items):
        raise ValueError("lists an action twice")
    return items


def _users(value: Any) -> tuple[str, ...]:
    items = _str_list(value)
    for item in items:
        if not item or ":" in item or any(c.isspace() for c in item):
            raise ValueError(f"{item!r} is not a user name")
    return tuple(dict.fromkeys(items))


def _hosts(value: Any) -> tuple[str, ...]:
    return tuple(_host(item) for item in _str_list(value))


def _requirement_specs(value: Any) -> tuple[str, ...]:
    """Requirement specs such as ``"urllib3==2.5.1"`` (checked with packaging)."""
    items = _str_list(value)
    for item in items:
        try:
            requirement = Requirement(item)
        except InvalidRequirement:
            raise ValueError(f"{item!r} is not a requirement spec, "
                             'e.g. "urllib3==2.5.1"') from None
        if not requirement.specifier:
            raise ValueError(f"{item!r} names no versions; e.g. \"{requirement.name}==1.0\"")
    return items


def _upstream_url(value: Any) -> str:
    value = _str(value)
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"must be an http or https URL, not {value!r}")
    return value if value.endswith("/") else value + "/"


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
    Key("server", "host", "0.0.0.0", _host,  # noqa: S104 - listening everywhere is the contract
        'address to listen on ("::" for IPv6 + IPv4)'),
    Key("server", "port", 8080, _int_between(0, 65535), "TCP port (0: any free port)"),
    Key("server", "workers", 2, _int_between(1, 64), "gunicorn worker processes"),
    Key("server", "url_prefix", "", _url_prefix,
        'mount the whole index under a path, e.g. "/pypi"'),
    Key("server", "trusted_proxies", ("127.0.0.1",), _networks,
        "X-Forwarded-* is believed only from these addresses or networks"),
    Key("server", "tls_cert", "", _optional_file,
        'certificate (PEM), e.g. "/etc/ssl/certs/pypid.pem"; with tls_key: serve HTTPS'),
    Key("server", "tls_key", "", _optional_file,
        'its private key, e.g. "/etc/ssl/private/pypid.key"'),
    Key("storage", "root", "/var/lib/pypid/packages", _path,
        "the package directory (sub-folders are indexed too)"),
    Key("storage", "overwrite", False, _bool, "may an upload replace an existing file?"),
    Key("storage", "max_upload_mb", 1024, _int_between(1, 1024 * 1024),
        "largest accepted upload, in MiB"),
    Key("auth", "htpasswd", "/etc/pypid.htpasswd", _path,
        "Apache htpasswd file (pypid user add NAME)"),
    Key("auth", "protect", ("upload",), _protect,
        'which actions need a login: any of "upload", "download", "list"'),
    Key("auth", "admins", (), _users,
        "users who may manage every project (yank, remove, status, owners, audit)"),
    Key("auth", "project_owners", True, _bool,
        "only a project's owners and admins may upload to it or manage it (the first "
        "uploader owns a new project); false: any logged-in user may"),
    Key("upstream", "url", "https://pypi.org/simple/", _upstream_url,
        "where unknown projects are sent"),
    Key("upstream", "mode", "redirect", _one_of(UPSTREAM_MODES),
        '"redirect": unknown projects redirect to url; "off": 404; "cache": mirror them'),
    Key("upstream", "cache_root", "/var/lib/pypid/cache", _path,
        'mode "cache": where mirrored pages and files are kept'),
    Key("upstream", "page_ttl", 600, _int_between(0, 7 * 24 * 3600),
        "seconds a mirrored page is used before it is revalidated upstream"),
    Key("upstream", "timeout", 15, _int_between(1, 3600),
        "seconds an upstream request may go without progress"),
    Key("upstream", "file_hosts", ("files.pythonhosted.org",), _hosts,
        "hosts file links may point to besides upstream's own"),
    Key("upstream", "offline", False, _bool,
        'mode "cache": never contact upstream, serve what the cache holds'),
    Key("upstream", "min_age_days", 0, _int_between(0, 3650),
        "cooldown: hide upstream files uploaded less than N days ago (0: off)"),
    Key("upstream", "min_age_exempt", (), _requirement_specs,
        'requirement specs the cooldown lets through, e.g. ["urllib3==2.5.1"]'),
    Key("upstream", "merge", (), _str_list,
        "project names (globs) whose upstream files are listed beside local ones"),
    Key("upstream", "cache_max_gb", 0, _int_between(0, 1024 * 1024),
        "0: no limit; else least recently used, unpinned files are evicted"),
    Key("metrics", "allow", ("127.0.0.1", "::1"), _networks,
        "addresses or networks that may read /metrics ([] : nobody)"),
    Key("log", "level", "info", _one_of(LOG_LEVELS), "debug | info | warning | error"),
    Key("log", "access_log", True, _bool,
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
class StorageConfig:
    root: str
    overwrite: bool
    max_upload_mb: int


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


_SECTION_CLASSES = {
    "server": ServerConfig, "storage": StorageConfig, "auth": AuthConfig,
    "upstream": UpstreamConfig, "metrics": MetricsConfig, "log": LogConfig,
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


def _collect(raw: Mapping[str, Any], values: dict[str, Any], label: str) -> list[str]:
    problems = []
    for section, table in raw.items():
        if section not in SECTIONS:
            hint = _did_you_mean(section, SECTIONS)
            problems.append(f"{label}: {section}: unknown section{hint}")
            continue
        if not isinstance(table, dict):
            problems.append(f"{label}: {section}: must be a table ([{section}])")
            continue
        names = [key.name for key in SCHEMA if key.section == section]
        for name, value in table.items():
            dotted = f"{section}.{name}"
            if dotted not in _KEYS:
                problems.append(f"{label}: {dotted}: unknown key{_did_you_mean(name, names)}")
                continue
            try:
                values[dotted] = _KEYS[dotted].check(value)
            except ValueError as exc:
                problems.append(f"{label}: {dotted}: {exc}")
    return problems


def _build(values: Mapping[str, Any], source: Path | None) -> Config:
    sections = {}
    for section, cls in _SECTION_CLASSES.items():
        prefix = section + "."
        sections[section] = cls(**{k[len(prefix):]: v for k, v in values.items()
                                   if k.startswith(prefix)})
    return Config(**sections, source=source)


def as_dotted(config: Config) -> dict[str, Any]:
    """``{"server.port": 8080, ...}`` in schema order."""
    return {key.dotted: getattr(getattr(config, key.section), key.name) for key in SCHEMA}


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


def _type_name(value: Any) -> str:
    return {bool: "a boolean", int: "a number", float: "a number", str: "a string",
            list: "a list", dict: "a table"}.get(type(value), type(value).__name__)


def _quoted(choices: tuple[str, ...]) -> str:
    return ", ".join(f'"{c}"' for c in choices)
