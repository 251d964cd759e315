"""The ``ambrosia-edge`` command.

The runtime, the demo and the log inspector are imported only by the subcommand that needs
them: ``--help`` and ``version`` stay fast on a Raspberry Pi, and a broken optional part cannot
stop the parts that do not use it.

Exit codes: 0 success, 1 an error the tool reported (message on stderr, no traceback unless
``--debug`` or ``AMBROSIA_EDGE_DEBUG=1``), 2 a command line argparse rejected, 130 Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import re
import signal
import socket
import sys
import traceback
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as dist_version
from pathlib import Path
from urllib.parse import unquote, urlsplit

import cbor2

from .config import Settings, add_run_arguments, default_log_url, settings_from_args
from .errors import AmbrosiaError, ConfigError

__all__ = ["build_parser", "build_run_settings", "main", "read_lock_pid"]

PROG = "ambrosia-edge"
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

RUN_DESCRIPTION = """\
Start one immortal: load the class, recover its state from the log (newest checkpoint, then
replay), then serve calls and make its own. Stop it with Ctrl-C or kill it; starting it again
with the same --name and --log resumes exactly where the log ends."""

RUN_EPILOG = """\
TARGET is path/to/file.py:Class or package.module:Class.

examples:
  ambrosia-edge run counter.py:Counter --listen 0.0.0.0:7001
  ambrosia-edge run shop.orders:Orders --name orders --peer billing=10.0.0.5:7002
  ambrosia-edge run --config orders.toml --no-fsync

a config file holds the same settings, with flags taking precedence:
  target = "counter.py:Counter"
  listen = "127.0.0.1:7001"
  checkpoint_bytes = "64MiB"
  secret_env = "COUNTER_SECRET"
  [peers]
  client = "127.0.0.1:7002"

