"""SIGTERM during a long recovery stops `ambrosia-edge run` cleanly and leaves the log whole."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

from ambrosia_edge.storage.local import LocalStore, read_lock_holder
from support import APPS, free_port, wait_for

from ambrosia_edge import messages, wire
from ambrosia_edge.page import Entry, Page, chunk_header
from ambrosia_edge.records import RecordType, encode_record

PAGES = 150
PER_PAGE = 20_000  # 3M forks: seconds of replay, far longer than the test takes to react


def write_log(path: Path) -> None:
    """A log of forks to Counter.receive, written as the coordinator writes one."""
    with LocalStore(str(path)) as store:
        store.start_chunk(1)
        store.append(encode_record(chunk_header("server", 1, 1), RecordType.CHUNK_HEADER))
        batch = wire.frame_message(messages.call("receive", (7,), {}, impulse=False)) * PER_PAGE
        for n in range(1, PAGES + 1):
            first = (n - 1) * PER_PAGE + 1
            entry = Entry("client", first, first, PER_PAGE, PER_PAGE, batch)
            page = Page(n, 1, [entry], {"client": (n * PER_PAGE, n * PER_PAGE)}, {})
            store.append(encode_record(page.encode(), RecordType.PAGE))


def test_sigterm_during_recovery_stops_cleanly(tmp_path: Path) -> None:
    log = tmp_path / "server"
    write_log(log)
    size = sum(p.stat().st_size for p in log.glob("chunk-*"))
    out = tmp_path / "server.out"
    args = [sys.executable, "-m", "ambrosia_edge", "run", f"{APPS}:Counter", "--name", "server"]
    args += ["--log", str(log), "--listen", f"127.0.0.1:{free_port()}"]
    with open(out, "wb") as sink:
        proc = subprocess.Popen(
            args,
            stdout=sink,
            stderr=subprocess.STDOUT,
            cwd=tmp_path,
        )
    try:
        # the writer lock names the process from the start of recovery on
        wait_for(
            lambda: (h := read_lock_holder(log)) is not None and h["pid"] == proc.pid,
            60,
            "the server to start recovering",
            out.read_text,
        )
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=60)
    finally:
        proc.kill()
        proc.wait()
    output = out.read_text()
    assert code == 0, output
    assert "stopped while recovering" in output and "listening" not in output, output
    assert read_lock_holder(log) is None  # the lock record is emptied on a clean stop
    assert sum(p.stat().st_size for p in log.glob("chunk-*")) == size
    records = list(LocalStore(str(log)).read_records(1))
    assert len(records) == PAGES + 1
