"""``python -m benchmarks``: run the benchmarks and write the report.

    python -m benchmarks --quick            # about two minutes
    python -m benchmarks                    # the full set (about a quarter of an hour)
    python -m benchmarks --full --docs      # ... and update docs/benchmarks.md and its plot
    python -m benchmarks --smoke --out DIR  # seconds; what the test suite runs
    python -m benchmarks --mqtt             # MQTT in: an immortal against paho alone
    python -m benchmarks --quick --only typical,ping   # some workloads only

Every run writes ``results.json`` (every sample), ``results.md`` (the tables) and, when
matplotlib is installed, ``throughput.png`` into ``--out`` (a new temporary directory unless
given).
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import sys
import tempfile
from pathlib import Path

from .systems import WORKLOADS

BEGIN = "<!-- results:begin -->"
END = "<!-- results:end -->"
REPO = Path(__file__).resolve().parent.parent


def _check_imports() -> None:
    try:
        import ambrosia_edge.storage.local  # noqa: F401
    except ImportError as exc:
        raise SystemExit(
            f"cannot import ambrosia_edge.storage.local ({exc}). The benchmarks need the package "
            "installed (pip install -e '.[bench]'); if it is installed, the checkout's "
            "ambrosia_edge/ directory may be shadowing it: run from another directory with "
            "PYTHONPATH pointing at the directory that holds benchmarks/."
        ) from None


def _workloads(text: str) -> frozenset[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in WORKLOADS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown workload {', '.join(unknown) or repr(text)}; choose from "
            + ", ".join(WORKLOADS)
        )
    return frozenset(names)


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Benchmark ambrosia-edge against gRPC, DBOS Transact and the disk itself.",
    )
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--full", dest="mode", action="store_const", const="full")
    which.add_argument("--quick", dest="mode", action="store_const", const="quick")
    which.add_argument("--smoke", dest="mode", action="store_const", const="smoke")
    which.add_argument(
        "--mqtt",
        dest="mode",
        action="store_const",
        const="mqtt",
        help="only MQTT in: impulses/s from a local mosquitto into a durable immortal, next to "
        "the same paho client alone (needs mosquitto)",
    )
    parser.set_defaults(mode="full")
    parser.add_argument("--reps", type=int, help="repetitions (default: the mode's)")
    parser.add_argument(
        "--mqtt-messages", type=int, default=20_000, help="queued messages per --mqtt run"
    )
    parser.add_argument("--no-dbos", action="store_true", help="skip the DBOS baseline")
    parser.add_argument(
        "--only",
        type=_workloads,
        metavar="WORKLOAD[,WORKLOAD...]",
        help="run only these workloads: " + ", ".join(WORKLOADS) + " (typical: the typical "
        "app with the tuned app, --no-fsync and gRPC at the smallest size; the disk's floor "
        "is always measured)",
    )
    parser.add_argument("--out", type=Path, help="directory for results.json/.md and the plot")
    parser.add_argument(
        "--workdir",
        type=Path,
        help="where the logs go while measuring (default: a temporary directory; put it on "
        "the disk you want to measure)",
    )
    parser.add_argument(
        "--docs",
        action="store_true",
        help="also write the tables into docs/benchmarks.md and the plot to "
        "docs/benchmarks-throughput.png",
    )
    parser.add_argument("--quiet", action="store_true", help="print only the report")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    _check_imports()
    from . import harness, plot, report, summary
    from .modes import MODES

    args = parse(argv)
    if args.mode == "mqtt":
        return _mqtt(args)
    mode = MODES[args.mode]
    out = args.out or Path(tempfile.mkdtemp(prefix=f"ambrosia-bench-{mode.name}-"))
    out.mkdir(parents=True, exist_ok=True)
    own_workdir = args.workdir is None
    workdir = Path(tempfile.mkdtemp(prefix="ambrosia-bench-work-")) if own_workdir else args.workdir
    workdir.mkdir(parents=True, exist_ok=True)
    command = shlex.join(["python", "-m", "benchmarks", *argv])

    def say(text: str) -> None:
        if not args.quiet:
            print(text, file=sys.stderr, flush=True)

    say(f"benchmarks, {mode.name} mode: logs in {workdir}, results to {out}")
    try:
        results = harness.run_suite(
            mode,
            workdir,
            command,
            log=say,
            dbos=not args.no_dbos,
            reps=args.reps,
            only=args.only,
        )
    finally:
        if own_workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    figures = summary.summarise(results)
    data = results.to_json()
    data["summary"] = figures
    (out / "results.json").write_text(json.dumps(data, indent=1, default=str))
    plot_path = out / "throughput.png"
    why_not = plot.plot(results, figures, plot_path)
    text = report.markdown(results, figures)
    if why_not:
        text += f"\n_No plot: {why_not}._\n"
        say(f"no plot: {why_not}")
    (out / "results.md").write_text(text)
    if args.docs:
        _update_docs(text, None if why_not else plot_path)
    print(text)
    say(f"results: {out / 'results.md'}, {out / 'results.json'}")
    return 0


def _mqtt(args: argparse.Namespace) -> int:
    """The MQTT-in benchmark on its own (benchmarks/mqtt.py); --quick and --full skip it."""
    from . import mqtt

    out = args.out or Path(tempfile.mkdtemp(prefix="ambrosia-bench-mqtt-"))
    out.mkdir(parents=True, exist_ok=True)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="ambrosia-bench-work-"))
    workdir.mkdir(parents=True, exist_ok=True)
    say = (lambda _text: None) if args.quiet else (lambda text: print(text, file=sys.stderr))
    try:
        result = mqtt.run(args.mqtt_messages, args.reps or 3, workdir, say)
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    (out / "mqtt.json").write_text(json.dumps(result, indent=1))
    text = mqtt.markdown(result)
    (out / "mqtt.md").write_text(text)
    print(text)
    return 0


def _update_docs(text: str, plot_path: Path | None) -> None:
    doc = REPO / "docs" / "benchmarks.md"
    old = doc.read_text() if doc.exists() else f"# Benchmarks\n\n{BEGIN}\n{END}\n"
    if BEGIN not in old or END not in old:
        old = old.rstrip("\n") + f"\n\n{BEGIN}\n{END}\n"
    head, _, rest = old.partition(BEGIN)
    _, _, tail = rest.partition(END)
    image = "\n![Throughput against payload size](benchmarks-throughput.png)\n" if plot_path else ""
    doc.write_text(f"{head}{BEGIN}\n{text}{image}\n{END}{tail}")
    if plot_path is not None:
        shutil.copyfile(plot_path, REPO / "docs" / "benchmarks-throughput.png")


if __name__ == "__main__":
    sys.exit(main())
