"""Damaged logs: torn tails are cut without losing anything acknowledged; a corrupt middle
record stops recovery with a clear error and leaves every file as it was."""

from __future__ import annotations

import hashlib
import random
import subprocess
import sys
from pathlib import Path

from apps.counting import Counter
from support import APPS, Child, free_port, wait_for
from test_crash_recovery import recovered_state

from ambrosia_edge.records import scan_records

CALLS = 200


def test_crashes_in_the_middle_of_page_writes_lose_nothing_acknowledged(tmp_path: Path) -> None:
    """The server SIGKILLs itself halfway through writing a page (a real torn write), over and
    over; every restart cuts the torn tail and the client still sees exactly 1..N."""
    rng = random.Random(5)
    ps, pc = free_port(), free_port()
    status = tmp_path / "status"
    status.mkdir()
    env = {"AMBROSIA_TEST_CALLS": str(CALLS)}
    server = Child(
        f"{APPS}:Counter", "server", tmp_path / "server", ps, {"client": pc}, status, env
    )
    client = Child(f"{APPS}:Client", "client", tmp_path / "client", pc, {"server": ps}, status, env)
    torn = 0
    try:
        client.start()
        while torn < 10:
            server.env = {**env, "AMBROSIA_EDGE_FAILPOINTS": f"page-write:{rng.randint(2, 12)}"}
            server.start()
            assert server.proc is not None
            code = server.proc.wait(timeout=60)
            assert code == -9, server.output()[-3000:]  # it died by its own SIGKILL, mid-write
            torn += 1
        server.env = env
        server.start()
        wait_for(
            lambda: (s := client.status()) and s["done"],
            120,
            "the client to finish",
            lambda: client.output() + server.output(),
        )
        assert client.status()["seen"] == list(range(1, CALLS + 1))  # type: ignore[index]
        server.stop()
        client.stop()
    finally:
        server.kill()
        client.kill()
    assert recovered_state(Counter, "server", server.log).count == CALLS


def test_a_flipped_byte_in_the_middle_is_a_loud_error_and_files_stay_untouched(
    tmp_path: Path,
) -> None:
    ps, pc = free_port(), free_port()
    status = tmp_path / "status"
    status.mkdir()
    env = {"AMBROSIA_TEST_CALLS": "50"}
    server = Child(
        f"{APPS}:Counter", "server", tmp_path / "server", ps, {"client": pc}, status, env
    )
    client = Child(f"{APPS}:Client", "client", tmp_path / "client", pc, {"server": ps}, status, env)
    try:
        server.start()
        client.start()
        wait_for(lambda: (s := client.status()) and s["done"], 60, "the client to finish")
        server.stop()
        client.stop()
    finally:
        server.kill()
        client.kill()
    chunk = sorted((tmp_path / "server").glob("chunk-*.log"))[-1]
    data = bytearray(chunk.read_bytes())
    records = list(scan_records(bytes(data), source=str(chunk)))
    assert len(records) > 5
    offset, _, body = records[len(records) // 2]
    data[offset + 12 + len(body) // 2] ^= 0x40
    chunk.write_bytes(bytes(data))
    before = {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in chunk.parent.iterdir()
        if p.name != "LOCK"
    }

    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "ambrosia_edge",
            "run",
            f"{APPS}:Counter",
            "--name",
            "server",
            "--log",
            str(tmp_path / "server"),
            "--listen",
            f"127.0.0.1:{ps}",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert result.returncode != 0
    assert f"corrupt log record in {chunk}" in result.stderr
    assert f"at byte offset {offset}" in result.stderr
    assert "Traceback" not in result.stderr
    after = {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in chunk.parent.iterdir()
        if p.name != "LOCK"
    }
    assert after == before
