"""The dispatcher: runs durable pages through the executor, in log order, once each.

Live, the committer hands it each page once the page is durable (or runs the page itself when
nothing is queued: one task switch sooner); in replay, recovery hands it the pages of the log.
Both go through :meth:`Dispatcher.apply_page`, the same code. Dispatch waits while an output
buffer is over its bound (a slow or absent peer), which holds back the committer's acks, and
so the senders: backpressure end to end.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

import anyio
import anyio.lowlevel

from .page import Page
from .wakeup import Wakeup

if TYPE_CHECKING:
    from .coordinator_options import CoordinatorOptions
    from .outputs import Output


class Runner(Protocol):
    """What the coordinator needs from the executor (:class:`~ambrosia_edge.executor.Executor`)."""

    def dispatch_batch(self, source: str, batch: bytes, count: int) -> None:
        """Run the ``count`` messages of one logged batch from ``source``."""

    @property
    def quiescent(self) -> bool:
        """No handler is suspended: the state alone describes the immortal (checkpointable)."""

    @property
    def suspended_handlers(self) -> Sequence[str]: ...


class Dispatcher:
    """The dispatching part of :class:`~ambrosia_edge.coordinator.Coordinator` (a mixin)."""

    if TYPE_CHECKING:
        # of the coordinator
        name: str
        options: CoordinatorOptions
        executor: Runner
        live: bool
        epoch: int
        next_page: int
        outputs: dict[str, Output]
        received: dict[str, list[int]]
        durable: dict[str, tuple[int, int]]
        dispatched: dict[str, tuple[int, int]]
        stats: dict[str, int]
        _output_room: Wakeup

        def output(self, destination: str) -> Output: ...
        def _sender_wakeup(self, destination: str) -> Wakeup: ...

        # of the committer and checkpointing
        _have_input: Wakeup
        checkpoint_requested: bool

        # of the peers
        peer_incarnations: dict[str, str]

    def _init_dispatcher(self) -> None:
        self._applied_page = 0  # the last page executed, 0 before the first in this life
        self._in_page = False  # a live page is being executed
        self._durable_queue: deque[Page] = deque()
        self._drained = Wakeup()
        self._have_durable = Wakeup()
        self._dispatcher_idle = False

    def apply_page(self, page: Page) -> None:
        """Execute one durable page: the same code for replay and for live operation."""
        self.begin_page(page)
        executor = self.executor
        for entry in page.entries:
            executor.dispatch_batch(entry.source, entry.batch, entry.count)
        self.end_page(page)

    def begin_page(self, page: Page) -> None:
        """What :meth:`apply_page` does before the page's messages run (a replay that runs
        them one at a time calls this, the messages, then :meth:`end_page`)."""
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

    def end_page(self, page: Page) -> None:
        """What :meth:`apply_page` does once the page's messages have run."""
        self.dispatched.update(page.inputs)
        self.stats["pages"] += 1
        if not self.live:
            # nothing has been acknowledged yet in this life: what the log holds is what we hold
            for source, mark in page.inputs.items():
                self.received[source] = list(mark)
                self.durable[source] = mark
            self.next_page = page.number + 1
            self.epoch = max(self.epoch, page.epoch)
            if page.peers:
                self.peer_incarnations.update(page.peers)

    def _over_bound(self) -> bool:
        limit = self.options.buffer_bytes
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
