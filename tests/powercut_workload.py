"""The storage workload of the power-cut tests (tests/test_power_cuts.py), importable by the
test and runnable in a child process: ``python powercut_workload.py URL PROGRESS``."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import cbor2

from ambrosia_edge.errors import StoreError
from ambrosia_edge.store import LogStore, open_store
from ambrosia_edge.testing.storage_suite import page


class Workload:
    """Everything a tier does to a log in a run, step by step, noting each step that returned
    (a record counts as logged, a checkpoint as stored, a deletion as done).

    With ``progress``, what was noted is also saved there after each step, for a test that
    runs the workload in a child process: a tier whose lease names its holder's pid must see
    that holder dead before it takes the log over, as after a real power cut."""

    def __init__(self, url: str, progress: Path | None = None) -> None:
        self.url = url
        self.progress = progress
        self.records: dict[int, list[bytes]] = {}  # chunk -> records whose append returned
        self.checkpoints: dict[int, bytes] = {}
        # deletions tried: one that failed may still have happened
        self.deleted_chunks: set[int] = set()
        self.deleted_checkpoints: set[int] = set()
        self.attempted: dict[int, list[bytes]] = {}  # chunk -> every record tried

    def save(self) -> None:
        if self.progress is not None:
            state = {k: v for k, v in vars(self).items() if k not in ("url", "progress")}
            tmp = self.progress.with_suffix(".tmp")
            tmp.write_bytes(cbor2.dumps(state))
            os.replace(tmp, self.progress)

    def load(self) -> None:
        assert self.progress is not None
        if self.progress.exists():
            for key, value in cbor2.loads(self.progress.read_bytes()).items():
                setattr(self, key, value)

    def append(self, store: LogStore, chunk: int, body: bytes) -> None:
        self.attempted.setdefault(chunk, []).append(body)
        self.save()
        store.append(page(body))
        self.records.setdefault(chunk, []).append(body)
        self.save()

    def run(self) -> None:
        store = open_store(self.url)
        try:
            store.open()
            store.start_chunk(1)
            self.records[1] = []
            self.save()
            for i in range(3):
                self.append(store, 1, b"small %d" % i)
            store.write_checkpoint(1, b"checkpoint one")
            self.checkpoints[1] = b"checkpoint one"
            self.save()
            store.start_chunk(2)
            self.records[2] = []
            self.save()
            self.append(store, 2, b"large " + bytes(300_000))  # O_DIRECT where allowed
            self.append(store, 2, b"small after large")
            store.write_checkpoint(2, b"checkpoint two")
            self.checkpoints[2] = b"checkpoint two"
            self.save()
            self.deleted_chunks.add(1)
            self.save()
            store.delete_chunk(1)  # kept as a zeroed spare
            self.deleted_checkpoints.add(1)
            self.save()
            store.delete_checkpoint(1)
            store.start_chunk(3)  # takes the spare's file
            self.records[3] = []
            self.save()
            for i in range(3):
                self.append(store, 3, b"in a spare %d" % i)
            store.write_checkpoint(3, b"checkpoint three, longer than the others")
            self.checkpoints[3] = b"checkpoint three, longer than the others"
            self.save()
        except StoreError:
            pass  # the power went
        finally:
            store.close()

    def check(self) -> None:
        """What the log holds after the cut: all that was acknowledged, nothing else."""
        store = open_store(self.url)
        store.open()
        try:
            chunks = store.list_chunks()
            for chunk in self.records:
                if chunk not in self.deleted_chunks:
                    assert chunk in chunks, f"chunk {chunk} lost; the log holds {chunks}"
            for chunk in chunks:
                found = [body for _, body in store.read_records(chunk, repair=True)]
                tried = self.attempted.get(chunk, [])
                logged = self.records.get(chunk, [])
                assert found == tried[: len(found)], f"chunk {chunk} holds records never written"
                if chunk not in self.deleted_chunks:
                    assert len(found) >= len(logged), f"chunk {chunk} lost acknowledged records"
            listed = store.list_checkpoints()
            for n, data in self.checkpoints.items():
                if n not in self.deleted_checkpoints:
                    assert n in listed, f"checkpoint {n} lost"
                    assert store.read_checkpoint(n) == data
            for n in listed:
                assert store.read_checkpoint(n) == {1: b"checkpoint one", 2: b"checkpoint two",
                    3: b"checkpoint three, longer than the others"}[n]  # fmt: skip
        finally:
            store.close()


if __name__ == "__main__":
    Workload(sys.argv[1], Path(sys.argv[2])).run()
