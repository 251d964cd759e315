"""The machine a run measured: CPU, memory, kernel, the file system under the logs, versions.

Taken when a run starts, so the report names exactly what it measured, including the commit of
the runtime the children were started from.
"""

from __future__ import annotations

import os
import platform
import sys
from importlib import metadata
from pathlib import Path
from typing import Any


def _mount_of(path: Path) -> tuple[str, str, str]:
    """(mount point, file system type, source) of the mount that holds ``path``."""
    best = ("", "?", "?")
    target = str(path.resolve())
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                left, _, right = line.partition(" - ")
                point = left.split()[4]
                fstype, source = right.split()[:2]
                inside = target == point or target.startswith(point.rstrip("/") + "/")
                if inside and len(point) >= len(best[0]):
                    best = (point, fstype, source)
    except OSError:
        pass
    return best


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def machine(workdir: Path) -> dict[str, Any]:
    point, fstype, source = _mount_of(workdir)
    memory = "?"
    try:
        with open("/proc/meminfo") as f:
            kib = int(f.readline().split()[1])
        memory = f"{kib / 1024 / 1024:.1f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu": _cpu_model(),
        "memory": memory,
        "kernel": f"{platform.system()} {platform.release()}",
        "filesystem": f"{fstype} on {source} (mounted at {point}), holding {workdir}",
        "python": sys.version.split()[0],
        "versions": {
            d: _version(d)
            for d in ("ambrosia-edge", "anyio", "cbor2", "uvloop", "grpcio", "dbos", "restate-sdk")
        },
        "event_loop": _event_loop(),
        "source": _source(),
    }


def _source() -> str:
    """Where the measured runtime comes from: its directory and, in a git checkout, the commit."""
    import subprocess

    import ambrosia_edge

    where = Path(ambrosia_edge.__path__[0]).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "-C", str(where), "log", "-1", "--format=%h %cd", "--date=format:%Y-%m-%d"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(where), "status", "--porcelain", "--untracked-files=no", "--"]
            + [p.name for p in where.iterdir() if p.is_dir() and p.name in _RUNTIME_DIRS],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return str(where)
    return f"commit {commit}" + (" with local changes to the runtime" if dirty else "")


_RUNTIME_DIRS = {"ambrosia_edge", "storage", "transports", "devices"}


def _event_loop() -> str:
    from .host import backend_options

    return "uvloop" if backend_options().get("use_uvloop") else "asyncio"
