"""One measurement: a fresh server and client of one system, one workload, raw figures back.

Both processes start, connect and sit idle; then their CPU time and memory are sampled, the
workload is started, and they are sampled again once their status files say it is over. Also
here: timing a read-only replay of a server's log in a fresh process.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ambrosia_edge.testing import free_port

from . import procstat
from .processes import BenchmarkError, Child, Runner, ambrosia_args, read_status, send_go
from .systems import (
    AMBROSIA,
    APPS,
    COUNTER_PEERS,
    DBOS_BATCHED,
    GRPC,
    NO_FSYNC,
    RESTATE_BATCHED,
    TYPICAL_STEPS,
)


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
    log: Callable[[Path, str], str] | None = None,
    env: dict[str, str] | None = None,
    options: Callable[[str], list[str]] | None = None,
) -> dict[str, Any]:
    """Run one workload between a fresh server and client of ``system``; return raw figures.

    ``server_options`` go to an immortal server's command line after the harness's own;
    ``log(run_dir, role)`` puts the immortals' logs elsewhere than the run directory (another
    tier), ``env`` adds to the peers' environment, ``options(role)`` to each immortal's command
    line (TLS files, say).
    """
    label = f"{system.split()[0]}-{workload}-{size}".replace("/", "")
    run_dir = runner.new_dir(label)
    env = {**runner.env(run_dir, total), **(env or {})}
    children: list[Child] = []
    try:
        if system in (AMBROSIA, NO_FSYNC, *TYPICAL_STEPS):
            fsync = system != NO_FSYNC
            app = "Typical" if system in TYPICAL_STEPS else "Bench"
            ps, pc = free_port(), free_port()
            logs = {role: log(run_dir, role) if log else None for role in ("server", "client")}
            more = {role: options(role) if options else [] for role in ("server", "client")}
            args = ambrosia_args(
                "server",
                run_dir,
                ps,
                pc,
                fsync,
                *more["server"],
                *server_options,
                log=logs["server"],
                app=app,
            )
            server = Child("server", args, run_dir, env)
            children.append(server)
            args = ambrosia_args(
                "client", run_dir, pc, ps, fsync, *more["client"], log=logs["client"], app=app
            )
            client = Child("client", args, run_dir, env)
            children.append(client)

            def up() -> bool:
                return (
                    bool(read_status(run_dir, "server"))
                    and bool(read_status(run_dir, "client"))
                    and "connected to client" in server.text()
                    and "connected to server" in client.text()
                )

        elif system == GRPC:
            port = free_port()
            peer = [sys.executable, "-m", "benchmarks.grpc_peer"]
            server = Child("server", [*peer, "serve", "--port", str(port)], run_dir, env)
            children.append(server)
            runner.wait("the gRPC server", lambda: bool(read_status(run_dir, "server")), children)
            client = Child("client", [*peer, "client", "--port", str(port)], run_dir, env)
            children.append(client)

            def up() -> bool:
                return bool(read_status(run_dir, "client"))

        elif system in COUNTER_PEERS:
            module, service = COUNTER_PEERS[system]
            peer = [sys.executable, "-m", module]
            server = Child("server", [*peer, "serve"], run_dir, env)
            children.append(server)
            runner.wait(service, lambda: bool(read_status(run_dir, "server")), children)
            client = Child("client", [*peer, "client"], run_dir, env)
            children.append(client)

            def up() -> bool:
                return bool(read_status(run_dir, "client"))

            batched = system in (DBOS_BATCHED, RESTATE_BATCHED)
            workload = "counter-batched" if batched else "counter"
        else:
            raise ValueError(system)
        runner.wait(f"{system} to start", up, children)
        idle = {c.label: procstat.memory_kib(c.pid)["VmRSS"] for c in children}
        detach = attach(children) if attach is not None else None
        cpu0 = {c.label: procstat.cpu_seconds(c.pid) for c in children}
        send_go(run_dir, workload=workload, size=size, total=total, batch=batch)
        what = f"{system} to finish the {workload} workload"
        if workload == "throughput" or (workload == "counter" and system == AMBROSIA):
            runner.wait(what, lambda: "done" in read_status(run_dir, "server"), children)
        runner.wait(what, lambda: "done" in read_status(run_dir, "client"), children)
        runner.check_alive(f"its CPU time and memory after {what}", children)
        cpu1 = {c.label: procstat.cpu_seconds(c.pid) for c in children}
        memory = {c.label: procstat.memory_kib(c.pid) for c in children}
        if detach is not None:
            detach()
        result = {
            "system": system,
            "workload": workload,
            "size": size,
            "total": total,
            "server": read_status(run_dir, "server"),
            "client": read_status(run_dir, "client"),
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
