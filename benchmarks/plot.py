"""The plot of ``throughput.png``: throughput against payload size, one line per system."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .report import size_label
from .results import Results
from .systems import AMBROSIA, GRPC, NO_FSYNC, THROUGHPUT_SYSTEMS


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
