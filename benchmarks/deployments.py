"""The same workloads deployed otherwise: the durable throughput and ping workloads with the
links over TLS (mutual, certificates made for the run), and with both logs on a shared mount
(``nfs://``, here a directory of the benchmark's own disk, so the figure is the tier's protocol,
not a network) or on S3 (SeaweedFS started on 127.0.0.1 for the run); each next to the plain
deployment (local disk, TCP) measured in the same repetition.

The S3 target is the point of the adaptive batching: a put costs milliseconds, so only pages
that fill while the previous put is in flight keep forks flowing.
"""

from __future__ import annotations

import contextlib
import tempfile
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

LOCAL = "local disk, TCP"
TLS = "local disk, TLS"
SHARED = "shared mount (nfs://), TCP"
S3 = "S3 (s3://, SeaweedFS), TCP"
#: the payloads the deployments are compared at (of those the mode measures)
SIZES = (16, 64 * KIB)
S3_16 = "16 B fork throughput, durable, logs on S3 (SeaweedFS) vs local disk"
S3_16_GOAL = 0.5


@dataclass(frozen=True)
class Deployment:
    """How a pair runs besides the plain way: ``log(run_dir, role)`` is a log URL on another
    tier, ``env`` what the peers need to reach it, ``options(role)`` more flags for each."""

    name: str
    log: Callable[[Path, str], str] | None = None
    env: dict[str, str] = field(default_factory=dict)
    options: Callable[[str], list[str]] | None = None


@contextlib.contextmanager
def started(results: Results, say: Callable[[str], None]) -> Iterator[list[Deployment]]:
    """The deployments to compare, their servers running until the block ends."""
    with contextlib.ExitStack() as stack:
        scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="ambrosia-bench-")))
        deployments = []
        tls = _certificates(scratch / "tls")
        if tls is None:
            results.notes.append("TLS was not measured: trustme is not installed.")
            say("skipping TLS: pip install trustme")
        else:
            deployments.append(Deployment(TLS, options=tls))
        deployments.append(Deployment(SHARED, lambda run_dir, role: f"nfs://{run_dir / role}"))
        try:
            server = stack.enter_context(seaweedfs_server(scratch))
        except ServerMissing as exc:
            results.notes.append(f"The S3 tier was not measured: {exc}.")
            say(f"skipping the S3 tier: {exc}")
        else:
            bucket = server.bucket

            def s3_log(run_dir: Path, role: str) -> str:
                return f"s3://{bucket}/{run_dir.name}/{role}"

            deployments.append(Deployment(S3, s3_log, server.env()))
        yield deployments


def _certificates(folder: Path) -> Callable[[str], list[str]] | None:
    """A CA and a certificate per immortal name (checked against the name a peer claims)."""
    try:
        import trustme
    except ImportError:
        return None
    folder.mkdir()
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(folder / "ca.pem"))
    for role in ("server", "client"):
        leaf = ca.issue_cert(role)
        leaf.cert_chain_pems[0].write_to_path(str(folder / f"{role}.pem"))
        leaf.private_key_pem.write_to_path(str(folder / f"{role}.key"))

    def flags(role: str) -> list[str]:
        return [
            *("--tls-cert", str(folder / f"{role}.pem")),
            *("--tls-key", str(folder / f"{role}.key")),
            *("--tls-ca", str(folder / "ca.pem")),
        ]

    return flags


def measure(
    runner: Runner,
    mode: Mode,
    rep: int,
    deployments: list[Deployment],
    results: Results,
    say: Callable[[str], None],
) -> None:
    """One repetition of each deployment: throughput at SIZES, then the ping."""
    for size in (s for s in mode.sizes if s in SIZES):
        for tier in deployments:
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
                options=tier.options,
            )
            r["tier"], r["rep"] = tier.name, rep
            r["messages_per_s"], r["timing"] = throughput_rate(r)
            results.deployments.append(_slim(r))
            say(
                f"  throughput {size:>6} B {tier.name:<26} {r['messages_per_s']:>10,.0f} msg/s "
                f"({total} messages)"
            )
    for tier in deployments:
        total = mode.ping_warmup + mode.pings
        r = measure_pair(
            runner,
            AMBROSIA,
            "ping",
            size=16,
            total=total,
            batch=1000,
            log=tier.log,
            env=tier.env,
            options=tier.options,
        )
        r["tier"], r["rep"] = tier.name, rep
        r["samples_ns"] = r["client"].pop("samples")[mode.ping_warmup :]
        results.deployments.append(_slim(r))
        p50 = percentile(sorted(r["samples_ns"]), 50) / 1e3
        say(f"  ping {tier.name:<26} p50 {p50:.0f} us ({len(r['samples_ns'])} pings)")


def _slim(r: dict[str, Any]) -> dict[str, Any]:
    keep = ("tier", "rep", "workload", "size", "total", "messages_per_s", "samples_ns", "cpu_s")
    return {k: r[k] for k in keep if k in r}


def summarise(results: Results) -> dict[str, dict[str, float]]:
    """Per deployment: the median msg/s at each size and the ping's p50 (µs); the plain one
    from the main workloads of the same run."""
    runs: list[dict[str, Any]] = [
        {**r, "tier": LOCAL, "workload": "throughput"}
        for r in results.throughput
        if r["system"] == AMBROSIA and r["size"] in SIZES
    ]
    runs += [
        {**r, "tier": LOCAL, "workload": "ping"} for r in results.ping if r["system"] == AMBROSIA
    ]
    runs += results.deployments
    if not results.deployments:
        return {}
    summary: dict[str, dict[str, float]] = {}
    for tier in (LOCAL, TLS, SHARED, S3):
        mine = [r for r in runs if r["tier"] == tier]
        if not mine:
            continue
        row: dict[str, float] = {}
        for size in SIZES:
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
        "### Deployments: durable forks (messages/s) and ping p50 (µs), links over TLS or both "
        "logs on another tier (median; in brackets: vs local disk and TCP in the same run)",
        "",
        "| deployment | 16 B forks | 64 KiB forks | ping p50 |",
        "|---|---|---|---|",
    ]
    for tier in summary:
        lines.append(
            f"| {tier} | {cell(tier, '16')} | {cell(tier, str(64 * KIB))} | "
            f"{cell(tier, 'ping_p50_us')} |"
        )
    return [*lines, ""]
