"""The project's targets: each one a figure of the run, a goal, and whether the run met it.

A target compares two things measured in the same run (a ratio of medians), so a slow machine
moves both sides. Beside the ratio of the medians, each ratio target also gets the lowest and
highest ratio within a single repetition, where the two sides ran minutes apart at most.

The durable ping is judged against its physical floor, not against gRPC: exactly-once needs two
``fdatasync`` calls in sequence on that path (the request in the server's log, the reply in the
client's), and on a disk where they take as long as a gRPC round trip no runtime meets a ratio
to gRPC. The floor is the round trip without them (``--no-fsync``) plus two of the disk's
flushes, all measured in the same run. The ratio to gRPC's unary call stays in the report as a
figure.
"""

from __future__ import annotations

from typing import Any

from .results import Results
from .stats import percentile, ratio
from .systems import (
    AMBROSIA,
    DBOS_BATCHED,
    DBOS_QUEUE,
    GRPC,
    KIB,
    NO_FSYNC,
    TYPICAL_100,
    TYPICAL_1000,
)

THROUGHPUT_16 = "16 B fork throughput, durable, vs gRPC streaming"
THROUGHPUT_64K = "64 KiB fork throughput, durable, vs gRPC streaming"
PING_FLOOR = "ping p50, durable, vs its floor (no-fsync p50 + 2 x fdatasync p50)"
COUNTER = "durable counter increments vs DBOS (its best variant)"
REPLAY = "replay vs live durable throughput, 16 B"
IDLE_RSS = "idle immortal RSS (MiB)"
TYPICAL_1000_TUNED = "typical app, 1,000-fork steps, vs the tuned app (durable, same payload)"
TYPICAL_1000_GRPC = "typical app, 1,000-fork steps, vs gRPC streaming"
TYPICAL_100_TUNED = "typical app, 100-fork steps, vs the tuned app (durable, same payload)"
#: the typical app's targets: (row, its system, the system it is divided by, the goal)
TYPICAL_TARGETS = [
    (TYPICAL_1000_TUNED, TYPICAL_1000, AMBROSIA, 0.8),
    (TYPICAL_1000_GRPC, TYPICAL_1000, GRPC, 30.0),
    (TYPICAL_100_TUNED, TYPICAL_100, AMBROSIA, 0.5),
]
FAILOVER = "failover after SIGKILL to a standby, median (s)"
#: the failover target, in seconds (issue: failover under 2 s end to end)
FAILOVER_GOAL = 2.0

#: the most the durable ping's p50 may exceed its floor by: the flushes of a real log page and
#: the wake-ups around them cost a little more than the bare appends the floor times
PING_FLOOR_GOAL = 1.15
#: the flushes on the durable ping's path: the request at the server, the reply at the client
FLUSHES_PER_PING = 2
_FLOOR = "floor"


def ping_floor(
    ping: dict[str, dict[str, float]], disk: dict[str, float], results: Results
) -> dict[str, Any]:
    """The durable ping's p50 beside its physical floor and beside gRPC's unary p50 (µs).

    Empty unless the run measured the durable ping, the no-fsync ping and the disk. The floor
    of a repetition uses the disk's flushes measured at the start of that repetition.
    """
    if AMBROSIA not in ping or NO_FSYNC not in ping or "p50" not in disk:
        return {}
    durable = ping[AMBROSIA]["p50"]
    floor = ping[NO_FSYNC]["p50"] + FLUSHES_PER_PING * disk["p50"]
    grpc = ping.get(GRPC, {}).get("p50", float("nan"))
    runs = [
        {**r, "p50": percentile(sorted(r["samples_ns"]), 50)}
        for r in results.ping
        if r["system"] in (AMBROSIA, NO_FSYNC, GRPC)
    ]
    flush = {d["rep"]: percentile(sorted(d["append_ns"]), 50) for d in results.disk}
    floors = [
        {"rep": r["rep"], "system": _FLOOR, "p50": r["p50"] + FLUSHES_PER_PING * flush[r["rep"]]}
        for r in runs
        if r["system"] == NO_FSYNC and r["rep"] in flush
    ]
    return {
        "durable_p50": durable,
        "no_fsync_p50": ping[NO_FSYNC]["p50"],
        "fdatasync_p50": disk["p50"],
        "floor_p50": floor,
        "ratio": ratio(durable, floor),
        "repetitions": _per_repetition(runs + floors, "p50", AMBROSIA, _FLOOR),
        "grpc_p50": grpc,
        "grpc_ratio": ratio(durable, grpc),
        "grpc_repetitions": _per_repetition(runs, "p50", AMBROSIA, GRPC),
    }


