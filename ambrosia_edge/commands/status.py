"""``ambrosia-edge status``: who writes a log now, in which epoch, and its newest checkpoint."""

from __future__ import annotations

import argparse

from . import call, log_url

__all__ = ["add_parser", "main"]

STATUS_DESCRIPTION = """\
Show who is primary for a log (its listen address, pid and host), the epoch of its lease, how
long ago the lease was renewed, the standbys and the newest checkpoint. Reads the log's lease,
and asks the immortal itself when it runs on this machine; nothing is modified.

exit status: 0 when a primary holds the log, 1 on an error, 3 when nothing runs."""


def add_parser(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    common: argparse.ArgumentParser,
) -> argparse.ArgumentParser:
    status = subparsers.add_parser(
        name,
        parents=[common],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        help="show who is primary for a log, its epoch and lease",
        description=STATUS_DESCRIPTION,
        epilog="examples:\n  ambrosia-edge status server\n"
        "  ambrosia-edge status nfs:///mnt/share/app/server --json",
    )
    status.add_argument(
        "log", metavar="LOG_URL", help="a log URL or path, or an immortal's name (default log)"
    )
    status.add_argument("--json", action="store_true", help="machine-readable output")
    return status


def main(args: argparse.Namespace) -> int:
    return call("ambrosia_edge.logstatus", "print_status", log_url(args.log), args.json)
