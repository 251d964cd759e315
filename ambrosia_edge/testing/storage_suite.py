"""The storage contract as tests, for any tier: subclass ``StoreConformance`` in a test module.

::

    from ambrosia_edge.testing.storage_suite import StoreConformance

    class TestMyTier(StoreConformance):
        @pytest.fixture
        def store_url(self, tmp_path):
            return f"mytier://{tmp_path.name}"   # a log nobody has written yet

        def read_chunk_bytes(self, store, chunk): ...
        def write_chunk_bytes(self, store, chunk, data): ...

Every test then runs against the tier. What a tier cannot offer is declared, not detected: a
tier that cannot show or overwrite a chunk's bytes sets ``raw_chunks = False`` and the tests
that tear or damage a log on purpose are skipped; one whose lock cannot name its holder's
process sets ``lock_names_holder = False``. A tier whose lease lapses and fences a deposed
writer by epoch (shared mounts, object stores) sets ``fencing = True`` and implements
``expire_lease(store)``, which makes a writer's lease look lapsed as if its process had been
paused past it; the takeover and fencing tests then run. Optional methods of the contract
(``read_typed_records``, ``append_parts``) are tested where the tier has them.

This module imports pytest; ``ambrosia_edge.testing`` itself does not.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from typing import Any

import pytest

from ..errors import CheckpointError, CorruptLogError, DeposedError, LogLockedError, StoreError
from ..lease import lease_of
from ..records import RecordType, encode_record
from ..store import LogStore, open_store

__all__ = ["ADVICE", "StoreConformance", "offsets_of", "page"]

#: What a CorruptLogError tells the user to do, after the file and offset.
ADVICE = (
    "the files were left untouched; restore this chunk from a copy, "
    "or move it aside to recover from the previous checkpoint"
)


def page(body: bytes) -> bytes:
    return encode_record(body, RecordType.PAGE)


def offsets_of(frames: list[bytes]) -> list[int]:
    offsets, end = [], 0
    for frame in frames:
        offsets.append(end)
        end += len(frame)
    return offsets


class StoreConformance:
    """The tests every storage tier passes; a subclass names the tier (see the module)."""

    #: The tier can show and overwrite a chunk's bytes (``read_chunk_bytes`` and
    #: ``write_chunk_bytes``), so that tests can leave what a crash or a bad disk leaves.
    raw_chunks: bool = True
    #: LogLockedError names the holder's pid and host, and says to stop it or pass another --log.
    lock_names_holder: bool = True
    #: The lease lapses when not renewed, and a writer deposed by a newer epoch is fenced out
    #: (``expire_lease`` must then be implemented).
    fencing: bool = False

    @pytest.fixture
    def store_url(self) -> str:
        """The URL of a log nobody has written yet, fresh for each test."""
        raise NotImplementedError("a StoreConformance subclass provides the store_url fixture")

    def make_store(self, url: str) -> LogStore:
        """The tier serving ``url``, built but not opened; by default through the registry."""
        return open_store(url)

    def read_chunk_bytes(self, store: LogStore, chunk: int) -> bytes:
        """All of ``chunk``'s bytes as stored, torn tail included."""
        raise NotImplementedError

    def write_chunk_bytes(self, store: LogStore, chunk: int, data: bytes) -> None:
        """Replace ``chunk``'s bytes with ``data``, as a crash or a bad disk would."""
        raise NotImplementedError

    def expire_lease(self, store: LogStore) -> None:
        """Make ``store``'s lease look lapsed, as if its process had been paused past it."""
        raise NotImplementedError

    def chunk_source(self, store: LogStore, chunk: int) -> str:
        """How errors name ``chunk`` (a file's path, or the URL and the chunk's file name)."""
        return f"{store.url}/chunk-{chunk:08d}.log"

    # -- helpers ---------------------------------------------------------------------------------

    def make(self, url: str) -> LogStore:
        store = self.make_store(url)
        assert isinstance(store, LogStore), f"{type(store).__name__} is not a LogStore"
        return store

    def writer(self, url: str) -> LogStore:
        store = self.make(url)
        store.open()
        return store

    def raw_read(self, store: LogStore, chunk: int) -> bytes:
        return self.read_chunk_bytes(store, chunk)

    def raw_write(self, store: LogStore, chunk: int, data: bytes) -> None:
        self.write_chunk_bytes(store, chunk, data)

    def need_raw_chunks(self) -> None:
        if not self.raw_chunks:
            pytest.skip("the tier cannot show or overwrite a chunk's bytes (raw_chunks = False)")

    def write_chunk(self, url: str, chunk: int, frames: list[bytes]) -> None:
        store = self.writer(url)
        try:
            store.start_chunk(chunk)
            for frame in frames:
                store.append(frame)
        finally:
            store.close()

    # -- appending and reading -------------------------------------------------------------------

    def test_append_and_read_back_in_order_across_reopen(self, store_url: str) -> None:
        frames = [
            encode_record(b"chunk header", RecordType.CHUNK_HEADER),
            page(b"first page"),
            page(b""),
            page(bytes(range(256)) * 40),
        ]
        self.write_chunk(store_url, 1, frames)
        offsets = offsets_of(frames)

        reader = self.make(store_url)  # never opened: reading needs no writer role
        assert list(reader.read_records(1)) == [
            (offsets[0], b"chunk header"),
            (offsets[1], b"first page"),
            (offsets[2], b""),
            (offsets[3], bytes(range(256)) * 40),
        ]
        if self.raw_chunks:
            assert self.raw_read(reader, 1) == b"".join(frames)

        again = self.writer(store_url)
        try:
            again.resume_chunk(1)
            again.append(page(b"after restart"))
        finally:
            again.close()
        assert list(self.make(store_url).read_records(1))[-1] == (
            len(b"".join(frames)),
            b"after restart",
        )

    @pytest.mark.parametrize("tail", ["cut", "damaged-last-byte", "zeroed", "zero-padding"])
    def test_torn_tail_at_every_offset_of_the_last_record(self, store_url: str, tail: str) -> None:
        self.need_raw_chunks()
        frames = [page(b"first"), page(b"second"), page(b"the last, torn record")]
        full = b"".join(frames)
        last = offsets_of(frames)[2]
        self.write_chunk(store_url, 1, frames)
        survivors = [(0, b"first"), (len(frames[0]), b"second")]
        for cut in range(last + 1, len(full) + 1):
            if tail == "cut":
                if cut == len(full):
                    continue
                damaged = full[:cut]
            elif tail == "damaged-last-byte":
                damaged = full[: cut - 1] + bytes([full[cut - 1] ^ 0x20])
            elif tail == "zeroed":
                damaged = full[:last] + bytes(cut - last)
            else:
                damaged = full[:last] + bytes(cut - last + 4096)
            reader = self.make(store_url)
            self.raw_write(reader, 1, damaged)

            assert list(reader.read_records(1)) == survivors, cut
            assert self.raw_read(reader, 1) == damaged, cut  # a reader never repairs

            store = self.writer(store_url)
            try:
                assert list(store.read_records(1, repair=True)) == survivors, cut
                assert self.raw_read(store, 1) == full[:last], cut
                store.resume_chunk(1)
                store.append(page(b"appended after repair"))
            finally:
                store.close()
            assert list(self.make(store_url).read_records(1)) == [
                *survivors,
                (last, b"appended after repair"),
            ], cut

    def test_resume_chunk_alone_cuts_a_torn_tail(self, store_url: str) -> None:
        self.need_raw_chunks()
        frames = [page(b"first"), page(b"second")]
        self.write_chunk(store_url, 1, frames)
        store = self.writer(store_url)
        try:
            self.raw_write(store, 1, b"".join(frames) + page(b"torn")[:9])
            store.resume_chunk(1)
            assert self.raw_read(store, 1) == b"".join(frames)
            store.append(page(b"third"))
            assert [body for _, body in store.read_records(1)] == [b"first", b"second", b"third"]
        finally:
            store.close()

    def test_middle_record_damage_is_corruption_and_touches_nothing(self, store_url: str) -> None:
        self.need_raw_chunks()
        frames = [page(b"first"), page(b"middle"), page(b"x" * 400)]
        full = b"".join(frames)
        middle = offsets_of(frames)[1]
        self.write_chunk(store_url, 1, frames)
        # every byte, the length's high bytes too: the intact record after it shows it is not a tear
        positions = list(range(len(frames[1])))
        for i in positions:
            damaged = bytearray(full)
            damaged[middle + i] ^= 0x01
            store = self.make(store_url)
            self.raw_write(store, 1, bytes(damaged))
            source = self.chunk_source(store, 1)

            records = store.read_records(1)
            assert next(records) == (0, b"first")
            with pytest.raises(CorruptLogError) as info:
                next(records)
            message = str(info.value)
            assert message.startswith(
                f"corrupt log record in {source} at byte offset {middle}: "
            ), i
            assert message.endswith(ADVICE), i
            assert self.raw_read(store, 1) == damaged, i

            store.open()
            try:
                with pytest.raises(CorruptLogError, match=f"at byte offset {middle}: "):
                    list(store.read_records(1, repair=True))
                assert self.raw_read(store, 1) == damaged, i
                with pytest.raises(CorruptLogError, match=f"at byte offset {middle}: "):
                    store.resume_chunk(1)
                assert self.raw_read(store, 1) == damaged, i
            finally:
                store.close()

    def test_corruption_names_what_is_wrong(self, store_url: str) -> None:
        self.need_raw_chunks()
        frames = [page(b"first"), page(b"middle"), page(b"last")]
        self.write_chunk(store_url, 1, frames)
        store = self.make(store_url)
        damaged = bytearray(b"".join(frames))
        damaged[len(frames[0]) + 12] ^= 0x01
        self.raw_write(store, 1, bytes(damaged))
        with pytest.raises(CorruptLogError) as info:
            list(store.read_records(1))
        assert str(info.value) == (
            f"corrupt log record in {self.chunk_source(store, 1)} at byte offset {len(frames[0])}: "
            f"checksum mismatch; {ADVICE}"
        )

    def test_reader_beside_a_writer_sees_a_torn_looking_tail_as_the_end(
        self, store_url: str
    ) -> None:
        self.need_raw_chunks()
        store = self.writer(store_url)
        try:
            store.start_chunk(1)
            store.append(page(b"one"))
            store.append(page(b"two"))
            done = self.raw_read(store, 1)
            in_flight = done + page(b"three")[:15]
            self.raw_write(store, 1, in_flight)
            reader = self.make(store_url)
            assert [body for _, body in reader.read_records(1)] == [b"one", b"two"]
            assert self.raw_read(reader, 1) == in_flight
        finally:
            store.close()

    def test_reading_a_missing_chunk(self, store_url: str) -> None:
        with pytest.raises(StoreError, match="no chunk 9 in log"):
            self.make(store_url).read_records(9)

    # -- chunks ----------------------------------------------------------------------------------

    def test_rollover_to_a_new_chunk(self, store_url: str) -> None:
        store = self.writer(store_url)
        try:
            store.start_chunk(1)
            store.append(page(b"in one"))
            store.start_chunk(2)
            store.append(page(b"in two"))
            store.append(page(b"also in two"))
            assert store.list_chunks() == [1, 2]
            with pytest.raises(StoreError, match="already exists"):
                store.start_chunk(2)
            with pytest.raises(StoreError, match="being appended to"):
                store.delete_chunk(2)
        finally:
            store.close()
        reader = self.make(store_url)
        assert list(reader.read_records(1)) == [(0, b"in one")]
        assert [body for _, body in reader.read_records(2)] == [b"in two", b"also in two"]

    def test_listing_after_restart(self, store_url: str) -> None:
        store = self.writer(store_url)
        try:
            assert (store.list_chunks(), store.list_checkpoints()) == ([], [])
            for n in (1, 2, 3):
                store.start_chunk(n)
                store.append(page(f"page {n}".encode()))
            store.write_checkpoint(1, b"cp1")
            store.write_checkpoint(3, b"cp3")
            store.delete_chunk(1)
            store.delete_chunk(7)  # missing is fine
        finally:
            store.close()
        again = self.writer(store_url)
        try:
            assert again.list_chunks() == [2, 3]
            assert again.list_checkpoints() == [1, 3]
            assert list(again.read_records(3)) == [(0, b"page 3")]
        finally:
            again.close()

    def test_writer_operations_need_the_writer_role(self, store_url: str) -> None:
        self.write_chunk(store_url, 1, [page(b"x")])
        store = self.make(store_url)
        attempts: list[Callable[[], object]] = [
            lambda: store.start_chunk(2),
            lambda: store.resume_chunk(1),
            lambda: store.append(page(b"y")),
            lambda: store.write_checkpoint(1, b"cp"),
            lambda: store.delete_chunk(1),
            lambda: store.delete_checkpoint(1),
            lambda: store.read_records(1, repair=True),
        ]
        for attempt in attempts:
            with pytest.raises(StoreError, match=r"not open for writing|has no chunk open"):
                attempt()
        assert list(store.read_records(1)) == [(0, b"x")]

    def test_append_needs_a_target_chunk(self, store_url: str) -> None:
        store = self.writer(store_url)
        try:
            with pytest.raises(StoreError):
                store.append(page(b"nowhere"))
            assert store.list_chunks() == []
        finally:
            store.close()

    def test_close_is_idempotent(self, store_url: str) -> None:
        self.make(store_url).close()
        store = self.writer(store_url)
        store.close()
        store.close()
        again = self.writer(store_url)
        again.close()

    # -- checkpoints -----------------------------------------------------------------------------

    def test_checkpoints(self, store_url: str) -> None:
        store = self.writer(store_url)
        try:
            store.write_checkpoint(1, b"\xa1aa\x01")
            store.write_checkpoint(2, b"two")
            store.write_checkpoint(2, b"two, rewritten")
            assert store.list_checkpoints() == [1, 2]
            assert store.read_checkpoint(1) == b"\xa1aa\x01"
            assert store.read_checkpoint(2) == b"two, rewritten"
            store.delete_checkpoint(1)
            store.delete_checkpoint(1)
            assert store.list_checkpoints() == [2]
            with pytest.raises(
                CheckpointError, match=r"checkpoint 1 not found: .*checkpoint-00000001"
            ):
                store.read_checkpoint(1)
        finally:
            store.close()
        reader = self.make(store_url)
        assert reader.list_checkpoints() == [2]
        assert reader.read_checkpoint(2) == b"two, rewritten"

    # -- one writer ------------------------------------------------------------------------------

    def test_a_second_writer_is_fenced_out(self, store_url: str) -> None:
        first = self.writer(store_url)
        second = self.make(store_url)
        try:
            with pytest.raises(LogLockedError) as info:
                second.open()
            assert info.value.code == "log-locked"
            if self.lock_names_holder:
                message = str(info.value)
                holder = f"is in use by pid {os.getpid()} on host {socket.gethostname()} since "
                assert holder in message
                assert message.endswith("; stop that process or pass another --log")
            first.start_chunk(1)
            first.append(page(b"still the writer"))
        finally:
            first.close()
        second.open()
        try:
            second.resume_chunk(1)
            second.append(page(b"the new writer"))
        finally:
            second.close()
        assert [body for _, body in self.make(store_url).read_records(1)] == [
            b"still the writer",
            b"the new writer",
        ]

    # -- fencing ---------------------------------------------------------------------------------

    def need_fencing(self) -> None:
        if not self.fencing:
            pytest.skip("the tier's lease does not lapse nor fence by epoch (fencing = False)")

    def test_a_lapsed_lease_is_taken_over_in_a_larger_epoch(self, store_url: str) -> None:
        self.need_fencing()
        first = self.writer(store_url)
        second = self.make(store_url)
        try:
            first.start_chunk(1)
            first.append(page(b"first writer"))
            self.expire_lease(first)
            second.open()
            old, new = lease_of(first), lease_of(second)
            assert old is not None and new is not None
            assert old.epoch is not None and new.epoch is not None and new.epoch > old.epoch
            info = new.info()
            assert info.state == "held" and info.holder is not None
            assert info.holder.epoch == new.epoch
            second.resume_chunk(1)
            second.append(page(b"second writer"))
        finally:
            second.close()
            first.close()
        assert [body for _, body in self.make(store_url).read_records(1)] == [
            b"first writer",
            b"second writer",
        ]

    def test_a_deposed_writers_writes_never_become_part_of_the_log(self, store_url: str) -> None:
        self.need_fencing()
        first = self.writer(store_url)
        second = self.make(store_url)
        try:
            first.start_chunk(1)
            first.append(page(b"before"))
            self.expire_lease(first)
            second.open()
            second.resume_chunk(1)
            second.append(page(b"after the takeover"))
            # the first writer wakes up: every write it tries is refused, saying why
            with pytest.raises(DeposedError, match="deposed") as info:
                first.append(page(b"late, from the deposed writer"))
            assert info.value.code == "deposed"
            attempts: list[Callable[[], object]] = [
                lambda: first.append(page(b"later still")),
                lambda: first.start_chunk(2),
                lambda: first.write_checkpoint(3, b"deposed checkpoint"),
            ]
            for attempt in attempts:
                with pytest.raises(DeposedError):
                    attempt()
            second.append(page(b"the new writer goes on"))
        finally:
            first.close()
            second.close()
        reader = self.make(store_url)
        assert reader.list_chunks() == [1]
        assert [body for _, body in reader.read_records(1)] == [
            b"before",
            b"after the takeover",
            b"the new writer goes on",
        ]
        assert 3 not in reader.list_checkpoints()  # the deposed writer's checkpoint
        third = self.writer(store_url)
        try:
            assert [body for _, body in third.read_records(1, repair=True)][-1] == (
                b"the new writer goes on"
            )
            third.resume_chunk(1)
            third.append(page(b"third"))
        finally:
            third.close()
        assert [body for _, body in self.make(store_url).read_records(1)][-2:] == [
            b"the new writer goes on",
            b"third",
        ]

    def test_a_write_between_the_successors_replay_and_its_resume_never_counts(
        self, store_url: str
    ) -> None:
        """A recovering writer replays the last chunk (``read_records(repair=True)``), then
        resumes it: the deposed writer's append in between must not join the log, or the log
        would hold a page the new writer's state never saw."""
        self.need_fencing()
        first = self.writer(store_url)
        second = self.make(store_url)
        try:
            first.start_chunk(1)
            first.append(page(b"replayed"))
            self.expire_lease(first)
            second.open()
            assert [body for _, body in second.read_records(1, repair=True)] == [b"replayed"]
            with pytest.raises(DeposedError):
                first.append(page(b"in between, from the deposed writer"))
            second.resume_chunk(1)
            second.append(page(b"the successor's first"))
        finally:
            first.close()
            second.close()
        assert [body for _, body in self.make(store_url).read_records(1)] == [
            b"replayed",
            b"the successor's first",
        ]

    def test_a_second_writer_is_refused_while_the_first_renews(self, store_url: str) -> None:
        self.need_fencing()
        first = self.writer(store_url)
        try:
            first.start_chunk(1)
            for n in range(3):
                with pytest.raises(LogLockedError):
                    self.make(store_url).open()
                first.append(page(f"still the writer {n}".encode()))
        finally:
            first.close()

    # -- what a tier may offer besides -----------------------------------------------------------

    def test_typed_records_give_each_record_its_type(self, store_url: str) -> None:
        reader = self.make(store_url)
        typed = getattr(reader, "read_typed_records", None)
        if typed is None:
            pytest.skip("the tier has no read_typed_records")
        frames = [encode_record(b"chunk header", RecordType.CHUNK_HEADER), page(b"a"), page(b"")]
        self.write_chunk(store_url, 1, frames)
        offsets = offsets_of(frames)
        assert list(typed(1)) == [
            (offsets[0], RecordType.CHUNK_HEADER, b"chunk header"),
            (offsets[1], RecordType.PAGE, b"a"),
            (offsets[2], RecordType.PAGE, b""),
        ]

    def test_append_parts_is_append_of_the_joined_parts(self, store_url: str) -> None:
        store = self.writer(store_url)
        try:
            append_parts: Callable[[list[bytes]], Any] | None = getattr(store, "append_parts", None)
            if append_parts is None:
                pytest.skip("the tier has no append_parts")
            whole = page(bytes(range(256)) * 300)
            store.start_chunk(1)
            append_parts([whole[:12], whole[12:5000], whole[5000:]])
            append_parts([page(b"one piece")])
            store.append(page(b"after"))
        finally:
            store.close()
        assert [body for _, body in self.make(store_url).read_records(1)] == [
            bytes(range(256)) * 300,
            b"one piece",
            b"after",
        ]
