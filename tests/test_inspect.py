"""``ambrosia-edge inspect``: the numbers it prints for a log built by real immortals.

The log is built so that its page structure is exact: every input is sent only after the
previous one has been logged, dispatched and acknowledged, so each lands in a page of its own
and the expected page numbers and watermarks can be written down here.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest
from apps.counting import Counter
from instances import Instance, eventually, settings
from support import free_port

from ambrosia_edge import Immortal, impulse
from ambrosia_edge.cli import main
from ambrosia_edge.config import default_log_url
from ambrosia_edge.records import RecordType, encode_record, scan_records

TICKS = 5
CRASH_AFTER = 3


class Sensor(Immortal):
    """Turns each outside impulse into one replayable call to the server."""

    def __init__(self) -> None:
        self.ticks = 0

    @impulse
    def tick(self, n: int) -> None:
        self.ticks += 1
        self.proxy("server").fork.receive(n)


class Built:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.server = root / "server"
        self.sensor = root / "sensor"
        self.live_report = ""


async def build(root: Path) -> Built:
    """Server and sensor in this process; the server checkpoints after 3 ticks and crashes."""
    built = Built(root)
    ps, pn = free_port(), free_port()
    async with anyio.create_task_group() as tg:
        server = Instance(tg, Counter, settings("server", built.server, ps, {"sensor": pn}))
        sensor = Instance(tg, Sensor, settings("sensor", built.sensor, pn, {"server": ps}))

        def pages(instance: Instance) -> int:
            assert instance.runtime is not None
            return instance.runtime.coordinator.stats["pages"]

        await server.start()
        await eventually(lambda: pages(server) == 1, "the server's start page")
        await sensor.start()
        await eventually(lambda: pages(sensor) == 1, "the sensor's start page")

        async def tick(n: int) -> None:
            sensor.obj.this.fork.tick(n)
            assert sensor.runtime is not None
            out = sensor.runtime.coordinator.outputs

            def done() -> bool:
                return server.obj.received == n and out["server"].acked_replayable == n

            await eventually(done, f"tick {n} to be logged and acknowledged")

        for n in range(1, CRASH_AFTER + 1):
            await tick(n)
        assert server.runtime is not None
        server.runtime.request_checkpoint()
        store = server.runtime.store
        await eventually(lambda: store.list_checkpoints() == [1, 2], "the server's checkpoint 2")
        await server.crash()
        await server.start()
        for n in range(CRASH_AFTER + 1, TICKS + 1):
            await tick(n)
        built.live_report = run_inspect(built.sensor)[1]
        tg.cancel_scope.cancel()
    return built


@pytest.fixture(scope="module")
def log(tmp_path_factory: pytest.TempPathFactory) -> Built:
    return anyio.run(build, tmp_path_factory.mktemp("logs"))


def run_inspect(*args: Any) -> tuple[int, str, str]:
    """Run the real command line in this process and capture what it prints."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["inspect", *(str(a) for a in args)])
    return code, out.getvalue(), err.getvalue()


