"""The local tier's writer lease: the flock, the LOCK record and how it is read."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import cbor2
import pytest
from ambrosia_edge.storage.local import LocalStore
from ambrosia_edge.storage.locking import FlockLease, read_lock_pid
from ambrosia_edge.storage.memory import MemoryStore

from ambrosia_edge.errors import ConfigError, LogLockedError
from ambrosia_edge.lease import Lease, LeaseHolder, lease_of


@pytest.mark.parametrize(
    ("content", "pid"),
    [
        (b"123", 123),
        (b"123\n", 123),
        (b"pid 123\n", 123),
        (b"pid=123", 123),
        (b"PID: 123", 123),
        (b"host=pi\npid=123\n", 123),
        (b'{"pid": 123, "host": "pi", "since": "2024-01-01T00:00:00Z"}', 123),
        (b'{"pid": "123"}', 123),
        (cbor2.dumps({"pid": 123, "host": "pi"}), 123),
        (cbor2.dumps(123), 123),
        (b"", None),
        (b"garbage", None),
        (b'{"host": "pi"}', None),
        (b'{"pid": true}', None),
        (b"pid=0", None),
        (b"1", None),
        (b"-5", None),
        (b'{"pid": -1}', None),
        (b"\xff\xfe\x00", None),
    ],
)
def test_read_lock_pid(tmp_path: Path, content: bytes, pid: int | None) -> None:
    lock = tmp_path / "LOCK"
    lock.write_bytes(content)
    assert read_lock_pid(lock) == pid
    assert read_lock_pid(tmp_path) == pid


def test_read_lock_pid_missing(tmp_path: Path) -> None:
    assert read_lock_pid(tmp_path / "LOCK") is None
    assert read_lock_pid(tmp_path) is None


def test_log_urls_name_directories() -> None:
    assert LocalStore("/var/x").path == Path("/var/x")
    assert LocalStore("file:///var/my%20log").path == Path("/var/my log")
    assert LocalStore("file://localhost/var/x").path == Path("/var/x")
    with pytest.raises(ConfigError, match="names host 'other'"):
        LocalStore("file://other/var/x")


def test_one_identity_for_every_spelling(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    spellings = ["logs/s", "./logs/s", str(tmp_path / "logs" / "s"), (tmp_path / "logs/s").as_uri()]
    resources = {LocalStore(url).lease.resource for url in spellings}
    assert resources == {(tmp_path / "logs" / "s").as_uri()}


def test_the_store_acquires_and_releases_its_lease(tmp_path: Path) -> None:
    store = LocalStore(str(tmp_path / "log"))
    lease = lease_of(store)
    assert isinstance(lease, Lease) and isinstance(lease, FlockLease)
    assert lease_of(MemoryStore("memory://x")) is None
    assert lease.info().state == "none"
    assert not lease.held and lease.epoch is None
    store.open()
    try:
        assert lease.held
        info = lease.info()
        assert info.state == "held"
        assert info.holder is not None
        assert (info.holder.pid, info.holder.host) == (os.getpid(), socket.gethostname())
        other = LocalStore(str(tmp_path / "log"))
        with pytest.raises(LogLockedError, match=f"in use by pid {os.getpid()}"):
            other.open()
        assert not other.lease.held
    finally:
        store.close()
    assert not lease.held
    assert lease.info().state == "free"
    assert lease.info().detail == "the last writer stopped cleanly"
    other.open()  # free for the next writer at once
    other.close()


@pytest.mark.parametrize(
    ("content", "state", "holder"),
    [
        (b"garbage", "unknown", None),
        (b"pid=77\n", "held", LeaseHolder(77, None, None)),
        (
            json.dumps({"pid": 77, "host": "pi", "since": "2024-01-01T00:00:00Z"}).encode(),
            "held",
            LeaseHolder(77, "pi", "2024-01-01T00:00:00Z"),
        ),
    ],
)
def test_lease_info_of_a_record(
    tmp_path: Path, content: bytes, state: str, holder: LeaseHolder | None
) -> None:
    (tmp_path / "LOCK").write_bytes(content)
    info = FlockLease(tmp_path).info()
    assert (info.state, info.holder) == (state, holder)
