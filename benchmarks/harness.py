"""The benchmark driver: runs every system in its own processes, interleaved, and reports.

Each measurement starts a fresh server process and a fresh client process, waits until both
are up (and, for immortals, connected to each other), samples their CPU time and memory, writes
``go.json`` to start the workload, waits for the status files that say it is over, samples
again and stops both. Systems take turns within every repetition (the order rotates from one
repetition to the next), so a slow minute of the machine hits them all alike; the report gives
the median of the repetitions and the ratio of medians to the baseline measured in the same
run.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ambrosia_edge.storage.local import chunk_name

from ambrosia_edge.records import scan_file
from ambrosia_edge.testing import free_port

from . import disk, procstat, restate_peer

PACKAGE_DIR = Path(__file__).resolve().parent

AMBROSIA = "ambrosia-edge"
NO_FSYNC = "ambrosia-edge --no-fsync"
GRPC = "grpcio"
DBOS_QUEUE = "DBOS (one workflow per increment)"
DBOS_BATCHED = "DBOS (100 increments per workflow)"
RESTATE_EACH = "Restate (one invocation per increment)"
RESTATE_BATCHED = "Restate (100 increments per invocation)"
#: the durable-execution peers of the counter workload: their module, and what it serves
_COUNTER_PEERS = {
    DBOS_QUEUE: ("benchmarks.dbos_peer", "the DBOS service"),
    DBOS_BATCHED: ("benchmarks.dbos_peer", "the DBOS service"),
    RESTATE_EACH: ("benchmarks.restate_peer", "the Restate service"),
    RESTATE_BATCHED: ("benchmarks.restate_peer", "the Restate service"),
}

APPS = "benchmarks.apps"
KIB = 1024
MIB = 1024 * 1024


@dataclass
class Mode:
    name: str
    sizes: list[int]
    volume: int  # payload bytes per size and run
    min_messages: int  # at least this many messages per size (large payloads)
    max_messages: int  # at most this many (small payloads would take minutes)
    grpc_max_messages: int  # gRPC's rate is steady early; cap its runs to keep them short
    reps: int
    pings: int
    ping_warmup: int
    counter: int  # increments for ambrosia-edge
    dbos: bool
    dbos_batched: int  # increments for DBOS, batched workflows
    dbos_each: int  # increments for DBOS, one workflow each
    disk_appends: int
    disk_bytes: int
    recovery_size: int  # payload of the workload whose server is killed
    recovery_messages: int  # messages in it: enough to outlast the kill by a margin
    recovery_rolls: int  # log rolls (checkpoints after the first) before the kill
    recovery_tail: int  # bytes the server logs after its newest checkpoint before the kill
    replay_log: int  # bytes of server log to replay from the start
    replay_log_size: int  # payload of the workload that writes it
    timeout: float  # seconds for any one measurement


MODES = {
    "smoke": Mode(
        name="smoke",
        sizes=[1 * KIB],
        volume=2 * MIB,
        min_messages=200,
        max_messages=2000,
        grpc_max_messages=2000,
        reps=1,
        pings=200,
        ping_warmup=20,
        counter=1000,
        dbos=False,
        dbos_batched=0,
        dbos_each=0,
        disk_appends=100,
        disk_bytes=8 * MIB,
        recovery_size=1 * KIB,
        recovery_messages=8000,
        recovery_rolls=0,
        recovery_tail=2 * MIB,
        replay_log=8 * MIB,
        replay_log_size=16 * KIB,
        timeout=40,
    ),
    "quick": Mode(
        name="quick",
        sizes=[16, 1 * KIB, 64 * KIB],
        volume=128 * MIB,
        min_messages=1000,
        max_messages=250_000,
        grpc_max_messages=10_000,
        reps=3,
        pings=1000,
        ping_warmup=200,
        counter=10_000,
        dbos=True,
        dbos_batched=1000,
        dbos_each=300,
        disk_appends=500,
        disk_bytes=64 * MIB,
        recovery_size=16,
        recovery_messages=4_000_000,
        recovery_rolls=1,
        recovery_tail=32 * MIB,
        replay_log=128 * MIB,
        replay_log_size=16 * KIB,
        timeout=120,
    ),
    "full": Mode(
        name="full",
        sizes=[64 * KIB >> i for i in range(13)][::-1],  # 16 B, 32 B, ... 64 KiB
        volume=256 * MIB,
        min_messages=2000,
        max_messages=1_000_000,
        grpc_max_messages=40_000,
        reps=3,
        pings=5000,
        ping_warmup=500,
        counter=10_000,
        dbos=True,
        dbos_batched=10_000,
        dbos_each=1000,
        disk_appends=2000,
        disk_bytes=256 * MIB,
        recovery_size=16,
        recovery_messages=4_000_000,
        recovery_rolls=1,
        recovery_tail=32 * MIB,
        replay_log=1024 * MIB,
        replay_log_size=16 * KIB,
        timeout=600,
    ),
}


class BenchmarkError(Exception):
    pass


# ---------------------------------------------------------------------------------------------
# child processes


class Child:
    """One process of a measurement, with its output in a file of the run directory."""

    def __init__(self, label: str, args: list[str], cwd: Path, env: dict[str, str]) -> None:
        self.label = label
        self.output = cwd / f"{label}.out"
        with open(self.output, "wb") as out:
            self.proc = subprocess.Popen(
                args, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT
            )
        self.pid = self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def text(self) -> str:
        try:
            return self.output.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Runner:
    """Starts the processes of one measurement after another, in a scratch directory."""

    def __init__(self, workdir: Path, timeout: float, log: Callable[[str], None]) -> None:
        self.workdir = workdir
        self.timeout = timeout
        self.say = log
        self.seq = 0
        # Children import from a directory that holds a snapshot of the package as this process
        # imports it, and of `benchmarks`: a checkout's `ambrosia_edge/` cannot shadow the
        # installed package in them, and edits made while the benchmarks run cannot mix two
        # versions of the runtime in one report.
        self.shim = workdir / "pythonpath"
        if not self.shim.exists():
            snapshot(self.shim)

    def new_dir(self, label: str) -> Path:
        self.seq += 1
        path = self.workdir / f"{self.seq:03d}-{label}"
        path.mkdir(parents=True)
        return path

    def env(self, run_dir: Path, expect: int) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("BENCH_")}
        env["PYTHONPATH"] = str(self.shim)
        env["BENCH_STATUS"] = str(run_dir)
        env["BENCH_EXPECT"] = str(expect)
        env.pop("AMBROSIA_EDGE_DEBUG", None)
        return env

    def wait(self, what: str, ready: Callable[[], bool], children: list[Child]) -> None:
        deadline = time.monotonic() + self.timeout
        while not ready():
            for child in children:
                if not child.alive():
                    raise BenchmarkError(
                        f"{child.label} exited with {child.proc.returncode} while waiting for "
                        f"{what}; its output ends with:\n{child.text()[-3000:]}"
                    )
            if time.monotonic() > deadline:
                raise BenchmarkError(f"timed out after {self.timeout:.0f} s waiting for {what}")
            time.sleep(0.005)


def snapshot(dest: Path) -> None:
    """Copy ``ambrosia_edge`` (with the subpackages it maps from elsewhere) and ``benchmarks``."""
    import importlib

    import ambrosia_edge

    skip = shutil.ignore_patterns("__pycache__", "*.pyc")
    root = Path(ambrosia_edge.__path__[0])
    shutil.copytree(root, dest / "ambrosia_edge", ignore=skip)
    for sub in ("storage", "transports", "devices", "runtime", "cli"):
        with contextlib.suppress(ImportError):
            importlib.import_module(f"ambrosia_edge.{sub}")
    for name, module in sorted(sys.modules.items()):
        paths = getattr(module, "__path__", None)
        if not name.startswith("ambrosia_edge.") or not paths:
            continue
        source = Path(next(iter(paths)))
        if source.resolve().parent != root.resolve():  # a subpackage mapped from elsewhere
            target = dest.joinpath(*name.split("."))
            shutil.copytree(source, target, ignore=skip, dirs_exist_ok=True)
    shutil.copytree(PACKAGE_DIR, dest / "benchmarks", ignore=skip)


def _status(run_dir: Path, name: str) -> dict[str, Any]:
    try:
        data: dict[str, Any] = json.loads((run_dir / f"{name}.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}
    return data


def _go(run_dir: Path, **params: Any) -> None:
    tmp = run_dir / "go.tmp"
    tmp.write_text(json.dumps(params))
    os.replace(tmp, run_dir / "go.json")


def _ambrosia_args(
    role: str, run_dir: Path, port: int, peer_port: int, fsync: bool, *options: str
) -> list[str]:
    cls, peer = ("BenchServer", "client") if role == "server" else ("BenchClient", "server")
    return [
        sys.executable,
        "-m",
        "benchmarks.host",
        f"benchmarks.apps:{cls}",
        "--name",
        role,
        "--log",
        str(run_dir / role),
        "--listen",
        f"127.0.0.1:{port}",
        "--peer",
        f"{peer}=127.0.0.1:{peer_port}",
        "--fsync" if fsync else "--no-fsync",
        *options,
    ]


def measure_pair(
    runner: Runner,
    system: str,
    workload: str,
    *,
    size: int,
    total: int,
    batch: int,
    keep_log: bool = False,
    attach: Callable[[list[Child]], Callable[[], None]] | None = None,
    server_options: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Run one workload between a fresh server and client of ``system``; return raw figures.

    ``server_options`` go to an immortal server's command line after the harness's own.
    """
    label = f"{system.split()[0]}-{workload}-{size}".replace("/", "")
    run_dir = runner.new_dir(label)
    env = runner.env(run_dir, total)
    children: list[Child] = []
    try:
        if system in (AMBROSIA, NO_FSYNC):
            fsync = system == AMBROSIA
            ps, pc = free_port(), free_port()
            args = _ambrosia_args("server", run_dir, ps, pc, fsync, *server_options)
            server = Child("server", args, run_dir, env)
            children.append(server)
            client = Child("client", _ambrosia_args("client", run_dir, pc, ps, fsync), run_dir, env)
            children.append(client)

            def up() -> bool:
                return (
                    bool(_status(run_dir, "server"))
                    and bool(_status(run_dir, "client"))
                    and "connected to client" in server.text()
                    and "connected to server" in client.text()
                )

        elif system == GRPC:
            port = free_port()
            peer = [sys.executable, "-m", "benchmarks.grpc_peer"]
            server = Child("server", [*peer, "serve", "--port", str(port)], run_dir, env)
            children.append(server)
            runner.wait("the gRPC server", lambda: bool(_status(run_dir, "server")), children)
            client = Child("client", [*peer, "client", "--port", str(port)], run_dir, env)
            children.append(client)

            def up() -> bool:
                return bool(_status(run_dir, "client"))

        elif system in _COUNTER_PEERS:
            module, service = _COUNTER_PEERS[system]
            peer = [sys.executable, "-m", module]
            server = Child("server", [*peer, "serve"], run_dir, env)
            children.append(server)
            runner.wait(service, lambda: bool(_status(run_dir, "server")), children)
            client = Child("client", [*peer, "client"], run_dir, env)
            children.append(client)

            def up() -> bool:
                return bool(_status(run_dir, "client"))

            batched = system in (DBOS_BATCHED, RESTATE_BATCHED)
            workload = "counter-batched" if batched else "counter"
        else:
            raise ValueError(system)
        runner.wait(f"{system} to start", up, children)
        idle = {c.label: procstat.memory_kib(c.pid)["VmRSS"] for c in children}
        detach = attach(children) if attach is not None else None
        cpu0 = {c.label: procstat.cpu_seconds(c.pid) for c in children}
        _go(run_dir, workload=workload, size=size, total=total, batch=batch)
        what = f"{system} to finish the {workload} workload"
        if workload == "throughput" or (workload == "counter" and system == AMBROSIA):
            runner.wait(what, lambda: "done" in _status(run_dir, "server"), children)
        runner.wait(what, lambda: "done" in _status(run_dir, "client"), children)
        cpu1 = {c.label: procstat.cpu_seconds(c.pid) for c in children}
        memory = {c.label: procstat.memory_kib(c.pid) for c in children}
        if detach is not None:
            detach()
        result = {
            "system": system,
            "workload": workload,
            "size": size,
            "total": total,
            "server": _status(run_dir, "server"),
            "client": _status(run_dir, "client"),
            "idle_rss_kib": idle,
            "peak_rss_kib": {k: v["VmHWM"] for k, v in memory.items()},
            "cpu_s": {k: cpu1[k] - cpu0[k] for k in cpu1},
        }
    finally:
        for child in children:
            child.stop()
    if keep_log:
        result["log"] = str(run_dir / "server")
    else:
        shutil.rmtree(run_dir, ignore_errors=True)
    return result


