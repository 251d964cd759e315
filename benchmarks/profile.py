"""Profile both immortals of a throughput run with py-spy: where does the time go?

    python -m benchmarks.profile [--workload throughput|ping] [--size 16] [--messages N]
                                 [--no-fsync] [--typical 1000|100] [--replay] [--out DIR]

Starts the same server and client processes as the benchmarks, attaches ``py-spy record`` to
each once they are connected, runs the workload, and prints the functions with the most samples
of their own (the innermost frame) and in total (anywhere on the stack), per process. With
``--typical STEPS`` it runs the typical app (``async def`` handlers, continuation steps of
STEPS forks) instead of the tuned one. With ``--replay`` it then profiles a fresh process
replaying the server's log. The collapsed stacks are left in ``--out`` (speedscope and
flamegraph.pl read them).
"""

from __future__ import annotations

import argparse
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from .measure import measure_pair
from .modes import throughput_batch
from .processes import Child, Runner
from .stats import percentile, throughput_rate
from .systems import AMBROSIA, APPS, NO_FSYNC, TYPICAL_STEPS

_LINE = re.compile(r":\d+\)$")


def _frame_key(frame: str) -> str:
    """``fn (path/to/file.py:123)`` -> ``fn (file.py)``: one entry per function, not per line."""
    frame = _LINE.sub(")", frame.strip())
    name, _, where = frame.partition(" (")
    if where:
        parts = where.rstrip(")").split("/")
        where = "/".join(parts[-2:])
        return f"{name} ({where})"
    return name


_OURS = ("ambrosia_edge/", "storage/", "transports/", "benchmarks/apps")


def top_functions(
    raw: Path, limit: int = 15, total_filter: tuple[str, ...] = ()
) -> tuple[int, list[tuple[str, int]], list[tuple[str, int]]]:
    """(samples, [(function, own samples)], [(function, total samples)]) from collapsed stacks.

    ``total_filter`` keeps only functions whose file starts with one of these prefixes in the
    second list (the event loop's frames are on every stack and say nothing).
    """
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    samples = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        samples += n
        frames = [_frame_key(f) for f in stack.split(";")]
        frames = [f for f in frames if not f.startswith("process ") and not f.startswith("thread ")]
        if not frames:
            continue
        own[frames[-1]] += n
        for f in set(frames):
            where = f.partition(" (")[2]
            if not total_filter or where.startswith(total_filter):
                total[f] += n
    return samples, own.most_common(limit), total.most_common(limit)


def _print_top(title: str, raw: Path, limit: int) -> None:
    if not raw.exists() or not raw.stat().st_size:
        print(f"\n{title}: py-spy recorded nothing")
        return
    samples, own, total = top_functions(raw, limit=limit, total_filter=_OURS)
    print(f"\n{title}, {samples} samples: own time (innermost frame)")
    for name, n in own:
        print(f"  {100 * n / samples:5.1f}%  {name}")
    print(f"{title}: total time of the runtime's own functions (anywhere on the stack)")
    for name, n in total:
        print(f"  {100 * n / samples:5.1f}%  {name}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.profile")
    parser.add_argument("--workload", choices=["throughput", "ping"], default="throughput")
    parser.add_argument("--size", type=int, default=16)
    parser.add_argument("--messages", type=int, default=1_000_000, help="messages or pings")
    parser.add_argument("--no-fsync", action="store_true")
    parser.add_argument(
        "--typical",
        type=int,
        choices=sorted(TYPICAL_STEPS.values()),
        help="profile the typical app with continuation steps of this many forks",
    )
    parser.add_argument(
        "--replay", action="store_true", help="then profile a replay of the server's log too"
    )
    parser.add_argument("--rate", type=int, default=200, help="py-spy samples per second")
    parser.add_argument("--top", type=int, default=15, help="functions to list")
    parser.add_argument(
        "--all-threads",
        action="store_true",
        help="sample every thread, not only the one holding the GIL (idle worker threads then "
        "show up waiting in Condition.wait)",
    )
    parser.add_argument("--out", type=Path, help="where the collapsed stacks go")
    args = parser.parse_args(argv)
    spy = shutil.which("py-spy")
    if spy is None:
        raise SystemExit("py-spy is not installed: pip install py-spy")
    out = args.out or Path(tempfile.mkdtemp(prefix="ambrosia-profile-"))
    out.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="ambrosia-profile-work-"))
    recorders: list[subprocess.Popen[bytes]] = []

    def spy_args(path: Path) -> list[str]:
        flags = [] if args.all_threads else ["--gil"]
        return [spy, "record", "--rate", str(args.rate), "--format", "raw", "--output", str(path),
                *flags]  # fmt: skip

    def record(pid: int, path: Path) -> list[str]:
        return [*spy_args(path), "--pid", str(pid)]

    def attach(children: list[Child]) -> Callable[[], None]:
        for child in children:
            cmd = record(child.pid, out / f"{child.label}.txt")
            recorders.append(subprocess.Popen(cmd, stdout=subprocess.DEVNULL))
        time.sleep(0.5)  # let py-spy attach before the clock starts

        def detach() -> None:
            for proc in recorders:
                proc.send_signal(signal.SIGINT)
            for proc in recorders:
                proc.wait(timeout=60)

        return detach

    system = NO_FSYNC if args.no_fsync else AMBROSIA
    if args.typical:
        if args.no_fsync or args.workload != "throughput":
            parser.error("--typical is a durable throughput workload")
        system = next(s for s, steps in TYPICAL_STEPS.items() if steps == args.typical)
    runner = Runner(workdir, 600, lambda text: print(text, file=sys.stderr))
    try:
        batch = throughput_batch(args.size) if args.workload == "throughput" else 1000
        batch = args.typical or batch
        result = measure_pair(
            runner,
            system,
            args.workload,
            size=args.size,
            total=args.messages,
            batch=batch,
            keep_log=args.replay,
            attach=attach,
        )
        if args.workload == "throughput":
            rate, _ = throughput_rate(result)
            what = f"{rate:,.0f} msg/s"
        else:
            samples = sorted(result["client"]["samples"])
            what = f"ping p50 {percentile(samples, 50) / 1e3:.0f} us"
        print(
            f"{system}, {args.workload}, {args.size} B payloads, {args.messages} calls: {what} "
            f"(under py-spy at {args.rate} Hz, which slows it); CPU s: server "
            f"{result['cpu_s']['server']:.2f}, client {result['cpu_s']['client']:.2f}"
        )
        for role in ("server", "client"):
            _print_top(role, out / f"{role}.txt", args.top)
        if args.replay:
            log_dir = result["log"]
            raw = out / "replay.txt"
            cmd = [*spy_args(raw), "--", sys.executable, "-m", "benchmarks.replay", log_dir,
                   f"{APPS}:BenchServer", "server"]  # fmt: skip
            done = subprocess.run(
                cmd,
                env=runner.env(Path(log_dir).parent, 0),
                capture_output=True,
                text=True,
                check=False,
            )
            found = [line for line in done.stdout.splitlines() if line.startswith("{")]
            print(f"\nreplay: {found[-1] if found else done.stderr[-2000:]}")
            _print_top("replay", raw, args.top)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"\ncollapsed stacks (for flamegraph.pl or speedscope): {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
