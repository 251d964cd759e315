"""Exactly-once across power cuts: each immortal's log on a disk that forgets, on command,
everything not flushed (tests/powercutfs.py), at moments picked at random.

A SIGKILL cannot test this: the page cache outlives the process, so a write that was never
flushed still reaches the disk. Here a cut freezes the disk after a random number of further
changes (a write, a flush, a create, a rename...), the processes on it are killed, and the disk
comes back with only what was flushed, file by file and directory by directory (or, every other
cut, with a random half of what was not flushed as well, as a disk that wrote some dirty pages
back in time). Some cuts take one machine, some both at once; they fall during start-up and
recovery as well as in steady running. What is checked, after each cut and at the end:

* nothing a peer saw acknowledged is lost: a server that comes back has counted at least the
  replies its client had received when the power went;
* nothing runs twice: the client's results are 1, 2, 3... with no repeat, and the server's
  count and the fork receiver's sums are exact at the end;
* recovery never fails: every restart reaches the point where the immortal runs.

The two tiers that live on a file system (the local disk and the shared mount) are also cut
alone, in a child process running a log's whole life (records small and large, checkpoints,
a chunk deleted and its file reused), at 6 of its ~570 steps here and 150 in the long mode,
in each mode. ``pytest -m powercut_long`` runs the long mode: 200 cuts in the Counter/Client
run, 60 in the fork stream and 600 under the tiers alone (about half an hour on two cores).
"""

from __future__ import annotations

import random
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from ambrosia_edge.storage.local import LocalStore
from apps import counting
from apps.counting import Client, Counter
from powercut import PowerCutDisk, require_fuse
from powercut_workload import Workload
from support import APPS, Child, free_port, wait_for

from ambrosia_edge.config import Settings
from ambrosia_edge.errors import StoreError
from ambrosia_edge.runtime import Runtime
from ambrosia_edge.testing.storage_suite import page

#: which machines lose power together: one of the two, or both
MACHINES = (("server",), ("client",), ("server", "client"))


def recovered_state(cls: type, name: str, log: Path) -> Any:
    """Rebuild an immortal from its log alone (the processes are stopped)."""
    runtime = Runtime(cls, Settings(target="tests:inprocess", name=name, log=str(log)))
    runtime.recover()
    runtime.store.close()
    return runtime.immortal


@pytest.fixture
def disks(tmp_path: Path) -> Iterator[dict[str, PowerCutDisk]]:
    require_fuse()
    made = {
        name: PowerCutDisk(tmp_path / f"{name}-disk", keep_seed=seed, alternate=True)
        for seed, name in enumerate(("server", "client"))
    }
    try:
        yield made
    finally:
        for disk in made.values():
            disk.close()


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[PowerCutDisk]:
    require_fuse()
    made = PowerCutDisk(tmp_path / "disk")
    made.mount()
    try:
        yield made
    finally:
        made.close()


def test_a_record_in_a_new_log_directory_survives_a_power_cut(disk: PowerCutDisk) -> None:
    # The log directory and its parent are created by opening the store: their entries must
    # be flushed too, or the first power cut takes the whole log with it.
    url = str(disk.path / "logs" / "sensor")
    store = LocalStore(url)
    store.open()
    store.start_chunk(1)
    store.append(page(b"acknowledged"))
    disk.cut()
    store.close()
    disk.power_cycle()
    after = LocalStore(url)
    assert after.list_chunks() == [1]
    assert [body for _, body in after.read_records(1)] == [b"acknowledged"]


def test_a_dead_disk_is_a_store_error_naming_the_log(disk: PowerCutDisk) -> None:
    # after the power goes every operation fails with EIO; the tier must still say which log
    # and what to do, not let a bare OSError escape to the coordinator
    store = LocalStore(str(disk.path / "log"))
    store.open()
    disk.cut()
    try:
        with pytest.raises(StoreError, match=r"Input/output error .*chunk-00000001\.log"):
            store.start_chunk(1)
        with pytest.raises(StoreError, match="listing log directory"):
            store.list_chunks()
    finally:
        store.close()


WORKLOAD = Path(__file__).resolve().parent / "powercut_workload.py"


def run_workload(disk: PowerCutDisk, url: str, progress: Path, after: int | None) -> None:
    """Run the workload in a child process; with ``after``, cut the power after that many
    changes (or at the end, if it comes first) and kill the child, as the cut would."""
    if after is not None:
        disk.cut(after)
    with open(disk.base / "workload.log", "ab") as out:
        child = subprocess.Popen(
            [sys.executable, str(WORKLOAD), url, str(progress)],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=disk.base,
        )
    try:
        wait_for(
            lambda: child.poll() is not None or (after is not None and disk.is_cut()),
            120,
            "the workload to end or the power to go",
            lambda: (disk.base / "workload.log").read_text(errors="replace"),
        )
    finally:
        if after is not None:
            disk.cut()
        child.kill()
        child.wait()
    if after is None:
        assert child.returncode == 0, (disk.base / "workload.log").read_text(errors="replace")


