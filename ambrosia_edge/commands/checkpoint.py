"""``ambrosia-edge checkpoint``: ask a running immortal to checkpoint now, on any tier."""

from __future__ import annotations

import argparse
import os
import socket

from ..errors import AmbrosiaError, ConfigError
from . import log_url

__all__ = ["add_parser", "main"]

CHECKPOINT_DESCRIPTION = """\
Ask a running immortal to take a checkpoint now rather than when its log next passes
--checkpoint-bytes. The request goes through the control socket the immortal serves on this
machine (see 'ambrosia-edge run'), whatever storage its log is on; SIGUSR1 to the process
asks the same."""


def add_parser(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    common: argparse.ArgumentParser,
) -> argparse.ArgumentParser:
    checkpoint = subparsers.add_parser(
        name,
        parents=[common],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        help="ask a running immortal to checkpoint now",
        description=CHECKPOINT_DESCRIPTION,
        epilog="examples:\n  ambrosia-edge checkpoint server\n"
        "  ambrosia-edge checkpoint ./logs/server\n"
        "  ambrosia-edge checkpoint server --log /var/lib/ambrosia/server --wait",
    )
    checkpoint.add_argument(
        "name_or_log",
        metavar="NAME_OR_LOG",
        help="the immortal's name (default log location) or its log directory or URL",
    )
    checkpoint.add_argument("--log", metavar="URL", help="its log, if not at the default location")
    checkpoint.add_argument(
        "--wait", action="store_true", help="return once the checkpoint is stored, not requested"
    )
    return checkpoint


def main(args: argparse.Namespace) -> int:
    from .. import control
    from ..store import open_store

    url = args.log if args.log is not None else log_url(args.name_or_log)
    who = args.name_or_log
    try:
        store: object = open_store(url)
    except ConfigError:
        store = None  # a tier not installed here: its URL is its identity, as for the server
    identity = control.log_identity(store) if store is not None else url
    message = {"op": "checkpoint", "wait": bool(args.wait)}
    for path in control.find_sockets(identity):
        try:
            reply = control.request(path, message, timeout=control.WAIT_DEFAULT + 10.0)
        except OSError:
            continue  # left behind by a killed process; the next start replaces it
        if "checkpoint" in reply:
            print(f"{who} (pid {reply['pid']}) stored checkpoint {reply['checkpoint']}")
        else:
            print(f"asked {who} (pid {reply['pid']}) to checkpoint")
        return 0
    # a name says which socket it would be; a log location only which directory and digest
    named = args.log is not None or url != os.path.expanduser(who)
    where = control.socket_path(who if named else "*", identity)
    raise AmbrosiaError(_nothing_running(who, where, store))


def _nothing_running(who: str, path: object, store: object) -> str:
    """Say nothing answers, and what the log's lease knows about a writer elsewhere."""
    from ..lease import lease_of

    message = f"no running immortal {who} (no control socket at {path})"
    lease = lease_of(store)
    holder = lease.info().holder if lease is not None else None
    if holder is None or holder.pid is None:
        return message
    if holder.host is not None and holder.host != socket.gethostname():
        return (
            f"{who!r} runs on host {holder.host!r} (per its log's lease), not here; run this "
            "command there"
        )
    return (
        f"{message}; its log names pid {holder.pid} as its writer: if that process runs, it is "
        "still recovering, or it is of a version without control sockets"
    )
