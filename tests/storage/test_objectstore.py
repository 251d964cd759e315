"""The object-store tier against real S3 servers started here (moto's server; SeaweedFS):
the shared conformance suite, then what only this tier has (fencing by create-only puts, a
lapsed lease taken over, errors that say what to do)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

obstore = pytest.importorskip("obstore")

from ambrosia_edge.storage.objectstore import ObjectStore  # noqa: E402
from objectservers import (  # noqa: E402
    ObjectServer,
    azurite_server,
    free_port,
    moto_server,
    seaweedfs_server,
)

from ambrosia_edge.errors import (  # noqa: E402
    ConfigError,
    DeposedError,
    LogLockedError,
    StoreError,
)
from ambrosia_edge.records import RecordType, encode_record  # noqa: E402
from ambrosia_edge.store import LogStore, open_store  # noqa: E402
from ambrosia_edge.testing.storage_suite import StoreConformance  # noqa: E402

SERVERS = {"moto": moto_server, "seaweedfs": seaweedfs_server, "azurite": azurite_server}


@pytest.fixture(scope="module", params=sorted(SERVERS))
def s3(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ObjectServer]:
    tmp = tmp_path_factory.mktemp(request.param)
    with SERVERS[request.param](tmp) as server, pytest.MonkeyPatch.context() as mp:
        for key, value in server.env().items():
            mp.setenv(key, value)
        yield server


def page(body: bytes) -> bytes:
    return encode_record(body, RecordType.PAGE)


class TestObjectStore(StoreConformance):
    fencing = True

    @pytest.fixture
    def store_url(self, s3: ObjectServer) -> str:
        return s3.url(f"logs/{uuid.uuid4().hex}")

    def read_chunk_bytes(self, store: LogStore, chunk: int) -> bytes:
        assert isinstance(store, ObjectStore)
        return store.read_chunk_bytes(chunk)

    def write_chunk_bytes(self, store: LogStore, chunk: int, data: bytes) -> None:
        assert isinstance(store, ObjectStore)
        store.replace_chunk_bytes(chunk, data)

    def chunk_source(self, store: LogStore, chunk: int) -> str:
        return f"{store.url}/chunk-{chunk:08d}"

    def make_store(self, url: str) -> LogStore:
        return ObjectStore(url, lease_ttl=0.4)  # a lapse the takeover tests can wait out

    def expire_lease(self, store: LogStore) -> None:
        assert isinstance(store, ObjectStore)
        paused(store)


# -- fencing -------------------------------------------------------------------------------------


@pytest.fixture
def url(s3: ObjectServer) -> str:
    return s3.url(f"fencing/{uuid.uuid4().hex}")


def paused(store: ObjectStore) -> ObjectStore:
    """``store`` as a process frozen (SIGSTOP) would leave it: its lease no longer renewed."""
    store.lease._stop.set()
    return store


def bodies(url: str, chunk: int) -> list[bytes]:
    return [body for _, body in open_store(url).read_records(chunk)]


def test_a_deposed_writer_is_fenced_by_the_next_create(url: str) -> None:
    old = ObjectStore(url, lease_ttl=0.4)
    old.open()
    old.start_chunk(1)
    old.append(page(b"before"))
    paused(old)
    new = ObjectStore(url, lease_ttl=0.4)
    new.open()  # the old lease lapses unrenewed; the new writer raises the epoch and fences
    try:
        assert new.lease.epoch == (old.lease.epoch or 0) + 1
        with pytest.raises(DeposedError, match="deposed") as info:
            old.append(page(b"after the takeover"))
        assert info.value.code == "deposed"
        with pytest.raises(DeposedError, match="deposed"):
            old.start_chunk(2)  # a new chunk does not escape the fence either
        new.resume_chunk(1)
        new.append(page(b"the new writer"))
    finally:
        new.close()
        old.close()
    assert bodies(url, 1) == [b"before", b"the new writer"]
    assert open_store(url).list_chunks() == [1]


def test_a_writer_that_finds_its_lease_taken_stops_before_writing(url: str) -> None:
    old = ObjectStore(url, lease_ttl=0.4)
    old.open()
    old.start_chunk(1)
    renewer = old.lease._thread
    paused(old)
    assert renewer is not None
    renewer.join()
    new = ObjectStore(url, lease_ttl=0.4)
    new.open()
    try:
        # the old writer renews once more, finds the newer epoch and knows it was deposed
        old.lease._stop.clear()
        old.lease._renew_loop_once()
        assert old.lease.lost is not None
        with pytest.raises(DeposedError, match="deposed"):
            old.append(page(b"late"))
    finally:
        new.close()
        old.close()


def test_a_retried_create_that_had_landed_is_recognised_as_our_own(url: str) -> None:
    store = ObjectStore(url)
    store.open()
    try:
        store.start_chunk(1)
        store.append(page(b"once"))
        assert store._end is not None
        chunk, seq = store._end
        # the put of object seq-1 is tried again, as after a lost answer: ours, so no fence
        assert store._create(chunk, seq - 1, page(b"once"), "page")
    finally:
        store.close()
    other = ObjectStore(url)
    other.open()
    try:
        # another holding meeting that name is fenced out
        assert not other._create(chunk, seq - 1, page(b"once"), "page")
    finally:
        other.close()
    assert bodies(url, 1) == [b"once"]


def test_a_killed_holder_on_this_host_is_taken_over_at_once(url: str, s3: ObjectServer) -> None:
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            "from ambrosia_edge.storage.objectstore import ObjectStore\n"
            "s = ObjectStore(sys.argv[1], lease_ttl=2.0); s.open(); s.start_chunk(1)\n"
            "print('ready', flush=True); time.sleep(600)\n",
            url,
        ],
        stdout=subprocess.PIPE,
        env={**os.environ, **s3.env()},
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == b"ready"
        with pytest.raises(LogLockedError, match=f"is in use by pid {child.pid} on host "):
            ObjectStore(url, lease_ttl=0.3).open()  # alive: not taken, once a renewal is seen
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
        if child.stdout is not None:
            child.stdout.close()
    started = time.monotonic()
    store = ObjectStore(url, lease_ttl=60.0)
    store.open()
    try:
        assert time.monotonic() - started < 5.0
        assert store.lease.epoch == 2
    finally:
        store.close()


# -- errors --------------------------------------------------------------------------------------


def test_a_missing_bucket_is_named(s3: ObjectServer) -> None:
    store = open_store(f"{s3.scheme}://no-such-bucket-here/log")
    with pytest.raises(StoreError, match=r"bucket 'no-such-bucket-here' does not exist; create it"):
        store.open()


def test_an_unreachable_endpoint_says_what_to_check(
    s3: ObjectServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(s3.endpoint_variable, f"http://127.0.0.1:{free_port()}")
    store = open_store(s3.url("log"))
    hint = "AZURE_STORAGE" if s3.scheme == "az" else "AWS_ENDPOINT_URL"
    with pytest.raises(StoreError, match=rf"cannot be reached .*check {hint}"):
        store.open()


@pytest.mark.parametrize("bad", ["s3://", "s3://bucket/log?region=x", "s3:///no-bucket"])
def test_a_malformed_url_is_a_config_error(bad: str) -> None:
    with pytest.raises(ConfigError, match="log URL"):
        open_store(bad)


def test_every_cloud_scheme_is_registered(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AZURE_STORAGE_ACCOUNT_NAME", raising=False)
    with pytest.raises(
        ConfigError, match=r"log URL 'az://container/log' cannot be used: .*Account"
    ):
        open_store("az://container/log")
    monkeypatch.setenv("AZURE_STORAGE_ACCOUNT_NAME", "devstoreaccount1")
    for scheme in ("s3", "gs", "az"):
        assert isinstance(open_store(f"{scheme}://container/log"), ObjectStore)


WRITER = """
import sys
from ambrosia_edge.errors import DeposedError
from ambrosia_edge.records import RecordType, encode_record
from ambrosia_edge.storage.objectstore import ObjectStore

