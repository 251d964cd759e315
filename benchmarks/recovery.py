"""Recovery: a server killed mid-stream and restarted, and a whole log replayed from the start.

Both read the local tier's files directly (chunk sizes, checkpoint numbers, intact records), so
the harness can pick the moment of the kill and report how much log a recovery had to replay.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ambrosia_edge.storage.local import chunk_name

from ambrosia_edge.records import scan_file
from ambrosia_edge.testing import free_port

from .measure import measure_pair, measure_replay
from .modes import throughput_batch
from .processes import BenchmarkError, Child, Runner, ambrosia_args, read_status, send_go
from .stats import throughput_rate
from .systems import AMBROSIA

_CHUNK = re.compile(r"chunk-(\d+)\.log")
_CHECKPOINT = re.compile(r"checkpoint-(\d+)\.cbor")
_RECOVERED = re.compile(
    r"recovered from (?:checkpoint (\d+)|the start) \+ (\d+) pages .* in ([\d.]+) s"
)


def record_bytes(log_dir: Path, chunk: int) -> int:
    """Bytes of intact records in a chunk file: its size less zero fill and any torn tail."""
    path = log_dir / chunk_name(chunk)
    fd = os.open(path, os.O_RDONLY)
    try:
        scan = scan_file(fd, source=str(path))
        for _ in scan:
            pass
        return scan.valid_length
    finally:
        os.close(fd)


def log_files(log_dir: Path) -> tuple[dict[int, int], list[int]]:
    """Sizes of a local log's chunk files by number, and its checkpoint numbers, sorted.

    The chunk being written is zero-filled up to 1 MiB ahead of its last record, so its size
    can run ahead of the records in it until the log is closed.
    """
    chunks: dict[int, int] = {}
    checkpoints: list[int] = []
    try:
        entries = list(os.scandir(log_dir))
    except FileNotFoundError:
        return chunks, checkpoints
    for entry in entries:
        if m := _CHUNK.fullmatch(entry.name):
            with contextlib.suppress(FileNotFoundError):  # deleted as a checkpoint retired it
                chunks[int(m[1])] = entry.stat().st_size
        elif m := _CHECKPOINT.fullmatch(entry.name):
            checkpoints.append(int(m[1]))
    return chunks, sorted(checkpoints)


def default_settings() -> dict[str, int]:
    """The runtime's own checkpoint and page sizes, which the recovery run leaves alone."""
    import dataclasses

    from ambrosia_edge.config import Settings

    defaults = {f.name: f.default for f in dataclasses.fields(Settings)}
    return {k: int(defaults[k]) for k in ("checkpoint_bytes", "keep_checkpoints", "page_bytes")}


def interpreter_start(runner: Runner, run_dir: Path) -> float:
    """Seconds for a bare interpreter to start and import what a host imports (best of 3)."""
    env = runner.env(run_dir, 0)
    code = "import benchmarks.host, benchmarks.apps"
    times = []
    for _ in range(3):
        started = time.monotonic()
        subprocess.run([sys.executable, "-c", code], env=env, cwd=run_dir, check=True)
        times.append(time.monotonic() - started)
    return min(times)


