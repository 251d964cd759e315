"""The benchmark driver: runs every workload on every system, the systems interleaved.

Each measurement starts a fresh server process and a fresh client process, waits until both
are up (and, for immortals, connected to each other), samples their CPU time and memory, writes
``go.json`` to start the workload, waits for the status files that say it is over, samples
again and stops both (benchmarks/measure.py). Systems take turns within every repetition (the
order rotates from one repetition to the next), so a slow minute of the machine hits them all
alike; the report (benchmarks/summary.py, benchmarks/report.py) gives the median of the
repetitions and the ratio of medians to the baseline measured in the same run.
"""

from __future__ import annotations

import contextlib
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from . import deployments, disk, restate_peer
from .failover import measure_failover
from .machine import machine
from .measure import measure_pair, measure_replay
from .modes import Mode, messages_for, throughput_batch
from .processes import BenchmarkError, Runner
from .recovery import measure_log_replay, measure_recovery
from .results import Results
from .stats import median, percentile, throughput_rate
from .systems import (
    AMBROSIA,
    DBOS_BATCHED,
    DBOS_QUEUE,
    GRPC,
    MIB,
    NO_FSYNC,
    RESTATE_BATCHED,
    RESTATE_EACH,
    TYPICAL_STEPS,
    WORKLOADS,
)


def _rotate(items: list[str], k: int) -> list[str]:
    k %= len(items)
    return items[k:] + items[:k]


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
    only: frozenset[str] | None = None,
) -> Results:
    """Every workload of ``mode``, or those in ``only`` (names from :data:`WORKLOADS`); the
    disk's floor is measured in each repetition whatever is selected (the ping is judged
    against it)."""
    started = time.monotonic()
    wanted = frozenset(WORKLOADS) if only is None else only
    results = Results(
        mode=mode.name,
        command=command,
        started=time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        machine=machine(workdir),
    )
    reps = reps or mode.reps
    results.params = {**asdict(mode), "reps": reps}
    if only is not None:
        results.params["only"] = sorted(only)
        results.notes.append(
            "Only some workloads ran (--only " + ",".join(w for w in WORKLOADS if w in only) + ")."
        )
    runner = Runner(workdir, mode.timeout, log)
    systems = [AMBROSIA, NO_FSYNC]
    if _have("grpc"):
        systems.append(GRPC)
    else:
        results.notes.append("grpcio is not installed, so the gRPC baseline was skipped.")
        log("grpcio is not installed: skipping the gRPC baseline (pip install '.[bench]')")
    use_dbos = dbos and mode.dbos and "counter" in wanted
    if use_dbos and not _have("dbos"):
        use_dbos = False
        results.notes.append("DBOS Transact is not installed, so its baseline was skipped.")
        log("dbos is not installed: skipping the DBOS baseline (pip install '.[bench]')")
    elif not use_dbos and "counter" in wanted:
        results.notes.append(f"The DBOS baseline is not part of this run ({mode.name} mode).")
    # optional: measured when installed (benchmarks/restate_peer.py says what that takes)
    use_restate = use_dbos and restate_peer.available()
    if use_dbos and not use_restate:
        log(
            "Restate is not installed: skipping its optional baseline "
            "(npm install -g @restatedev/restate-server; pip install restate-sdk hypercorn)"
        )
    with contextlib.ExitStack() as stack:
        others = (
            stack.enter_context(deployments.started(results, log))
            if mode.deployments and "deployments" in wanted
            else []
        )
        _repetitions(
            runner, mode, reps, systems, others, use_dbos, use_restate, results, log, wanted
        )
    # once per run: each takes seconds of traffic and a log of its own
    if "recovery" in wanted:
        _recovery(runner, mode, results, log)
    if "log-replay" in wanted:
        _log_replay(runner, mode, results, log)
    if "failover" in wanted:
        _failover(runner, mode, results, log)
    results.seconds = time.monotonic() - started
    return results


def _recovery(runner: Runner, mode: Mode, results: Results, log: Callable[[str], None]) -> None:
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


def _log_replay(runner: Runner, mode: Mode, results: Results, log: Callable[[str], None]) -> None:
    for row in measure_log_replay(runner, size=mode.replay_log_size, volume=mode.replay_log):
        results.log_replay.append(row)
        log(
            f"  replay of {row['log_bytes'] / MIB:.0f} MiB from the start, {row['cache']} cache: "
            f"{row['seconds']:.2f} s, {row['mb_per_s']:,.0f} MB/s, "
            f"{row['messages_per_s']:,.0f} msg/s"
        )


def _failover(runner: Runner, mode: Mode, results: Results, log: Callable[[str], None]) -> None:
    f = measure_failover(runner, failovers=mode.failovers, pings=mode.failover_pings)
    results.failover.append(f)
    times = sorted(f["times_s"])
    log(
        f"  failover after SIGKILL to a standby, {len(times)} times: median "
        f"{median(times):.3f} s, worst {times[-1]:.3f} s; every ping exactly once"
    )


def _repetitions(
    runner: Runner,
    mode: Mode,
    reps: int,
    systems: list[str],
    others: list[deployments.Deployment],
    use_dbos: bool,
    use_restate: bool,
    results: Results,
    log: Callable[[str], None],
    wanted: frozenset[str],
) -> None:
    """Every workload once per repetition, the systems taking turns (see the module)."""
    smallest = min(mode.sizes)
    if "throughput" in wanted:
        sizes = mode.sizes
    elif "typical" in wanted:
        sizes = [smallest]
    else:
        sizes = []
    for rep in range(reps):
        log(f"repetition {rep + 1} of {reps}")
        # the physical floor first: nothing else runs while it is measured
        lat = disk.append_latencies(runner.workdir, mode.disk_appends)
        # several passes: on a virtual disk the first write of fresh blocks can be much slower
        bws = [disk.sequential_bandwidth(runner.workdir, mode.disk_bytes) for _ in range(3)]
        bw = median(bws)
        results.disk.append({"rep": rep, "append_ns": lat, "sequential_bytes_per_s": bws})
        log(
            f"  disk: 4 KiB append+fdatasync p50 {percentile(sorted(lat), 50) / 1e3:.0f} us, "
            f"sequential {bw / 1e6:.0f} MB/s"
        )
        for size in sizes:
            # the typical app runs at the smallest size, interleaved with the tuned app and gRPC
            typical = list(TYPICAL_STEPS) if size == smallest else []
            for system in _rotate(systems + typical, rep):
                total = messages_for(mode, size, system)
                keep = system == AMBROSIA and size == smallest
                batch = TYPICAL_STEPS.get(system) or throughput_batch(size)
                r = measure_pair(
                    runner, system, "throughput", size=size, total=total, batch=batch, keep_log=keep
                )
                r["rep"] = rep
                r["batch"] = batch
                r["messages_per_s"], r["timing"] = throughput_rate(r)
                results.throughput.append(r)
                log(
                    f"  throughput {size:>6} B {system:<44} {r['messages_per_s']:>10,.0f} msg/s "
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
                        f"  replay     {size:>6} B {'':<44} {replay['messages_per_s']:>10,.0f} "
                        f"msg/s ({replay['messages']} messages)"
                    )
        for system in _rotate(systems, rep) if "ping" in wanted else []:
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
        counters = [AMBROSIA] if "counter" in wanted else []
        if use_dbos:
            counters += [DBOS_BATCHED, DBOS_QUEUE]
        if use_restate:
            counters += [RESTATE_BATCHED, RESTATE_EACH]
        for system in _rotate(counters, rep) if counters else []:
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
        if others:
            deployments.measure(runner, mode, rep, others, results, log)
