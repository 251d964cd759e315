"""``ambrosia-edge demo``: the paper's counter, with both processes killed while it runs.

A client immortal awaits ``server.inc()`` N times. The demo runs each immortal in its own
process through ``ambrosia-edge run``, kills one or the other with SIGKILL at random moments,
restarts it with the same command, and finally checks the client saw exactly 1..N.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio

from .immortal import Immortal, rpc
from .testing import free_port as _free_port

CALLS_ENV = "AMBROSIA_EDGE_DEMO_CALLS"
STATUS_ENV = "AMBROSIA_EDGE_DEMO_STATUS"


class DemoCounter(Immortal):
    def __init__(self) -> None:
        self.count = 0

    @rpc
    async def inc(self) -> int:
        self.count += 1
        return self.count


class DemoClient(Immortal):
    def __init__(self) -> None:
        self.seen: list[int] = []

    async def on_first_start(self) -> None:
        # read once and logged: a replay gets the same number even if the environment changed
        calls: int = await self.capture(_calls_wanted)
        server = self.proxy("server")
        for _ in range(calls):
            self.seen.append(await server.inc())

    async def becoming_primary(self) -> None:
        self.spawn(self._publish_progress)

    async def _publish_progress(self) -> None:
        """Reads state (never writes it) so the demo driver can time its kills."""
        path = Path(os.environ[STATUS_ENV])
        while True:
            path.with_suffix(".tmp").write_text(json.dumps({"pid": os.getpid(), "seen": self.seen}))
            os.replace(path.with_suffix(".tmp"), path)
            await anyio.sleep(0.02)


def _calls_wanted() -> int:
    return int(os.environ.get(CALLS_ENV, "200"))


class _Process:
    def __init__(
        self,
        name: str,
        target: str,
        log: Path,
        port: int,
        peer: str,
        peer_port: int,
        env: dict[str, str],
    ) -> None:
        self.name = name
        self.args = [
            sys.executable,
            "-m",
            "ambrosia_edge",
            "run",
            target,
            "--name",
            name,
            "--log",
            str(log),
            "--listen",
            f"127.0.0.1:{port}",
            "--peer",
            f"{peer}=127.0.0.1:{peer_port}",
        ]
        self.env = env
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log.with_suffix(".out"), "ab") as out:
            self.proc = subprocess.Popen(
                self.args, env=self.env, stdout=out, stderr=subprocess.STDOUT, cwd=self.log.parent
            )

    def kill(self) -> int:
        assert self.proc is not None
        pid = self.proc.pid
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        return pid

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def main(directory: Path | None, calls: int, kills: int) -> int:
    root = Path(directory) if directory else Path(tempfile.mkdtemp(prefix="ambrosia-edge-demo-"))
    root.mkdir(parents=True, exist_ok=True)
    status = root / "client-progress.json"
    env = dict(os.environ, **{CALLS_ENV: str(calls), STATUS_ENV: str(status)})
    ps, pc = _free_port(), _free_port()
    server = _Process(
        "server", "ambrosia_edge.demo:DemoCounter", root / "server", ps, "client", pc, env
    )
    client = _Process(
        "client", "ambrosia_edge.demo:DemoClient", root / "client", pc, "server", ps, env
    )
    print(f"ambrosia-edge demo: a client immortal awaits server.inc() {calls} times;")
    print(f"both run as separate processes, logging to {root}, and get killed with SIGKILL.")
    rng = random.Random()
    started = time.monotonic()

    def progress() -> list[int]:
        try:
            data: dict[str, Any] = json.loads(status.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return []
        seen: list[int] = data["seen"]
        return seen

    def wait(condition: Any, what: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise SystemExit(
                    f"ambrosia-edge demo: timed out waiting for {what}; "
                    f"see the *.out files in {root}"
                )
            time.sleep(0.01)

    try:
        server.start()
        client.start()
        for i in range(kills):
            step = calls // (kills + 1)
            goal = min(calls, i * step + rng.randint(1, max(1, step)))
            wait(lambda goal=goal: len(progress()) >= goal, f"{goal} calls")
            victim = server if i % 2 == 0 else client
            pid = victim.kill()
            print(
                f"  [{len(progress()):>{len(str(calls))}}/{calls}] kill -9 {victim.name} "
                f"(pid {pid}), then start it again"
            )
            victim.start()
        wait(lambda: len(progress()) >= calls, "the client to finish")
    finally:
        server.stop()
        client.stop()
    seen = progress()
    elapsed = time.monotonic() - started
    count = _count_from_log(root / "server")
    if seen == list(range(1, calls + 1)) and count == calls:
        print(
            f"client saw 1, 2, 3, ..., {calls}: every call executed exactly once, in order, "
            f"despite {kills} kills ({elapsed:.1f} s)"
        )
        print(f"server's count, rebuilt from its log alone: {count}")
        print(f"inspect the logs with: ambrosia-edge inspect {root / 'server'}")
        return 0
    print(
        f"MISMATCH: the client saw {seen[:20]}... ({len(seen)} values) and the server "
        f"counted {count}; please report this bug"
    )
    return 1


def _count_from_log(log: Path) -> int:
    """Replay the server's log read-only: the state any restart would recover."""
    from .config import Settings
    from .runtime import Runtime

    settings = Settings(target="ambrosia_edge.demo:DemoCounter", name="server", log=str(log))
    runtime = Runtime(DemoCounter, settings)
    runtime.recover(read_only=True)
    count: int = runtime.immortal.count  # type: ignore[attr-defined]
    return count
