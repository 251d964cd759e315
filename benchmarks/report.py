"""Turn raw measurements into medians, ratios, Markdown tables and the throughput plot."""

from __future__ import annotations

import os
import platform
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

from .harness import (
    AMBROSIA,
    DBOS_BATCHED,
    DBOS_QUEUE,
    GRPC,
    KIB,
    NO_FSYNC,
    RESTATE_BATCHED,
    RESTATE_EACH,
    Results,
    median,
    percentile,
)

THROUGHPUT_SYSTEMS = [AMBROSIA, NO_FSYNC, GRPC]
PERCENTILES = [("p50", 50.0), ("p90", 90.0), ("p99", 99.0), ("p99.9", 99.9)]


# ---------------------------------------------------------------------------------------------
# the machine


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


# ---------------------------------------------------------------------------------------------
# medians and ratios


def _ratio(a: float, b: float) -> float:
    return a / b if b and b == b and a == a else float("nan")


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
        replay["ratio"] = _ratio(replay["messages_per_s"], live)
    idle: dict[str, dict[str, float]] = {}
    for system in THROUGHPUT_SYSTEMS:
        runs = [r for r in results.throughput + results.ping if r["system"] == system]
        if runs:
            idle[system] = {
                role: median([r["idle_rss_kib"][role] / 1024 for r in runs])
                for role in ("server", "client")
            }
    return {
        "throughput": throughput,
        "ping": ping,
        "counter": counter,
        "disk": disk,
        "replay": replay,
        "recovery": _recovery(results),
        "log_replay": _log_replay(results),
        "idle_rss_mib": idle,
        "targets": _with_spread(_targets(throughput, ping, counter, replay, idle), results),
    }


def _per_repetition(runs: list[dict[str, Any]], figure: str, a: str, b: str) -> list[float]:
    """The ratio a/b of one figure within each repetition: the two ran minutes apart at most,
    so what disturbed the machine in that repetition weighs on both."""
    by_rep: dict[int, dict[str, float]] = {}
    for r in runs:
        by_rep.setdefault(r["rep"], {})[r["system"]] = r[figure]
    return [_ratio(v[a], v[b]) for _, v in sorted(by_rep.items()) if a in v and b in v]


def _with_spread(rows: list[dict[str, Any]], results: Results) -> list[dict[str, Any]]:
    """Add to the ratio targets the lowest and highest ratio of a single repetition."""
    ping_runs = [
        {**r, "p50": percentile(sorted(r["samples_ns"]), 50)}
        for r in results.ping
        if r["system"] in (AMBROSIA, GRPC)
    ]
    spreads = {
        "16 B fork throughput, durable, vs gRPC streaming": _per_repetition(
            [r for r in results.throughput if r["size"] == 16], "messages_per_s", AMBROSIA, GRPC
        ),
        "64 KiB fork throughput, durable, vs gRPC streaming": _per_repetition(
            [r for r in results.throughput if r["size"] == 64 * KIB],
            "messages_per_s",
            AMBROSIA,
            GRPC,
        ),
        "ping p50, durable, vs gRPC unary p50": _per_repetition(ping_runs, "p50", AMBROSIA, GRPC),
    }
    for row in rows:
        ratios = spreads.get(row["target"], [])
        if len(ratios) > 1:
            row["repetitions"] = [min(ratios), max(ratios)]
    return rows


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


def _targets(
    throughput: dict[int, dict[str, dict[str, float]]],
    ping: dict[str, dict[str, float]],
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
                "target": "16 B fork throughput, durable, vs gRPC streaming",
                "value": _ratio(rate(16, AMBROSIA), rate(16, GRPC)),
                "goal": ">= 30x",
                "met": _ratio(rate(16, AMBROSIA), rate(16, GRPC)) >= 30,
            }
        )
    if 64 * KIB in throughput:
        value = _ratio(rate(64 * KIB, AMBROSIA), rate(64 * KIB, GRPC))
        rows.append(
            {
                "target": "64 KiB fork throughput, durable, vs gRPC streaming",
                "value": value,
                "goal": ">= 0.8x",
                "met": value >= 0.8,
            }
        )
    if AMBROSIA in ping and GRPC in ping:
        value = _ratio(ping[AMBROSIA]["p50"], ping[GRPC]["p50"])
        rows.append(
            {
                "target": "ping p50, durable, vs gRPC unary p50",
                "value": value,
                "goal": "<= 1.5x",
                "met": value <= 1.5,
            }
        )
    dbos = [counter[s]["increments_per_s"] for s in (DBOS_BATCHED, DBOS_QUEUE) if s in counter]
    if AMBROSIA in counter and dbos:
        value = _ratio(counter[AMBROSIA]["increments_per_s"], max(dbos))
        rows.append(
            {
                "target": "durable counter increments vs DBOS (its best variant)",
                "value": value,
                "goal": ">= 100x",
                "met": value >= 100,
            }
        )
    if replay and replay.get("size") == 16:
        rows.append(
            {
                "target": "replay vs live durable throughput, 16 B",
                "value": replay["ratio"],
                "goal": ">= 3x",
                "met": replay["ratio"] >= 3,
            }
        )
    if AMBROSIA in idle:
        value = max(idle[AMBROSIA].values())
        rows.append(
            {
                "target": "idle immortal RSS (MiB)",
                "value": value,
                "goal": "<= 40 MiB",
                "met": value <= 40,
            }
        )
    return rows


