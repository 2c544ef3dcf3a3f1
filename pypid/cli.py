"""The ``pypid`` command: the only module that prints to the terminal or picks exit codes."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Sequence
from typing import Any

from pypid import __version__
from pypid.config import Config, ConfigError, as_dotted, load_config, render_toml

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_CONFIG = 78  # EX_CONFIG: the unit's RestartPreventExitStatus=


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits 2 on usage errors, 0 on --help
        return int(exc.code or 0)
    if not getattr(args, "command", None):
        parser.print_usage(sys.stderr)
        print("pypid: error: a command is required (serve, check-config, reload)",
              file=sys.stderr)
        return EXIT_USAGE
    try:
        return int(args.handler(args))
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return EXIT_CONFIG
    except KeyboardInterrupt:
        return EXIT_FAILURE


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pypid", description="pypid: a private Python package index.")
    parser.add_argument("--version", action="version", version=f"pypid {__version__}")
    parser.add_argument("--config", metavar="PATH",
                        help="config file (default: $PYPID_CONFIG or /etc/pypid.toml)")
    # The same option after the command; SUPPRESS keeps a value given before it.
    config_option = argparse.ArgumentParser(add_help=False)
    config_option.add_argument("--config", metavar="PATH", default=argparse.SUPPRESS,
                               help="config file (default: $PYPID_CONFIG or /etc/pypid.toml)")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    serve = commands.add_parser("serve", parents=[config_option],
                                help="run the index under gunicorn")
    serve.add_argument("--host", help="address to listen on (server.host)")
    serve.add_argument("--port", type=int, help="TCP port, 0 for any free one (server.port)")
    serve.add_argument("--root", help="package directory (storage.root)")
    serve.set_defaults(handler=_serve)

    check = commands.add_parser("check-config", parents=[config_option],
                                help="validate the config file and print the effective settings")
    check.set_defaults(handler=_check_config)

    reload_ = commands.add_parser("reload", parents=[config_option],
                                  help="validate the config, then signal the running server "
                                       "($MAINPID) to reload it")
    reload_.set_defaults(handler=_reload)
    return parser


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    pairs = {"server.host": getattr(args, "host", None), "server.port": getattr(args, "port", None),
             "storage.root": getattr(args, "root", None)}
    return {key: value for key, value in pairs.items() if value is not None}


def _serve(args: argparse.Namespace) -> int:
    from pypid.server import serve  # noqa: PLC0415 - gunicorn and Flask load only for serve

    config = load_config(args.config, _overrides(args))
    problem = _prepare_root(config)
    if problem:
        print(f"pypid: {problem}", file=sys.stderr)
        return EXIT_FAILURE
    return serve(config)


def _prepare_root(config: Config) -> str | None:
    """Create a missing package root when its parent exists; None when usable."""
    root = config.root
    if not root.exists():
        try:
            root.mkdir(mode=0o755)
        except OSError as exc:
            return f"package root {root} does not exist and cannot be created: {exc.strerror}"
    if not root.is_dir():
        return f"package root {root} is not a directory"
    if not os.access(root, os.R_OK | os.X_OK):
        return f"package root {root}: permission denied (run as a user that can read it)"
    return None


def _check_config(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    source = config.source or "no file (defaults)"
    print(f"# effective settings, from {source}")
    print(render_toml(as_dotted(config)), end="")
    return EXIT_OK


def _reload(args: argparse.Namespace) -> int:
    load_config(args.config)  # ConfigError: exit 78 and the server keeps its settings
    mainpid = os.environ.get("MAINPID", "")
    if not mainpid.isdigit() or int(mainpid) <= 1:
        print("pypid: reload: $MAINPID is not set (systemctl reload pypid sets it)",
              file=sys.stderr)
        return EXIT_FAILURE
    try:
        os.kill(int(mainpid), signal.SIGHUP)
    except ProcessLookupError:
        print(f"pypid: reload: no process {mainpid}", file=sys.stderr)
        return EXIT_FAILURE
    except PermissionError:
        print(f"pypid: reload: not allowed to signal process {mainpid}", file=sys.stderr)
        return EXIT_FAILURE
    return EXIT_OK