def test_text_report_of_the_server_log(log: Built) -> None:
    code, out, err = run_inspect(log.server)
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0] == f"log: {log.server}"
    assert lines[1] == "immortal: server"
    assert lines[2] == "lock: free (the last writer stopped cleanly)"
    assert "checkpoints: 2" in lines
    assert re.search(
        r"checkpoint 1: \d+ bytes, immortal server, class apps\.counting:Counter version 1\n"
        r"    epoch 1, next page 1, next call id 1, state \d+ bytes\n"
        r"    inputs \(total/replayable\): none\n",
        out,
    )
    assert re.search(
        r"checkpoint 2: \d+ bytes, immortal server, class apps\.counting:Counter version 1\n"
        r"    epoch 1, next page 5, next call id 1, state \d+ bytes\n"
        r"    inputs \(total/replayable\): sensor 3/3, server 1/1\n"
        r"    output buffers: sensor 0 messages 0 bytes \(next replayable 1\), "
        r"server 0 messages 0 bytes \(next replayable 2\)\n",
        out,
    )
    assert "chunks: 2" in lines
    # page 1: the logical start; pages 2-4: ticks 1-3; checkpoint 2 opens chunk 2 at page 5;
    # the restart is epoch 2, and ticks 4 and 5 are pages 5 and 6
    assert re.search(
        r"  chunk 1: \d+ bytes, first page 1, 4 pages \(1-4\), 4 messages \(0 impulses\), "
        r"epochs 1\n",
        out,
    )
    assert re.search(
        r"  chunk 2: \d+ bytes, first page 5, 2 pages \(5-6\), 2 messages \(0 impulses\), "
        r"epochs 2\n",
        out,
    )
    assert "torn tail" not in out
    assert "  sensor: 5/5 (from page 6)" in lines
    # page 1 holds the start message, but checkpoint 2 is newer than page 1
    assert "  server: 1/1 (from checkpoint 2)" in lines
    # the self-acknowledgement of page 1 travels in the next page
    assert "  server: 1 (from page 2)" in lines
    assert re.search(r"^  sensor: 0 \(from page [2-6]\)$", out, re.MULTILINE)
    assert "notes:" not in out


def test_text_report_of_the_sensor_log(log: Built) -> None:
    code, out, _ = run_inspect(log.sensor)
    assert code == 0
    lines = out.splitlines()
    assert "checkpoints: 1" in lines
    assert "chunks: 1" in lines
    assert re.search(
        rf"  chunk 1: \d+ bytes, first page 1, {TICKS + 1} pages \(1-{TICKS + 1}\), "
        rf"{TICKS + 1} messages \({TICKS} impulses\), epochs 1\n",
        out,
    )
    # one replayable start message and TICKS impulses, all from the sensor to itself
    assert f"  sensor: {TICKS + 1}/1 (from page {TICKS + 1})" in lines
    # the tick before the last was acknowledged before the last tick's page was sealed
    assert f"  server: {TICKS - 1} (from page {TICKS + 1})" in lines
    assert f"  sensor: 1 (from page {TICKS + 1})" in lines


def test_lock_of_a_running_writer_is_reported(log: Built) -> None:
    lock = re.search(r"^lock: (.*)$", log.live_report, re.MULTILINE)
    assert lock is not None
    assert lock[1].startswith(f"held: pid {os.getpid()} on host ")


def test_stale_lock_of_a_killed_writer_is_reported(log: Built, tmp_path: Path) -> None:
    copy = tmp_path / "server"
    shutil.copytree(log.server, copy)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    holder = {"pid": gone.pid, "host": socket.gethostname(), "since": "2024-01-01T00:00:00Z"}
    (copy / "LOCK").write_text(json.dumps(holder))
    code, out, _ = run_inspect(copy)
    assert code == 0
    assert (
        f"lock: stale (that process is gone: it was killed or crashed): pid {gone.pid} on host "
        f"{holder['host']} since 2024-01-01T00:00:00Z"
    ) in out.splitlines()


def test_json_report(log: Built) -> None:
    code, out, _ = run_inspect(log.server, "--json")
    assert code == 0
    doc = json.loads(out)
    assert doc["directory"] == str(log.server)
    assert doc["immortal"] == "server"
    assert [c["number"] for c in doc["checkpoints"]] == [1, 2]
    second = doc["checkpoints"][1]
    assert (second["epoch"], second["next_page"], second["chunk"]) == (1, 5, 2)
    assert second["inputs"] == {"sensor": [3, 3], "server": [1, 1]}
    assert second["bytes"] == (log.server / "checkpoint-00000002.cbor").stat().st_size
    chunks = [
        (c["number"], c["first_page"], c["pages"], c["page_range"], c["messages"], c["epochs"])
        for c in doc["chunks"]
    ]
    assert chunks == [(1, 1, 4, [1, 4], 4, [1]), (2, 5, 2, [5, 6], 2, [2])]
    for chunk in doc["chunks"]:
        size = (log.server / f"chunk-{chunk['number']:08d}.log").stat().st_size
        assert chunk["bytes"] == size
        assert chunk["torn"] is None
    assert doc["inputs"]["sensor"] == {"total": 5, "replayable": 5, "page": 6, "checkpoint": None}
    assert doc["inputs"]["server"] == {"total": 1, "replayable": 1, "page": None, "checkpoint": 2}
    assert doc["trims"]["server"] == {"replayable": 1, "page": 2}
    assert doc["notes"] == []


