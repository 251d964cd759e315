"""``python -m benchmarks.startup``: how long a process takes to start, and its memory.

What a small board pays before an immortal does anything: the interpreter alone, ``ambrosia-edge
--help`` (interpreter + the CLI's imports), and an idle immortal (a fresh log, listening on
127.0.0.1) from exec until it says it is primary, and its resident memory once idle, with
static peers and with zeroconf discovery (pinned to 127.0.0.1). Each figure is the median of
``--runs`` runs, with the lowest and highest beside it, printed as the table that
docs/discovery.md shows.

    python -m benchmarks.startup --runs 7

Run it from a directory other than the checkout's root (the checkout's ``ambrosia_edge/``
would shadow the installed package), with ``PYTHONPATH`` pointing at the checkout.
"""

from __future__ import annotations

import argparse
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from .procstat import memory_kib

REPO = Path(__file__).resolve().parent.parent
COUNTER = REPO / "examples" / "counter.py"
READY = "primary in epoch"


def _one_shot(args: list[str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (MiB) of a command that runs to its end."""
    started = time.perf_counter()
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(args)} exited {proc.returncode}")
    return elapsed, usage.ru_maxrss / 1024


def _idle_immortal(extra: list[str], settle: float) -> tuple[float, float]:
    """Seconds from exec until an immortal is primary, and its RSS (MiB) once idle."""
    with tempfile.TemporaryDirectory() as work:
        args = [
            sys.executable,
            "-m",
            "ambrosia_edge",
            "run",
            f"{COUNTER}:Counter",
            "--name",
            "server",
            "--log",
            str(Path(work) / "log"),
            "--listen",
            "127.0.0.1:0",
            *extra,
        ]
        started = time.perf_counter()
        proc = subprocess.Popen(
            args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=work
        )
        assert proc.stdout is not None
        try:
            for line in proc.stdout:
                if READY in line:
                    break
            else:
                raise SystemExit(f"the immortal ended before it was ready: {' '.join(args)}")
            ready = time.perf_counter() - started
            time.sleep(settle)  # idle: what it holds once the start-up work is over
            rss = memory_kib(proc.pid)["VmRSS"] / 1024
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.communicate(timeout=30)
        return ready, rss


def measure(runs: int, settle: float) -> dict[str, tuple[list[float], list[float]]]:
    cases: dict[str, Callable[[], tuple[float, float]]] = {
        "python -c pass (the interpreter)": lambda: _one_shot([sys.executable, "-c", "pass"]),
        "ambrosia-edge --help": lambda: _one_shot(
            [sys.executable, "-m", "ambrosia_edge", "--help"]
        ),
        "idle immortal, static peers": lambda: _idle_immortal([], settle),
        "idle immortal, zeroconf discovery": lambda: _idle_immortal(
            ["--discovery", "zeroconf", "--discovery-interfaces", "127.0.0.1"], settle
        ),
    }
    results: dict[str, tuple[list[float], list[float]]] = {name: ([], []) for name in cases}
    for _ in range(runs):
        for name, case in cases.items():  # interleaved, so a busy moment hits every case
            seconds, mib = case()
            results[name][0].append(seconds)
            results[name][1].append(mib)
    return results


def table(results: dict[str, tuple[list[float], list[float]]]) -> str:
    lines = [
        "| process | start (ms): median (min-max) | RSS (MiB): median (min-max) |",
        "|---|---:|---:|",
    ]
    for name, (seconds, mib) in results.items():
        ms = [s * 1000 for s in seconds]
        lines.append(
            f"| {name} | {statistics.median(ms):.0f} ({min(ms):.0f}-{max(ms):.0f}) "
            f"| {statistics.median(mib):.1f} ({min(mib):.1f}-{max(mib):.1f}) |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.startup", description=__doc__)
    parser.add_argument("--runs", type=int, default=7, help="runs of each case (default 7)")
    parser.add_argument(
        "--settle", type=float, default=1.0, help="seconds an immortal idles before its RSS is read"
    )
    args = parser.parse_args(argv)
    results = measure(args.runs, args.settle)
    print(
        f"{platform.machine()}, {platform.python_implementation()} {platform.python_version()}, "
        f"{os.cpu_count()} CPUs, {args.runs} runs; start = exec until exit (one-shot) or until "
        f"'{READY}' (immortal); peak RSS for one-shot commands"
    )
    print(table(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