def tier_url(disk: PowerCutDisk, tier: str, name: str) -> str:
    where = disk.path / name / "log"
    return str(where) if tier == "file" else f"{tier}://{where}"


def cut_during_workload(disk: PowerCutDisk, tier: str, after: int) -> None:
    """One boot of ``disk``: the workload in a new directory, cut after ``after`` changes."""
    url = tier_url(disk, tier, f"logs-{after}")
    progress = disk.base / f"progress-{after}.cbor"
    run_workload(disk, url, progress, after)
    disk.power_cycle()
    work = Workload(url, progress)
    work.load()
    work.check()


def workload_changes(disk: PowerCutDisk, tier: str) -> int:
    """How many changes the workload makes. A first run may make more, smaller writes than
    later ones; the smaller count is taken (a cut placed after the end comes at the end)."""
    counts = []
    for run in range(2):
        before = disk.stats()["changes"]
        url = tier_url(disk, tier, f"logs-counted-{run}")
        run_workload(disk, url, disk.base / f"progress-counted-{run}.cbor", None)
        counts.append(int(disk.stats()["changes"] - before))
    return min(counts)


KEEP = pytest.mark.parametrize("keep", [False, True], ids=["unflushed-lost", "some-unflushed-kept"])
# file: the local tier (flock, spare chunks, O_DIRECT); nfs: the shared-mount tier (an epoch
# lease in files beside the log), here on the disk that loses power
TIER = pytest.mark.parametrize("tier", ["file", "nfs"])


@KEEP
@TIER
def test_a_tier_keeps_what_it_acknowledged_at_any_cut(
    tmp_path: Path, tier: str, keep: bool
) -> None:
    sweep_store_cuts(tmp_path, tier, keep, sample=6)


@pytest.mark.powercut_long
@pytest.mark.timeout(3600)
@KEEP
@TIER
def test_a_tier_keeps_what_it_acknowledged_at_150_cuts(
    tmp_path: Path, tier: str, keep: bool
) -> None:
    sweep_store_cuts(tmp_path, tier, keep, sample=150)


def sweep_store_cuts(tmp_path: Path, tier: str, keep: bool, sample: int) -> None:
    require_fuse()
    disk = PowerCutDisk(tmp_path / "disk", keep_seed=5 if keep else None)
    disk.mount()
    try:
        total = workload_changes(disk, tier)
        points = list(range(1, total))
        if sample < len(points):
            points = sorted(random.Random(total).sample(points, sample))
        for after in points:
            cut_during_workload(disk, tier, after)
    finally:
        disk.close()


def children(
    tmp_path: Path, disks: dict[str, PowerCutDisk], client_class: str, env: dict[str, str]
) -> dict[str, Child]:
    ps, pc = free_port(), free_port()
    status = tmp_path / "status"
    status.mkdir()
    server = Child(
        f"{APPS}:Counter", "server", disks["server"].path / "log", ps, {"client": pc}, status, env
    )
    client = Child(
        f"{APPS}:{client_class}", "client", disks["client"].path / "log", pc, {"server": ps},
        status, env,
    )  # fmt: skip
    return {"server": server, "client": client}


def outputs(procs: dict[str, Child], disks: dict[str, PowerCutDisk]) -> str:
    return "".join(c.output() for c in procs.values()) + "".join(d.output() for d in disks.values())


def running(child: Child, procs: dict[str, Child], disks: dict[str, PowerCutDisk]) -> bool:
    """True once ``child`` runs its immortal; fails at once if it exited instead."""
    if child.proc is not None and child.proc.poll() is not None:
        raise AssertionError(
            f"{child.name} exited with {child.proc.returncode} while recovering after a power "
            f"cut\n{outputs(procs, disks)[-6000:]}"
        )
    return child.status() is not None


def cut_power(
    rng: random.Random,
    procs: dict[str, Child],
    disks: dict[str, PowerCutDisk],
    finished: Callable[[], bool],
) -> tuple[str, ...]:
    """Cut the power of one machine or both at a random moment; return whose went."""
    machines = rng.choice(MACHINES)
    first = disks[machines[0]]
    first.cut(rng.randint(1, 120))
    # the cut comes with the disk's next changes; a run that has gone quiet gets it now
    wait_for(lambda: first.is_cut() or finished(), 120, "the armed power cut")
    first.cut()
    for name in machines[1:]:
        disks[name].cut()
    for name in machines:
        procs[name].kill()
    return machines


def restart(
    machines: tuple[str, ...], procs: dict[str, Child], disks: dict[str, PowerCutDisk]
) -> None:
    for name in machines:
        disks[name].power_cycle()
    for name in machines:
        procs[name].start()
    for name in machines:
        wait_for(
            lambda c=procs[name]: running(c, procs, disks),
            120,
            f"{name} to recover after a power cut",
            lambda: outputs(procs, disks),
        )