store = ObjectStore(sys.argv[1], lease_ttl=0.5)
store.open()
store.start_chunk(1)
i = 0
try:
    while True:
        i += 1
        store.append(encode_record(b"A%d" % i, RecordType.PAGE))
        print(i, flush=True)
except DeposedError as exc:
    print("deposed:", exc, flush=True)
    sys.exit(3)
"""


def test_a_stopped_writer_resumed_after_a_takeover_writes_nothing_and_exits_deposed(
    url: str, s3: ObjectServer, tmp_path: Path
) -> None:
    """Jepsen style: SIGSTOP the writer, let another take over and write, SIGCONT it."""
    out = tmp_path / "writer.out"
    with out.open("wb") as sink:
        child = subprocess.Popen(
            [sys.executable, "-c", WRITER, url],
            stdout=sink,
            stderr=subprocess.STDOUT,
            env={**os.environ, **s3.env()},
        )

    def acknowledged() -> list[int]:
        return [int(line) for line in out.read_text().split() if line.isdigit()]

    try:
        deadline = time.monotonic() + 30
        while len(acknowledged()) < 5:
            assert child.poll() is None, out.read_text()
            assert time.monotonic() < deadline, "the writer made no progress"
            time.sleep(0.01)
        os.kill(child.pid, signal.SIGSTOP)
        new = ObjectStore(url, lease_ttl=0.5)
        new.open()  # the stopped writer cannot renew: its lease lapses
        try:
            new.resume_chunk(1)
            new.append(page(b"B1"))
            new.append(page(b"B2"))
        finally:
            os.kill(child.pid, signal.SIGCONT)
            assert child.wait(timeout=30) == 3, out.read_text()
            new.close()
    finally:
        if child.poll() is None:
            os.kill(child.pid, signal.SIGKILL)
            child.wait()
    assert "deposed" in out.read_text()
    logged = bodies(url, 1)
    assert logged[-2:] == [b"B1", b"B2"]
    from_old = logged[:-2]
    k = len(from_old)
    assert from_old == [b"A%d" % i for i in range(1, k + 1)]  # a prefix, nothing after B's
    assert set(acknowledged()) <= set(range(1, k + 1))  # every acknowledged append is logged
    assert max(acknowledged()) >= k - 1  # at most the append in flight at SIGSTOP was unseen


def test_wrong_credentials_are_named_and_nothing_is_written(tmp_path: Path) -> None:
    with (
        seaweedfs_server(tmp_path, credentials=("right-key", "right-secret")) as server,
        pytest.MonkeyPatch.context() as mp,
    ):
        for key, value in server.env().items():
            mp.setenv(key, value)
        url = f"s3://{server.bucket}/creds/{uuid.uuid4().hex}"
        # a signed put makes the bucket (-s3.autoCreateBucket)
        obstore.put(obstore.store.from_url(f"s3://{server.bucket}"), "made", b"")
        good = open_store(url)
        good.open()  # the right credentials work (and make the bucket)
        good.close()
        mp.setenv("AWS_SECRET_ACCESS_KEY", "wrong-secret")
        other = f"s3://{server.bucket}/creds/{uuid.uuid4().hex}"
        with pytest.raises(StoreError, match=r"refused the credentials .*check AWS_ACCESS_KEY_ID"):
            open_store(other).open()
        mp.setenv("AWS_SECRET_ACCESS_KEY", "right-secret")
        assert open_store(other).lease.info().state == "none"  # nothing written


def test_a_flaky_store_loses_and_duplicates_nothing(
    url: str, s3: ObjectServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A share of PUTs never arrives, another arrives and loses its answer (503 either way):
    obstore retries, and a retried create that finds its own object counts as done."""
    from flakyproxy import flaky_proxy

    with flaky_proxy(s3.endpoint, drop=0.1, lose_answer=0.15) as (endpoint, counts):
        monkeypatch.setenv(s3.endpoint_variable, endpoint)
        store = ObjectStore(url)
        store.open()
        try:
            store.start_chunk(1)
            for i in range(100):
                store.append(page(b"r%d" % i))
        finally:
            store.close()
    assert counts.dropped >= 5 and counts.lost_answers >= 5, vars(counts)
    monkeypatch.setenv(s3.endpoint_variable, s3.endpoint)
    assert bodies(url, 1) == [b"r%d" % i for i in range(100)]