def measure_replay(runner: Runner, log_dir: str, *, from_start: bool = False) -> dict[str, Any]:
    """Recover the server's log read-only in a fresh process (see benchmarks/replay.py)."""
    env = runner.env(Path(log_dir).parent, 0)
    args = [sys.executable, "-m", "benchmarks.replay", log_dir, f"{APPS}:BenchServer", "server"]
    out = subprocess.run(
        [*args, "--from-start"] if from_start else args,
        cwd=Path(log_dir).parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=runner.timeout,
        check=False,
    )
    if out.returncode != 0:
        raise BenchmarkError(f"replay of {log_dir} failed:\n{out.stderr[-3000:]}")
    data: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return data


# ---------------------------------------------------------------------------------------------
# recovery: a server killed mid-stream, and a whole log replayed from the start

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
    server_args = _ambrosia_args("server", run_dir, ps, pc, True)
    children: list[Child] = []
    seen: dict[str, Any] = {}

    def server_up(child: Child, *, done: bool = False) -> Callable[[], bool]:
        def check() -> bool:
            status = _status(run_dir, "server")
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
        client = Child("client", _ambrosia_args("client", run_dir, pc, ps, True), run_dir, env)
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
        _go(run_dir, workload="throughput", size=size, total=total, batch=throughput_batch(size))
        runner.wait(
            f"the server's log to roll {rolls} times and grow {tail} bytes", killable, children
        )
        server.proc.kill()
        server.proc.wait()
        children.remove(server)
        if "done" in _status(run_dir, "server"):
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
        runner.wait("the client to finish", lambda: "done" in _status(run_dir, "client"), children)
        live = _status(run_dir, "server")
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
                    "written_messages_per_s": _throughput({**written, "total": total})[0],
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


