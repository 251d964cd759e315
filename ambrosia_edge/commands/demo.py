"""``ambrosia-edge demo``: watch exactly-once survive processes being killed."""

from __future__ import annotations

import argparse
from pathlib import Path

from . import call

__all__ = ["add_parser", "main"]

DEMO_DESCRIPTION = """\
Run a client and a server, kill them at random moments, restart them, and check that every
call took effect exactly once."""


def add_parser(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    common: argparse.ArgumentParser,
) -> argparse.ArgumentParser:
    demo = subparsers.add_parser(
        name,
        parents=[common],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        help="watch exactly-once survive processes being killed",
        description=DEMO_DESCRIPTION,
    )
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
    return demo


def main(args: argparse.Namespace) -> int:
    return call("ambrosia_edge.demo", "main", args.dir, args.calls, args.kills)


def _positive_int(text: str) -> int:
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text!r}")
    return int(text)


def _non_negative_int(text: str) -> int:
    if not text.strip().isdigit():
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 0, got {text!r}")
    return int(text)