# ---------------------------------------------------------------------------------------------
# Markdown


def size_label(size: int) -> str:
    if size >= KIB * KIB and size % (KIB * KIB) == 0:
        return f"{size // (KIB * KIB)} MiB"
    if size >= KIB and size % KIB == 0:
        return f"{size // KIB} KiB"
    return f"{size} B"


def _n(value: float, digits: int = 0) -> str:
    if value != value:  # NaN
        return "-"
    return f"{value:,.{digits}f}"


def _x(value: float) -> str:
    if value != value:
        return "-"
    return f"{value:.2f}x" if value < 10 else f"{value:.1f}x"


def _k(value: float) -> str:
    return f"{value / 1000:.1f}k" if value >= 1000 else f"{value:.0f}"


def _spread(stats: dict[str, float] | None) -> str:
    """``median`` and, when there were several runs, ``(min-max)`` in thousands."""
    if not stats:
        return "-"
    text = _n(stats["messages_per_s"])
    lo, hi = stats["min_messages_per_s"], stats["max_messages_per_s"]
    if hi > lo:
        text += f" ({_k(lo)}-{_k(hi)})"
    return text


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---:" for _ in header) + "|"]
    out[1] = "|---|" + "|".join("---:" for _ in header[1:]) + "|"
    out += ["| " + " | ".join(row) + " |" for row in rows]
    return out


