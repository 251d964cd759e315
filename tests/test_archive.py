"""Offline migration: ``export`` a killed immortal's log, ``import`` it elsewhere, start it there.

And every archive that must not be imported is refused with nothing written: a wrong checksum,
a newer format version, a location that already holds a log; nor exported: a running log.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import anyio
import pytest
from anyio.abc import TaskStatus
from support import APPS, Child, free_port, wait_for

from ambrosia_edge import Immortal, impulse
from ambrosia_edge.archive import ARCHIVE_VERSION, MANIFEST, ArchiveError, export_log, import_log
from ambrosia_edge.config import Settings
from ambrosia_edge.runtime import Runtime
from ambrosia_edge.sources import ImpulseFeed

CALLS = 400


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ambrosia_edge", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=60,
    )


def test_a_killed_server_exported_and_imported_elsewhere_gives_exact_results(
    tmp_path: Path,
) -> None:
    ps, pc = free_port(), free_port()
    status = tmp_path / "status"
    status.mkdir()
    env = {"AMBROSIA_TEST_CALLS": str(CALLS)}
    old, new = tmp_path / "old-device" / "server", tmp_path / "new-device" / "server"
    server = Child(f"{APPS}:Counter", "server", old, ps, {"client": pc}, status, env)
    client = Child(f"{APPS}:Client", "client", tmp_path / "client", pc, {"server": ps}, status, env)
    server.start()
    client.start()
    try:
        wait_for(
            lambda: (s := client.status()) and len(s["seen"]) >= CALLS // 3,
            60,
            "a third of the calls",
            lambda: server.output() + client.output(),
        )
        running = cli("export", str(old), str(tmp_path / "x.tar"), cwd=tmp_path)
        assert running.returncode == 1 and "in use by a running immortal" in running.stderr
        assert not (tmp_path / "x.tar").exists()
        server.kill()  # the old device dies

        archive = tmp_path / "server.tar"
        done = cli("export", str(old), str(archive), cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith("exported server: checkpoint ")
        done = cli("import", str(archive), str(new), cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        assert f"imported server into {new}" in done.stdout

        server.log = new  # the new device: same name and address, the imported log
        server.start()
        state = wait_for(
            lambda: (s := client.status()) and s["done"] and s,
            60,
            "every call",
            lambda: server.output() + client.output(),
        )
        assert state["seen"] == list(range(1, CALLS + 1))  # no gap, no duplicate
        counter = wait_for(
            lambda: (s := server.status()) and s["count"] == CALLS and s, 30, "the count"
        )
        assert counter["count"] == CALLS
    finally:
        server.kill()
        client.kill()


class Notes(Immortal):
    def __init__(self) -> None:
        self.notes: list[int] = []

    @impulse
    def note(self, n: int) -> None:
        self.notes.append(n)


class Feeder:
    """Sends ``count`` notes and waits until they are in the log."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.done = anyio.Event()

    async def run(
        self, feed: ImpulseFeed, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        task_status.started()
        receipts = [feed.send("note", n) for n in range(self.count)]
        await receipts[-1].wait()
        self.done.set()


def make_log(log: Path, count: int) -> list[int]:
    """Run Notes on ``log`` until ``count`` more notes are logged; its notes."""
    feeder = Feeder(count)
    runtime = Runtime(
        Notes, Settings(target="tests:notes", name="notes", log=str(log)), sources=[feeder]
    )

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            await tg.start(runtime.serve)
            await feeder.done.wait()
            tg.cancel_scope.cancel()

    anyio.run(main)
    obj = runtime.immortal
    assert isinstance(obj, Notes)
    return obj.notes


def rewrite(archive: Path, target: Path, change: dict[str, bytes]) -> None:
    """A copy of ``archive`` with some members' contents replaced."""
    with tarfile.open(archive) as src, tarfile.open(target, "w") as dst:
        for info in src:
            handle = src.extractfile(info)
            assert handle is not None
            data = change.get(info.name, handle.read())
            info.size = len(data)
            dst.addfile(info, io.BytesIO(data))


def test_an_archive_round_trips_and_bad_ones_write_nothing(tmp_path: Path) -> None:
    log = tmp_path / "log"
    make_log(log, 30)
    assert make_log(log, 20) == list(range(30)) + list(range(20))  # a second chunk
    archive = tmp_path / "notes.tar"
    done = export_log(str(log), archive)
    assert done.immortal == "notes" and done.checkpoint is not None
    with tarfile.open(archive) as tar:
        names = tar.getnames()
        manifest = json.load(tar.extractfile(MANIFEST))  # type: ignore[arg-type]
    assert names[0] == MANIFEST
    assert manifest["format"] == "ambrosia-edge/archive" and manifest["version"] == ARCHIVE_VERSION
    assert manifest["checkpoint"] == done.checkpoint and manifest["chunks"] == done.chunks

    moved = tmp_path / "moved"
    import_log(archive, str(moved))
    assert make_log(moved, 1) == list(range(30)) + list(range(20)) + [0]

    with pytest.raises(ArchiveError, match=r"already holds a log; .*nothing was written"):
        import_log(archive, str(moved))

    chunk = f"chunk-{done.chunks[-1]:08d}"
    with tarfile.open(archive) as tar:
        data = tar.extractfile(chunk).read()  # type: ignore[union-attr]
    damaged = tmp_path / "damaged.tar"
    rewrite(archive, damaged, {chunk: data[:-1] + bytes([data[-1] ^ 1])})
    with pytest.raises(ArchiveError, match=f"{chunk} does not match its checksum"):
        import_log(damaged, str(tmp_path / "d"))
    assert not (tmp_path / "d").exists()

    newer = tmp_path / "newer.tar"
    later = dict(manifest, version=ARCHIVE_VERSION + 1)
    rewrite(archive, newer, {MANIFEST: json.dumps(later).encode()})
    with pytest.raises(ArchiveError, match=r"newer than this release reads .*upgrade"):
        import_log(newer, str(tmp_path / "n"))
    assert not (tmp_path / "n").exists()

    truncated = tmp_path / "truncated.tar"
    truncated.write_bytes(archive.read_bytes()[:700])
    with pytest.raises(ArchiveError, match="not an ambrosia-edge archive, or it is truncated"):
        import_log(truncated, str(tmp_path / "t"))
    assert not (tmp_path / "t").exists()

    with pytest.raises(ArchiveError, match="there is no log at"):
        export_log(str(tmp_path / "nothing"), tmp_path / "a.tar")
    assert not (tmp_path / "a.tar").exists()
