"""The committer: where a page is committed (paper §3.3, group commit).

Received batches join the pending page (:meth:`Committer.accept_batch`); the committer task
seals it, appends it to the log and, once it is durable, queues it for the dispatcher and
acknowledges its inputs to their senders. While the log writer's thread writes one page,
arrivals join the next, so the page size adapts to the load without any timer::

    accept_batch ─► pending ─► seal ─► write: on the loop (small, quick) or the log writer
        ─► _logged: durable ─► dispatcher queue (or run at once) ─► ACK wake-ups

A batch that finds the committer idle, with nothing more received behind it, is written by
the task that received it, a task switch sooner. A page that fills up while a large one is
being written is sealed at once and queued for the log writer, which writes it right after,
so the disk does not idle while the loop hands it over.

A page of our own messages alone (the next step of a continuation, a call to ourselves) runs
while the log writer flushes it, instead of after: it is the next page in the log whatever
happens, and what it sends is held in the output buffers until it is durable
(:meth:`Committer._run_ahead`). The step it runs forks the next one, whose page runs ahead in
turn while the first may still be flushed: a chain of such pages keeps the writer busy, which
writes the ones that queue up together, with one flush. A continuation then costs its steps,
not their flushes; the log, and when each message leaves, are the same.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

import anyio

from . import failpoints, wire
from .errors import ProtocolError
from .logwriter import LogWriter
from .page import Entry, Page
from .records import BytesLike, RecordType, encode_record, encode_record_parts
from .store import LogStore
from .wakeup import Wakeup

if TYPE_CHECKING:
    from .coordinator_options import CoordinatorOptions
    from .outputs import Output

#: Most full pages waiting for the log writer while it writes another (two measured ~10% faster
#: than one at 64 KiB messages, three no faster).
_SEALED_AHEAD = 2
#: A small append on the event loop must take less than this for the next to go there too.
INLINE_APPEND_BUDGET = 0.0005
#: Most pages running ahead of their flushes at once (a chain of continuation steps); their
#: output is held, so this bounds what waits in memory besides the outputs' own bound.
_AHEAD_MAX = 64
#: Small pages queued for the log writer are written together up to this many bytes.
_MERGE_BYTES = 64 * 1024

#: Builds the log writer around the function that appends one page: ``(write, name)``.
LogWriterFactory = Callable[[Callable[[Page], int], str], LogWriter]
#: Seconds, for timing appends: ``time.perf_counter`` unless a test brings its own.
Clock = Callable[[], float]


class Committer:
    """The committing part of :class:`~ambrosia_edge.coordinator.Coordinator` (a mixin: the
    parts share one object's attributes, so the per-message path looks nothing up twice)."""

    #: told the link to ourselves' durable total each time a page holding messages on it is
    #: logged (from _self_ack: once a page, and only while an impulse source runs; feed.py)
    on_self_durable: Callable[[int], None] | None = None
    #: told the trim watermarks of each page that carries some, once it is durable (the MQTT
    #: publisher learns there which acknowledgements a crash can no longer undo)
    on_trims_durable: Callable[[dict[str, int]], None] | None = None

    if TYPE_CHECKING:
        # of the coordinator
        name: str
        store: LogStore
        options: CoordinatorOptions
        epoch: int
        next_page: int
        received: dict[str, list[int]]
        durable: dict[str, tuple[int, int]]
        stats: dict[str, int]

        def output(self, destination: str) -> Output: ...
        def _sender_wakeup(self, destination: str) -> Wakeup: ...

        outputs: dict[str, Output]

        # of the dispatcher
        _dispatcher_idle: bool
        _durable_queue: deque[Page]
        _have_durable: Wakeup

        def _dispatch(self, page: Page) -> None: ...
        def _over_bound(self) -> bool: ...

        # of checkpointing
        checkpoint_requested: bool

        def _checkpoint_due(self) -> bool: ...
        async def _roll(self) -> None: ...

        # of the peer sessions
        _ack_wanted: dict[str, Wakeup]

    def _init_committer(self, store: LogStore, log_writer: LogWriterFactory, clock: Clock) -> None:
        self._pending: list[Entry] = []
        self._pending_bytes = 0
        # writes the pages the loop does not (large ones, and any while small appends are slow);
        # started and stopped by the committer
        self._writer = log_writer(self._write, self.name)
        if getattr(store, "append_parts", None) is not None:
            # a store that appends bytes as given (a file) may take several records at once
            self._writer.merge(self._write_pages, _MERGE_BYTES)
        self._clock = clock
        self._committer_idle = False  # waiting for input: an arrival may be written at once
        self._failure: BaseException | None = None  # of a page written on arrival
        #: small appends go on the event loop (store.py explains), while they are quick
        self._inline_limit: int = getattr(store, "inline_append_limit", 0)
        self._inline_ok = True
        self._append: Callable[[list[BytesLike]], None] = getattr(store, "append_parts", None) or (
            lambda parts: store.append(b"".join(parts))
        )
        self._trims: dict[str, int] = {}  # acks received since the last page
        #: the pages running ahead of their flushes, oldest first, their output held until
        #: each is durable; with each, how much every output held when it began to run
        self._ahead: deque[tuple[Page, dict[str, int]]] = deque()
        #: the pending page holds a capture's value (set by the link to ourselves), and so
        #: did the page sealed last
        self._live_values = False
        self._sealed_live_values = False
        #: peers' log ids first met since the last page (incarnation.py), logged with the next
        self._met: dict[str, str] = {}
        self._trims_wanted = False  # log_trims: a page even without input
        self._have_input = Wakeup()
        self._page_room = Wakeup()
        self._durable_changed = Wakeup()
        self.log_bytes = 0  # since the last checkpoint

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
                if self.log_bytes >= self.options.checkpoint_bytes:
                    self._have_input.set()  # the committer rolls the log, not the next arrival
            except Exception as exc:
                # the committer raises it: a page that could not be logged (or run) stops
                # the immortal, as when the committer writes it, and is reported once
                self._failure = exc
                self._have_input.set()
            return
        self._have_input.set()
        if self._ahead and source == self.name:
            self._writer.progress.set()  # the committer waits for the writer: it may chain
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
            and self._pending_bytes >= self.options.page_bytes
            and not self.checkpoint_requested
            and self.log_bytes < self.options.checkpoint_bytes
            and not failpoints.armed  # (every page passes the committer's crash point then)
        ):
            self._writer.submit(self._seal())
            self.stats["sealed_ahead"] += 1

    def log_trims(self) -> None:
        """Log the acknowledgements received since the last page soon, in a page of their own
        if no input comes to carry them (a page with no entries: replay applies its trims)."""
        if self._trims:
            self._trims_wanted = True
            self._have_input.set()

    async def wait_page_room(self) -> None:
        while self._pending_bytes > self.options.page_bytes:
            await self._page_room.wait()

    # --- the committer: group commit -------------------------------------------------------

    def _seal(self) -> Page:
        entries, self._pending = self._pending, []
        self._pending_bytes = 0
        self._sealed_live_values, self._live_values = self._live_values, False
        self._page_room.set()
        # the page takes every pending entry, so `received` is exactly the watermark after it
        inputs = {
            e.source: (self.received[e.source][0], self.received[e.source][1]) for e in entries
        }
        page = Page(self.next_page, self.epoch, entries, inputs, self._trims, self._met)
        self._trims = {}
        self._met = {}
        self._trims_wanted = False
        self.next_page += 1
        return page

    def _write(self, page: Page) -> int:
        """Append a page to the log; in the log writer's thread for large pages, while the loop
        goes on receiving."""
        return self._write_pages([page])[0]

    def _write_pages(self, pages: list[Page]) -> list[int]:
        """Append pages with one write and one flush, each its own record (the log writer's,
        for small pages queued together); the size of each record."""
        parts: list[BytesLike] = []
        sizes = []
        for page in pages:
            record = encode_record_parts(page.encode_parts(), RecordType.PAGE)
            parts += record
            sizes.append(sum(len(part) for part in record))
        self._append(parts)
        return sizes

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
        clock = self._clock
        started = clock()
        size = self._write(page)
        self._inline_ok = clock() - started < INLINE_APPEND_BUDGET
        self._logged(page, size)

    async def _committer(self) -> None:
        writer = self._writer
        writer.start()
        try:
            while True:
                if writer.in_flight and self._pending and self._may_chain():
                    # the next step of a chain run ahead: it runs while the pages before it
                    # are still being flushed, and is written right after them
                    page = self._seal()
                    writer.submit(page)
                    self.stats["chained"] += 1
                    self._run_ahead(page)
                    continue
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
                if not self._pending and not (self._trims_wanted and self._trims):
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
                if self._may_run_ahead(page.entries, self._sealed_live_values):
                    writer.submit(page)
                    self._run_ahead(page)
                elif self._inline_ok and self._fits_inline(page.size, len(page.entries)):
                    self._append_inline(page)
                else:
                    writer.submit(page)
        finally:
            await writer.aclose()

    def _may_run_ahead(self, entries: list[Entry], live_values: bool) -> bool:
        """A page of these entries holds only messages to ourselves that replay of the pages
        before it would send again, no impulse and no captured value, and it would be run at
        once if it were durable: every page before it in flight ran ahead already, nothing is
        queued before it, nobody dispatching, no output over its bound."""
        name = self.name
        return (
            bool(entries)
            and all(e.source == name and e.replayable == e.count for e in entries)
            and not live_values
            and self._dispatcher_idle
            and not self._durable_queue
            and self._writer.in_flight == len(self._ahead)
            and len(self._ahead) < _AHEAD_MAX
            and not self._over_bound()
            and not failpoints.armed
        )

    def _may_chain(self) -> bool:
        """The pending page may run ahead behind pages that are still being flushed (which all
        ran ahead): not when a checkpoint is due, which the committer takes once the writer is
        idle (a chain that kept it busy would put the checkpoint off for good)."""
        return (
            self._writer.failure is None
            and not self.checkpoint_requested
            and self.log_bytes < self.options.checkpoint_bytes
            and self._may_run_ahead(self._pending, self._live_values)
        )

    def _run_ahead(self, page: Page) -> None:
        """Run a page of our own messages while the log writer flushes it.

        Sound because nothing of it leaves the process before it is durable: what it sends to
        others is held in their output buffers until :meth:`_logged` releases it, and what it
        sends to itself joins a page that is written after this one. The log and its order are
        unchanged, and so is recovery: if the flush fails the immortal stops (as for any
        page), and replay runs the page from the log. And what the page does to the state is
        never taken back: its messages are ones replay of the durable pages before it sends
        again (a continuation's next step, a call to ourselves and its reply), not impulses
        or captured values, which a crash before the flush would lose; so a task that reads
        the state meanwhile sees only what the log already implies. Only our own messages,
        because a page with input from others (a reply a caller awaits) is best flushed on the
        loop and run at once: the hand-over to the writer's thread would add to its latency.
        """
        name = self.name
        marks = {d: out.hold() for d, out in self.outputs.items() if d != name}
        self._ahead.append((page, marks))
        self.stats["run_ahead"] += 1
        self._dispatch(page)

    def _release_ahead(self) -> None:
        """The oldest page that ran ahead is durable: let its output go, and what was sent
        before the next one began to run (the output of later pages waits for theirs)."""
        ahead = self._ahead
        ahead.popleft()
        marks = ahead[0][1] if ahead else None
        for destination, out in self.outputs.items():
            if marks is None:
                out.release()
            else:
                mark = marks.get(destination)
                if mark is None:
                    continue  # ourselves, or made since: all its output is of later pages
                out.release(mark)
            if out.has_unsent():
                self._sender_wakeup(destination).set()

    def _logged(self, page: Page, size: int) -> None:
        """What follows a page's append: it is durable, so it may run and be acknowledged."""
        self.log_bytes += size
        self.stats["messages"] += sum(e.count for e in page.entries)
        self.durable.update(page.inputs)
        self._durable_changed.set()
        if self._ahead and page is self._ahead[0][0]:
            self._release_ahead()  # it has run already
        elif (
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
        if page.trims and self.on_trims_durable is not None:
            self.on_trims_durable(page.trims)

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
