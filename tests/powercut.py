"""A disk that loses power on command, for tests: powercutfs.py mounted in a child process.

Without FUSE (no /dev/fuse, no ``fusermount3``, no mfusepy) a test skips, unless CI is set:
there it fails, since .ci/run installs Debian's fuse3 and the ``test`` extra brings mfusepy.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from support import wait_for

DAEMON = Path(__file__).resolve().parent / "powercutfs.py"


def fuse_missing() -> str | None:
    """Why a FUSE file system cannot be mounted here, or None when it can."""
    if not os.path.exists("/dev/fuse"):
        return "/dev/fuse does not exist (load the fuse module, or pass the device in)"
    if shutil.which("fusermount3") is None:
        return "fusermount3 is not installed (Debian: apt-get install fuse3)"
    if importlib.util.find_spec("mfusepy") is None:
        return "mfusepy is not installed (pip install -e '.[test]')"
    return None


def require_fuse() -> None:
    reason = fuse_missing()
    if reason is None:
        return
    if os.environ.get("CI"):
        pytest.fail(f"power-cut tests need FUSE: {reason}")
    pytest.skip(f"power-cut tests need FUSE: {reason}")


class PowerCutDisk:
    """One mount of powercutfs over ``base/disk``, remounted after each cut."""

    def __init__(
        self, base: Path, *, keep_seed: int | None = None, alternate: bool = False
    ) -> None:
        """``keep_seed``: cuts keep a random half of the unflushed writes (powercutfs.py's
        --keep-unsynced); with ``alternate``, only every other cut does, the others lose all."""
        self.base = base
        self.backing = base / "disk"
        self.path = base / "mnt"
        self.control = base / "control.sock"
        self.keep_seed = keep_seed
        self.alternate = alternate
        self.proc: subprocess.Popen[bytes] | None = None
        self.mounts = 0
        self.cuts = 0
        self.backing.mkdir(parents=True, exist_ok=True)
        self.path.mkdir(parents=True, exist_ok=True)

    def mount(self) -> None:
        args = [sys.executable, str(DAEMON), str(self.backing), str(self.path), str(self.control)]
        if self.keep_seed is not None and not (self.alternate and self.mounts % 2 == 0):
            args += ["--keep-unsynced", str(self.keep_seed + self.mounts)]
        self.control.unlink(missing_ok=True)
        with open(self.base / f"fs.{self.mounts}.log", "wb") as out:
            self.proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
        self.mounts += 1
        wait_for(
            lambda: (self.mounted() and self.control.exists()) or self._died(),
            30,
            f"powercutfs to mount {self.path}",
            self.output,
        )
        assert self.proc.poll() is None, self.output()

    def mounted(self) -> bool:
        # (not os.path.ismount: on a disk that has lost power its stat fails, which reads as
        # "not a mount point")
        with open("/proc/self/mounts") as mounts:
            return any(line.split()[1] == str(self.path) for line in mounts)

    def _died(self) -> bool:
        return self.proc is None or self.proc.poll() is not None

    def _ask(self, command: str) -> str:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.connect(str(self.control))
            conn.sendall(command.encode() + b"\n")
            return conn.makefile("r").readline().strip()

    def cut(self, after: int = 0) -> None:
        """Lose power now, or right after ``after`` more changes reach the file system."""
        assert self._ask(f"cut {after}") == "cut"

    def stats(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self._ask("stats"))
        return data

    def is_cut(self) -> bool:
        return bool(self.stats()["frozen"])

    def unmount(self) -> None:
        """Unmount (the processes using the mount must be gone) and wait for the image."""
        deadline = time.monotonic() + 30
        while True:
            done = subprocess.run(
                ["fusermount3", "-u", str(self.path)], capture_output=True, text=True
            )
            if done.returncode == 0 or not self.mounted():
                break
            if time.monotonic() > deadline:
                raise AssertionError(f"cannot unmount {self.path}: {done.stderr}")
            time.sleep(0.05)  # a killed process's descriptors are being closed
        assert self.proc is not None
        code = self.proc.wait(timeout=60)
        self.proc = None
        assert code == 0, self.output()

    def power_cycle(self) -> None:
        """The cut has happened and the processes are dead: boot again."""
        self.unmount()
        self.cuts += 1
        self.mount()

    def close(self) -> None:
        """Unmount whatever state the test left the disk in."""
        for _ in range(100):
            if not self.mounted():
                break
            # (a lazy unmount left the daemon waiting here, so it is the last resort)
            subprocess.run(["fusermount3", "-u", str(self.path)], capture_output=True)
            time.sleep(0.05)
        else:
            subprocess.run(["fusermount3", "-u", "-z", str(self.path)], capture_output=True)
        if self.proc is None:
            return
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
        self.proc = None

    def output(self) -> str:
        return "".join(p.read_text(errors="replace") for p in sorted(self.base.glob("fs.*.log")))
