"""``ambrosia-edge run``: host one immortal in this process until it is stopped."""

from __future__ import annotations

import argparse

from ..config import Settings, add_run_arguments, settings_from_args
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
    add_run_arguments(run)
    return run


def main(args: argparse.Namespace) -> int:
    return call("ambrosia_edge.runtime", "run_immortal", build_run_settings(args))


def build_run_settings(args: argparse.Namespace) -> Settings:
    """Turn parsed ``run`` arguments into Settings; the runtime is not touched."""
    return settings_from_args(args)
