"""Who writes a log now: its lease, read without taking it, and the primary's own answer.

The lease says who holds the log, in which epoch, when it last renewed, and (where the lease
records it) the holder's listen address; a primary on this machine also answers on its control
socket (:mod:`.control`), which is the surest sign that it runs. ``status`` puts the two
together; it never takes the lease nor touches the log.
"""

from __future__ import annotations

import json
import socket
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any, TextIO

from . import control
from .errors import StoreError
from .lease import LeaseInfo, lease_of, process_alive
from .seal import find_seal
from .store import LogStore, open_store

__all__ = ["LogStatus", "print_status", "read_status"]

#: ``status``'s exit code when no primary holds the log (as ``systemctl status``).
EXIT_NOT_RUNNING = 3


@dataclass
class LogStatus:
    """What ``status --json`` prints."""

    log: str
    #: ``running`` (a primary holds the lease), ``stopped``, ``lapsed`` (its holder stopped
    #: renewing: killed, or paused), ``unknown`` (the lease cannot be read), ``in-process``,
    #: ``moved`` (the log is sealed: a live migration took the immortal elsewhere; seal.py)
    state: str
    #: the primary's listen address (``host:port``), or None
    primary: str | None = None
    pid: int | None = None
    host: str | None = None
    #: the lease's epoch (fencing tiers), else the running primary's epoch, else None
    epoch: int | None = None
    #: seconds since the lease was last renewed; None for a lease that is not renewed (flock)
    lease_age_s: float | None = None
    since: str | None = None
    #: addresses of the standbys following the log
    standbys: list[str] = field(default_factory=list)
    #: the newest checkpoint's number, or None
    checkpoint: int | None = None
    chunks: list[int] = field(default_factory=list)
    detail: str = ""
    #: the log's id (incarnation.py), as the running primary reports it
    incarnation: str | None = None
    #: links the primary stopped for good, and why (a peer's log was replaced)
    stopped_links: dict[str, str] = field(default_factory=dict)


def read_status(url: str) -> LogStatus:
    store = open_store(url)
    status = LogStatus(log=store.url, state="stopped")
    status.chunks = store.list_chunks()
    checkpoints = store.list_checkpoints()
    status.checkpoint = checkpoints[-1] if checkpoints else None
    lease = lease_of(store)
    if lease is None:
        status.state = "in-process"
        status.detail = (
            f"a {url.partition('://')[0]}:// log lives inside the process that writes it; "
            "nothing runs that another process could see"
        )
        return status
    _from_lease(status, lease.info(), getattr(lease, "ttl", None))
    standbys = getattr(lease, "standbys", None)  # recorded beside the lease, where a tier can
    if standbys is not None:
        status.standbys = [
            str(r.get("address") or f"pid {r.get('pid')} on {r.get('host')}") for r in standbys()
        ]
    reply = _ask_primary(store)
    if reply is None and status.state != "running":
        _from_seal(status, store)
    if reply is not None:
        status.state = "running"
        status.primary = reply.get("listen") or status.primary
        status.pid = reply.get("pid", status.pid)
        status.host = socket.gethostname()
        if status.epoch is None:
            status.epoch = reply.get("epoch")
        status.incarnation = reply.get("incarnation")
        status.stopped_links = dict(reply.get("stopped_links") or {})
        status.detail = "the primary answered on its control socket"
    return status


def _from_seal(status: LogStatus, store: LogStore) -> None:
    """A log handed over by a live migration says where the immortal went (seal.py)."""
    try:
        seal = find_seal(store, status.chunks)
    except (StoreError, OSError):
        return  # a damaged or vanishing chunk: inspect tells more
    if seal is not None:
        status.state = "moved"
        status.detail = (
            f"the log is sealed: the immortal moved to {seal.moved_to} (epoch {seal.epoch}) "
            f"on {seal.sealed_at}"
        )


def _from_lease(status: LogStatus, info: LeaseInfo, ttl: object) -> None:
    holder = info.holder
    status.detail = info.detail
    if holder is not None:
        status.epoch = holder.epoch
        status.pid, status.host, status.since = holder.pid, holder.host, holder.since
        if holder.renewed is not None:
            status.lease_age_s = round(max(0.0, time.time() - holder.renewed), 3)
    if info.state != "held" or holder is None:
        status.state = "unknown" if info.state == "unknown" else "stopped"
        status.pid = None
        return
    status.state = "running"
    status.primary = holder.address
    here = holder.host == socket.gethostname()
    gone = here and holder.pid is not None and not process_alive(holder.pid)
    lapsed = (
        isinstance(ttl, (int, float))
        and status.lease_age_s is not None
        and status.lease_age_s > ttl
    )
    if gone or lapsed:
        status.state = "lapsed"
        status.primary = None
        why = "its process is gone" if gone else f"not renewed for {status.lease_age_s:.1f} s"
        status.detail = f"the last holder stopped without releasing the lease ({why})"
    elif holder.renewed is None and not here:
        status.detail = "recorded on another host, so not checked here"


def _ask_primary(store: LogStore) -> dict[str, Any] | None:
    for path in control.find_sockets(control.log_identity(store)):
        try:
            return control.request(path, {"op": "status"}, timeout=5.0)
        except (OSError, control.ControlError):
            continue  # left behind by a killed process
    return None


def write_text(status: LogStatus, out: TextIO) -> None:
    out.write(f"log:         {status.log}\n")
    if status.state == "in-process":
        out.write(f"state:       nothing running ({status.detail})\n")
    elif status.state == "running":
        where = status.primary or "address not recorded"
        out.write(f"primary:     {where} (pid {status.pid} on {status.host})\n")
    else:
        out.write(f"primary:     none ({status.state}: {status.detail})\n")
    if status.epoch is not None:
        out.write(f"epoch:       {status.epoch}\n")
    if status.incarnation is not None:
        out.write(f"incarnation: {status.incarnation}\n")
    if status.lease_age_s is not None:
        out.write(f"lease:       renewed {status.lease_age_s:.1f} s ago\n")
    standbys = ", ".join(status.standbys) if status.standbys else "none"
    out.write(f"standbys:    {standbys}\n")
    checkpoint = status.checkpoint if status.checkpoint is not None else "none"
    out.write(f"checkpoint:  {checkpoint}\n")
    chunks = f"{status.chunks[0]}..{status.chunks[-1]}" if status.chunks else "none"
    out.write(f"chunks:      {chunks}\n")
    for peer, why in sorted(status.stopped_links.items()):
        out.write(f"stopped:     link to {peer}: {why}\n")


def print_status(url: str, as_json: bool) -> int:
    status = read_status(url)
    if as_json:
        json.dump(asdict(status), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        write_text(status, sys.stdout)
    return 0 if status.state == "running" else EXIT_NOT_RUNNING