def markdown(results: Results, summary: dict[str, Any]) -> str:
    p = results.params
    m = results.machine
    lines: list[str] = []
    lines += [
        f"Measured {results.started} in **{results.mode}** mode ({p['reps']} repetitions, "
        f"{results.seconds / 60:.1f} minutes), with:",
        "",
        "```console",
        f"$ {results.command}",
        "```",
        "",
        "| machine | |",
        "|---|---|",
        f"| CPU | {m['nproc']} x {m['cpu']} |",
        f"| memory | {m['memory']} |",
        f"| kernel | {m['kernel']} |",
        f"| logs on | {m['filesystem']} |",
        f"| Python | {m['python']}; immortals on the {m.get('event_loop', '?')} event loop |",
        f"| ambrosia-edge | {m.get('source', '?')} (a snapshot taken when the run started) |",
        "| packages | " + ", ".join(f"{k} {v}" for k, v in m["versions"].items()) + " |",
        "",
    ]
    for note in results.notes:
        lines.append(f"> {note}")
    if results.notes:
        lines.append("")

    tp = summary["throughput"]
    if tp:
        lines += [
            "### Throughput: forks of `receive(payload)` (messages/s: median (min-max))",
            "",
        ]
        rows = []
        for size, row in tp.items():
            a = row.get(AMBROSIA, {}).get("messages_per_s", float("nan"))
            nf = row.get(NO_FSYNC, {}).get("messages_per_s", float("nan"))
            g = row.get(GRPC, {}).get("messages_per_s", float("nan"))
            rows.append(
                [
                    size_label(size),
                    _n(row.get(AMBROSIA, {}).get("messages", float("nan"))),
                    _spread(row.get(AMBROSIA)),
                    _spread(row.get(NO_FSYNC)),
                    _spread(row.get(GRPC)),
                    _x(_ratio(a, g)),
                    _x(_ratio(a, nf)),
                ]
            )
        lines += _table(
            [
                "payload",
                "messages",
                f"{AMBROSIA} (durable)",
                NO_FSYNC,
                f"{GRPC} streaming",
                "durable / gRPC",
                "durable / no-fsync",
            ],
            rows,
        )
        lines += ["", "### Throughput (MB/s of payload, 1 MB = 10^6 bytes, median)", ""]
        rows = []
        for size, row in tp.items():
            rows.append(
                [size_label(size)]
                + [
                    _n(row.get(s, {}).get("mb_per_s", float("nan")), 2 if size < 256 else 1)
                    for s in THROUGHPUT_SYSTEMS
                ]
            )
        lines += _table(["payload", f"{AMBROSIA} (durable)", NO_FSYNC, f"{GRPC} streaming"], rows)
        lines.append("")

    ping = summary["ping"]
    if ping:
        lines += [
            f"### Latency: one awaited 16-byte ping at a time (µs, median of {p['reps']} runs)",
            "",
        ]
        base = ping.get(GRPC, {}).get("p50", float("nan"))
        rows = []
        for system, s in ping.items():
            rows.append(
                [f"{system} ({'unary' if system == GRPC else 'awaited call'})", _n(s["pings"])]
                + [_n(s[label]) for label, _ in PERCENTILES]
                + [_n(s["mean"]), _x(_ratio(s["p50"], base))]
            )
        lines += _table(
            ["system", "pings", *[label for label, _ in PERCENTILES], "mean", "p50 / gRPC p50"],
            rows,
        )
        lines.append("")

    counter = summary["counter"]
    if counter:
        lines += ["### Durable counter increments (increments/s, median)", ""]
        a = counter.get(AMBROSIA, {}).get("increments_per_s", float("nan"))
        rows = []
        for system, s in counter.items():
            label = f"{AMBROSIA} (forked `inc()`)" if system == AMBROSIA else system
            rows.append(
                [
                    label,
                    _n(s["increments"]),
                    _n(s["increments_per_s"]),
                    _x(_ratio(a, s["increments_per_s"])),
                ]
            )
        lines += _table(["system", "increments", "increments/s", f"{AMBROSIA} / this"], rows)
        lines.append("")

    d = summary["disk"]
    if d:
        lines += [
            "### The disk's floor (4 KiB append + fdatasync, µs; sequential 4 MiB writes + "
            "fdatasync, MB/s: median (min-max) of all passes)",
            "",
        ]
        sequential = (
            f"{_n(d['sequential_mb_per_s'])} ({_n(d['sequential_mb_per_s_min'])}-"
            f"{_n(d['sequential_mb_per_s_max'])})"
        )
        lines += _table(
            ["appends", *[label for label, _ in PERCENTILES], "mean", "sequential MB/s"],
            [
                [_n(d["appends"])]
                + [_n(d[label]) for label, _ in PERCENTILES]
                + [_n(d["mean"]), sequential]
            ],
        )
        lines.append("")

    lines += ["### Resources", ""]
    rows = []
    for size in (min(tp), max(tp)) if tp else ():
        for system in THROUGHPUT_SYSTEMS:
            s = tp[size].get(system)
            if s:
                rows.append(
                    [
                        f"throughput {size_label(size)}",
                        system,
                        _n(s["server_peak_rss_mib"], 1),
                        _n(s["client_peak_rss_mib"], 1),
                        _n(s["server_cpu_s_per_m"], 1),
                        _n(s["client_cpu_s_per_m"], 1),
                    ]
                )
        if min(tp) == max(tp):
            break
    for system, s in ping.items():
        rows.append(
            [
                "ping",
                system,
                _n(s["server_peak_rss_mib"], 1),
                _n(s["client_peak_rss_mib"], 1),
                _n(s["server_cpu_s_per_m"], 1),
                _n(s["client_cpu_s_per_m"], 1),
            ]
        )
    lines += _table(
        [
            "workload",
            "system",
            "server peak RSS (MiB)",
            "client peak RSS (MiB)",
            "server CPU s / M msgs",
            "client CPU s / M msgs",
        ],
        rows,
    )
    lines += ["", "Idle RSS, after start-up and connection, before any workload (MiB, median):", ""]
    lines += _table(
        ["system", "server", "client"],
        [
            [system, _n(s["server"], 1), _n(s["client"], 1)]
            for system, s in summary["idle_rss_mib"].items()
        ],
    )
    lines.append("")
    r = summary["replay"]
    if r:
        lines += [f"### Replay of the durable {size_label(r['size'])} server log", ""]
        lines += _table(
            ["messages replayed", "replay msg/s", "live durable msg/s", "replay / live"],
            [
                [
                    _n(r["messages"]),
                    _n(r["messages_per_s"]),
                    _n(r["live_messages_per_s"]),
                    _x(r["ratio"]),
                ]
            ],
        )
        lines.append("")
    lines += _recovery_markdown(summary)
    targets = summary["targets"]
    if targets:
        lines += ["### Against the project's targets", ""]
        lines += [
            "Measured: the ratio of the medians over all repetitions; beside it, the lowest and "
            "highest ratio within a single repetition.",
            "",
        ]
        rows = []
        for t in targets:
            unit = " MiB" if "RSS" in t["target"] else "x"
            value = t["value"]
            shown = "-" if value != value else f"{value:.2f}{unit}"
            spread = t.get("repetitions")
            each = f"{spread[0]:.2f}-{spread[1]:.2f}x" if spread else "-"
            rows.append([t["target"], shown, each, t["goal"], "yes" if t["met"] else "**no**"])
        lines += [
            "| target | measured | each repetition | goal | met |",
            "|---|---:|---:|---:|---|",
        ]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        lines.append("")
    return "\n".join(lines)