def test_reading_on_from_a_record_fetches_the_rest_of_the_chunk(url: str) -> None:
    """``read_records_from``, as a standby follows a log: the records from that offset on, the
    same as a whole read, and appends made since."""
    writer = ObjectStore(url)
    writer.open()
    try:
        writer.start_chunk(1)
        for i in range(6):
            writer.append(page(b"record %d" % i))
        reader = open_store(url)
        assert isinstance(reader, ObjectStore)
        whole = list(reader.read_records(1))
        assert len(whole) == 6
        for offset, _ in whole:
            assert list(reader.read_records_from(1, offset)) == [r for r in whole if r[0] >= offset]
        writer.append(page(b"appended since"))
        assert list(reader.read_records_from(1, whole[-1][0])) == list(reader.read_records(1))[-2:]
    finally:
        writer.close()


# -- checkpoints written by a standby --------------------------------------------------------------


def test_a_standby_stores_a_checkpoint_while_the_chunk_s_epoch_is_the_newest(url: str) -> None:
    writer = ObjectStore(url, lease_ttl=0.4)
    writer.open()
    standby = ObjectStore(url)  # never opened: it holds no lease
    try:
        writer.start_chunk(1)
        writer.append(page(b"one"))
        writer.write_checkpoint(1, b"by the primary")
        assert standby.write_standby_checkpoint(2, b"no chunk 2 yet") is False
        writer.start_chunk(2)
        assert standby.write_standby_checkpoint(2, b"by the standby") is True
        assert standby.list_checkpoints() == [1, 2]
        assert standby.read_checkpoint(2) == b"by the standby"
        assert (standby.checkpoint_writer(1), standby.checkpoint_writer(2)) == (
            "primary",
            "standby",
        )
        assert standby.checkpoint_writer(3) is None
    finally:
        writer.close()


def test_a_standby_stores_no_checkpoint_once_a_successor_has_begun(url: str) -> None:
    """A later epoch in the lease than the one that began the chunk: the log is changing
    hands, and the standby leaves the checkpoint to whoever writes from then on."""
    old = ObjectStore(url, lease_ttl=0.4)
    old.open()
    old.start_chunk(1)
    old.append(page(b"one"))
    old.start_chunk(2)
    paused(old)
    new = ObjectStore(url, lease_ttl=0.4)
    new.open()
    standby = ObjectStore(url)
    try:
        assert standby.write_standby_checkpoint(2, b"stale") is False
        assert standby.list_checkpoints() == []
        new.resume_chunk(2)
        new.start_chunk(3)
        assert standby.write_standby_checkpoint(3, b"by the standby") is True
        assert standby.write_standby_checkpoint(2, b"stale") is False
        assert standby.list_checkpoints() == [3]
    finally:
        new.close()
        old.close()
