"""gunicorn's logger with a short User-Agent in access-log lines.

pip sends its whole environment as JSON in ``User-Agent`` (about 500
characters); the access log keeps the first product token (``pip/24.0``).
Both the worker's event loop and gunicorn's own request path log through
``Logger.access``, so cutting here covers every line.
"""

from __future__ import annotations

from typing import Any

from gunicorn.glogging import Logger

MAX_AGENT = 64  # a product token longer than this is cut too


def first_product(user_agent: str) -> str:
    """The first product token of a User-Agent header, at most MAX_AGENT characters.

    >>> first_product('pip/24.0 {"ci":null,"cpu":"x86_64"}')
    'pip/24.0'
    >>> first_product("Mozilla/5.0 (X11; Linux x86_64)"), first_product("  "), first_product("-")
    ('Mozilla/5.0', '-', '-')
    """
    token = user_agent.strip().split(None, 1)[0] if user_agent.strip() else "-"
    return token[:MAX_AGENT]


class PypidLogger(Logger):  # type: ignore[misc]
    """gunicorn's Logger; only the ``%(a)s`` atom (the User-Agent) differs."""

    def atoms(self, resp: Any, req: Any, environ: dict[str, Any],
              request_time: Any) -> dict[str, Any]:
        found: dict[str, Any] = super().atoms(resp, req, environ, request_time)
        found["a"] = first_product(str(found.get("a") or "-"))
        return found
