"""Active standby (paper §5.1): follow a log another instance writes, and take over from it.

Every instance of an immortal competes for its log's lease; the winner is the primary. An
instance that finds the lease held (``ambrosia-edge run`` started a second time, on this
machine or another) becomes a standby instead of failing: it replays the log as it grows,
with a :class:`~ambrosia_edge.recovery.Replayer` reading on after the last record it read
(every file reopened, so a shared mount shows the primary's appends), tries for the lease every
:data:`POLL` seconds, and answers peers that reach it with a REFUSE of code ``standby``, so that
their senders try the name's next address at once.

Once the lease is its own, the standby reads what is left of the log (now as its writer, so a
torn tail is cut), and :meth:`Replayer.finish` makes it the primary of a new epoch: from there
on it is exactly a process that has just recovered, and ``Runtime.serve`` takes it live the
same way. How soon the lease passes is the tier's: the kernel drops a dead holder's ``flock``
at once (local disk); a fencing lease is taken over when its holder's process is gone from this
host, or once it has gone unrenewed for its lifetime (``--lease-ttl``).

A standby does not publish its address, run impulse sources or serve the control socket: none
of what runs only on a primary starts before it is one.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable
from typing import Any

import anyio
import anyio.from_thread

from . import handshake
from .errors import (
    ConnectionClosed,
    ListenError,
    LogLockedError,
    ProtocolError,
    StandbyError,
    StoreError,
)
from .kinds import PeerAddress
from .lease import lease_of
from .recovery import LogChangedError, Replayer
from .store import LogStore
from .transport import Link, Transport

__all__ = ["POLL", "describe_holder", "follow_until_primary"]

log = logging.getLogger("ambrosia_edge")

#: How often a standby looks for new pages and tries for the lease, in seconds: most of what a
#: failover on the local tier costs, and a few cheap system calls each time.
POLL = 0.02
#: Failed reads in a row (a read racing the writer) before the replay starts over.
_RETRIES = 50


def describe_holder(store: LogStore) -> str:
    """Who holds ``store``'s lease, as one phrase: "pid 4242 on host pi at 10.0.0.5:7001"."""
    lease = lease_of(store)
    holder = lease.info().holder if lease is not None else None
    if holder is None:
        return "another process"
    text = f"pid {holder.pid} on host {holder.host}"
    if holder.address:
        text += f" at {holder.address}"
    if holder.epoch is not None:
        text += f" (epoch {holder.epoch})"
    return text


def follow_until_primary(
    replayer: Callable[[bool], Replayer],
    store: LogStore,
    *,
    name: str,
    transport: Transport,
    listen: PeerAddress | None,
    handshake_timeout: float = 10.0,
    poll: float = POLL,
) -> Replayer:
    """Follow ``store`` as a standby until this process holds its lease; return the replay,
    finished (this process the primary in a new epoch).

    ``replayer(read_only)`` starts a replay from the newest checkpoint. Blocks the calling
    thread; the refusals to peers are served by an event loop of their own in another thread.
    """
    with _refusing(name, transport, listen, handshake_timeout):
        replay = replayer(True)
        failures = 0
        while True:
            try:
                replay.run()
                failures = 0
            except LogChangedError as exc:
                log.info("%s: %s; the standby replays from the newest checkpoint again", name, exc)
                replay = replayer(True)
                continue
            except StoreError as exc:
                # a read that raced the writer (or retention deleting a chunk behind us)
                failures += 1
                if failures >= _RETRIES:
                    log.info("%s: %s; the standby replays from the newest checkpoint", name, exc)
                    replay, failures = replayer(True), 0
            try:
                store.open()
                break
            except LogLockedError:
                pass
            time.sleep(poll)
            try:
                replay.follow()
            except LogChangedError as exc:
                log.info("%s: %s; the standby replays from the newest checkpoint again", name, exc)
                replay = replayer(True)
            except StoreError:
                failures += 1
    started = time.monotonic()
    replay.read_only = False
    try:
        replay.follow()
        replay.run()
    except LogChangedError as exc:
        log.info("%s: %s; recovering from the newest checkpoint", name, exc)
        replay = replayer(False)
        replay.run()
    replay.finish()
    log.info(
        "%s: the standby holds the log now; replayed its tail in %.3f s",
        name,
        time.monotonic() - started,
    )
    return replay


@contextlib.contextmanager
def _refusing(name: str, transport: Transport, listen: PeerAddress | None, timeout: float) -> Any:
    """Listen on ``listen`` meanwhile, refusing every peer as a standby (if it can be bound:
    on the primary's own address, this instance listens there once it has taken over)."""
    if listen is None:
        yield
        return
    with anyio.from_thread.start_blocking_portal() as portal:
        try:
            future, port = portal.start_task(
                transport.serve, listen.host, listen.port, _refuser(name, timeout)
            )
        except ListenError as exc:
            log.info("%s: the standby listens once it has taken over (%s)", name, exc)
            yield
            return
        log.info("%s: standby listening on %s:%s, sending peers on", name, listen.host, port)
        try:
            yield
        finally:
            future.cancel()
            with contextlib.suppress(BaseException):
                future.exception()


def _refuser(name: str, timeout: float) -> Callable[[Link], Any]:
    async def refuse(link: Link) -> None:
        with (
            anyio.move_on_after(min(timeout, 5.0)),
            contextlib.suppress(ConnectionClosed, ProtocolError),
        ):
            hello = await handshake.accept(link, nonce=os.urandom)
            await handshake.refuse(
                link,
                StandbyError(
                    f"{name} here is a standby (from {hello.source}); try its other addresses"
                ),
            )

    return refuse
