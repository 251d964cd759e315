"""Medians over the repetitions, and the ratios the report and the targets use.

``summarise`` turns the raw ``Results`` of a run into the figures every table shows; it is
stored in ``results.json`` beside the samples.
"""

from __future__ import annotations

from typing import Any

from . import deployments
from .results import Results
from .stats import median, percentile, ratio
from .systems import (
    AMBROSIA,
    DBOS_BATCHED,
    DBOS_QUEUE,
    RESTATE_BATCHED,
    RESTATE_EACH,
    THROUGHPUT_SYSTEMS,
    TYPICAL_STEPS,
)
from .targets import ping_floor, targets

PERCENTILES = [("p50", 50.0), ("p90", 90.0), ("p99", 99.0), ("p99.9", 99.9)]


def summarise(results: Results) -> dict[str, Any]:
    """Medians over the repetitions, and the ratios the report and the targets use."""
    sizes = sorted({r["size"] for r in results.throughput})
    throughput: dict[int, dict[str, dict[str, float]]] = {}
    for size in sizes:
        row: dict[str, dict[str, float]] = {}
        for system in THROUGHPUT_SYSTEMS:
            runs = [r for r in results.throughput if r["size"] == size and r["system"] == system]
            if not runs:
                continue
            rates = [r["messages_per_s"] for r in runs]
            rate = median(rates)
            row[system] = {
                "messages_per_s": rate,
                "min_messages_per_s": min(rates),
                "max_messages_per_s": max(rates),
                "mb_per_s": rate * size / 1e6,
                "messages": runs[0]["total"],
                "server_cpu_s_per_m": median(
                    [r["cpu_s"]["server"] / r["total"] * 1e6 for r in runs]
                ),
                "client_cpu_s_per_m": median(
                    [r["cpu_s"]["client"] / r["total"] * 1e6 for r in runs]
                ),
                "server_peak_rss_mib": median([r["peak_rss_kib"]["server"] / 1024 for r in runs]),
                "client_peak_rss_mib": median([r["peak_rss_kib"]["client"] / 1024 for r in runs]),
            }
        throughput[size] = row
    typical = _typical(results)
    ping: dict[str, dict[str, float]] = {}
    for system in THROUGHPUT_SYSTEMS:
        runs = [r for r in results.ping if r["system"] == system]
        if not runs:
            continue
        stats: dict[str, float] = {}
        for label, q in PERCENTILES:
            stats[label] = median([percentile(sorted(r["samples_ns"]), q) / 1e3 for r in runs])
        stats["mean"] = median([sum(r["samples_ns"]) / len(r["samples_ns"]) / 1e3 for r in runs])
        stats["pings"] = len(runs[0]["samples_ns"])
        stats["server_cpu_s_per_m"] = median(
            [r["cpu_s"]["server"] / r["total"] * 1e6 for r in runs]
        )
        stats["client_cpu_s_per_m"] = median(
            [r["cpu_s"]["client"] / r["total"] * 1e6 for r in runs]
        )
        stats["server_peak_rss_mib"] = median([r["peak_rss_kib"]["server"] / 1024 for r in runs])
        stats["client_peak_rss_mib"] = median([r["peak_rss_kib"]["client"] / 1024 for r in runs])
        ping[system] = stats
    counter: dict[str, dict[str, float]] = {}
    for system in (AMBROSIA, DBOS_BATCHED, DBOS_QUEUE, RESTATE_BATCHED, RESTATE_EACH):
        runs = [r for r in results.counter if r["system"] == system]
        if runs:
            counter[system] = {
                "increments": runs[0]["total"],
                "increments_per_s": median([r["increments_per_s"] for r in runs]),
                "server_peak_rss_mib": median([r["peak_rss_kib"]["server"] / 1024 for r in runs]),
                "client_peak_rss_mib": median([r["peak_rss_kib"]["client"] / 1024 for r in runs]),
            }
    disk: dict[str, float] = {}
    if results.disk:
        for label, q in PERCENTILES:
            disk[label] = median(
                [percentile(sorted(d["append_ns"]), q) / 1e3 for d in results.disk]
            )
        disk["mean"] = median(
            [sum(d["append_ns"]) / len(d["append_ns"]) / 1e3 for d in results.disk]
        )
        disk["appends"] = len(results.disk[0]["append_ns"])
        passes = [bw / 1e6 for d in results.disk for bw in d["sequential_bytes_per_s"]]
        disk["sequential_mb_per_s"] = median(passes)
        disk["sequential_mb_per_s_min"] = min(passes)
        disk["sequential_mb_per_s_max"] = max(passes)
    replay: dict[str, float] = {}
    if results.replay:
        size = results.replay[0]["size"]
        replay = {
            "size": size,
            "messages": median([r["messages"] for r in results.replay]),
            "messages_per_s": median([r["messages_per_s"] for r in results.replay]),
        }
        live = throughput.get(size, {}).get(AMBROSIA, {}).get("messages_per_s", float("nan"))
        replay["live_messages_per_s"] = live
        replay["ratio"] = ratio(replay["messages_per_s"], live)
    idle: dict[str, dict[str, float]] = {}
    for system in THROUGHPUT_SYSTEMS:
        runs = [r for r in results.throughput + results.ping if r["system"] == system]
        if runs:
            idle[system] = {
                role: median([r["idle_rss_kib"][role] / 1024 for r in runs])
                for role in ("server", "client")
            }
    floor = ping_floor(ping, disk, results)
    deployed = deployments.summarise(results)
    return {
        "throughput": throughput,
        "typical": typical,
        "ping": ping,
        "ping_floor": floor,
        "counter": counter,
        "disk": disk,
        "replay": replay,
        "recovery": _recovery(results),
        "log_replay": _log_replay(results),
        "failover": _failover(results),
        "idle_rss_mib": idle,
        "deployments": deployed,
        "targets": targets(throughput, floor, counter, replay, idle, results, typical)
        + deployments.targets(deployed),
    }


