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
from collections.abc import Callable, Iterator
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
#: How often a standby rewrites its record beside the lease, in seconds.
RECORD_EVERY = 1.0
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
    checkpoint: Callable[[Replayer, int], bytes | None] | None = None,
    poll: float = POLL,
) -> Replayer:
    """Follow ``store`` as a standby until this process holds its lease; return the replay,
    finished (this process the primary in a new epoch).

    ``replayer(read_only)`` starts a replay from the newest checkpoint. ``checkpoint(replay,
    chunk)`` builds checkpoint ``chunk`` from the replay as it stands (None while a handler is
    suspended); with it, and a tier that takes checkpoints from a standby, the standby writes
    each new chunk's checkpoint in the primary's place. Blocks the calling thread; the refusals
    to peers are served by an event loop of their own in another thread.
    """
    with _refusing(name, transport, listen, handshake_timeout) as address:
        follower = _Follower(replayer, store, name, checkpoint, address)
        try:
            follower.follow(poll)
        finally:
            follower.records.drop()
    replay = follower.replay
    started = time.monotonic()
    replay.on_chunk = None
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


class _Records:
    """This standby's record beside the lease (for tiers that keep one): rewritten every
    :data:`RECORD_EVERY` seconds, so the primary leaves checkpoints to it and ``status``
    names it."""

    def __init__(self, store: LogStore, address: str | None) -> None:
        lease = lease_of(store)
        self._record = getattr(lease, "record_standby", None)
        self._drop = getattr(lease, "drop_standby", None)
        self._address = address
        self._next = 0.0

    def refresh(self) -> None:
        now = time.monotonic()
        if self._record is not None and now >= self._next:
            self._next = now + RECORD_EVERY
            self._record(self._address)

    def drop(self) -> None:
        if self._drop is not None:
            self._drop()


class _Follower:
    """The standby's loop: replay what is there, write the checkpoints due, try for the lease."""

    def __init__(
        self,
        replayer: Callable[[bool], Replayer],
        store: LogStore,
        name: str,
        checkpoint: Callable[[Replayer, int], bytes | None] | None,
        address: str | None,
    ) -> None:
        self._replayer = replayer
        self.store = store
        self.name = name
        write = getattr(store, "write_standby_checkpoint", None)
        self._build = checkpoint if write is not None else None
        self._write: Callable[[int, bytes], bool] | None = write
        #: a chunk begun without its checkpoint, which this standby is to write
        self._due: int | None = None
        self.records = _Records(store, address)
        self.replay = self._start()

    def _start(self) -> Replayer:
        replay = self._replayer(True)
        self._due = None
        if self._build is not None:
            replay.on_chunk = self._chunk_begun
        return replay

    def _chunk_begun(self, chunk: int) -> None:
        checkpoints = self.store.list_checkpoints()
        if not checkpoints or chunk > checkpoints[-1]:
            self._due = chunk
            self._checkpoint()

    def _checkpoint(self) -> None:
        """Write the due checkpoint if the replay stands between two pages with no handler
        suspended; else try again after the next page."""
        due, replay = self._due, self.replay
        if due is None or not replay.peek_is_page_boundary:
            return
        assert self._build is not None and self._write is not None
        data = self._build(replay, due)
        if data is None:
            return
        if self._write(due, data):
            log.info(
                "%s: checkpoint %d written by the standby (%d bytes)", self.name, due, len(data)
            )
        self._due = None

    def follow(self, poll: float) -> None:
        """Return once this process holds the lease."""
        failures = 0
        started = time.monotonic()
        caught_up = False
        while True:
            self.records.refresh()
            try:
                while self.replay.step() is not None:
                    if self._due is not None:
                        self._checkpoint()
                failures = 0
                if not caught_up:
                    caught_up = True
                    log.info(
                        "%s: the standby has caught up with the log (page %d) in %.2f s",
                        self.name,
                        self.replay.coordinator.next_page - 1,
                        time.monotonic() - started,
                    )
            except LogChangedError as exc:
                log.info("%s: %s; the standby replays from the newest checkpoint", self.name, exc)
                self.replay = self._start()
                continue
            except StoreError as exc:
                # a read that raced the writer (or retention deleting a chunk behind us)
                failures += 1
                if failures >= _RETRIES:
                    log.info(
                        "%s: %s; the standby replays from the newest checkpoint", self.name, exc
                    )
                    self.replay, failures = self._start(), 0
            try:
                self.store.open()
                return
            except LogLockedError:
                pass
            time.sleep(poll)
            try:
                self.replay.follow()
            except LogChangedError as exc:
                log.info("%s: %s; the standby replays from the newest checkpoint", self.name, exc)
                self.replay = self._start()
            except StoreError:
                failures += 1


@contextlib.contextmanager
def _refusing(
    name: str, transport: Transport, listen: PeerAddress | None, timeout: float
) -> Iterator[str | None]:
    """Listen on ``listen`` meanwhile, refusing every peer as a standby (if it can be bound:
    on the primary's own address, this instance listens there once it has taken over); give
    the address peers reach this instance at."""
    if listen is None:
        yield None
        return
    with anyio.from_thread.start_blocking_portal() as portal:
        try:
            future, port = portal.start_task(
                transport.serve, listen.host, listen.port, _refuser(name, timeout)
            )
        except ListenError as exc:
            log.info("%s: the standby listens once it has taken over (%s)", name, exc)
            yield str(listen)
            return
        log.info("%s: standby listening on %s:%s, sending peers on", name, listen.host, port)
        try:
            yield str(PeerAddress(listen.host, port))
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
