"""The ``pypid`` command: the only module that prints to the terminal or picks exit codes."""

from __future__ import annotations

import argparse
import getpass
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pypid import __version__
from pypid.auth import Htpasswd, HtpasswdError, check_username
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
        print("pypid: error: a command is required (serve, check-config, reload, user)",
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

    user = commands.add_parser("user", parents=[config_option],
                               help="manage logins in the htpasswd file ([auth].htpasswd)")
    user_commands = user.add_subparsers(dest="user_command", metavar="ACTION", required=True)
    add = user_commands.add_parser("add", parents=[config_option],
                                   help="add a user or set a password (bcrypt)")
    add.add_argument("name")
    add.add_argument("--password-stdin", action="store_true",
                     help="read the password from standard input instead of a prompt")
    add.set_defaults(handler=_user_add)
    remove = user_commands.add_parser("remove", parents=[config_option], help="delete a user")
    remove.add_argument("name")
    remove.set_defaults(handler=_user_remove)
    listing = user_commands.add_parser("list", parents=[config_option], help="list the users")
    listing.set_defaults(handler=_user_list)
    return parser


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    pairs = {"server.host": getattr(args, "host", None), "server.port": getattr(args, "port", None),
             "storage.root": getattr(args, "root", None)}
    return {key: value for key, value in pairs.items() if value is not None}


def _serve(args: argparse.Namespace) -> int:
    from pypid.server import serve  # noqa: PLC0415 - gunicorn and Flask load only for serve

    overrides = _overrides(args)
    config = load_config(args.config, overrides)
    problem = _prepare_root(config)
    if problem:
        print(f"pypid: {problem}", file=sys.stderr)
        return EXIT_FAILURE
    return serve(config, config_path=args.config, overrides=overrides)


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


def _htpasswd(args: argparse.Namespace) -> Htpasswd:
    return Htpasswd(Path(load_config(args.config).auth.htpasswd))


def _user_add(args: argparse.Namespace) -> int:
    htpasswd = _htpasswd(args)
    try:
        check_username(args.name)
        password = _read_password(args.password_stdin)
        new = htpasswd.add(args.name, password)
    except HtpasswdError as exc:
        print(f"pypid: user add: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    print(f"{'added' if new else 'changed the password of'} {args.name} in {htpasswd.path}")
    return EXIT_OK


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        line = sys.stdin.readline()
        return line[:-1] if line.endswith("\n") else line
    if not sys.stdin.isatty():
        raise HtpasswdError("no terminal to prompt on: use --password-stdin")
    first = getpass.getpass("Password: ")
    if getpass.getpass("Password again: ") != first:
        raise HtpasswdError("the passwords differ")
    return first


def _user_remove(args: argparse.Namespace) -> int:
    htpasswd = _htpasswd(args)
    try:
        removed = htpasswd.remove(args.name)
    except HtpasswdError as exc:
        print(f"pypid: user remove: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    if not removed:
        print(f"pypid: user remove: no user {args.name!r} in {htpasswd.path}", file=sys.stderr)
        return EXIT_FAILURE
    print(f"removed {args.name} from {htpasswd.path}")
    return EXIT_OK


def _user_list(args: argparse.Namespace) -> int:
    htpasswd = _htpasswd(args)
    problem = htpasswd.problem()
    if problem and not htpasswd.path.exists():
        print(f"pypid: user list: {problem}", file=sys.stderr)
        return EXIT_FAILURE
    for name in htpasswd.users():
        print(name)
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
