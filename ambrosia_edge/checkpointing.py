"""Checkpointing: where a checkpoint is taken, stored, and what it makes redundant deleted.

A checkpoint is due on request (first start, ``ambrosia-edge checkpoint``, SIGUSR1) or when
the log has grown by ``checkpoint_bytes`` since the last one. The committer takes it between
pages, once every logged page has run and no handler is suspended (:meth:`_roll`), and opens a
new chunk with it; the checkpointer task stores it while pages go on into that chunk, then
deletes the checkpoints and chunks past ``keep_checkpoints`` (:func:`retain`).

While a standby follows the log (:mod:`.standby`), the committer only begins the new chunk
and the standby writes its checkpoint from its own replay, at the first point in that chunk
where no handler is suspended: the primary never pauses for a checkpoint then.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

import anyio

from . import failpoints
from .page import Page, chunk_header
from .records import RecordType, encode_record
from .store import LogStore
from .wakeup import Wakeup

if TYPE_CHECKING:
    from .coordinator_options import CoordinatorOptions
    from .dispatcher import Runner

log = logging.getLogger("ambrosia_edge")

#: Builds the checkpoint document for (chunk, first page) at the current dispatch point, or
#: gives None when a handler is suspended and the state cannot be captured.
CheckpointBuilder = Callable[[int, int], bytes | None]


class Checkpointing:
    """The checkpointing part of :class:`~ambrosia_edge.coordinator.Coordinator` (a mixin)."""

    if TYPE_CHECKING:
        # of the coordinator
        name: str
        store: LogStore
        options: CoordinatorOptions
        executor: Runner
        chunk: int
        next_page: int
        on_checkpoint: CheckpointBuilder | None
        class_version: int | None
        incarnation: str | None

        # of the committer
        log_bytes: int
        _have_input: Wakeup

        # of the dispatcher
        _durable_queue: deque[Page]
        _drained: Wakeup

        def _over_bound(self) -> bool: ...

        # of the handover
        holding: bool

    def _init_checkpointing(self) -> None:
        #: take a checkpoint as soon as possible (first start, CLI ``checkpoint``, SIGUSR1)
        self.checkpoint_requested = False
        self._postponed_warned = False
        #: the checkpoint the checkpointer is to write (chunk, data), until it is stored; data
        #: None: a standby writes it, and the checkpointer only applies retention
        self._unstored: tuple[int, bytes | None] | None = None
        self._have_checkpoint = Wakeup()
        #: whether a standby follows the log and writes its checkpoints (set by the runtime
        #: where the tier records standbys; called in a worker thread)
        self.standby_checkpoints: Callable[[], bool] | None = None
        #: the chunk whose checkpoint was last left to a standby
        self._delegated: int | None = None
        #: a live upgrade is pending or converted but not yet checkpointed (set by
        #: ``Replayer.finish``): the primary writes that checkpoint itself, never a standby,
        #: since the conversion happens in the primary's ``on_checkpoint`` and a standby
        #: replaying the old version's pages converts only at a chunk header saying so
        self.upgrade_unsaved = False

    def request_checkpoint(self) -> None:
        """Take a checkpoint at the next quiescent point (CLI ``checkpoint``, SIGUSR1, API)."""
        self.checkpoint_requested = True
        self._have_input.set()

    def _checkpoint_due(self) -> bool:
        """Due by request or log size, and worth trying: no handler is suspended right now,
        and the checkpointer is done with the previous checkpoint."""
        if not (self.checkpoint_requested or self.log_bytes >= self.options.checkpoint_bytes):
            return False
        if self.holding:
            return False  # a handover is packing the log: it must stand still (handover.py)
        if self._unstored is not None:
            return False
        executor = self.executor
        if not executor.quiescent:
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
        """Start a new log chunk, and its checkpoint (:meth:`_roll_and_checkpoint`) unless a
        standby follows the log: the standby then writes it from its replay, so the primary
        neither waits for its pages to run nor captures its state. If the standby did not
        write the previous one it was left, the primary checkpoints itself again."""
        delegate = self.chunk and self.standby_checkpoints is not None and not self.upgrade_unsaved
        if delegate and await anyio.to_thread.run_sync(self._may_delegate):
            header = encode_record(
                chunk_header(
                    self.name,
                    self.chunk + 1,
                    self.next_page,
                    class_version=self.class_version,  # so a standby's replay labels it right
                    incarnation=self.incarnation,
                ),
                RecordType.CHUNK_HEADER,
            )
            await anyio.to_thread.run_sync(_start_chunk, self.store, self.chunk + 1, header)
            self.chunk += 1
            self.log_bytes = 0
            self.checkpoint_requested = False
            self._postponed_warned = False
            self._delegated = self.chunk
            self._unstored = (self.chunk, None)  # retention only
            self._have_checkpoint.set()
            return
        await self._roll_and_checkpoint()

    def _may_delegate(self) -> bool:
        delegated, self._delegated = self._delegated, None
        if delegated is not None and delegated not in self.store.list_checkpoints():
            return False  # this one, then, and the next may be left to a standby again
        assert self.standby_checkpoints is not None
        return self.standby_checkpoints()

    async def _roll_and_checkpoint(self) -> None:
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
        header = encode_record(
            chunk_header(
                self.name,
                chunk,
                first_page,
                class_version=self.class_version,  # after on_checkpoint: an upgrade's new one
                incarnation=self.incarnation,
            ),
            RecordType.CHUNK_HEADER,
        )
        store = self.store
        await anyio.to_thread.run_sync(_start_chunk, store, chunk, header)
        if failpoints.armed and failpoints.reached("chunk-started"):
            failpoints.crash()  # the new chunk's header is durable, its checkpoint is not
        self.chunk = chunk
        self.log_bytes = 0
        if data is None:
            return  # only on a first start that could not snapshot: chunk 1 opens regardless
        self.checkpoint_requested = False
        self.upgrade_unsaved = False  # on_checkpoint converted, if an upgrade was pending
        self._postponed_warned = False
        self._unstored = (chunk, data)
        self._have_checkpoint.set()

    async def _checkpointer(self) -> None:
        """Store each roll's checkpoint, then delete what it makes redundant.

        Beside the committer, which meanwhile logs into the new chunk: writing the checkpoint
        and its directory entry took ~3 ms here, during which the log stood still. Deleting
        waits for the checkpoint to be durable, and the next roll waits for both.
        """
        keep = max(1, self.options.keep_checkpoints)
        while True:
            if self._unstored is None:
                await self._have_checkpoint.wait()
                continue
            chunk, data = self._unstored
            await anyio.to_thread.run_sync(_store_checkpoint, self.store, chunk, data, keep)
            if data is not None:
                log.info("%s: checkpoint %d written (%d bytes)", self.name, chunk, len(data))
            else:
                log.debug("%s: chunk %d begun; a standby writes its checkpoint", self.name, chunk)
            if failpoints.armed and failpoints.reached("checkpoint-stored"):
                failpoints.crash()
            self._unstored = None
            self._have_input.set()  # a checkpoint requested meanwhile may be taken now


def _start_chunk(store: LogStore, chunk: int, header: bytes) -> None:
    store.start_chunk(chunk)
    store.append(header)


def _store_checkpoint(store: LogStore, chunk: int, data: bytes | None, keep: int) -> None:
    if data is not None:
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
