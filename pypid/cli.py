"""The ``pypid`` command: the only module that prints to the terminal or picks exit codes."""

from __future__ import annotations

import argparse
import getpass
import logging
import logging.handlers
import os
import signal
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pypid import __version__, cli_bundle, cli_manage, cli_mirror
from pypid.auth import (
    Htpasswd,
    HtpasswdError,
    check_username,
    process_user,
    pypid_command,
    unreadable,
)
from pypid.config import (
    DEFAULT_PATH,
    ENV_VAR,
    SCHEMA,
    Config,
    ConfigError,
    as_dotted,
    load_config,
    render_toml,
)
from pypid.events import EventLogError
from pypid.manage import cli_actor
from pypid.storage.select import open_storage

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_CONFIG = 78  # EX_CONFIG: the unit's RestartPreventExitStatus=
SYSLOG_SOCKET = "/dev/log"
TRACEBACK_ENV = "PYPID_TRACEBACK"  # set to 1: an unexpected error shows its traceback


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits 2 on usage errors, 0 on --help
        return int(exc.code or 0)
    if not getattr(args, "command", None):
        parser.print_usage(sys.stderr)
        print("pypid: error: a command is required (serve, check-config, reload, user, "
              "yank, unyank, remove, status, owner, audit, mirror, export, import)",
              file=sys.stderr)
        return EXIT_USAGE
    if args.command != "serve":
        _audit_to_journal()
    return _run(args)


def _audit_to_journal() -> None:
    """The command line's audit lines also go to the journal (the server's go there through
    its standard error), when there is a syslog socket."""
    if not os.path.exists(SYSLOG_SOCKET):
        return
    try:
        handler = logging.handlers.SysLogHandler(address=SYSLOG_SOCKET)
    except OSError:
        return
    handler.ident = "pypid: "
    logger = logging.getLogger("pypid.audit")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False


def _run(args: argparse.Namespace) -> int:
    """The command's exit code; every failure is one line on stderr, never a traceback."""
    try:
        return int(args.handler(args))
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return EXIT_CONFIG
    except KeyboardInterrupt:
        return EXIT_FAILURE
    except OSError as exc:  # a file or socket this user may not use: one line, no traceback
        print(f"pypid: {file_problem(exc)}", file=sys.stderr)
        return EXIT_FAILURE
    except Exception as exc:  # noqa: BLE001 - the CLI's promise: one line, never a traceback
        if os.environ.get(TRACEBACK_ENV) == "1":
            traceback.print_exc()
        print(f"pypid: unexpected error: {type(exc).__name__}: {exc} "
              f"(set {TRACEBACK_ENV}=1 to see where)", file=sys.stderr)
        return EXIT_FAILURE


def file_problem(exc: OSError) -> str:
    """One line for an OSError: the file, the user we run as, and what to do."""
    path = exc.filename or "a file"
    reason = (exc.strerror or str(exc)).lower()
    user = process_user()
    if isinstance(exc, PermissionError):
        return (f"cannot use {path} as user {user} ({reason}): run as a user that may, "
                "or give this user access to it")
    return f"{path}: {reason} (running as user {user})"


def _default(dotted: str) -> object:
    return next(key.default for key in SCHEMA if key.dotted == dotted)


CONFIG_HELP = f"config file (default: ${ENV_VAR}, else {DEFAULT_PATH}; missing: built-in defaults)"
EXAMPLES = """\
examples:
  pypid serve                              serve with /etc/pypid.toml (or the defaults)
  pypid serve --port 9000 --root ~/wheels  override the file for this run
  pypid user add alice                     a login for uploads (prompts for the password)
  pypid check-config --config my.toml      validate a file, show the effective settings

then: pip install --index-url http://HOST:PORT/simple/ PACKAGE
      twine upload --repository-url http://HOST:PORT/ -u alice dist/*
In a checkout, ./scripts/serve and ./scripts/pypid do the same on the checkout's own files.
"""