sizes accept 1048576, 64MiB (or 64M, binary) and 64MB (decimal).
The deployment secret comes from --secret-env VAR, else $AMBROSIA_EDGE_SECRET, else the file."""

CHECKPOINT_DESCRIPTION = """\
Ask a running immortal to take a checkpoint now rather than when its log next passes
--checkpoint-bytes. The request is a SIGUSR1 to the process that holds the log's LOCK file, so
it works only on the same machine and for logs on local disk."""

INSPECT_DESCRIPTION = """\
Show what a log holds: checkpoints, chunks, and the records in them. The immortal may be
running or stopped; nothing is modified."""

DEMO_DESCRIPTION = """\
Run a client and a server, kill them at random moments, restart them, and check that every
call took effect exactly once."""


def _version() -> str:
    try:
        return dist_version(PROG)
    except PackageNotFoundError:
        return "unknown"


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
    raw = argparse.RawDescriptionHelpFormatter

    parser = argparse.ArgumentParser(
        prog=PROG, description=DESCRIPTION, epilog=EPILOG, formatter_class=raw, parents=[common]
    )
    parser.set_defaults(handler=None)
    parser.add_argument("--version", action="version", version=f"{PROG} {_version()}")
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")

    run = sub.add_parser(
        "run",
        parents=[common],
        formatter_class=raw,
        help="start one immortal (recovering it from its log)",
        description=RUN_DESCRIPTION,
        epilog=RUN_EPILOG,
    )
    run.set_defaults(handler=_cmd_run)
    add_run_arguments(run)

    demo = sub.add_parser(
        "demo",
        parents=[common],
        formatter_class=raw,
        help="watch exactly-once survive processes being killed",
        description=DEMO_DESCRIPTION,
    )
    demo.set_defaults(handler=_cmd_demo)
    demo.add_argument(
        "--dir", type=Path, help="keep logs here (default: a fresh temporary directory)"
    )
    demo.add_argument(
        "--calls", type=_positive_int, default=200, metavar="N", help="calls to make (default: 200)"
    )
    demo.add_argument(
        "--kills",
        type=_non_negative_int,
        default=6,
        metavar="K",
        help="times to kill a process (default: 6)",
    )

    inspect = sub.add_parser(
        "inspect",
        parents=[common],
        formatter_class=raw,
        help="show what a log holds",
        description=INSPECT_DESCRIPTION,
        epilog="examples:\n  ambrosia-edge inspect server\n"
        "  ambrosia-edge inspect ./logs/server --json",
    )
    inspect.set_defaults(handler=_cmd_inspect)
    inspect.add_argument(
        "log", metavar="LOG", help="an immortal's name (default log location) or a log URL/path"
    )
    inspect.add_argument("--json", action="store_true", help="machine-readable output")

    checkpoint = sub.add_parser(
        "checkpoint",
        parents=[common],
        formatter_class=raw,
        help="ask a running immortal to checkpoint now",
        description=CHECKPOINT_DESCRIPTION,
        epilog="examples:\n  ambrosia-edge checkpoint server\n"
        "  ambrosia-edge checkpoint ./logs/server\n"
        "  ambrosia-edge checkpoint server --log /var/lib/ambrosia/server",
    )
    checkpoint.set_defaults(handler=_cmd_checkpoint)
    checkpoint.add_argument(
        "name_or_log",
        metavar="NAME_OR_LOG",
        help="the immortal's name (default log location) or its log directory",
    )
    checkpoint.add_argument("--log", metavar="URL", help="its log, if not at the default location")

    version = sub.add_parser("version", parents=[common], help="print the version")
    version.set_defaults(handler=_cmd_version)
    return parser


def _positive_int(text: str) -> int:
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text!r}")
    return int(text)


def _non_negative_int(text: str) -> int:
    if not text.strip().isdigit():
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 0, got {text!r}")
    return int(text)


# ---------------------------------------------------------------------------------------------
# Commands


def build_run_settings(args: argparse.Namespace) -> Settings:
    """Turn parsed ``run`` arguments into Settings; the runtime is not touched."""
    return settings_from_args(args)


def _call(module_name: str, function: str, *call_args: object) -> int:
    """Import a sibling module only now, and report it missing as an error, not a traceback."""
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name != module_name:
            raise
        raise AmbrosiaError(f"{module_name} is missing from this installation") from exc
    result = getattr(module, function)(*call_args)
    return result if isinstance(result, int) else 0


def _cmd_run(args: argparse.Namespace) -> int:
    return _call("ambrosia_edge.runtime", "run_immortal", build_run_settings(args))


def _cmd_demo(args: argparse.Namespace) -> int:
    return _call("ambrosia_edge.demo", "main", args.dir, args.calls, args.kills)


def _cmd_inspect(args: argparse.Namespace) -> int:
    return _call("ambrosia_edge.inspection", "inspect_log", _log_url(args.log), args.json)


def _cmd_version(args: argparse.Namespace) -> int:
    print(f"{PROG} {_version()}")
    return 0


def _cmd_checkpoint(args: argparse.Namespace) -> int:
    url = args.log if args.log is not None else _log_url(args.name_or_log)
    directory = local_log_dir(url)
    lock = directory / "LOCK"
    who = args.name_or_log
    pid = read_lock_pid(lock)
    if pid is None:
        if not lock.exists():
            state = "does not exist (it has never run with this log)"
        elif _is_empty(lock):
            state = "is empty (its last run stopped cleanly)"
        else:
            state = "names no process"
        raise AmbrosiaError(f"no running instance of {who!r}: {lock} {state}")
    host = _lock_host(lock)
    if host is not None and host != socket.gethostname():
        raise AmbrosiaError(
            f"{who!r} runs on host {host!r} (per {lock}), not here; run this command there"
        )
    if _started_after(pid, lock):
        raise AmbrosiaError(
            f"no running instance of {who!r}: {lock} names process {pid}, but that process "
            "started after the lock was written, so it is another program reusing the pid"
        )
    usr1 = getattr(signal, "SIGUSR1", None)
    if usr1 is None:
        raise AmbrosiaError("checkpoint requests use SIGUSR1, which this platform does not have")
    try:
        os.kill(pid, usr1)
    except ProcessLookupError:
        raise AmbrosiaError(
            f"no running instance of {who!r}: process {pid} named in {lock} is gone"
        ) from None
    except PermissionError:
        raise AmbrosiaError(
            f"not allowed to signal process {pid} of {who!r} (run as the user that runs it)"
        ) from None
    print(f"asked {who} (pid {pid}) to checkpoint")
    return 0


def _log_url(name_or_log: str) -> str:
    """A bare name means the default log of that immortal; anything path-like is a location.

    Only explicit path syntax counts as a path, so a directory that happens to share the
    immortal's name in the current directory does not change what a name means.
    """
    path_like = (
        "://" in name_or_log
        or "/" in name_or_log
        or os.sep in name_or_log
        or name_or_log.startswith((".", "~"))
    )
    return os.path.expanduser(name_or_log) if path_like else default_log_url(name_or_log)


def local_log_dir(url: str) -> Path:
    """The directory of a log on local disk; other tiers have no LOCK file to read."""
    if "://" not in url:
        return Path(url).expanduser()
    parts = urlsplit(url)
    if parts.scheme != "file":
        raise ConfigError(
            f"log {url!r} is not on local disk; checkpoint requests need a directory or a "
            "file:// URL, for example: "
            "ambrosia-edge checkpoint server --log /var/lib/ambrosia/server"
        )
    if parts.netloc not in ("", "localhost"):
        raise ConfigError(f"log {url!r} names host {parts.netloc!r}; only local files can be used")
    return Path(unquote(parts.path))


_PID_RE = re.compile(r"\bpid\b\"?\s*[:=]?\s*\"?(\d+)", re.IGNORECASE)


def read_lock_pid(path: Path) -> int | None:
    """The pid recorded in a LOCK file, or None when there is no usable one.

    Accepts ``123``, ``pid 123``, ``pid=123``, ``pid: 123`` (on any line), JSON ``{"pid": 123}``
    and the same as CBOR. Pids 0 and 1 and negative numbers are refused: ``kill`` treats them as
    process groups or init, and a corrupt file must never turn a checkpoint request into that.
    """
    try:
        data = path.read_bytes()
    except OSError:
        return None
    candidates: list[object] = []
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is not None:
        with contextlib.suppress(ValueError):
            candidates.append(json.loads(text))
        match = _PID_RE.search(text)
        if match:
            candidates.append(int(match.group(1)))
        first = text.strip().splitlines()[0].strip() if text.strip() else ""
        if first.isascii() and first.isdigit():
            candidates.append(int(first))
    # cbor2 raises several exception types for input that is not CBOR.
    with contextlib.suppress(Exception):
        candidates.append(cbor2.loads(data))
    for candidate in candidates:
        pid = candidate.get("pid") if isinstance(candidate, dict) else candidate
        if isinstance(pid, int) and not isinstance(pid, bool) and pid > 1:
            return pid
    return None


def _is_empty(path: Path) -> bool:
    try:
        return not path.read_bytes().strip()
    except OSError:
        return False


def _lock_host(path: Path) -> str | None:
    """The host a LOCK file names, if it names one: a pid means nothing on another machine."""
    try:
        data = path.read_bytes()
    except OSError:
        return None
    for decode in (json.loads, cbor2.loads):
        # Either decoder raises several exception types for input in the other format.
        with contextlib.suppress(Exception):
            record = decode(data)
            if isinstance(record, dict) and isinstance(record.get("host"), str):
                return str(record["host"])
    return None


def _started_after(pid: int, lock: Path) -> bool:
    """Whether process ``pid`` began after ``lock`` was last written (so it reused the pid).

    A stale LOCK left by a killed process is normal here, and SIGUSR1 kills a process that does
    not handle it, so this guards an unrelated program that now has the pid. Linux only; where
    /proc is missing the answer is "no", which leaves the plain liveness check.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        boot = next(
            int(line.split()[1])
            for line in Path("/proc/stat").read_text().splitlines()
            if line.startswith("btime ")
        )
        ticks = int(stat.rpartition(")")[2].split()[19])
        started = boot + ticks / os.sysconf("SC_CLK_TCK")
        written = lock.stat().st_mtime
    except (OSError, ValueError, IndexError, StopIteration):
        return False
    # btime is whole seconds and the clock can be adjusted: only a clear gap counts.
    return started > written + 2.0


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
        return 1
    except BrokenPipeError:
        # Output piped into `head` and the reader left: not an error worth a traceback.
        # Point stdout at /dev/null so the interpreter's final flush does not fail again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
