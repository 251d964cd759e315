"""The immortal coordinator: logs every input before it runs, and keeps links healed (§3.3).

Data path, for one process::

    peer DATA ─► accept_batch ─► pending page ─► committer: write + fsync (log writer thread)
        ─► durable queue ─► dispatcher: executor runs the page ─► outputs ─► senders ─► peers
                        └─► ACK to each source (its durable watermark) ─► source trims

Batching is adaptive everywhere: while the committer writes one page, arrivals join the next;
while a sender waits on the socket, new output joins its next DATA frame. Nothing waits on a
timer. Checkpoints are stored by a task of their own, while pages go on into the new chunk.

The parts live in modules of their own, one concept each: :mod:`.committer` (where a page is
committed), :mod:`.dispatcher` (where it runs), :mod:`.checkpointing` (where a checkpoint is
taken, and retention), :mod:`.peers` (where peers connect; the handshake is
:mod:`.handshake`), and :mod:`.handover` (handing the immortal over to a new instance, the
old side of a live migration). They are mixins of one class rather than objects pointing at
each other: the per-message path reads and writes state of several parts (watermarks, the
pending page, output buffers), and one object keeps each of those a single attribute lookup,
as tuned. Each part declares, under ``TYPE_CHECKING``, what it uses of the others. This module
holds the state they share, the outbox the executor sends through, ``snapshot``/``restore``
for checkpoints, and ``run``, which starts the tasks.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc

from . import wire
from .checkpoint import CoordinatorState
from .checkpointing import CheckpointBuilder, Checkpointing
from .committer import Clock, Committer, LogWriterFactory
from .coordinator_options import CoordinatorOptions
from .discovery import Discovery, StaticDiscovery
from .dispatcher import Dispatcher, Runner
from .errors import CodecError
from .handover import Handover
from .handshake import NonceSource
from .kinds import PeerAddress
from .logwriter import LogWriter
from .outputs import Output, Thunk
from .peers import Peers
from .publishing import MQTT_OUT, Outlet
from .store import LogStore
from .transport import Transport
from .wakeup import Wakeup

__all__ = ["MAX_MESSAGE", "Coordinator", "CoordinatorOptions", "CoordinatorState"]

log = logging.getLogger("ambrosia_edge")

#: One message must fit in a quarter of wire.MAX_FRAME (a DATA batch stops at half).
MAX_MESSAGE = wire.MAX_FRAME // 4


class _Unhosted:
    """The executor of a coordinator that hosts no immortal (one that only receives and logs,
    in a unit test): it is always quiescent, and running a page is an error."""

    quiescent = True
    suspended_handlers: Sequence[str] = ()

    def dispatch_batch(self, source: str, batch: bytes, count: int) -> None:
        raise RuntimeError("this coordinator hosts no immortal: it cannot run a page")


def _unhosted(outbox: Coordinator) -> Runner:
    return _Unhosted()


class Coordinator(Committer, Dispatcher, Checkpointing, Peers, Handover):
    """Owns one immortal's log, its input watermarks, its output buffers and its links.

    The executor and the coordinator need each other: the executor sends through the
    coordinator (its outbox), the coordinator runs pages through the executor. So the
    coordinator takes a factory, ``executor``, and calls it with itself once its outbox is
    ready, e.g. ``executor=functools.partial(Executor, name, obj)``: neither is ever seen
    half-built, and a test swaps in a stand-in the same way. The other collaborators are
    arguments too, with the defaults a process uses: ``discovery`` (the peers' addresses;
    none known by default), ``clock`` (times appends on the loop), ``nonce`` (the handshake's
    fresh nonces) and ``log_writer`` (builds the thread that writes large pages).
    """

    def __init__(
        self,
        name: str,
        store: LogStore,
        transport: Transport,
        options: CoordinatorOptions | None = None,
        *,
        discovery: Discovery | None = None,
        executor: Callable[[Coordinator], Runner] = _unhosted,
        on_checkpoint: CheckpointBuilder | None = None,
        clock: Clock = time.perf_counter,
        nonce: NonceSource = os.urandom,
        log_writer: LogWriterFactory = LogWriter,
    ) -> None:
        self.name = name
        self.store = store
        self.transport = transport
        self.options = options if options is not None else CoordinatorOptions()
        self.discovery: Discovery = discovery if discovery is not None else StaticDiscovery()
        #: builds the checkpoint (chunk, first page) at this dispatch point; None if not quiescent
        self.on_checkpoint = on_checkpoint
        self.epoch = 0
        self.next_page = 1
        self.chunk = 0
        self.live = False
        #: the version of the immortal's class that runs the pages now, written in each chunk
        #: header so that a replay knows where a live upgrade converted the state
        self.class_version: int | None = None
        #: this log's id (incarnation.py), and the ids of the peers' logs as last seen
        self.incarnation: str | None = None
        self.peer_incarnations: dict[str, str] = {}
        #: links stopped for good, and why (a peer's new incarnation): shown by ``status``
        self.stopped_links: dict[str, str] = {}
        self.outputs: dict[str, Output] = {}
        #: the broker that takes this immortal's publishes (set before run); None: no broker
        self.publishes_to: str | None = None
        self.received: dict[str, list[int]] = {}  # source -> [total, replayable] (incl. pending)
        self.durable: dict[str, tuple[int, int]] = {}  # logged
        self.dispatched: dict[str, tuple[int, int]] = {}  # executed (what a checkpoint holds)
        self._wake_sender: dict[str, Wakeup] = {}
        self._output_room = Wakeup()
        self.stats = {
            "pages": 0,
            "messages": 0,
            "refused": 0,
            "sealed_ahead": 0,
            "run_ahead": 0,  # pages of our own messages run while they were flushed
            "chained": 0,  # ... of which while pages before them were still being flushed
            "timed_out": 0,  # connections closed for taking too long over the handshake
            "turned_away": 0,  # connections refused because too many were in the handshake
        }
        self._init_committer(store, log_writer, clock)
        self._init_dispatcher()
        self._init_checkpointing()
        self._init_peers(nonce)
        self._init_handover()
        self.executor: Runner = executor(self)  # last: the outbox is ready

    # --- outbox, used by the executor ---------------------------------------------------

    def output(self, destination: str) -> Output:
        out = self.outputs.get(destination)
        if out is None:
            out = self.outputs[destination] = Output(destination)
            if self._ahead and destination != self.name:
                out.hold()  # made by a page that is running ahead of its flush (committer.py)
        return out

    def send(self, destination: str, message: bytes, *, impulse: bool) -> None:
        if len(message) > MAX_MESSAGE:
            raise CodecError(
                f"a message of {len(message)} bytes to {destination} is over the "
                f"{MAX_MESSAGE}-byte limit; send large data in pieces"
            )
        out = self.outputs.get(destination)
        if out is None:
            out = self.output(destination)
            if self.live:
                self._warn_if_unreachable(destination)
        out.append(message, impulse=impulse)
        if self.live and not self._in_page:
            # (a page's sends are woken once, when the page has run: see _dispatch)
            self._sender_wakeup(destination).set()

    def send_thunk_to_self(self, thunk: Thunk) -> None:
        self.output(self.name).append_thunk(thunk)
        if self.live:
            self._sender_wakeup(self.name).set()

    def send_impulse_to_self(self, message: bytes) -> int:
        """Send an impulse to ourselves (live only; impulse sources use it, see feed.py); its
        total number on the link to ourselves, durable once ``on_self_durable`` reports a total
        that reaches it."""
        out = self.output(self.name)
        if out.rebase_pending:
            # the self-sender numbers the link when it first runs, which may come after a
            # source sends: number it now, from the same marks (rebasing it twice is the same
            # as once: until that sender runs, nothing is sent on the link, trimmed from it or
            # received)
            mark = self.received.get(self.name, [0, 0])
            out.rebase(mark[0], mark[1])
        self.send(self.name, message, impulse=True)
        return out.next_total - 1

    # --- the outlet, used by the MQTT publisher (publishing.py) ---------------------------

    def wakeup(self, destination: str) -> Wakeup:
        return self._sender_wakeup(destination)

    def acknowledged(self, destination: str, replayable: int) -> None:
        """A receiver that is not an immortal (the MQTT broker) holds everything up to
        ``replayable`` on an output whose totals are its replayable numbers: trim it, and log
        the mark with the next page, as a peer's ACK is."""
        self.output(destination).trim(replayable)
        self._trims[destination] = replayable
        self._output_room.set()

    def _sender_wakeup(self, destination: str) -> Wakeup:
        wake = self._wake_sender.get(destination)
        if wake is None:
            wake = self._wake_sender[destination] = Wakeup()
        return wake

    # --- checkpoints: the coordinator's part ----------------------------------------------

    def snapshot(self) -> CoordinatorState:
        """The coordinator's part of a checkpoint taken now, between pages."""
        return CoordinatorState(
            epoch=self.epoch,
            next_page=self.next_page,
            inputs=dict(self.dispatched),
            outputs={
                destination: (out.next_replayable, list(out.replayable_entries()))
                for destination, out in self.outputs.items()
            },
            incarnation=self.incarnation,
            peers=dict(self.peer_incarnations),
        )

    def restore(self, state: CoordinatorState) -> None:
        """Start from a checkpoint's coordinator part, before replaying the pages after it."""
        self.epoch = state.epoch
        self.next_page = state.next_page
        self.incarnation = state.incarnation
        self.peer_incarnations.update(state.peers)
        for source, mark in state.inputs.items():
            self.received[source] = list(mark)
            self.durable[source] = mark
            self.dispatched[source] = mark
        for destination, (next_replayable, entries) in state.outputs.items():
            self.output(destination).restore(next_replayable, entries)

    def new_epoch(self) -> None:
        """Replay is over and this process becomes the primary: a new epoch, and impulses that
        replay regenerated are dropped, never sent (paper §4.2, behaviour 4)."""
        self.epoch += 1
        for out in self.outputs.values():
            out.drop_impulses()

    # --- running ------------------------------------------------------------------------------

    def _warn_if_unreachable(self, destination: str) -> None:
        if destination == MQTT_OUT:
            if self.publishes_to is None:
                log.warning(
                    "%s: publishes wait in memory: no MQTT broker is configured "
                    "(add --mqtt mqtt://HOST:PORT)",
                    self.name,
                )
            return
        if destination != self.name and destination not in self.discovery.names():
            if not isinstance(self.discovery, StaticDiscovery):
                log.info(
                    "%s: calls to %r wait in memory until discovery finds it",
                    self.name,
                    destination,
                )
                return
            log.warning(
                "%s: calls to %r wait in memory: no address is known for it "
                "(add --peer %s=HOST:PORT)",
                self.name,
                destination,
                destination,
            )

    async def run(self, *, task_status: Any = anyio.TASK_STATUS_IGNORED) -> None:
        """Go live: start the committer, the dispatcher and every link. Runs until cancelled."""
        self.live = True
        for destination in self.outputs:  # output regenerated by replay (a replay says nothing)
            self._warn_if_unreachable(destination)
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._committer)
            tg.start_soon(self._dispatcher)
            tg.start_soon(self._checkpointer)
            port = None
            listen = self.options.listen
            if listen is not None:
                port = await tg.start(
                    self.transport.serve, listen.host, listen.port, self.serve_link
                )
                await self.discovery.publish(
                    self.name,
                    PeerAddress(listen.host, port),
                    epoch=self.epoch,
                    incarnation=self.incarnation,
                )
            tg.start_soon(self._self_sender)
            # a sender for each immortal discovery knows now (the --peer table, statically),
            # and for each it comes to know later
            senders: set[str] = set()
            changes = self.discovery.changes()  # from now: none is missed after names()
            for destination in self.discovery.names():
                if destination != self.name:
                    senders.add(destination)
                    tg.start_soon(self._sender, destination)
            tg.start_soon(self._follow_discovery, changes, tg, senders)
            task_status.started(port)

    async def _follow_discovery(
        self, changes: AsyncIterator[str], tg: anyio.abc.TaskGroup, senders: set[str]
    ) -> None:
        """Start a sender for each immortal that discovery tells of after we went live, and
        tell a running one that its destination's addresses changed (it retries at once)."""
        try:
            async for destination in changes:
                if destination == self.name:
                    continue
                if destination not in senders:
                    senders.add(destination)
                    tg.start_soon(self._sender, destination)
                else:
                    self._moved(destination).set()
        finally:
            aclose = getattr(changes, "aclose", None)
            if aclose is not None:
                with anyio.CancelScope(shield=True):
                    await aclose()


if TYPE_CHECKING:

    def _outlet(coordinator: Coordinator) -> Outlet:
        """The type checker's proof that the coordinator is what the MQTT publisher needs."""
        return coordinator
