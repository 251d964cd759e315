"""Helpers shared by the tests: waiting on conditions, free ports, child immortals, and a
coordinator on its own for unit tests of its write path."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ambrosia_edge.coordinator import Coordinator, CoordinatorOptions
from ambrosia_edge.testing import free_port
from ambrosia_edge.testing.progress import STATUS_ENV

__all__ = [
    "APPS",
    "REPO",
    "Child",
    "Idle",
    "free_port",
    "lone_coordinator",
    "read_status",
    "wait_for",
]

REPO = Path(__file__).resolve().parent.parent
APPS = Path(__file__).resolve().parent / "apps" / "counting.py"


def wait_for(
    condition: Callable[[], Any],
    timeout: float,
    what: str,
    details: Callable[[], str] | None = None,
    poll: float = 0.01,
) -> Any:
    """Poll ``condition`` until it is truthy; fail naming ``what`` after ``timeout`` seconds.

    ``details`` is called only on failure (e.g. the children's output) and its tail is shown.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            extra = f"\n{details()[-4000:]}" if details else ""
            raise AssertionError(f"timed out after {timeout} s waiting for {what}{extra}")
        time.sleep(poll)


def read_status(status_dir: Path, name: str) -> dict[str, Any] | None:
    try:
        data: dict[str, Any] = json.loads((status_dir / f"{name}.json").read_text())
        return data
    except (FileNotFoundError, json.JSONDecodeError):
        return None


class Child:
    """One immortal in a child process, started through the real CLI."""

    def __init__(
        self,
        target: str,
        name: str,
        log: Path | str,
        port: int,
        peers: dict[str, int],
        status_dir: Path,
        env: dict[str, str] | None = None,
    ) -> None:
        self.target = target
        self.name = name
        self.log = log
        self.port = port
        self.peers = peers
        self.status_dir = status_dir
        self.env = env or {}
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.args: list[str] = []  # more flags for ``ambrosia-edge run``

    def start(self) -> None:
        args = [
            sys.executable,
            "-m",
            "ambrosia_edge",
            "run",
            self.target,
            "--name",
            self.name,
            "--log",
            str(self.log),
            "--listen",
            f"127.0.0.1:{self.port}",
        ]
        for peer, port in self.peers.items():
            args += ["--peer", f"{peer}=127.0.0.1:{port}"]
        args += self.args
        env = dict(os.environ, **{STATUS_ENV: str(self.status_dir)}, **self.env)
        (self.status_dir / f"{self.name}.json").unlink(missing_ok=True)
        with open(self.status_dir / f"{self.name}.{self.starts}.log", "wb") as out:
            # cwd: a checkout's ambrosia_edge/ must not shadow the installed package, whose
            # storage/ and transports/ subpackages live elsewhere in the source tree
            self.proc = subprocess.Popen(
                args, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=self.status_dir
            )
        self.starts += 1

    def status(self) -> dict[str, Any] | None:
        data = read_status(self.status_dir, self.name)
        if data is None or self.proc is None or data.get("pid") != self.proc.pid:
            return None
        return data

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
        self.proc = None

    def stop(self) -> int:
        """Graceful stop (SIGTERM); returns the exit code."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=30)
        self.proc = None
        return code

    def output(self) -> str:
        return "".join(
            p.read_text(errors="replace")
            for p in sorted(self.status_dir.glob(f"{self.name}.*.log"))
        )


class Idle:
    """An executor with nothing suspended that runs nothing: a unit test's stand-in."""

    quiescent = True
    suspended_handlers: tuple[str, ...] = ()

    def dispatch_batch(self, source: str, batch: bytes, count: int) -> None:
        pass


def lone_coordinator(store: Any, executor: Any = None, **settings: Any) -> Coordinator:
    """Immortal "a"'s coordinator on ``store``, live in chunk 1, with no links: its committer,
    dispatcher and checkpointer are started by the test. A checkpoint is ``b"state"``."""
    runner = executor if executor is not None else Idle()
    coordinator = Coordinator(
        "a",
        store,
        None,  # type: ignore[arg-type]
        CoordinatorOptions(**settings),
        executor=lambda outbox: runner,
        on_checkpoint=lambda chunk, first_page: b"state",
    )
    coordinator.live = True
    coordinator.chunk = 1
    return coordinator