def targets(
    throughput: dict[int, dict[str, dict[str, float]]],
    floor: dict[str, Any],
    counter: dict[str, dict[str, float]],
    replay: dict[str, float],
    idle: dict[str, dict[str, float]],
    results: Results,
    typical: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """The target rows of the report, each with its spread over repetitions where it has one."""
    rows = _targets(throughput, floor, counter, replay, idle)
    rows += _typical_targets(throughput, typical or {})
    failovers = [t for r in results.failover for t in r["times_s"]]
    if failovers:
        value = percentile(sorted(failovers), 50)
        rows.append(
            {
                "target": FAILOVER,
                "value": value,
                "goal": f"< {FAILOVER_GOAL:g} s",
                "met": value < FAILOVER_GOAL,
            }
        )
    spreads = {
        THROUGHPUT_16: _per_repetition(
            [r for r in results.throughput if r["size"] == 16], "messages_per_s", AMBROSIA, GRPC
        ),
        THROUGHPUT_64K: _per_repetition(
            [r for r in results.throughput if r["size"] == 64 * KIB],
            "messages_per_s",
            AMBROSIA,
            GRPC,
        ),
        PING_FLOOR: floor.get("repetitions", []),
    }
    if typical:
        same = [r for r in results.throughput if r["size"] == typical["size"]]
        for target, system, base, _ in TYPICAL_TARGETS:
            spreads[target] = _per_repetition(same, "messages_per_s", system, base)
    for row in rows:
        ratios = spreads.get(row["target"], [])
        if len(ratios) > 1:
            row["repetitions"] = [min(ratios), max(ratios)]
    return rows


def _typical_targets(
    throughput: dict[int, dict[str, dict[str, float]]], typical: dict[str, Any]
) -> list[dict[str, Any]]:
    """The typical app against the tuned app and gRPC at the same payload, from the same run."""
    if not typical:
        return []
    nan = float("nan")
    same = throughput.get(typical["size"], {})
    rows = []
    for target, system, base, goal in TYPICAL_TARGETS:
        mine = typical["systems"].get(system, {}).get("messages_per_s", nan)
        theirs = same.get(base, {}).get("messages_per_s", nan)
        if mine != mine or theirs != theirs:
            continue
        value = ratio(mine, theirs)
        goal_text = f">= {goal:g}x"
        rows.append({"target": target, "value": value, "goal": goal_text, "met": value >= goal})
    return rows


def _per_repetition(runs: list[dict[str, Any]], figure: str, a: str, b: str) -> list[float]:
    """The ratio a/b of one figure within each repetition: the two ran minutes apart at most,
    so what disturbed the machine in that repetition weighs on both."""
    by_rep: dict[int, dict[str, float]] = {}
    for r in runs:
        by_rep.setdefault(r["rep"], {})[r["system"]] = r[figure]
    return [ratio(v[a], v[b]) for _, v in sorted(by_rep.items()) if a in v and b in v]


def _targets(
    throughput: dict[int, dict[str, dict[str, float]]],
    floor: dict[str, Any],
    counter: dict[str, dict[str, float]],
    replay: dict[str, float],
    idle: dict[str, dict[str, float]],
) -> list[dict[str, Any]]:
    nan = float("nan")
    rows: list[dict[str, Any]] = []

    def rate(size: int, system: str) -> float:
        return throughput.get(size, {}).get(system, {}).get("messages_per_s", nan)

    if 16 in throughput:
        rows.append(
            {
                "target": THROUGHPUT_16,
                "value": ratio(rate(16, AMBROSIA), rate(16, GRPC)),
                "goal": ">= 30x",
                "met": ratio(rate(16, AMBROSIA), rate(16, GRPC)) >= 30,
            }
        )
    if 64 * KIB in throughput:
        value = ratio(rate(64 * KIB, AMBROSIA), rate(64 * KIB, GRPC))
        rows.append(
            {
                "target": THROUGHPUT_64K,
                "value": value,
                "goal": ">= 0.8x",
                "met": value >= 0.8,
            }
        )
    if floor:
        value = floor["ratio"]
        rows.append(
            {
                "target": PING_FLOOR,
                "value": value,
                "goal": f"<= {PING_FLOOR_GOAL}x",
                "met": value <= PING_FLOOR_GOAL,
            }
        )
    dbos = [counter[s]["increments_per_s"] for s in (DBOS_BATCHED, DBOS_QUEUE) if s in counter]
    if AMBROSIA in counter and dbos:
        value = ratio(counter[AMBROSIA]["increments_per_s"], max(dbos))
        rows.append(
            {
                "target": COUNTER,
                "value": value,
                "goal": ">= 100x",
                "met": value >= 100,
            }
        )
    if replay and replay.get("size") == 16:
        rows.append(
            {
                "target": REPLAY,
                "value": replay["ratio"],
                "goal": ">= 3x",
                "met": replay["ratio"] >= 3,
            }
        )
    if AMBROSIA in idle:
        value = max(idle[AMBROSIA].values())
        rows.append(
            {
                "target": IDLE_RSS,
                "value": value,
                "goal": "<= 40 MiB",
                "met": value <= 40,
            }
        )
    return rows
