"""The ``ambrosia-edge`` command: the top-level parser, the shared flags, dispatch and errors.

Each subcommand is a module of :mod:`ambrosia_edge.commands` (or of another package, through
the ``ambrosia_edge.commands`` entry-point group). The runtime, the demo and the log inspector
are imported only by the subcommand that runs: ``--help`` and ``version`` stay fast on a
Raspberry Pi, and a broken optional part cannot stop the parts that do not use it.

Exit codes: 0 success, 1 an error the tool reported (message on stderr, no traceback unless
``--debug`` or ``AMBROSIA_EDGE_DEBUG=1``), 2 a command line argparse rejected, 130 Ctrl-C.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Callable

from .commands import load_command, registered_commands
from .commands.run import build_run_settings
from .commands.version import PROG, version_text
from .errors import AmbrosiaError, DeposedError

# build_run_settings: where embedding code (the benchmarks' host) has always found it
__all__ = ["build_parser", "build_run_settings", "main"]

DEBUG_ENV = "AMBROSIA_EDGE_DEBUG"

DESCRIPTION = """\
Run deterministic Python classes ("immortals") that call each other with exactly-once RPC.
Every input is logged before it runs; kill a process at any moment and its next start replays
the log, so no call is lost and none takes effect twice."""

EPILOG = """\
common command lines:
  run a server:
    ambrosia-edge run server.py:Server --listen 127.0.0.1:7001 --peer client=127.0.0.1:7002
  run its client (in another terminal):
    ambrosia-edge run client.py:Client --listen 127.0.0.1:7002 --peer server=127.0.0.1:7001
  watch recovery happen, with processes killed on purpose:
    ambrosia-edge demo

An immortal's name defaults to its class name in lowercase (server, client above); peers
find each other by those names. 'ambrosia-edge COMMAND --help' explains one command."""


def build_parser() -> argparse.ArgumentParser:
    """The whole command line; separate from ``main`` so tests can inspect it."""
    # --debug is accepted before and after the subcommand. With SUPPRESS as its default a
    # subparser cannot reset a --debug given before the subcommand; the action object is shared
    # by every parser built from ``common``, so no set_defaults may give it another default.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--debug",
        action="store_true",
        default=argparse.SUPPRESS,
        help=f"show tracebacks for errors (also: {DEBUG_ENV}=1)",
    )
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[common],
    )
    parser.set_defaults(handler=None)
    parser.add_argument("--version", action="version", version=version_text())
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")
    for name, target in registered_commands().items():
        handler: Callable[[argparse.Namespace], int]
        try:
            command = load_command(target)
            command_parser = command.add_parser(sub, name, common)
            handler = command.main
        except Exception as exc:  # a third party's broken command must not break the others
            command_parser = sub.add_parser(
                name, parents=[common], help=f"(unavailable: {target} failed to load)"
            )
            handler = _unavailable(name, target, exc)
        command_parser.set_defaults(handler=handler)
    return parser


def _unavailable(name: str, target: str, exc: Exception) -> Callable[[argparse.Namespace], int]:
    def handler(args: argparse.Namespace) -> int:
        raise AmbrosiaError(f"command {name!r} ({target}) cannot be loaded: {exc}") from exc

    return handler


# ---------------------------------------------------------------------------------------------


def _debug_from_env() -> bool:
    return os.environ.get(DEBUG_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``ambrosia-edge`` console script and ``python -m ambrosia_edge``."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version and usage errors
        code = exc.code
        return code if isinstance(code, int) else (0 if code is None else 2)
    if args.handler is None:
        parser.print_help(sys.stderr)
        return 2
    debug = bool(getattr(args, "debug", False)) or _debug_from_env()
    try:
        return int(args.handler(args))
    except KeyboardInterrupt:
        return 130
    except AmbrosiaError as exc:
        if debug:
            traceback.print_exc()
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return DeposedError.exit_code if isinstance(exc, DeposedError) else 1
    except BrokenPipeError:
        # Output piped into `head` and the reader left: not an error worth a traceback.
        # Point stdout at /dev/null so the interpreter's final flush does not fail again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
