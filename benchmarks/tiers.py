"""The storage tiers side by side: the durable throughput and ping workloads with both logs on a
shared mount (``nfs://``, here a directory of the benchmark's own disk, so the figure is the
tier's protocol, not a network) and on S3 (SeaweedFS started on 127.0.0.1 for the run), next to
the local disk measured in the same repetition.

The S3 target is the point of the adaptive batching: a put costs milliseconds, so only pages
that fill while the previous put is in flight keep forks flowing.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ambrosia_edge.testing.objectservers import ServerMissing, seaweedfs_server

from .measure import measure_pair
from .modes import Mode, messages_for, throughput_batch
from .processes import Runner
from .results import Results
from .stats import median, percentile, ratio, throughput_rate
from .systems import AMBROSIA, KIB

LOCAL = "local disk (file://)"
SHARED = "shared mount (nfs://)"
S3 = "S3 (s3://, SeaweedFS)"
#: the payloads the tiers are compared at (of those the mode measures)
TIER_SIZES = (16, 64 * KIB)
S3_16 = "16 B fork throughput, durable, logs on S3 (SeaweedFS) vs local disk"
S3_16_GOAL = 0.5


@dataclass(frozen=True)
class Tier:
    """Where a pair's logs go: ``log(run_dir, role)`` is the URL, ``env`` what the peers need."""

    name: str
    log: Callable[[Path, str], str]
    env: dict[str, str] = field(default_factory=dict)


@contextlib.contextmanager
def started(results: Results, say: Callable[[str], None]) -> Iterator[list[Tier]]:
    """The tiers to compare, their servers running until the block ends."""
    tiers = [Tier(SHARED, lambda run_dir, role: f"nfs://{run_dir / role}")]
    with contextlib.ExitStack() as stack:
        try:
            server = stack.enter_context(seaweedfs_server(stack.enter_context(_scratch())))
        except ServerMissing as exc:
            results.notes.append(f"The S3 tier was not measured: {exc}.")
            say(f"skipping the S3 tier: {exc}")
        else:
            bucket = server.bucket

            def s3_log(run_dir: Path, role: str) -> str:
                return f"s3://{bucket}/{run_dir.name}/{role}"

            tiers.append(Tier(S3, s3_log, server.env()))
        yield tiers


@contextlib.contextmanager
def _scratch() -> Iterator[Path]:
    import tempfile

    with tempfile.TemporaryDirectory(prefix="ambrosia-bench-seaweedfs-") as tmp:
        yield Path(tmp)


def measure(
    runner: Runner,
    mode: Mode,
    rep: int,
    tiers: list[Tier],
    results: Results,
    say: Callable[[str], None],
) -> None:
    """One repetition of each tier: throughput at TIER_SIZES, then the ping."""
    for size in (s for s in mode.sizes if s in TIER_SIZES):
        for tier in tiers:
            total = messages_for(mode, size, AMBROSIA)
            r = measure_pair(
                runner,
                AMBROSIA,
                "throughput",
                size=size,
                total=total,
                batch=throughput_batch(size),
                log=tier.log,
                env=tier.env,
            )
            r["tier"], r["rep"] = tier.name, rep
            r["messages_per_s"], r["timing"] = throughput_rate(r)
            results.tiers.append(_slim(r))
            say(
                f"  throughput {size:>6} B {tier.name:<26} {r['messages_per_s']:>10,.0f} msg/s "
                f"({total} messages)"
            )
    for tier in tiers:
        total = mode.ping_warmup + mode.pings
        r = measure_pair(
            runner, AMBROSIA, "ping", size=16, total=total, batch=1000, log=tier.log, env=tier.env
        )
        r["tier"], r["rep"] = tier.name, rep
        r["samples_ns"] = r["client"].pop("samples")[mode.ping_warmup :]
        results.tiers.append(_slim(r))
        p50 = percentile(sorted(r["samples_ns"]), 50) / 1e3
        say(f"  ping {tier.name:<26} p50 {p50:.0f} us ({len(r['samples_ns'])} pings)")


def _slim(r: dict[str, Any]) -> dict[str, Any]:
    keep = ("tier", "rep", "workload", "size", "total", "messages_per_s", "samples_ns", "cpu_s")
    return {k: r[k] for k in keep if k in r}


def summarise(results: Results) -> dict[str, dict[str, float]]:
    """Per tier: the median msg/s at each size and the ping's p50 (µs); local from the main
    workloads of the same run."""
    runs: list[dict[str, Any]] = [
        {**r, "tier": LOCAL, "workload": "throughput"}
        for r in results.throughput
        if r["system"] == AMBROSIA and r["size"] in TIER_SIZES
    ]
    runs += [
        {**r, "tier": LOCAL, "workload": "ping"} for r in results.ping if r["system"] == AMBROSIA
    ]
    runs += results.tiers
    if not results.tiers:
        return {}
    summary: dict[str, dict[str, float]] = {}
    for tier in (LOCAL, SHARED, S3):
        mine = [r for r in runs if r["tier"] == tier]
        if not mine:
            continue
        row: dict[str, float] = {}
        for size in TIER_SIZES:
            rates = [
                r["messages_per_s"]
                for r in mine
                if r["workload"] == "throughput" and r["size"] == size
            ]
            if rates:
                row[f"{size}"] = median(rates)
        pings = [r for r in mine if r["workload"] == "ping"]
        if pings:
            row["ping_p50_us"] = median(
                [percentile(sorted(r["samples_ns"]), 50) / 1e3 for r in pings]
            )
        summary[tier] = row
    return summary


def targets(summary: dict[str, dict[str, float]]) -> list[dict[str, Any]]:
    if S3 not in summary or "16" not in summary.get(S3, {}):
        return []
    value = ratio(summary[S3]["16"], summary.get(LOCAL, {}).get("16", float("nan")))
    return [
        {"target": S3_16, "value": value, "goal": f">= {S3_16_GOAL}x", "met": value >= S3_16_GOAL}
    ]


def markdown(summary: dict[str, dict[str, float]]) -> list[str]:
    if not summary:
        return []
    local = summary.get(LOCAL, {})
    nan = float("nan")

    def cell(tier: str, key: str, digits: int = 0) -> str:
        value = summary[tier].get(key, nan)
        if value != value:
            return "-"
        text = f"{value:,.{digits}f}"
        if tier != LOCAL and key in local:
            text += f" ({ratio(value, local[key]):.2f}x)"
        return text

    lines = [
        "### Storage tiers: durable forks (messages/s) and ping p50 (µs), both logs on the tier "
        "(median; in brackets: vs the local disk in the same run)",
        "",
        "| tier | 16 B forks | 64 KiB forks | ping p50 |",
        "|---|---|---|---|",
    ]
    for tier in summary:
        lines.append(
            f"| {tier} | {cell(tier, '16')} | {cell(tier, str(64 * KIB))} | "
            f"{cell(tier, 'ping_p50_us')} |"
        )
    return [*lines, ""]