def _typical(results: Results) -> dict[str, Any]:
    """The typical app's runs: per variant, the median rate, its range and CPU per message."""
    runs = [r for r in results.throughput if r["system"] in TYPICAL_STEPS]
    if not runs:
        return {}
    size = runs[0]["size"]
    tuned = [r for r in results.throughput if r["size"] == size and r["system"] == AMBROSIA]
    out: dict[str, Any] = {
        "size": size,
        "tuned_steps": tuned[0].get("batch", 0) if tuned else 0,
        "systems": {},
    }
    for system, steps in TYPICAL_STEPS.items():
        mine = [r for r in runs if r["system"] == system]
        if not mine:
            continue
        rates = [r["messages_per_s"] for r in mine]
        out["systems"][system] = {
            "steps": steps,
            "messages": mine[0]["total"],
            "messages_per_s": median(rates),
            "min_messages_per_s": min(rates),
            "max_messages_per_s": max(rates),
            "server_cpu_s_per_m": median([r["cpu_s"]["server"] / r["total"] * 1e6 for r in mine]),
            "client_cpu_s_per_m": median([r["cpu_s"]["client"] / r["total"] * 1e6 for r in mine]),
        }
    return out


RECOVERY_TIMES = ("recover_s", "ready_s", "reconnected_s", "fresh_start_s", "interpreter_s")


def _recovery(results: Results) -> dict[str, Any]:
    """The restart after SIGKILL: medians of the times and sizes, and whether counts held."""
    runs = results.recovery
    if not runs:
        return {}
    first = runs[0]
    out: dict[str, Any] = {
        k: first[k] for k in ("size", "total", "checkpoint", "settings", "received")
    }
    for key in ("tail_bytes", "pages", "messages_replayed", *RECOVERY_TIMES):
        values = [r[key] for r in runs if r.get(key) is not None]
        out[key] = median(values)
    out["exactly_once"] = all(r["exactly_once"] for r in runs)
    return out


LOG_REPLAY_FIGURES = ("size", "log_bytes", "chunks", "messages", "pages", "seconds", "mb_per_s")
LOG_REPLAY_FIGURES += ("messages_per_s", "written_messages_per_s")


def _log_replay(results: Results) -> dict[str, dict[str, float]]:
    """The whole log replayed from the start, by page cache state ("warm", "cold")."""
    out: dict[str, dict[str, float]] = {}
    for cache in ("warm", "cold"):
        runs = [r for r in results.log_replay if r["cache"] == cache]
        if runs:
            out[cache] = {k: median([r[k] for r in runs]) for k in LOG_REPLAY_FIGURES}
    return out


def _failover(results: Results) -> dict[str, Any]:
    """SIGKILLed primaries replaced by their standbys: the times, their median and worst."""
    times = [t for r in results.failover for t in r["times_s"]]
    if not times:
        return {}
    return {
        "tier": results.failover[0]["tier"],
        "times_s": times,
        "median_s": median(times),
        "worst_s": max(times),
        "exactly_once": all(r["exactly_once"] for r in results.failover),
    }
