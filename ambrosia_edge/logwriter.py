"""The log writer: one thread that appends pages to the log, in order, for as long as it runs.

Handing each page to a pool thread and taking it back cost 1 to 3 ms whenever the event loop was
busy receiving, and under a stream of large messages the disk idled for a fifth of the time
between those hand-overs. This thread instead waits for pages itself: a page submitted while
another is being written is taken up the moment that one is durable, without the loop, and
each written page is reported on its own, so its inputs are acknowledged and run at once
rather than with a whole group of pages.

Small pages queued behind the one being written (a chain of continuation steps run ahead of
their flushes, committer.py) are written together, when the store can: each stays a record of
its own, in order, byte for byte as if written one by one, but they share one write and one
flush.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import threading
import time
from collections import deque
from collections.abc import Callable

import anyio

from .page import Page
from .wakeup import Wakeup


class LogWriter:
    """Writes submitted pages one after another on its own thread; the loop takes them back.

    ``in_flight`` counts pages submitted and not yet taken back with ``take_written``, so a
    page written elsewhere (on the loop) can wait until it would not overtake one of these.
    A failed write stops the thread: pages queued behind it are never written, because the log
    must not hold a page whose predecessor is missing.
    """

    def __init__(self, write: Callable[[Page], int], name: str) -> None:
        self._write = write
        self._queue: deque[Page] = deque()
        self._ready = threading.Condition(threading.Lock())
        self._stopping = False
        #: (page, its record's size, seconds the append took), in the order written
        self._written: deque[tuple[Page, int, float]] = deque()
        self.failure: BaseException | None = None
        self.in_flight = 0
        #: set on the loop after each write (or the failure): the committer's cue
        self.progress = Wakeup()
        self._soon: Callable[..., object] | None = None
        #: appends several pages with one write and one flush (``merge``), and up to how many
        #: bytes of batches
        self._write_many: Callable[[list[Page]], list[int]] | None = None
        self._merge_bytes = 0
        # a daemon, so that a process ending without aclose (an interpreter torn down by an
        # error) does not wait forever on it; aclose joins it
        self._thread = threading.Thread(target=self._run, name=f"{name}-log-writer", daemon=True)

    def start(self) -> None:
        """Start the thread; on the event loop that is to take the pages back."""
        self._soon = _call_soon_threadsafe()
        self._thread.start()

    def merge(self, write_many: Callable[[list[Page]], list[int]], limit: int) -> None:
        """Write small queued pages together with ``write_many`` (which returns each page's
        record size), while their batches come to at most ``limit`` bytes."""
        self._write_many = write_many
        self._merge_bytes = limit

    @property
    def queued(self) -> int:
        """Pages waiting behind the one being written."""
        return len(self._queue)

    def submit(self, page: Page) -> None:
        self.in_flight += 1
        with self._ready:
            self._queue.append(page)
            self._ready.notify()

    def take_written(self) -> list[tuple[Page, int, float]]:
        """The pages written since the last call, oldest first."""
        written = []
        while self._written:
            written.append(self._written.popleft())
        self.in_flight -= len(written)
        return written

    async def aclose(self) -> None:
        """Stop after the page being written, if any; pages still queued are dropped (they
        were never acknowledged). Waits for the thread even when cancelled: the store must not
        be closed under a write."""
        with self._ready:
            self._stopping = True
            self._queue.clear()
            self._ready.notify()
        if self._thread.is_alive():
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(self._thread.join)

    def _run(self) -> None:
        while True:
            with self._ready:
                while not self._queue and not self._stopping:
                    self._ready.wait()
                if self._stopping:
                    return
                pages = [self._queue.popleft()]
                if self._write_many is not None:
                    room = self._merge_bytes - pages[0].size
                    while self._queue and self._queue[0].size <= room:
                        room -= self._queue[0].size
                        pages.append(self._queue.popleft())
            started = time.perf_counter()
            try:
                if len(pages) == 1:
                    sizes = [self._write(pages[0])]
                else:
                    assert self._write_many is not None
                    sizes = self._write_many(pages)
            except BaseException as exc:  # handed to the loop, which raises it
                self._report(self._failed, exc)
                return
            seconds = time.perf_counter() - started
            for page, size in zip(pages, sizes, strict=True):
                self._written.append((page, size, seconds))
            self._report(self.progress.set)

    def _failed(self, exc: BaseException) -> None:
        self.failure = exc
        self.progress.set()

    def _report(self, callback: Callable[..., None], *args: object) -> None:
        assert self._soon is not None
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits for this now
            self._soon(callback, *args)


def _call_soon_threadsafe() -> Callable[..., object]:
    """The running loop's "call this soon", callable from any thread, and without waiting
    (anyio's from_thread.run_sync waits for the call to finish: the writer must not)."""
    try:
        return asyncio.get_running_loop().call_soon_threadsafe
    except RuntimeError:  # not asyncio: trio, the other event loop anyio runs on
        trio = importlib.import_module("trio")
        run_sync_soon: Callable[..., object] = trio.lowlevel.current_trio_token().run_sync_soon
        return run_sync_soon