def _mib(value: float) -> str:
    return f"{value / (1024 * 1024):,.1f}"


def _recovery_markdown(summary: dict[str, Any]) -> list[str]:
    """The "Recovery" section: the restart after SIGKILL, and a whole log replayed."""
    rec, whole = summary.get("recovery") or {}, summary.get("log_replay") or {}
    if not rec and not whole:
        return []
    lines = ["### Recovery", ""]
    if rec:
        settings = rec["settings"]
        lines += [
            f"A durable {size_label(rec['size'])} throughput pair with the default checkpointing "
            f"(a checkpoint every {size_label(settings['checkpoint_bytes'])} of log, pages up "
            f"to {size_label(settings['page_bytes'])}); the server is killed with SIGKILL "
            "mid-stream and started again with the same command (seconds from the spawn of "
            "the new process):",
            "",
        ]
        held = "exact" if rec["exactly_once"] else "**not exact**"
        lines += _table(
            [
                "recovered from",
                "log tail replayed (MiB)",
                "pages",
                "messages replayed",
                "restart to serving (s)",
                "of which recover() (s)",
                "restart to client reconnected (s)",
                "empty-log start (s)",
                "interpreter + imports (s)",
                "messages executed in all",
            ],
            [
                [
                    f"checkpoint {rec['checkpoint']}",
                    _mib(rec["tail_bytes"]),
                    _n(rec["pages"]),
                    _n(rec["messages_replayed"]),
                    _n(rec["ready_s"], 2),
                    _n(rec["recover_s"], 2),
                    _n(rec["reconnected_s"], 2),
                    _n(rec["fresh_start_s"], 2),
                    _n(rec["interpreter_s"], 2),
                    f"{_n(rec['received'])} of {_n(rec['total'])} ({held})",
                ]
            ],
        )
        lines.append("")
    if whole:
        any_row = next(iter(whole.values()))
        lines += [
            f"A whole durable server log ({_mib(any_row['log_bytes'])} MiB in "
            f"{_n(any_row['chunks'])} chunk{'s' if any_row['chunks'] != 1 else ''}, "
            f"{size_label(int(any_row['size']))} payloads) "
            "replayed from the start, ignoring its checkpoints, read-only in a fresh process "
            "(MB/s of log, 1 MB = 10^6 bytes):",
            "",
        ]
        labels = {
            "cold": "cold (dropped from the page cache)",
            "warm": "warm (read once before)",
        }
        lines += _table(
            ["page cache", "messages", "seconds", "MB/s", "messages/s", "written at messages/s"],
            [
                [
                    labels[cache],
                    _n(r["messages"]),
                    _n(r["seconds"], 2),
                    _n(r["mb_per_s"]),
                    _n(r["messages_per_s"]),
                    _n(r["written_messages_per_s"]),
                ]
                for cache, r in whole.items()
            ],
        )
        lines.append("")
    return lines


# ---------------------------------------------------------------------------------------------
# the plot


def plot(results: Results, summary: dict[str, Any], path: Path) -> str | None:
    """Throughput against payload size, one line per system; returns why not, if skipped."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (pip install '.[bench]'), so no plot was drawn"
    tp = summary["throughput"]
    sizes = sorted(tp)
    if not sizes:
        return "no throughput figures to plot"
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    styles = {AMBROSIA: ("o-", "C0"), NO_FSYNC: ("s--", "C2"), GRPC: ("^-", "C3")}
    for system in THROUGHPUT_SYSTEMS:
        xs = [s for s in sizes if system in tp[s]]
        if not xs:
            continue
        style, color = styles[system]
        label = f"{system} (durable)" if system == AMBROSIA else system
        left.plot(xs, [tp[s][system]["mb_per_s"] for s in xs], style, color=color, label=label)
        right.plot(xs, [tp[s][system]["messages_per_s"] for s in xs], style, color=color)
    floor = summary["disk"].get("sequential_mb_per_s")
    if floor:
        left.axhline(
            floor, color="grey", linestyle=":", label="disk: 4 MiB writes + fdatasync (median)"
        )
    for ax, ylabel in ((left, "payload MB/s"), (right, "messages/s")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks(sizes)
        ax.set_xticklabels([size_label(s).replace(" ", "\n") for s in sizes], fontsize=7)
        ax.set_xlabel("payload size")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="major", alpha=0.3)
    left.legend(fontsize=8, loc="lower right")
    fig.suptitle(
        f"Throughput of fire-and-forget calls between two processes "
        f"({results.machine.get('nproc')} cores, {results.mode} mode, median of "
        f"{results.params.get('reps')})",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None