def measure_recovery(
    runner: Runner, *, size: int, total: int, rolls: int, tail: int
) -> dict[str, Any]:
    """SIGKILL a durable server mid-stream, restart it, and time the way back to serving.

    The pair runs with the runtime's default checkpointing. The server is killed once its log
    has rolled ``rolls`` times and holds ``tail`` bytes after its newest checkpoint, and is
    started again with the same command line. The workload must then end with exactly ``total``
    messages executed, in the live counters and in the state the log holds afterwards.
    """
    run_dir = runner.new_dir(f"recovery-{size}")
    log_dir = run_dir / "server"
    env = runner.env(run_dir, total)
    ps, pc = free_port(), free_port()
    server_args = ambrosia_args("server", run_dir, ps, pc, True)
    children: list[Child] = []
    seen: dict[str, Any] = {}

    def server_up(child: Child, *, done: bool = False) -> Callable[[], bool]:
        def check() -> bool:
            status = read_status(run_dir, "server")
            if status.get("pid") != child.pid or (done and "done" not in status):
                return False
            seen.setdefault("first", status)  # each says what recovery brought the counters to
            return True

        return check

    def killable() -> bool:
        chunks, checkpoints = log_files(log_dir)
        if not checkpoints or checkpoints[-1] < rolls + 1:
            return False
        return chunks.get(checkpoints[-1], 0) >= tail

    try:
        spawned = time.monotonic()
        server = Child("server", server_args, run_dir, env)
        children.append(server)
        client = Child("client", ambrosia_args("client", run_dir, pc, ps, True), run_dir, env)
        children.append(client)
        runner.wait("the server to start", server_up(server), children)
        fresh_start_s = time.monotonic() - spawned
        runner.wait(
            "the durable pair to connect",
            lambda: (
                "connected to client" in server.text() and "connected to server" in client.text()
            ),
            children,
        )
        send_go(
            run_dir, workload="throughput", size=size, total=total, batch=throughput_batch(size)
        )
        runner.wait(
            f"the server's log to roll {rolls} times and grow {tail} bytes", killable, children
        )
        server.proc.kill()
        server.proc.wait()
        children.remove(server)
        if "done" in read_status(run_dir, "server"):
            raise BenchmarkError(f"the workload of {total} messages ended before the kill")
        chunks, checkpoints = log_files(log_dir)
        checkpoint = checkpoints[-1]
        tail_bytes = sum(record_bytes(log_dir, n) for n in chunks if n >= checkpoint)

        spawned = time.monotonic()
        server = Child("server-restart", server_args, run_dir, env)
        children.insert(0, server)
        seen.clear()
        runner.wait("the restarted server to recover", server_up(server), children)
        ready_s = time.monotonic() - spawned
        recovered = seen["first"].get("recovered")
        runner.wait(
            "the client to reconnect to the restarted server",
            lambda: client.text().count("connected to server") >= 2,
            children,
        )
        reconnected_s = time.monotonic() - spawned
        runner.wait(
            "the workload to finish after the restart", server_up(server, done=True), children
        )
        runner.wait(
            "the client to finish", lambda: "done" in read_status(run_dir, "client"), children
        )
        live = read_status(run_dir, "server")
    finally:
        for child in children:
            child.stop()
    found = _RECOVERED.search(server.text())
    if found is None or int(found[1] or 0) != checkpoint:
        raise BenchmarkError(
            f"the restarted server did not say it recovered from checkpoint {checkpoint}:\n"
            f"{server.text()[-3000:]}"
        )
    from ambrosia_edge.storage.local import LocalStore

    from .replay import checkpoint_state, counted

    before = counted(checkpoint_state(LocalStore(str(log_dir)), checkpoint))
    # what the log holds once both have stopped: a duplicate or a loss shows up here too
    final = measure_replay(runner, str(log_dir))["state"]
    want = {"received": total, "bytes": total * size}
    for name, counts in (("live", live), ("logged", final)):
        got = {k: counts.get(k) for k in want}
        if got != want:
            raise BenchmarkError(
                f"exactly-once broken after the SIGKILL: the server's {name} counters are {got}, "
                f"expected {want}; the run is kept in {run_dir}"
            )
    interpreter_s = interpreter_start(runner, run_dir)
    shutil.rmtree(run_dir, ignore_errors=True)
    return {
        "size": size,
        "total": total,
        "settings": default_settings(),
        "checkpoint": checkpoint,
        "tail_bytes": tail_bytes,
        "pages": int(found[2]),
        "messages_replayed": None if recovered is None else recovered - before,
        "recover_s": float(found[3]),
        "ready_s": ready_s,
        "reconnected_s": reconnected_s,
        "fresh_start_s": fresh_start_s,
        "interpreter_s": interpreter_s,
        "received": final["received"],
        "exactly_once": True,
    }


def measure_log_replay(runner: Runner, *, size: int, volume: int) -> list[dict[str, Any]]:
    """Write a durable server log of about ``volume`` bytes, then replay all of it from the start.

    The server keeps every chunk (no checkpoint is retired), so the whole log can be replayed.
    It is replayed twice in fresh read-only processes: first after dropping its pages from the
    page cache (as after a reboot; the local tier writes large pages around the cache anyway),
    then again with the pages the first replay read still cached.
    """
    total = max(1, volume // size)
    written = measure_pair(
        runner,
        AMBROSIA,
        "throughput",
        size=size,
        total=total,
        batch=throughput_batch(size),
        keep_log=True,
        server_options=("--keep-checkpoints", str(1 << 30)),
    )
    log_dir = written.pop("log")
    try:
        chunks, _ = log_files(Path(log_dir))
        log_bytes = sum(chunks.values())
        rows = []
        # without posix_fadvise (macOS) the pages cannot be dropped: the first replay is warm
        # or cold depending on how the log was written, so it is left out
        for cache in ("cold", "warm") if hasattr(os, "posix_fadvise") else ("first", "warm"):
            if cache == "cold":
                _drop_from_cache(Path(log_dir))
            r = measure_replay(runner, log_dir, from_start=True)
            if r["checkpoint"] is not None or r["messages"] != total:
                raise BenchmarkError(
                    f"replaying {log_dir} from the start gave {r['messages']} messages from "
                    f"checkpoint {r['checkpoint']}; expected {total} from none"
                )
            if cache == "first":
                continue
            rows.append(
                {
                    "cache": cache,
                    "size": size,
                    "log_bytes": log_bytes,
                    "chunks": len(chunks),
                    "messages": r["messages"],
                    "pages": r["pages"],
                    "seconds": r["seconds"],
                    "mb_per_s": log_bytes / r["seconds"] / 1e6,
                    "messages_per_s": r["messages"] / r["seconds"],
                    "written_messages_per_s": throughput_rate({**written, "total": total})[0],
                }
            )
    finally:
        shutil.rmtree(Path(log_dir).parent, ignore_errors=True)
    return rows


def _drop_from_cache(log_dir: Path) -> None:
    """Ask the kernel to drop the log's pages from the page cache (they are clean: fsynced)."""
    for path in log_dir.iterdir():
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fdatasync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
