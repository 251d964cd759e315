"""Reading on from a record read before (``read_records_from``), as a standby follows a log: the
same records as a whole read from that offset on, across the segments of a shared-mount chunk
continued by a later writer, and appends made since the last read."""

from __future__ import annotations

from pathlib import Path

import pytest
from ambrosia_edge.storage.local import LocalStore
from ambrosia_edge.storage.shared import SharedStore

from ambrosia_edge.testing.storage_suite import page


@pytest.mark.parametrize("tier", ["file", "nfs"])
def test_reading_on_from_a_record_gives_the_rest_of_the_chunk(tmp_path: Path, tier: str) -> None:
    url = str(tmp_path / "log") if tier == "file" else f"nfs://{tmp_path / 'log'}"
    kind = LocalStore if tier == "file" else SharedStore
    writer = kind(url)
    writer.open()
    writer.start_chunk(1)
    for i in range(5):
        writer.append(page(b"first writer %d" % i))
    writer.close()
    writer = kind(url)  # a later writer (a later epoch, on the shared mount) continues chunk 1
    writer.open()
    list(writer.read_records(1, repair=True))
    writer.resume_chunk(1)
    for i in range(3):
        writer.append(page(b"second writer %d" % i))
    reader = kind(url)
    whole = list(reader.read_records(1))
    assert len(whole) == 8
    for offset, _ in whole:
        assert list(reader.read_records_from(1, offset)) == [r for r in whole if r[0] >= offset]
    last = whole[-1][0]
    writer.append(page(b"appended since"))  # seen by a read that opens the files afterwards
    now = list(reader.read_records(1))
    assert len(now) == 9
    assert list(reader.read_records_from(1, last)) == now[-2:]
    writer.close()
