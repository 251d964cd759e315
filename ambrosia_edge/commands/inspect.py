"""``ambrosia-edge inspect``: show what a log holds, without disturbing its writer."""

from __future__ import annotations

import argparse

from . import call, log_url

__all__ = ["add_parser", "main"]

INSPECT_DESCRIPTION = """\
Show what a log holds: checkpoints, chunks, and the records in them. The immortal may be
running or stopped; nothing is modified."""


def add_parser(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    common: argparse.ArgumentParser,
) -> argparse.ArgumentParser:
    inspect = subparsers.add_parser(
        name,
        parents=[common],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        help="show what a log holds",
        description=INSPECT_DESCRIPTION,
        epilog="examples:\n  ambrosia-edge inspect server\n"
        "  ambrosia-edge inspect ./logs/server --json",
    )
    inspect.add_argument(
        "log", metavar="LOG", help="an immortal's name (default log location) or a log URL/path"
    )
    inspect.add_argument("--json", action="store_true", help="machine-readable output")
    return inspect


def main(args: argparse.Namespace) -> int:
    return call("ambrosia_edge.inspection", "inspect_log", log_url(args.log), args.json)
