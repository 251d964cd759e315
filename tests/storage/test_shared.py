"""The shared-mount tier's own behaviour beyond the conformance suite: a holder on another host
judged by watching its record, and transient write errors retried at the same offset."""

from __future__ import annotations

import errno
import json
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import pytest
from ambrosia_edge.storage import diskio, shared
from ambrosia_edge.storage.epochlease import lease_name
from ambrosia_edge.storage.shared import SharedStore

from ambrosia_edge.errors import ConfigError, LogLockedError, StoreError
from ambrosia_edge.records import BytesLike
from ambrosia_edge.testing.storage_suite import page


def remote_record(directory: Path, epoch: int, renewed: float) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    record = {"epoch": epoch, "pid": 4242, "host": "elsewhere.example", "since": "then"}
    record |= {"renewed": renewed, "ttl_s": 0.2, "released": False}
    (directory / lease_name(epoch)).write_text(json.dumps(record))


def test_a_silent_holder_elsewhere_is_taken_over_after_a_lease_time(tmp_path: Path) -> None:
    # its clock may say anything: only the record's not changing counts
    remote_record(tmp_path / "log", 4, renewed=time.time() + 3600)
    store = SharedStore(f"nfs://{tmp_path / 'log'}?lease=0.2")
    started = time.monotonic()
    store.open()
    try:
        assert 0.2 <= time.monotonic() - started < 2
        assert store.lease.epoch == 5
    finally:
        store.close()


def test_a_holder_elsewhere_that_renews_keeps_the_log(tmp_path: Path) -> None:
    directory = tmp_path / "log"
    remote_record(directory, 1, renewed=0.0)
    done = threading.Event()

    def renew() -> None:
        n = 0
        while not done.wait(0.03):
            n += 1
            remote_record(directory, 1, renewed=float(n))

    thread = threading.Thread(target=renew)
    thread.start()
    try:
        with pytest.raises(LogLockedError, match=r"in use by pid 4242 on host elsewhere\.example"):
            SharedStore(f"nfs://{directory}?lease=0.2").open()
    finally:
        done.set()
        thread.join()


@pytest.mark.parametrize(
    "url",
    ["nfs://server/export/log", "nfs://", "nfs:///log?lease=0", "nfs:///log?lease=soon"],
)
def test_bad_urls_say_what_is_wrong(url: str) -> None:
    with pytest.raises(ConfigError, match="log URL"):
        SharedStore(url)


class Flaky:
    """Fails the first ``failures`` writes with ``code``, then writes for real."""

    def __init__(self, failures: int, code: int) -> None:
        self.left = failures
        self.code = code
        self.calls = 0

    def __call__(self, fd: int, parts: Sequence[BytesLike], offset: int) -> None:
        self.calls += 1
        if self.left:
            self.left -= 1
            # half the record reaches the file first, as an interrupted write may leave it
            first = bytes(parts[0])
            diskio.write_all(fd, first[: len(first) // 2], offset)
            raise OSError(self.code, "injected")
        real_write_parts(fd, parts, offset)


real_write_parts = shared.write_parts


@pytest.fixture
def writer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> SharedStore:
    monkeypatch.setattr(shared, "_RETRY_PAUSES", (0.0,) * 6)
    store = SharedStore(f"nfs://{tmp_path / 'log'}")
    store.open()
    store.start_chunk(1)
    store.append(page(b"before"))
    return store


def test_a_transient_error_is_retried_at_the_same_offset(
    writer: SharedStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    flaky = Flaky(3, errno.EIO)
    monkeypatch.setattr(shared, "write_parts", flaky)
    try:
        writer.append(page(b"written on the fourth try"))
        writer.append(page(b"after"))
    finally:
        writer.close()
    assert flaky.calls == 5
    assert [body for _, body in SharedStore(writer.url).read_records(1)] == [
        b"before",
        b"written on the fourth try",
        b"after",
    ]


@pytest.mark.parametrize("code", [errno.EIO, errno.ENOSPC])
def test_a_persistent_error_stops_the_writer_and_logs_nothing_half(
    writer: SharedStore, monkeypatch: pytest.MonkeyPatch, code: int
) -> None:
    flaky = Flaky(100, code)
    monkeypatch.setattr(shared, "write_parts", flaky)
    try:
        with pytest.raises(StoreError, match=r"the record was not logged") as info:
            writer.append(page(b"never logged"))
        assert str(writer.path) in str(info.value)
        assert flaky.calls == (7 if code == errno.EIO else 1)  # a full disk is not transient
        with pytest.raises(StoreError, match="stopped accepting records"):
            writer.append(page(b"nor this"))
    finally:
        writer.close()
    assert [body for _, body in SharedStore(writer.url).read_records(1)] == [b"before"]
