"""The immortal coordinator: logs every input before it runs, and keeps links healed (§3.3).

Data path, for one process::

    peer DATA ─► accept_batch ─► pending page ─► committer: write + fsync (log writer thread)
        ─► durable queue ─► dispatcher: executor runs the page ─► outputs ─► senders ─► peers
                        └─► ACK to each source (its durable watermark) ─► source trims

Batching is adaptive everywhere: while the committer writes one page, arrivals join the next;
while a sender waits on the socket, new output joins its next DATA frame. Nothing waits on a
timer. A batch that finds the committer idle, with nothing more received behind it, is written
by the task that received it, a task switch sooner. A page that fills up while a large one is
being written is sealed at once and queued for the log writer's thread, which writes it right
after, so the disk does not idle while the loop hands it over. Checkpoints are stored by a
task of their own, while pages go on into the new chunk. Messages to oneself (self-calls,
``capture``) take the same path through a link that never leaves the process, so the log is
the single order of everything the immortal executes.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import logging
import os
import time
from collections import deque
from collections.abc import Awaitable, Callable
from functools import partial
from typing import TYPE_CHECKING, Any

import anyio
import anyio.lowlevel

from . import failpoints, wire
from .config import PeerAddress, Settings
from .errors import (
    AuthenticationError,
    CodecError,
    ConnectionClosed,
    ProtocolError,
)
from .logwriter import LogWriter
from .outputs import Output, Thunk
from .page import Entry, Page, chunk_header
from .records import BytesLike, RecordType, encode_record, encode_record_parts
from .store import LogStore
from .transport import Link, Transport
from .wakeup import Wakeup
from .wire import Frame

if TYPE_CHECKING:
    from .executor import Executor

log = logging.getLogger("ambrosia_edge")

MAX_BACKOFF = 5.0
#: Most full pages waiting for the log writer while it writes another (two measured ~10% faster
#: than one at 64 KiB messages, three no faster).
_SEALED_AHEAD = 2
#: A DATA frame must fit in wire.MAX_FRAME: batches stop at half of it, one message at a quarter.
MAX_BATCH = wire.MAX_FRAME // 2
#: The least time between two ACKs on one connection (docs/protocol.md 4.9).
ACK_INTERVAL = 0.002
#: A small append on the event loop must take less than this for the next to go there too.
INLINE_APPEND_BUDGET = 0.0005
MAX_MESSAGE = wire.MAX_FRAME // 4
#: Batches of messages this large (the first and the last) are handed to the transport in
#: pieces, not joined into one frame first: a copy of every byte saved. Small ones are joined:
#: one gathered write of thousands of pieces cost more than the copy (16 B messages: 0.98M
#: against 1.17M msg/s).
GATHER_FROM = 8 * 1024


class Coordinator:
    """Owns one immortal's log, its input watermarks, its output buffers and its links."""

    def __init__(
        self,
        name: str,
        store: LogStore,
        transport: Transport,
        settings: Settings,
        *,
        on_checkpoint: Callable[[int, int], bytes | None] | None = None,
    ) -> None:
        self.name = name
        self.store = store
        self.transport = transport
        self.settings = settings
        self.executor: Executor | None = None
        #: builds the checkpoint (chunk, first page) at this dispatch point; None if not quiescent
        self.on_checkpoint = on_checkpoint
        self.epoch = 0
        self.next_page = 1
        self.chunk = 0
        self.live = False
        self.outputs: dict[str, Output] = {}
        self.received: dict[str, list[int]] = {}  # source -> [total, replayable] (incl. pending)
        self.durable: dict[str, tuple[int, int]] = {}  # logged
        self.dispatched: dict[str, tuple[int, int]] = {}  # executed (what a checkpoint holds)
        self._applied_page = 0  # the last page executed, 0 before the first in this life
        self._in_page = False  # a live page is being executed
        self._pending: list[Entry] = []
        self._pending_bytes = 0
        # writes the pages the loop does not (large ones, and any while small appends are slow);
        # started and stopped by the committer
        self._writer = LogWriter(self._write, name)
        self._committer_idle = False  # waiting for input: an arrival may be written at once
        self._failure: BaseException | None = None  # of a page written on arrival
        #: small appends go on the event loop (store.py explains), while they are quick
        self._inline_limit: int = getattr(store, "inline_append_limit", 0)
        self._inline_ok = True
        self._append: Callable[[list[BytesLike]], None] = getattr(store, "append_parts", None) or (
            lambda parts: store.append(b"".join(parts))
        )
        self._trims: dict[str, int] = {}  # acks received since the last page
        self._have_input = Wakeup()
        self._page_room = Wakeup()
        self._output_room = Wakeup()
        self._durable_queue: deque[Page] = deque()
        self._drained = Wakeup()
        self._durable_changed = Wakeup()
        self._have_durable = Wakeup()
        self._dispatcher_idle = False
        self._wake_sender: dict[str, Wakeup] = {}
        self._ack_wanted: dict[str, Wakeup] = {}
        self._inbound: dict[str, Link] = {}
        self.log_bytes = 0  # since the last checkpoint
        #: take a checkpoint as soon as possible (first start, CLI ``checkpoint``, SIGUSR1)
        self.checkpoint_requested = False
        self._postponed_warned = False
        #: the checkpoint the checkpointer is to write (chunk, data), until it is stored
        self._unstored: tuple[int, bytes] | None = None
        self._have_checkpoint = Wakeup()
        self.stats = {"pages": 0, "messages": 0, "refused": 0, "sealed_ahead": 0}

    # --- outbox, used by the executor ---------------------------------------------------

    def output(self, destination: str) -> Output:
        out = self.outputs.get(destination)
        if out is None:
            out = self.outputs[destination] = Output(destination)
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

    # --- impulse sources (feed.py): impulses to ourselves, and when they are durable ---------

    #: told the link to ourselves' durable total each time a page holding messages on it is
    #: logged (from _self_ack: once a page, and only while a source runs)
    on_self_durable: Callable[[int], None] | None = None

    def send_impulse_to_self(self, message: bytes) -> int:
        """Send an impulse to ourselves (live only); its total number on the link to ourselves,
        durable once ``on_self_durable`` reports a total that reaches it."""
        out = self.output(self.name)
        if out.rebase_pending:
            # _self_sender numbers the link when it first runs, which may come after a source
            # sends: number it now, from the same marks (rebasing it twice is the same as once:
            # until that sender runs, nothing is sent on the link, trimmed from it or received)
            mark = self.received.get(self.name, [0, 0])
            out.rebase(mark[0], mark[1])
        self.send(self.name, message, impulse=True)
        return out.next_total - 1

    def _sender_wakeup(self, destination: str) -> Wakeup:
        wake = self._wake_sender.get(destination)
        if wake is None:
            wake = self._wake_sender[destination] = Wakeup()
        return wake

    # --- replay and dispatch ------------------------------------------------------------

    def apply_page(self, page: Page) -> None:
        """Execute one durable page: the same code for replay and for live operation."""
        executor = self.executor
        assert executor is not None
        if self._applied_page and page.number != self._applied_page + 1:
            # Executing out of log order would break exactly-once silently; stop loudly.
            raise RuntimeError(
                f"{self.name}: internal error: page {page.number} executed after page "
                f"{self._applied_page}; please report it (the log itself is intact)"
            )
        self._applied_page = page.number
        if not self.live:
            for destination, replayable in page.trims.items():
                self.output(destination).trim_replayable(replayable)
        for entry in page.entries:
            executor.dispatch_batch(entry.source, entry.batch, entry.count)
        self.dispatched.update(page.inputs)
        self.stats["pages"] += 1
        if not self.live:
            # nothing has been acknowledged yet in this life: what the log holds is what we hold
            for source, mark in page.inputs.items():
                self.received[source] = list(mark)
                self.durable[source] = mark
            self.next_page = page.number + 1
            self.epoch = max(self.epoch, page.epoch)

    # --- receiving ------------------------------------------------------------------------

    def accept_batch(
        self,
        source: str,
        first: int,
        count: int,
        replayable: int,
        batch: bytes,
        *,
        trusted: bool = False,
        last: bool = False,
    ) -> None:
        """Add a received DATA batch to the next page, dropping what was already received.

        ``last``: nothing more has arrived behind it. If the committer is idle then, a small
        page is written right here rather than by the committer once it is scheduled: a lone
        awaited call waits for two such appends, and each task switch on the way is ~10 µs.
        """
        offsets: list[int] | None = None
        if not trusted:
            offsets, actual = wire.scan_batch(batch, count)
            if actual != replayable:
                raise ProtocolError(
                    f"{source} sent a batch claiming {replayable} replayable messages, "
                    f"but it holds {actual}"
                )
        mark = self.received.get(source)
        if mark is None:
            mark = self.received[source] = [0, 0]
        held = mark[0]
        if first > held + 1:
            raise ProtocolError(
                f"{source} sent message {first} but {held + 1} was expected (a gap)"
            )
        if first + count - 1 <= held:
            return  # a duplicate from a replaced connection
        if first <= held:
            skip = held - first + 1
            if offsets is None:
                offsets = wire.scan_batch(batch, count)[0]
            skipped = wire.split_messages(batch[: offsets[skip]], skip)
            replayable -= sum(1 for m in skipped if not m[0] & 0x80)
            batch = batch[offsets[skip] :]
            count -= skip
            first = held + 1
        self._pending.append(Entry(source, first, mark[1] + 1, count, replayable, batch))
        mark[0] += count
        mark[1] += replayable
        self._pending_bytes += len(batch)
        if last and self._committer_idle and self._may_append_inline():
            try:
                self._append_inline(self._seal())
                if self.log_bytes >= self.settings.checkpoint_bytes:
                    self._have_input.set()  # the committer rolls the log, not the next arrival
            except Exception as exc:
                # the committer raises it: a page that could not be logged (or run) stops
                # the immortal, as when the committer writes it, and is reported once
                self._failure = exc
                self._have_input.set()
            return
        self._have_input.set()
        self._seal_ahead()

    def _seal_ahead(self) -> None:
        """A full page waits while another is written: hand it to the log writer now, which
        writes it straight after, without waiting for this loop (~1 ms on a busy machine).
        Group commit loses nothing: the page is full. Not when a checkpoint is due, which the
        committer takes between pages: under steady load pages sealed ahead would keep
        putting it off."""
        if (
            self._writer.in_flight
            and self._writer.queued < _SEALED_AHEAD
            and self._pending_bytes >= self.settings.page_bytes
            and not self.checkpoint_requested
            and self.log_bytes < self.settings.checkpoint_bytes
            and not failpoints.armed  # (every page passes the committer's crash point then)
        ):
            self._writer.submit(self._seal())
            self.stats["sealed_ahead"] += 1

    async def wait_page_room(self) -> None:
        while self._pending_bytes > self.settings.page_bytes:
            await self._page_room.wait()

    # --- the committer: group commit -------------------------------------------------------

    def _seal(self) -> Page:
        entries, self._pending = self._pending, []
        self._pending_bytes = 0
        self._page_room.set()
        # the page takes every pending entry, so `received` is exactly the watermark after it
        inputs = {
            e.source: (self.received[e.source][0], self.received[e.source][1]) for e in entries
        }
        page = Page(self.next_page, self.epoch, entries, inputs, self._trims)
        self._trims = {}
        self.next_page += 1
        return page

    def _write(self, page: Page) -> int:
        """Append a page to the log; in the log writer's thread for large pages, while the loop
        goes on receiving."""
        record = encode_record_parts(page.encode_parts(), RecordType.PAGE)
        self._append(record)
        return sum(len(part) for part in record)

    def _fits_inline(self, page_bytes: int, entries: int) -> bool:
        # the record's size, near enough: its batches and ~30 bytes of heads per entry
        return page_bytes + 32 * entries + 64 <= self._inline_limit

    def _may_append_inline(self) -> bool:
        """The pending input may be written as one page on the loop, now."""
        return (
            self._inline_ok
            and self._failure is None
            and not self._writer.in_flight
            and self._fits_inline(self._pending_bytes, len(self._pending))
            and not self._checkpoint_due()
            and not failpoints.armed
        )

    def _append_inline(self, page: Page) -> None:
        """Write a small page on the event loop: quicker than a round trip to another thread
        while the disk answers quickly. When it does not (another process's large flush ahead
        of ours), the loop must not stall on it: appends go through the log writer until a
        small one is quick again."""
        started = time.perf_counter()
        size = self._write(page)
        self._inline_ok = time.perf_counter() - started < INLINE_APPEND_BUDGET
        self._logged(page, size)

    async def _committer(self) -> None:
        writer = self._writer
        writer.start()
        try:
            while True:
                if writer.in_flight:
                    # group commit: what arrives meanwhile waits for the writer to finish
                    # (full pages excepted: accept_batch hands those over at once)
                    await writer.progress.wait()
                    if writer.failure is not None:
                        raise writer.failure
                    for page, size, seconds in writer.take_written():
                        if self._fits_inline(page.size, len(page.entries)):
                            self._inline_ok = seconds < INLINE_APPEND_BUDGET
                        self._logged(page, size)
                    self._seal_ahead()  # the writer has taken the next page: room for one
                    continue
                if self._checkpoint_due():
                    await self._roll()
                if not self._pending:
                    self._committer_idle = True
                    try:
                        await self._have_input.wait()
                    finally:
                        self._committer_idle = False
                    if self._failure is not None:
                        raise self._failure
                    continue
                page = self._seal()
                if failpoints.armed and failpoints.reached("page-write"):
                    record = encode_record(page.encode(), RecordType.PAGE)
                    await anyio.to_thread.run_sync(self.store.append, record[: len(record) // 2])
                    failpoints.crash()
                if self._inline_ok and self._fits_inline(page.size, len(page.entries)):
                    self._append_inline(page)
                else:
                    writer.submit(page)
        finally:
            await writer.aclose()

    def _logged(self, page: Page, size: int) -> None:
        """What follows a page's append: it is durable, so it may run and be acknowledged."""
        self.log_bytes += size
        self.stats["messages"] += sum(e.count for e in page.entries)
        self.durable.update(page.inputs)
        self._durable_changed.set()
        if (
            self._dispatcher_idle
            and not self._durable_queue
            and not self._pending
            and not self._writer.in_flight
            and not self._over_bound()
        ):
            # nothing to write next, nothing queued before this page and nobody dispatching:
            # run the page right here, one task switch sooner (what a lone awaited call
            # waits for). "Idle" alone is not enough: a dispatcher woken for a queued page
            # counts as idle until it runs, and this page must not overtake that one.
            self._dispatch(page)
        else:
            self._durable_queue.append(page)
            self._have_durable.set()
        self._acknowledge(page)

    def _acknowledge(self, page: Page) -> None:
        for source in page.inputs:
            if source == self.name:
                self._self_ack()
            else:
                wake = self._ack_wanted.get(source)
                if wake is not None:
                    wake.set()

    def _self_ack(self) -> None:
        total, replayable = self.durable[self.name]
        out = self.output(self.name)
        out.trim(total)
        self._trims[self.name] = replayable
        if self.on_self_durable is not None:
            self.on_self_durable(total)

    # --- the dispatcher --------------------------------------------------------------------

    def _over_bound(self) -> bool:
        limit = self.settings.buffer_bytes
        return any(out.bytes > limit for out in self.outputs.values())

    async def _dispatcher(self) -> None:
        queue = self._durable_queue
        while True:
            if not queue:
                self._drained.set()
                self._dispatcher_idle = True
                try:
                    await self._have_durable.wait()
                finally:
                    self._dispatcher_idle = False
                continue
            while self._over_bound():
                self._drained.set()  # a committer waiting to checkpoint must not wait on us
                await self._output_room.wait()
            self._dispatch(queue.popleft())
            await anyio.lowlevel.checkpoint()  # a backlog of pages must not starve the links

    def _dispatch(self, page: Page) -> None:
        self._in_page = True
        try:
            self.apply_page(page)
        finally:
            self._in_page = False
        for destination, out in self.outputs.items():
            if out.has_unsent():
                self._sender_wakeup(destination).set()
        if self.checkpoint_requested:
            self._have_input.set()  # the committer may be idle: let it take the checkpoint

    # --- checkpoints: taken by the committer, between pages -----------------------------------

    def request_checkpoint(self) -> None:
        """Take a checkpoint at the next quiescent point (CLI ``checkpoint``, SIGUSR1, API)."""
        self.checkpoint_requested = True
        self._have_input.set()

    def _checkpoint_due(self) -> bool:
        """Due by request or log size, and worth trying: no handler is suspended right now,
        and the checkpointer is done with the previous checkpoint."""
        if not (self.checkpoint_requested or self.log_bytes >= self.settings.checkpoint_bytes):
            return False
        if self._unstored is not None:
            return False
        executor = self.executor
        if executor is not None and not executor.quiescent:
            if not self._postponed_warned:
                log.warning(
                    "%s: checkpoint postponed: handlers are waiting for replies (%s), so the "
                    "state cannot be captured; the log keeps growing until they all finish. "
                    "Long-running producers should re-schedule themselves with a self-fork.",
                    self.name,
                    ", ".join(executor.suspended_handlers[:3]),
                )
                self._postponed_warned = True
            return False
        return True

    async def _roll(self) -> None:
        """Start a new log chunk with a checkpoint of the state after every page so far.

        The committer holds the next page back until the dispatcher has executed everything
        already logged, so the snapshot is exactly "after page next_page - 1". The chunk is
        created before the checkpoint is written, and pages go on into it while the
        checkpointer writes the checkpoint: a crash before that is durable leaves a chunk
        without a checkpoint, and recovery starts from the previous one and replays both.
        """
        while self._durable_queue:
            if self._over_bound() and self.chunk:
                return  # dispatch is held up by a slow peer; logging must go on meanwhile
            await self._drained.wait()
        assert self.on_checkpoint is not None
        chunk, first_page = self.chunk + 1, self.next_page
        data = self.on_checkpoint(chunk, first_page)
        if data is None and self.chunk:
            return  # a handler got suspended while we waited; try again at a later page
        header = encode_record(chunk_header(self.name, chunk, first_page), RecordType.CHUNK_HEADER)
        store = self.store
        await anyio.to_thread.run_sync(_start_chunk, store, chunk, header)
        self.chunk = chunk
        self.log_bytes = 0
        if data is None:
            return  # only on a first start that could not snapshot: chunk 1 opens regardless
        self.checkpoint_requested = False
        self._postponed_warned = False
        self._unstored = (chunk, data)
        self._have_checkpoint.set()

    async def _checkpointer(self) -> None:
        """Store each roll's checkpoint, then delete what it makes redundant.

        Beside the committer, which meanwhile logs into the new chunk: writing the checkpoint
        and its directory entry took ~3 ms here, during which the log stood still. Deleting
        waits for the checkpoint to be durable, and the next roll waits for both.
        """
        keep = max(1, self.settings.keep_checkpoints)
        while True:
            if self._unstored is None:
                await self._have_checkpoint.wait()
                continue
            chunk, data = self._unstored
            await anyio.to_thread.run_sync(_store_checkpoint, self.store, chunk, data, keep)
            log.info("%s: checkpoint %d written (%d bytes)", self.name, chunk, len(data))
            self._unstored = None
            self._have_input.set()  # a checkpoint requested meanwhile may be taken now

    # --- outbound links ---------------------------------------------------------------------

    async def _sender(self, destination: str, address: PeerAddress) -> None:
        backoff = 0.05
        out = self.output(destination)
        waiting_said = False
        while True:
            link: Link | None = None
            try:
                link = await self.transport.connect(address.host, address.port)
                total, replayable = await self._hello(link, destination)
                if out.rebase_pending:
                    out.rebase(total, replayable)
                else:
                    out.resume(total)
                self._output_room.set()
                log.info(
                    "%s: connected to %s at %s:%d (it holds %d of our messages)",
                    self.name,
                    destination,
                    address.host,
                    address.port,
                    total,
                )
                backoff = 0.05
                waiting_said = False
                await _until_first_ends(
                    partial(self._read_acks, link, out), partial(self._send_loop, link, out)
                )
            except (ConnectionClosed, ProtocolError, OSError) as exc:
                if isinstance(exc, AuthenticationError | ProtocolError):
                    log.error("%s: link to %s failed: %s", self.name, destination, exc)
                elif backoff >= 0.4 and not waiting_said:
                    # a few quick retries failed: say once that we wait, and why
                    log.info(
                        "%s: waiting for %s at %s:%d (%s); calls to it are kept and sent "
                        "when it is back",
                        self.name,
                        destination,
                        address.host,
                        address.port,
                        exc,
                    )
                    waiting_said = True
                else:
                    log.debug("%s: link to %s down: %s", self.name, destination, exc)
            finally:
                if link is not None:
                    with anyio.CancelScope(shield=True):
                        await link.aclose()
            await anyio.sleep(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF)

    async def _hello(self, link: Link, destination: str) -> tuple[int, int]:
        ftype, payload = await link.receive()
        if ftype is not Frame.CHALLENGE:
            raise ProtocolError(f"{destination} did not open with a challenge")
        challenge = wire.parse_control(payload, "v", "nonce")
        if challenge["v"] != wire.PROTOCOL_VERSION:
            raise ProtocolError(
                f"{destination} speaks protocol version {challenge['v']}, we speak "
                f"{wire.PROTOCOL_VERSION}; run the same ambrosia-edge release on both"
            )
        nonce = wire.bytes_field(challenge, "nonce", 16)
        hello: dict[str, Any] = {
            "v": wire.PROTOCOL_VERSION,
            "from": self.name,
            "to": destination,
            "epoch": self.epoch,
        }
        secret = self.settings.secret
        our_nonce = os.urandom(16)
        if secret is not None:
            hello["mac"] = _mac(secret, nonce, self.name, destination)
            hello["nonce"] = our_nonce
        await link.send(wire.control(Frame.HELLO, hello))
        ftype, payload = await link.receive()
        if ftype is Frame.REFUSE:
            refusal = wire.parse_control(payload, "message")
            raise ProtocolError(f"{destination} refused the connection: {refusal['message']}")
        if ftype is not Frame.WELCOME:
            raise ProtocolError(f"{destination} answered the hello with {ftype.name}")
        welcome = wire.parse_control(payload, "total", "replayable")
        total, replayable = wire.int_field(welcome, "total"), wire.int_field(welcome, "replayable")
        if secret is not None:
            # the receiver proves it knows the secret too: a stranger's WELCOME could
            # otherwise make us trim messages nobody has logged
            mac = welcome.get("mac")
            if not isinstance(mac, bytes) or not hmac.compare_digest(
                mac, _mac(secret, our_nonce, destination, self.name, welcome=True)
            ):
                raise AuthenticationError(f"{destination} failed authentication")
        if replayable > total:
            raise ProtocolError(f"{destination} sent inconsistent watermarks {total}/{replayable}")
        return total, replayable

    async def _send_loop(self, link: Link, out: Output) -> None:
        wake = self._sender_wakeup(out.destination)
        max_batch = min(self.settings.page_bytes, MAX_BATCH)
        while True:
            first, replayable, batch = out.unsent(max_batch)
            if not batch:
                await wake.wait()
                continue
            if len(batch[0]) >= GATHER_FROM <= len(batch[-1]):
                await link.send_parts(wire.data_parts(first, len(batch), replayable, batch))
            else:
                await link.send(wire.data(first, len(batch), replayable, batch))

    async def _read_acks(self, link: Link, out: Output) -> None:
        while True:
            ftype, payload = await link.receive()
            if ftype is not Frame.ACK:
                raise ProtocolError(f"{out.destination} sent {ftype.name} where ACK was expected")
            total, replayable = wire.parse_ack(payload)
            out.trim(total)
            out.acked_total, out.acked_replayable = total, replayable
            self._trims[out.destination] = replayable
            self._output_room.set()

    async def _self_sender(self) -> None:
        """The link to oneself: output to our own name goes straight into the next page."""
        out = self.output(self.name)
        mark = self.received.get(self.name, [0, 0])
        out.rebase(mark[0], mark[1])
        wake = self._sender_wakeup(self.name)
        while True:
            first, replayable, batch = out.unsent(min(self.settings.page_bytes, MAX_BATCH))
            if not batch:
                await wake.wait()
                continue
            await self.wait_page_room()
            self.accept_batch(
                self.name, first, len(batch), replayable, b"".join(batch), trusted=True
            )

    # --- inbound links ----------------------------------------------------------------------

    async def serve_link(self, link: Link) -> None:
        """Handle one connection from a sender: authenticate, handshake, log what it sends."""
        source = "?"
        try:
            nonce = os.urandom(16)
            await link.send(
                wire.control(Frame.CHALLENGE, {"v": wire.PROTOCOL_VERSION, "nonce": nonce})
            )
            ftype, payload = await link.receive()
            if ftype is not Frame.HELLO:
                raise ProtocolError(f"expected HELLO, got {ftype.name}")
            hello = wire.parse_control(payload, "v", "from", "to")
            source = str(hello["from"])
            if hello["v"] != wire.PROTOCOL_VERSION:
                raise ProtocolError(f"protocol version {hello['v']} is not {wire.PROTOCOL_VERSION}")
            if hello["to"] != self.name:
                raise ProtocolError(f"this is immortal {self.name!r}, not {hello['to']!r}")
            if source == self.name:
                raise ProtocolError(f"a connection claims to come from {self.name!r}, which is us")
            secret = self.settings.secret
            if secret is not None:
                mac = hello.get("mac")
                if not isinstance(mac, bytes) or not hmac.compare_digest(
                    mac, _mac(secret, nonce, source, self.name)
                ):
                    raise AuthenticationError(f"{source} at {link.peer} failed authentication")
            previous = self._inbound.get(source)
            self._inbound[source] = link  # a newer connection from the same sender wins
            if previous is not None:
                await previous.aclose()
            # The sender trims (or, after its own recovery, renumbers) everything we say we
            # hold, so say it only once it is durable: a page still being written could be
            # lost in a crash, and the sender must still have its messages then.
            mark = self.received.setdefault(source, [0, 0])
            while self.durable.get(source, (0, 0)) != (mark[0], mark[1]):
                await self._durable_changed.wait()
            welcome: dict[str, Any] = {"total": mark[0], "replayable": mark[1]}
            if secret is not None:
                their_nonce = wire.bytes_field(hello, "nonce", 16)
                welcome["mac"] = _mac(secret, their_nonce, self.name, source, welcome=True)
            await link.send(wire.control(Frame.WELCOME, welcome))
            await _until_first_ends(
                partial(self._write_acks, link, source), partial(self._read_data, link, source)
            )
        except ProtocolError as exc:
            self.stats["refused"] += 1
            log.warning("%s: refused link from %s (%s): %s", self.name, source, link.peer, exc)
            with anyio.move_on_after(1):
                with contextlib.suppress(ConnectionClosed):
                    await link.send(
                        wire.control(Frame.REFUSE, {"code": exc.code, "message": str(exc)})
                    )
        except ConnectionClosed as exc:
            log.debug("%s: link from %s closed: %s", self.name, source, exc)
        finally:
            if self._inbound.get(source) is link:
                del self._inbound[source]

    async def _read_data(self, link: Link, source: str) -> None:
        while True:
            await self.wait_page_room()
            ftype, head, batch = await link.receive_split(wire.DATA_HEAD_SIZE)
            if ftype is not Frame.DATA:
                raise ProtocolError(f"{source} sent {ftype.name} where DATA was expected")
            first, count, replayable = wire.parse_data_head(head)
            if self._inbound.get(source) is not link:
                return  # replaced by a newer connection
            self.accept_batch(source, first, count, replayable, batch, last=not link.buffered)

    async def _write_acks(self, link: Link, source: str) -> None:
        wake = self._ack_wanted.setdefault(source, Wakeup())
        sent = (-1, -1)
        while True:
            mark = self.durable.get(source, (0, 0))
            if mark != sent:
                await link.send(wire.ack(*mark))
                sent = mark
                await anyio.sleep(ACK_INTERVAL)  # let the pages of the next moment share one
                continue
            await wake.wait()

    # --- running ------------------------------------------------------------------------------

    def _warn_if_unreachable(self, destination: str) -> None:
        if destination != self.name and destination not in self.settings.peers:
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
            if self.settings.listen is not None:
                port = await tg.start(
                    self.transport.serve,
                    self.settings.listen.host,
                    self.settings.listen.port,
                    self.serve_link,
                )
            tg.start_soon(self._self_sender)
            for destination, address in self.settings.peers.items():
                if destination != self.name:
                    tg.start_soon(self._sender, destination, address)
            task_status.started(port)


async def _until_first_ends(*halves: Callable[[], Awaitable[None]]) -> None:
    """Run the two directions of a link until one ends; re-raise its error unwrapped.

    A task group would wrap a broken link in an ExceptionGroup; the reconnect logic wants the
    plain ConnectionClosed or ProtocolError to tell "retry" from "refuse".
    """
    failures: list[BaseException] = []
    async with anyio.create_task_group() as tg:

        async def run(half: Callable[[], Awaitable[None]]) -> None:
            try:
                await half()
            except (ConnectionClosed, ProtocolError, OSError) as exc:
                failures.append(exc)
            finally:
                tg.cancel_scope.cancel()

        for half in halves:
            tg.start_soon(run, half)
    if failures:
        raise failures[0]


def _mac(
    secret: str, nonce: bytes, source: str, destination: str, *, welcome: bool = False
) -> bytes:
    """HMAC-SHA256 proving knowledge of the deployment secret, bound to the peer's nonce and
    to the direction, so a HELLO cannot be replayed as a WELCOME or to another immortal."""
    label = b"ambrosia-edge/welcome\0" if welcome else b"ambrosia-edge/hello\0"
    message = label + nonce + source.encode() + b"\0" + destination.encode()
    return hmac.new(secret.encode(), message, hashlib.sha256).digest()


def _start_chunk(store: LogStore, chunk: int, header: bytes) -> None:
    store.start_chunk(chunk)
    store.append(header)


def _store_checkpoint(store: LogStore, chunk: int, data: bytes, keep: int) -> None:
    store.write_checkpoint(chunk, data)
    retain(store, keep)


def retain(store: LogStore, keep: int) -> None:
    """Keep the newest ``keep`` checkpoints and the chunks they need; delete the rest."""
    checkpoints = store.list_checkpoints()
    if len(checkpoints) <= keep:
        return
    oldest_kept = checkpoints[-keep]
    for n in checkpoints[:-keep]:
        store.delete_checkpoint(n)
    for chunk in store.list_chunks():
        if chunk < oldest_kept:
            store.delete_chunk(chunk)