def _command(commands: Any, name: str, help_: str, description: str,
             epilog: str) -> argparse.ArgumentParser:
    """A subcommand that also takes --config after its name, with examples in its --help."""
    # SUPPRESS keeps a --config given before the command.
    config_option = argparse.ArgumentParser(add_help=False)
    config_option.add_argument("--config", metavar="PATH", default=argparse.SUPPRESS,
                               help=CONFIG_HELP)
    return commands.add_parser(  # type: ignore[no-any-return]
        name, parents=[config_option], help=help_, description=description, epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pypid", description="pypid: a private Python package index.", epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"pypid {__version__}")
    parser.add_argument("--config", metavar="PATH", help=CONFIG_HELP)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    serve = _command(
        commands, "serve", "run the index under gunicorn (Ctrl-C stops it)",
        "Serve the package directory to pip, uv and twine until stopped (Ctrl-C, SIGTERM).\n"
        "Options override the config file for this run; SIGHUP re-reads the file.",
        "examples:\n  pypid serve\n  pypid serve --host 127.0.0.1 --port 9000 --root ~/wheels\n"
        "  pypid serve --port 0        any free port (the log names it)")
    serve.add_argument("--host", help=f"address to listen on (server.host; default "
                       f"{_default('server.host')}, \"::\" for IPv6 too)")
    serve.add_argument("--port", type=int, help=f"TCP port, 0 for any free one (server.port; "
                       f"default {_default('server.port')})")
    serve.add_argument("--root", metavar="DIR", help=f"package directory (storage.root; "
                       f"default {_default('storage.root')})")
    serve.set_defaults(handler=_serve)

    check = _command(
        commands, "check-config",
        "validate the config file and print the effective settings",
        "Check every key of the config file; print the settings in effect (exit 0), or one\n"
        "line per problem (exit 78).",
        "examples:\n  pypid check-config\n  pypid check-config --config ./pypid.toml")
    check.set_defaults(handler=_check_config)

    reload_ = _command(
        commands, "reload",
        "validate the config, then signal the running server ($MAINPID) to reload it",
        "What `systemctl reload pypid` runs: check the config file (exit 78 if broken; the\n"
        "server keeps its settings), then send SIGHUP to $MAINPID.",
        "example:\n  sudo systemctl reload pypid")
    reload_.set_defaults(handler=_reload)

    user = _command(
        commands, "user",
        f"manage logins in the htpasswd file (auth.htpasswd; default {_default('auth.htpasswd')})",
        "Add, remove or list the logins that may upload (bcrypt, in the htpasswd file named\n"
        "by auth.htpasswd). The running server sees changes at the next login.",
        "examples:\n  sudo pypid user add alice\n"
        "  echo \"$PW\" | sudo pypid user add ci --password-stdin\n  sudo pypid user list")
    user_commands = user.add_subparsers(dest="user_command", metavar="ACTION", required=True)
    add = _command(user_commands, "add", "add a user or set a password (bcrypt)",
                   "Add NAME, or set its password; the file keeps its owner and mode.",
                   "examples:\n  pypid user add alice\n"
                   "  echo \"$PW\" | pypid user add ci --password-stdin")
    add.add_argument("name", metavar="NAME")
    add.add_argument("--password-stdin", action="store_true",
                     help="read the password from standard input instead of a prompt")
    add.set_defaults(handler=_user_add)
    remove = _command(user_commands, "remove", "delete a user",
                      "Delete NAME (exit 1 if there is no such user).",
                      "example:\n  pypid user remove alice")
    remove.add_argument("name", metavar="NAME")
    remove.set_defaults(handler=_user_remove)
    listing = _command(user_commands, "list", "list the users",
                       "Print one user name per line (exit 1 if the file cannot be read).",
                       "example:\n  pypid user list")
    listing.set_defaults(handler=_user_list)
    cli_manage.add_commands(commands, _command)
    cli_mirror.add_commands(commands, _command)
    cli_bundle.add_commands(commands, _command)
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
    user = process_user()
    fix = "or choose another with --root or storage.root"
    if not root.exists():
        try:
            root.mkdir(mode=0o755)
        except OSError as exc:
            reason = (exc.strerror or str(exc)).lower()
            return (f"cannot create the package root {root} as user {user} ({reason}): "
                    f"create it, e.g. sudo install -d -o {user} {root}, {fix}")
    if not root.is_dir():
        return f"the package root {root} is not a directory: {fix}"
    if not os.access(root, os.R_OK | os.X_OK):
        return (f"cannot read the package root {root} as user {user} (permission denied): "
                f"let {user} read it, e.g. sudo chown -R {user} {root}, {fix}")
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
        _check_writable(htpasswd)
        password = _read_password(args.password_stdin)
        new = htpasswd.add(args.name, password)
    except HtpasswdError as exc:
        print(f"pypid: user add: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    print(f"{'added' if new else 'changed the password of'} {args.name} in {htpasswd.path}")
    return _audit_user(args, "user-add", args.name, None if new else "new password")


def _audit_user(args: argparse.Namespace, action: str, name: str, reason: str | None) -> int:
    """The audit line of a user change, when the package root exists (the log lives there)."""
    config = load_config(args.config)
    if config.storage.backend == "local" and not config.root.is_dir():
        return EXIT_OK
    events = open_storage(config).event_log()
    try:
        events.append(action, user=cli_actor().user, owner=name, reason=reason)
    except EventLogError as exc:
        print(f"pypid: the audit log could not record it: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    return EXIT_OK


def _check_writable(htpasswd: Htpasswd) -> None:
    """Fail before the password prompt when the file cannot be replaced.

    Writing makes a temporary file beside it, so its directory must be writable.
    """
    path, directory = htpasswd.path, htpasswd.path.parent
    if not directory.is_dir():
        raise HtpasswdError(f"cannot write {path}: {directory} is not a directory "
                            "(set auth.htpasswd in the config to a file in one)")
    if path.exists() and not os.access(path, os.R_OK):
        raise HtpasswdError(unreadable(path, "permission denied"))
    if not os.access(directory, os.W_OK | os.X_OK):
        user = process_user()
        raise HtpasswdError(
            f"cannot write {path} as user {user} ({directory} is not writable by {user}): "
            f"run it as root, e.g. sudo {pypid_command()} user ..., or set auth.htpasswd "
            "to a file in a directory you may write")


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
        _check_writable(htpasswd)
        removed = htpasswd.remove(args.name)
    except HtpasswdError as exc:
        print(f"pypid: user remove: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    if not removed:
        print(f"pypid: user remove: no user {args.name!r} in {htpasswd.path}", file=sys.stderr)
        return EXIT_FAILURE
    print(f"removed {args.name} from {htpasswd.path}")
    return _audit_user(args, "user-remove", args.name, None)


def _user_list(args: argparse.Namespace) -> int:
    htpasswd = _htpasswd(args)
    users = htpasswd.users()
    problem = htpasswd.problem()
    # An empty file lists nothing and is fine; a missing or unreadable one is not.
    if not users and problem and (not htpasswd.path.exists()
                                  or not os.access(htpasswd.path, os.R_OK)):
        print(f"pypid: user list: {problem}", file=sys.stderr)
        return EXIT_FAILURE
    for name in users:
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
