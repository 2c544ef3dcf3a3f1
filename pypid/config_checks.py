"""The checks of config values: each takes a raw TOML value and returns the clean one, or
raises ValueError with a message that follows the key's name. Imports no pypid module."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from packaging.requirements import InvalidRequirement, Requirement

PROTECTABLE = ("upload", "download", "list")


def str_value(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"must be a string, not {_type_name(value)}")
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise ValueError("must not contain control characters")
    return value


def bool_value(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"must be true or false, not {_type_name(value)}")
    return value


def int_between(low: int, high: int) -> Callable[[Any], int]:
    def check(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"must be a whole number, not {_type_name(value)}")
        if not low <= value <= high:
            raise ValueError(f"must be between {low} and {high}, not {value}")
        return value

    return check


def one_of(choices: tuple[str, ...]) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        value = str_value(value)
        if value not in choices:
            raise ValueError(f"must be one of {_quoted(choices)}, not {value!r}")
        return value

    return check


def host_value(value: Any) -> str:
    value = str_value(value).strip()
    if not value:
        raise ValueError("must not be empty")
    if any(c.isspace() for c in value) or "/" in value:
        raise ValueError(f"is not a host name or address: {value!r}")
    return value


def url_prefix(value: Any) -> str:
    value = str_value(value).rstrip("/")
    if value and not value.startswith("/"):
        raise ValueError(f'must be empty or start with "/", e.g. "/pypi", not {value!r}')
    if any(part in (".", "..") for part in value.split("/")) or "//" in value:
        raise ValueError(f"must be a plain path, not {value!r}")
    return value


def networks(value: Any) -> tuple[str, ...]:
    items = str_list(value)
    for item in items:
        try:
            ipaddress.ip_network(item, strict=False)
        except ValueError:
            raise ValueError(f"{item!r} is not an IP address or network") from None
    return items


def str_list(value: Any) -> tuple[str, ...]:
    if not isinstance(value, (list, tuple)):
        raise ValueError(f"must be a list of strings, not {_type_name(value)}")
    return tuple(str_value(item) for item in value)


def optional_file(value: Any) -> str:
    value = str_value(value)
    if value and not Path(value).is_file():
        raise ValueError(f"no such file: {value}")
    return value


def path_value(value: Any) -> str:
    value = str_value(value)
    if not value:
        raise ValueError("must not be empty")
    return value


def protect(value: Any) -> tuple[str, ...]:
    items = str_list(value)
    for item in items:
        if item not in PROTECTABLE:
            raise ValueError(f"{item!r} is not one of {_quoted(PROTECTABLE)}")
    if len(set(items)) != len(items):
        raise ValueError("lists an action twice")
    return items


def users(value: Any) -> tuple[str, ...]:
    items = str_list(value)
    for item in items:
        if not item or ":" in item or any(c.isspace() for c in item):
            raise ValueError(f"{item!r} is not a user name")
    return tuple(dict.fromkeys(items))


def hosts(value: Any) -> tuple[str, ...]:
    return tuple(host_value(item) for item in str_list(value))


def requirement_specs(value: Any) -> tuple[str, ...]:
    """Requirement specs such as ``"urllib3==2.5.1"`` (checked with packaging)."""
    items = str_list(value)
    for item in items:
        try:
            requirement = Requirement(item)
        except InvalidRequirement:
            raise ValueError(f"{item!r} is not a requirement spec, "
                             'e.g. "urllib3==2.5.1"') from None
        if not requirement.specifier:
            raise ValueError(f"{item!r} names no versions; e.g. \"{requirement.name}==1.0\"")
    return items


def upstream_url(value: Any) -> str:
    value = str_value(value)
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"must be an http or https URL, not {value!r}")
    return value if value.endswith("/") else value + "/"


def endpoint(value: Any) -> str:
    value = str_value(value).strip()
    if not value:
        return value
    parts = urlsplit(value)
    if "@" in parts.netloc:  # never repeat a secret in an error message
        raise ValueError("must not hold a login: credentials come from the AWS environment "
                         "variables or shared files")
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f'must be "" (AWS itself) or an http or https URL, not {value!r}')
    return value.rstrip("/")


def bucket(value: Any) -> str:
    """S3's bucket naming rules, the subset every S3-compatible store accepts."""
    value = str_value(value)
    if not re.fullmatch(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", value) or ".." in value:
        raise ValueError("must be 3 to 63 lowercase letters, digits, dots or hyphens, "
                         f"starting and ending with a letter or digit, not {value!r}")
    return value


def prefix_value(value: Any) -> str:
    value = str_value(value).strip("/")
    if any(part in ("", ".", "..") for part in value.split("/")) and value:
        raise ValueError(f'must be a plain path such as "pypi" or "team/pypi", not {value!r}')
    return value


def _type_name(value: Any) -> str:
    return {bool: "a boolean", int: "a number", float: "a number", str: "a string",
            list: "a list", dict: "a table"}.get(type(value), type(value).__name__)


def _quoted(choices: tuple[str, ...]) -> str:
    return ", ".join(f'"{c}"' for c in choices)