# ---------------------------------------------------------------------------------------------
# statistics


def percentile(sorted_values: list[float], q: float) -> float:
    """The q-th percentile (0..100) by linear interpolation between closest ranks."""
    if not sorted_values:
        return float("nan")
    pos = (len(sorted_values) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def _throughput(r: dict[str, Any]) -> tuple[float, str]:
    """Messages/s after the first page the server saw, up to the last message.

    When nearly everything arrived in that first page (a run too small for the rate to settle),
    fall back to the whole run, from the client's go to the server's last message.
    """
    s = r["server"]
    after_first = s["last_n"] - s["first_n"]
    if after_first >= r["total"] // 2 and s["last_t"] > s["first_t"]:
        return after_first / (s["last_t"] - s["first_t"]), "first-to-last"
    return r["total"] / (s["last_t"] - r["client"]["go_t"]), "go-to-last"


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def _rotate(items: list[str], k: int) -> list[str]:
    k %= len(items)
    return items[k:] + items[:k]


# ---------------------------------------------------------------------------------------------
# the suite


@dataclass
class Results:
    mode: str
    command: str
    started: str
    seconds: float = 0.0
    machine: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    throughput: list[dict[str, Any]] = field(default_factory=list)
    ping: list[dict[str, Any]] = field(default_factory=list)
    counter: list[dict[str, Any]] = field(default_factory=list)
    disk: list[dict[str, Any]] = field(default_factory=list)
    replay: list[dict[str, Any]] = field(default_factory=list)
    recovery: list[dict[str, Any]] = field(default_factory=list)
    log_replay: list[dict[str, Any]] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def messages_for(mode: Mode, size: int, system: str) -> int:
    n = min(mode.max_messages, max(mode.min_messages, mode.volume // size))
    if system == GRPC:
        n = min(n, mode.grpc_max_messages)
    return n


def throughput_batch(size: int) -> int:
    """Messages per continuation step: about 256 KiB, and at least 100."""
    return max(100, (256 * KIB) // size)


def _have(module: str) -> bool:
    try:
        __import__(module)
    except ImportError:
        return False
    return True


def run_suite(
    mode: Mode,
    workdir: Path,
    command: str,
    *,
    log: Callable[[str], None],
    dbos: bool = True,
    reps: int | None = None,
) -> Results:
    from . import report

    started = time.monotonic()
    results = Results(
        mode=mode.name,
        command=command,
        started=time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        machine=report.machine(workdir),
    )
    reps = reps or mode.reps
    results.params = {**asdict(mode), "reps": reps}
    runner = Runner(workdir, mode.timeout, log)
    systems = [AMBROSIA, NO_FSYNC]
    if _have("grpc"):
        systems.append(GRPC)
    else:
        results.notes.append("grpcio is not installed, so the gRPC baseline was skipped.")
        log("grpcio is not installed: skipping the gRPC baseline (pip install '.[bench]')")
    use_dbos = dbos and mode.dbos
    if use_dbos and not _have("dbos"):
        use_dbos = False
        results.notes.append("DBOS Transact is not installed, so its baseline was skipped.")
        log("dbos is not installed: skipping the DBOS baseline (pip install '.[bench]')")
    elif not use_dbos:
        results.notes.append(f"The DBOS baseline is not part of this run ({mode.name} mode).")
    # optional: measured when installed (benchmarks/restate_peer.py says what that takes)
    use_restate = use_dbos and restate_peer.available()
    if use_dbos and not use_restate:
        log(
            "Restate is not installed: skipping its optional baseline "
            "(npm install -g @restatedev/restate-server; pip install restate-sdk hypercorn)"
        )
    smallest = min(mode.sizes)

    for rep in range(reps):
        log(f"repetition {rep + 1} of {reps}")
        # the physical floor first: nothing else runs while it is measured
        lat = disk.append_latencies(workdir, mode.disk_appends)
        # several passes: on a virtual disk the first write of fresh blocks can be much slower
        bws = [disk.sequential_bandwidth(workdir, mode.disk_bytes) for _ in range(3)]
        bw = median(bws)
        results.disk.append({"rep": rep, "append_ns": lat, "sequential_bytes_per_s": bws})
        log(
            f"  disk: 4 KiB append+fdatasync p50 {percentile(sorted(lat), 50) / 1e3:.0f} us, "
            f"sequential {bw / 1e6:.0f} MB/s"
        )
        for size in mode.sizes:
            for system in _rotate(systems, rep):
                total = messages_for(mode, size, system)
                keep = system == AMBROSIA and size == smallest
                r = measure_pair(
                    runner,
                    system,
                    "throughput",
                    size=size,
                    total=total,
                    batch=throughput_batch(size),
                    keep_log=keep,
                )
                r["rep"] = rep
                r["messages_per_s"], r["timing"] = _throughput(r)
                results.throughput.append(r)
                log(
                    f"  throughput {size:>6} B {system:<26} {r['messages_per_s']:>10,.0f} msg/s "
                    f"({total} messages)"
                )
                if keep:
                    log_dir = r.pop("log")
                    replay = measure_replay(runner, log_dir)
                    shutil.rmtree(Path(log_dir).parent, ignore_errors=True)
                    replay["rep"] = rep
                    replay["size"] = size
                    replay["messages_per_s"] = replay["messages"] / replay["seconds"]
                    results.replay.append(replay)
                    log(
                        f"  replay     {size:>6} B {'':<26} {replay['messages_per_s']:>10,.0f} "
                        f"msg/s ({replay['messages']} messages)"
                    )
        for system in _rotate(systems, rep):
            total = mode.ping_warmup + mode.pings
            r = measure_pair(runner, system, "ping", size=16, total=total, batch=1000)
            r["rep"] = rep
            r["samples_ns"] = r["client"].pop("samples")[mode.ping_warmup :]
            results.ping.append(r)
            lat_sorted = sorted(r["samples_ns"])
            log(
                f"  ping {system:<26} p50 {percentile(lat_sorted, 50) / 1e3:.0f} us "
                f"p99 {percentile(lat_sorted, 99) / 1e3:.0f} us ({len(lat_sorted)} pings)"
            )
        counters = [AMBROSIA]
        if use_dbos:
            counters += [DBOS_BATCHED, DBOS_QUEUE]
        if use_restate:
            counters += [RESTATE_BATCHED, RESTATE_EACH]
        for system in _rotate(counters, rep):
            if system == AMBROSIA:
                total = mode.counter
            elif system in (DBOS_BATCHED, RESTATE_BATCHED):
                total = mode.dbos_batched
            else:
                total = mode.dbos_each
            if system in (RESTATE_BATCHED, RESTATE_EACH) and not use_restate:
                continue
            try:
                r = measure_pair(runner, system, "counter", size=0, total=total, batch=total)
            except BenchmarkError as exc:
                if system not in (RESTATE_BATCHED, RESTATE_EACH):
                    raise
                # an optional peer that fails is reported; it does not cost the whole run (and
                # its earlier repetitions go too, so that its figures are all of one kind)
                use_restate = False
                results.counter = [
                    c for c in results.counter if c["system"] not in (RESTATE_BATCHED, RESTATE_EACH)
                ]
                first_line = str(exc).splitlines()[0]
                results.notes.append(f"The Restate baseline failed and was dropped: {first_line}")
                log(f"Restate failed, dropping its baseline: {exc}")
                continue
            r["rep"] = rep
            end = r["server"]["last_t"] if system == AMBROSIA else r["client"]["done_t"]
            r["increments_per_s"] = total / (end - r["client"]["go_t"])
            results.counter.append(r)
            log(
                f"  counter {system:<36} {r['increments_per_s']:>10,.0f} increments/s "
                f"({total} increments)"
            )
    # once per run: each takes seconds of traffic and a log of its own
    r = measure_recovery(
        runner,
        size=mode.recovery_size,
        total=mode.recovery_messages,
        rolls=mode.recovery_rolls,
        tail=mode.recovery_tail,
    )
    results.recovery.append(r)
    log(
        f"  recovery after SIGKILL, {r['size']} B: serving again {r['ready_s']:.2f} s after the "
        f"restart (checkpoint {r['checkpoint']} + {r['tail_bytes'] / MIB:.1f} MiB of log, "
        f"{r['messages_replayed']} messages); {r['received']} of {r['total']} received"
    )
    for row in measure_log_replay(runner, size=mode.replay_log_size, volume=mode.replay_log):
        results.log_replay.append(row)
        log(
            f"  replay of {row['log_bytes'] / MIB:.0f} MiB from the start, {row['cache']} cache: "
            f"{row['seconds']:.2f} s, {row['mb_per_s']:,.0f} MB/s, "
            f"{row['messages_per_s']:,.0f} msg/s"
        )
    results.seconds = time.monotonic() - started
    return results