def test_a_name_means_the_default_log_location(
    log: Built, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    where = Path(default_log_url("server"))
    assert where.is_relative_to(tmp_path)
    shutil.copytree(log.server, where)
    code, out, _ = run_inspect("server")
    assert code == 0
    assert out.splitlines()[0] == f"log: {where}"


def test_missing_directory_is_an_error(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    code, out, err = run_inspect(missing)
    assert code == 1
    assert out == ""
    assert err.startswith(f"ambrosia-edge: error: no log at {missing}: the directory does not")
    assert not missing.exists()


def test_directory_without_a_log_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("not a log")
    code, _, err = run_inspect(tmp_path)
    assert code == 1
    assert "holds no ambrosia-edge log" in err


def test_torn_tail_is_reported_and_left_alone(log: Built, tmp_path: Path) -> None:
    copy = tmp_path / "server"
    shutil.copytree(log.server, copy)
    chunk = copy / "chunk-00000002.log"
    intact = chunk.stat().st_size
    with open(chunk, "ab") as f:  # a writer killed halfway through appending a page
        f.write(encode_record(b"x" * 40, RecordType.PAGE)[:30])
    before = chunk.read_bytes()
    code, out, _ = run_inspect(copy)
    assert code == 0
    assert (
        f"    torn tail at offset {intact}: 30 bytes (record of 40 body bytes runs past the end "
        "of the data); left as is, the next start of the immortal cuts it off"
    ) in out.splitlines()
    assert "2 pages (5-6)" in out
    code, out, _ = run_inspect(copy, "--json")
    assert code == 0
    torn = json.loads(out)["chunks"][1]["torn"]
    assert torn == {
        "offset": intact,
        "bytes": 30,
        "reason": "record of 40 body bytes runs past the end of the data",
    }
    assert chunk.read_bytes() == before


def test_zeros_written_ahead_are_reported_as_such_not_as_a_torn_tail(
    log: Built, tmp_path: Path
) -> None:
    copy = tmp_path / "server"
    shutil.copytree(log.server, copy)
    chunk = copy / "chunk-00000002.log"
    intact = chunk.stat().st_size
    with open(chunk, "ab") as f:  # what a running (or killed) writer leaves after small appends
        f.write(bytes(5000))
    code, out, _ = run_inspect(copy)
    assert code == 0
    zeros = "(5000 of them zeros after the last record, room to append)"
    assert f"  chunk 2: {intact + 5000} bytes {zeros}" in out
    assert "torn tail" not in out
    code, out, _ = run_inspect(copy, "--json")
    assert json.loads(out)["chunks"][1]["zero_fill"] == 5000


def test_corrupt_record_is_an_error_and_left_alone(log: Built, tmp_path: Path) -> None:
    copy = tmp_path / "server"
    shutil.copytree(log.server, copy)
    chunk = copy / "chunk-00000001.log"
    data = bytearray(chunk.read_bytes())
    offsets = [offset for offset, _, _ in scan_records(data, source="test")]
    damaged = offsets[2]  # page 2, with page 3 and 4 after it
    data[damaged + 14] ^= 0xFF
    chunk.write_bytes(data)
    code, out, err = run_inspect(copy)
    assert code == 1
    assert out == ""
    assert f"corrupt log record in {chunk} at byte offset {damaged}: checksum mismatch" in err
    assert chunk.read_bytes() == data
