"""The object-store tier against real S3 servers started here (moto's server; SeaweedFS):
the shared conformance suite, then what only this tier has (fencing by create-only puts, a
lapsed lease taken over, errors that say what to do)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

obstore = pytest.importorskip("obstore")

from ambrosia_edge.storage.objectstore import ObjectStore  # noqa: E402
from objectservers import S3Server, moto_server, seaweedfs_server  # noqa: E402

from ambrosia_edge.records import RecordType, encode_record  # noqa: E402
from ambrosia_edge.store import LogStore  # noqa: E402
from ambrosia_edge.testing.storage_suite import StoreConformance  # noqa: E402

SERVERS = {"moto": moto_server, "seaweedfs": seaweedfs_server}


@pytest.fixture(scope="module", params=sorted(SERVERS))
def s3(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[S3Server]:
    tmp = tmp_path_factory.mktemp(request.param)
    with SERVERS[request.param](tmp) as server, pytest.MonkeyPatch.context() as mp:
        for key, value in server.env().items():
            mp.setenv(key, value)
        yield server


def page(body: bytes) -> bytes:
    return encode_record(body, RecordType.PAGE)


class TestObjectStore(StoreConformance):
    @pytest.fixture
    def store_url(self, s3: S3Server) -> str:
        return f"s3://{s3.bucket}/logs/{uuid.uuid4().hex}"

    def read_chunk_bytes(self, store: LogStore, chunk: int) -> bytes:
        assert isinstance(store, ObjectStore)
        return store.read_chunk_bytes(chunk)

    def write_chunk_bytes(self, store: LogStore, chunk: int, data: bytes) -> None:
        assert isinstance(store, ObjectStore)
        store.replace_chunk_bytes(chunk, data)

    def chunk_source(self, store: LogStore, chunk: int) -> str:
        return f"{store.url}/chunk-{chunk:08d}"
