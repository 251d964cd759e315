"""``ambrosia-edge retrotest``: does new code behave as the old did on the recorded history?"""

from __future__ import annotations

import argparse
import sys

from ..errors import AmbrosiaError
from . import log_url
from .replay import _checkpoint

__all__ = ["add_parser", "main"]

RETROTEST_DESCRIPTION = """\
Replay a log's recorded inputs through NEW_TARGET beside the code that recorded them (the class
its checkpoint names, or --old-target), message by message, and report the first message on
which they differ: the message (number, page, source and sequence number, method, arguments)
and what differed: the calls it made (destination, method, arguments), what it returned or
raised to its caller, or, with --compare-state, the state after it (path by path). When the
classes declare different versions, NEW_TARGET's upgrade() converts the checkpoint's state.

Read-only, as 'ambrosia-edge replay': the log may be in use. Exit status: 0 when nothing
diverged, 1 at the first divergence (so it can gate a deployment), 2 when the test could not
be run (no such log, class or checkpoint)."""


def add_parser(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    common: argparse.ArgumentParser,
) -> argparse.ArgumentParser:
    retrotest = subparsers.add_parser(
        name,
        parents=[common],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        help="check new code against the behaviour recorded in a log",
        description=RETROTEST_DESCRIPTION,
        epilog="examples:\n  ambrosia-edge retrotest ./logs/server app_v2:Server\n"
        "  ambrosia-edge retrotest ./logs/server app_v2.py:Server --checkpoint 0 --compare-state",
    )
    retrotest.add_argument(
        "log", metavar="LOG_URL", help="the log: an immortal's name (default location), path or URL"
    )
    retrotest.add_argument(
        "new_target", metavar="NEW_TARGET", help="the new code, module:Class or file.py:Class"
    )
    retrotest.add_argument(
        "--checkpoint",
        metavar="N",
        type=_checkpoint,
        default=-1,
        help="start from checkpoint N, or 'none' for the log's start (default: the newest)",
    )
    retrotest.add_argument(
        "--old-target",
        metavar="MODULE:CLASS",
        help="the recorded behaviour's code (default: the class the checkpoint names)",
    )
    retrotest.add_argument(
        "--compare-state",
        action="store_true",
        help="also compare the two states after every message (slower)",
    )
    return retrotest


def main(args: argparse.Namespace) -> int:
    from ..retrotest import retrotest

    try:
        divergence, old, new = retrotest(
            log_url(args.log),
            args.new_target,
            old=args.old_target,
            checkpoint=args.checkpoint,
            compare_state=args.compare_state,
        )
    except AmbrosiaError as exc:
        print(f"ambrosia-edge: error: {exc}", file=sys.stderr)
        return 2
    old_name = f"old ({_path(type(old.obj))})"
    new_name = f"new ({_path(type(new.obj))})"
    if divergence is not None:
        print(divergence.report(old_name, new_name))
        return 1
    origin = (
        "the log's start"
        if old.checkpoint_number is None
        else f"checkpoint {old.checkpoint_number}"
    )
    print(
        f"no divergence: {new.messages - _start(old)} messages ({old.pages} pages) from {origin} "
        f"ran the same through {new_name} as through {old_name}"
        + (", states included" if args.compare_state else "")
    )
    return 0


def _path(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def _start(replayer: object) -> int:
    from ..recovery import Replayer

    assert isinstance(replayer, Replayer)
    cp = replayer.checkpoint
    return 0 if cp is None else sum(total for total, _ in cp.inputs.values())
