"""The Markdown report: the tables of ``results.md`` and of the results section of the docs.

It renders what ``summary.summarise`` computed and computes nothing of its own beyond the
ratios shown beside the medians.
"""

from __future__ import annotations

from typing import Any

from . import deployments
from .results import Results
from .stats import ratio
from .summary import PERCENTILES
from .systems import AMBROSIA, GRPC, KIB, NO_FSYNC, THROUGHPUT_SYSTEMS


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
                    _x(ratio(a, g)),
                    _x(ratio(a, nf)),
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
    lines += _typical_markdown(summary)

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
                + [_n(s["mean"]), _x(ratio(s["p50"], base))]
            )
        lines += _table(
            ["system", "pings", *[label for label, _ in PERCENTILES], "mean", "p50 / gRPC p50"],
            rows,
        )
        lines.append("")
        lines += _ping_floor_markdown(summary.get("ping_floor") or {})
    lines += deployments.markdown(summary.get("deployments") or {})

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
                    _x(ratio(a, s["increments_per_s"])),
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
    failover = summary.get("failover") or {}
    if failover:
        lines += [
            "### Failover to a standby",
            "",
            f"A primary killed with SIGKILL {len(failover['times_s'])} times, a standby "
            f"following its log ({failover['tier']}:// tier): live again after a median of "
            f"{failover['median_s']:.3f} s, at worst {failover['worst_s']:.3f} s (from the kill "
            "to the standby listening as primary); every awaited call exactly once.",
            "",
        ]
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
            unit = " MiB" if "RSS" in t["target"] else " s" if "(s)" in t["target"] else "x"
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


def _typical_markdown(summary: dict[str, Any]) -> list[str]:
    """The typical app beside the tuned app and gRPC, at the same payload, from the same run."""
    typical = summary.get("typical") or {}
    if not typical:
        return []
    size = typical["size"]
    same = summary["throughput"].get(size, {})
    nan = float("nan")
    tuned = same.get(AMBROSIA, {}).get("messages_per_s", nan)
    grpc = same.get(GRPC, {}).get("messages_per_s", nan)
    lines = [
        f"### The typical app: `async def` handlers, continuation steps of 1,000 or 100 forks "
        f"({size_label(size)}, durable, messages/s from the server's first executed message to "
        "its last: median (min-max))",
        "",
    ]
    rows = []
    for system, s in typical["systems"].items():
        rows.append(
            [
                system,
                _n(s["steps"]),
                _n(s["messages"]),
                _spread(s),
                _x(ratio(s["messages_per_s"], tuned)),
                _x(ratio(s["messages_per_s"], grpc)),
                _n(s["server_cpu_s_per_m"], 1),
                _n(s["client_cpu_s_per_m"], 1),
            ]
        )
    for system, label, steps in (
        (AMBROSIA, f"{AMBROSIA} tuned app (`def` handlers, rate after the first page)", None),
        (GRPC, f"{GRPC} streaming", "-"),
    ):
        s = same.get(system)
        if not s:
            continue
        rows.append(
            [
                label,
                steps or _n(typical.get("tuned_steps") or nan),
                _n(s["messages"]),
                _spread(s),
                _x(ratio(s["messages_per_s"], tuned)),
                _x(ratio(s["messages_per_s"], grpc)),
                _n(s["server_cpu_s_per_m"], 1),
                _n(s["client_cpu_s_per_m"], 1),
            ]
        )
    lines += _table(
        [
            "app",
            "forks per step",
            "messages",
            "messages/s",
            "/ tuned",
            "/ gRPC",
            "server CPU s / M msgs",
            "client CPU s / M msgs",
        ],
        rows,
    )
    return [*lines, ""]


def _ping_floor_markdown(floor: dict[str, Any]) -> list[str]:
    """The durable ping against its physical floor (the target), and against gRPC (a figure)."""
    if not floor:
        return []

    def each(ratios: list[float]) -> str:
        return (
            f" (single repetitions {min(ratios):.2f}-{max(ratios):.2f}x)" if len(ratios) > 1 else ""
        )

    text = (
        f"The durable ping's physical floor in this run: the no-fsync p50 "
        f"{_n(floor['no_fsync_p50'])} µs + 2 x the disk's fdatasync p50 "
        f"{_n(floor['fdatasync_p50'])} µs = {_n(floor['floor_p50'])} µs. The durable p50 is "
        f"{_x(floor['ratio'])} that floor{each(floor['repetitions'])}"
    )
    if floor["grpc_ratio"] == floor["grpc_ratio"]:  # not NaN: gRPC was measured
        text += (
            f", and {_x(floor['grpc_ratio'])} gRPC's unary p50"
            f"{each(floor['grpc_repetitions'])}, a figure, not a target"
        )
    return [text + ".", ""]


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
