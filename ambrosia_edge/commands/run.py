"""``ambrosia-edge run``: host one immortal in this process until it is stopped."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..config import Settings, load_settings
from . import call

__all__ = ["add_parser", "build_run_settings", "main"]

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


def add_parser(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    common: argparse.ArgumentParser,
) -> argparse.ArgumentParser:
    run = subparsers.add_parser(
        name,
        parents=[common],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        help="start one immortal (recovering it from its log)",
        description=RUN_DESCRIPTION,
        epilog=RUN_EPILOG,
    )
    run.add_argument("target", nargs="?", metavar="TARGET", help="file.py:Class or module:Class")
    run.add_argument(
        "--name",
        help="unique name of this immortal in the deployment (default: class name, lowercased)",
    )
    run.add_argument(
        "--log",
        metavar="URL",
        help="where its log lives: a directory or a storage URL "
        "(default: a per-user state directory named after --name)",
    )
    run.add_argument("--listen", metavar="HOST:PORT", help="accept calls from peers here")
    run.add_argument(
        "--peer",
        action="append",
        metavar="NAME=HOST:PORT",
        help="another immortal this one calls or answers; repeat for each peer",
    )
    run.add_argument("--config", metavar="FILE", help="TOML file with the same settings")
    run.add_argument(
        "--checkpoint-bytes",
        metavar="SIZE",
        help="checkpoint when the log since the last checkpoint passes SIZE (default: 64MiB)",
    )
    run.add_argument(
        "--keep-checkpoints",
        metavar="K",
        help="keep the newest K checkpoints and the logs after them (default: 2)",
    )
    run.add_argument(
        "--fsync",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="flush every log write to disk before running it; --no-fsync is faster but a "
        "power cut can lose the last inputs (default: on)",
    )
    run.add_argument(
        "--secret-env",
        metavar="VAR",
        help="read the deployment secret peers must share from environment variable VAR",
    )
    run.add_argument(
        "--page-bytes", metavar="SIZE", help="largest log page / input batch (default: 4MiB)"
    )
    run.add_argument(
        "--buffer-bytes",
        metavar="SIZE",
        help="unacknowledged output kept per peer before callers wait (default: 64MiB)",
    )
    return run


def main(args: argparse.Namespace) -> int:
    return call("ambrosia_edge.runtime", "run_immortal", build_run_settings(args))


def build_run_settings(args: argparse.Namespace) -> Settings:
    """Turn parsed ``run`` arguments into Settings; the runtime is not touched."""
    return load_settings(
        Path(args.config) if args.config is not None else None,
        target=args.target,
        name=args.name,
        log=args.log,
        listen=args.listen,
        peers=args.peer,
        checkpoint_bytes=args.checkpoint_bytes,
        keep_checkpoints=args.keep_checkpoints,
        fsync=args.fsync,
        secret_env=args.secret_env,
        page_bytes=args.page_bytes,
        buffer_bytes=args.buffer_bytes,
    )
