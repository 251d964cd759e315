"""The processes of a measurement: starting and stopping them, and talking to them by files.

Every peer runs in a child process of its own, from a snapshot of the package taken when the
run starts. Children publish ``NAME.json`` status files in their run directory (see
benchmarks/status.py) and start a workload when the harness writes ``go.json`` there.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

PACKAGE_DIR = Path(__file__).resolve().parent


class BenchmarkError(Exception):
    pass


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

    @staticmethod
    def check_alive(what: str, children: list[Child]) -> None:
        """Name a child that has exited, with its output (its /proc figures are gone too)."""
        for child in children:
            if not child.alive():
                raise BenchmarkError(
                    f"{child.label} exited with {child.proc.returncode} while waiting for "
                    f"{what}; its output ends with:\n{child.text()[-3000:]}"
                )

    def wait(self, what: str, ready: Callable[[], bool], children: list[Child]) -> None:
        deadline = time.monotonic() + self.timeout
        while not ready():
            self.check_alive(what, children)
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


def read_status(run_dir: Path, name: str) -> dict[str, Any]:
    """The status file ``NAME.json`` a child last wrote, or ``{}`` before it wrote one."""
    try:
        data: dict[str, Any] = json.loads((run_dir / f"{name}.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}
    return data


def send_go(run_dir: Path, **params: Any) -> None:
    """Start the workload. Written beside ``go.json`` and renamed over it, so that a child polling
    for it never reads half of it."""
    tmp = run_dir / "go.tmp"
    tmp.write_text(json.dumps(params))
    os.replace(tmp, run_dir / "go.json")


def ambrosia_args(
    role: str,
    run_dir: Path,
    port: int,
    peer_port: int,
    fsync: bool,
    *options: str,
    log: str | None = None,
    app: str = "Bench",
) -> list[str]:
    """The command line of one immortal of a pair: ``benchmarks.host`` takes the arguments of
    ``ambrosia-edge run``, so what is measured is what a user runs. The log is a directory of
    the run unless ``log`` gives its URL. ``app`` is the prefix of the classes in
    benchmarks/apps.py: ``Bench`` (tuned) or ``Typical``."""
    cls, peer = (f"{app}Server", "client") if role == "server" else (f"{app}Client", "server")
    return [
        sys.executable,
        "-m",
        "benchmarks.host",
        f"benchmarks.apps:{cls}",
        "--name",
        role,
        "--log",
        log or str(run_dir / role),
        "--listen",
        f"127.0.0.1:{port}",
        "--peer",
        f"{peer}=127.0.0.1:{peer_port}",
        "--fsync" if fsync else "--no-fsync",
        *options,
    ]