def counter_client_cuts(
    tmp_path: Path, disks: dict[str, PowerCutDisk], cuts: int, calls: int
) -> None:
    rng = random.Random(cuts * 1000 + calls)
    for disk in disks.values():
        disk.mount()
    procs = children(tmp_path, disks, "Client", {"AMBROSIA_TEST_CALLS": str(calls)})
    server, client = procs["server"], procs["client"]
    server.start()
    client.start()
    seen_at_cuts: list[int] = []
    try:
        for _ in range(cuts):
            progress = len((client.status() or {"seen": []})["seen"])
            target = min(progress + rng.randint(0, calls // cuts), calls - 1)
            wait_for(
                lambda t=target: (s := client.status()) and len(s["seen"]) >= t,
                120,
                f"client progress to {target}",
                lambda: outputs(procs, disks),
            )
            machines = cut_power(
                rng, procs, disks, lambda: bool((s := client.status()) and s["done"])
            )
            if machines == ("server",):
                # the client lives on: what it has seen, the server must still have counted
                seen = client.status()["seen"]  # type: ignore[index]
                assert seen == list(range(1, len(seen) + 1)), seen
                seen_at_cuts.append(len(seen))
            restart(machines, procs, disks)
            if machines == ("server",):
                count = server.status()["count"]  # type: ignore[index]
                assert count >= seen_at_cuts[-1], (
                    f"the server came back having counted {count} calls, but its client had "
                    f"already seen {seen_at_cuts[-1]} replies"
                )
            seen = client.status()["seen"]  # type: ignore[index]
            assert seen == list(range(1, len(seen) + 1)), seen
        wait_for(
            lambda: (s := client.status()) and s["done"],
            180,
            "the client to finish",
            lambda: outputs(procs, disks),
        )
        assert client.status()["seen"] == list(range(1, calls + 1))  # type: ignore[index]
        assert server.stop() == 0
        assert client.stop() == 0
    finally:
        server.kill()
        client.kill()
    # (replay here runs Client.on_first_start again, which makes CALLS calls)
    saved, counting.CALLS = counting.CALLS, calls
    try:
        assert recovered_state(Client, "client", client.log).seen == list(range(1, calls + 1))
    finally:
        counting.CALLS = saved
    assert recovered_state(Counter, "server", server.log).count == calls
    assert sum(d.cuts for d in disks.values()) >= cuts


def fork_stream_cuts(
    tmp_path: Path, disks: dict[str, PowerCutDisk], cuts: int, forks: int, step: int = 1000
) -> None:
    rng = random.Random(cuts * 1000 + forks)
    for disk in disks.values():
        disk.mount()
    env = {"AMBROSIA_TEST_FORKS": str(forks), "AMBROSIA_TEST_STEP": str(step)}
    procs = children(tmp_path, disks, "Streamer", env)
    server, client = procs["server"], procs["client"]
    server.start()
    client.start()

    def received() -> int:
        status = server.status()
        return int(status["received"]) if status else 0

    try:
        for round_ in range(cuts):
            target = forks * (round_ + 1) // (cuts + 2)
            wait_for(
                lambda t=target: received() >= t,
                180,
                f"the server to receive {target}",
                lambda: outputs(procs, disks),
            )
            machines = cut_power(rng, procs, disks, lambda: received() >= forks)
            restart(machines, procs, disks)
            status = server.status()
            assert status is not None and status["out_of_order"] == 0, status
        wait_for(lambda: received() >= forks, 300, "all forks", lambda: outputs(procs, disks))
        status = server.status()
        assert status is not None
        assert status["received"] == forks
        assert status["total"] == forks * (forks + 1) // 2
        assert status["out_of_order"] == 0
        assert server.stop() == 0
        assert client.stop() == 0
    finally:
        server.kill()
        client.kill()
    final = recovered_state(Counter, "server", server.log)
    assert (final.received, final.total, final.out_of_order) == (forks, forks * (forks + 1) // 2, 0)


def test_counter_and_client_across_power_cuts(
    tmp_path: Path, disks: dict[str, PowerCutDisk]
) -> None:
    counter_client_cuts(tmp_path, disks, cuts=4, calls=120)


def test_fork_stream_across_power_cuts(tmp_path: Path, disks: dict[str, PowerCutDisk]) -> None:
    fork_stream_cuts(tmp_path, disks, cuts=3, forks=20_000)


def test_fork_stream_in_small_steps_across_power_cuts(
    tmp_path: Path, disks: dict[str, PowerCutDisk]
) -> None:
    """Steps of 10 forks: the client runs chains of pages ahead of their flushes and writes
    the queued ones together, so a cut falls with several pages in flight, some written and
    not flushed; none of their forks may have left, and none is lost or doubled."""
    fork_stream_cuts(tmp_path, disks, cuts=3, forks=5_000, step=10)


@pytest.mark.powercut_long
@pytest.mark.timeout(3600)
def test_counter_and_client_across_200_power_cuts(
    tmp_path: Path, disks: dict[str, PowerCutDisk]
) -> None:
    counter_client_cuts(tmp_path, disks, cuts=200, calls=3000)


@pytest.mark.powercut_long
@pytest.mark.timeout(3600)
def test_fork_stream_across_60_power_cuts(tmp_path: Path, disks: dict[str, PowerCutDisk]) -> None:
    fork_stream_cuts(tmp_path, disks, cuts=60, forks=300_000)
