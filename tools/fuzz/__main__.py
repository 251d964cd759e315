"""``python -m tools.fuzz``: fuzz the parsers that read what strangers and damaged disks send.

    python -m tools.fuzz                     # every target, 1,000,000 inputs each
    python -m tools.fuzz records --runs 50000
    python -m tools.fuzz --list

Coverage-guided with atheris (``pip install atheris``; Linux x86-64 wheels) when it is
installed, each target in a process of its own with a memory limit and a per-input timeout, so
a crash, a hang or a runaway allocation is reported as such. The corpus lives in
``tools/fuzz/corpus/TARGET/``: the seeds (``--seed`` writes them) and whatever new coverage a
run finds, kept in the repository so that the next run, and the test suite, start from it. An
input that fails is written to ``tools/fuzz/crashes/`` and the command exits 1.

Without atheris the inputs are random mutations of the corpus (no coverage guidance): weaker,
but the same checks.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import random
import subprocess
import sys
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
CORPUS = HERE / "corpus"
CRASHES = HERE / "crashes"
#: a larger input is cut: every parser's interesting cases fit, and runs stay fast
MAX_LEN = 4096
RSS_LIMIT_MB = 1024
TIMEOUT_S = 10


def write_seeds() -> None:
    from .seeds import seeds

    for target, inputs in seeds().items():
        folder = CORPUS / target
        folder.mkdir(parents=True, exist_ok=True)
        for data in inputs:
            (folder / f"seed-{hashlib.sha1(data).hexdigest()[:16]}").write_bytes(data)


def corpus(target: str) -> list[bytes]:
    folder = CORPUS / target
    return [p.read_bytes() for p in sorted(folder.iterdir())] if folder.is_dir() else []


def mutate(data: bytes, rng: random.Random) -> bytes:
    """One random edit: flip, set, insert, delete or duplicate bytes."""
    buf = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(5)
        at = rng.randrange(len(buf) + 1)
        if op == 0 and buf:
            buf[at % len(buf)] ^= 1 << rng.randrange(8)
        elif op == 1 and buf:
            buf[at % len(buf)] = rng.choice((0, 1, 0x7F, 0x80, 0xFF, rng.randrange(256)))
        elif op == 2:
            buf[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        elif op == 3 and buf:
            del buf[at : at + rng.randint(1, 8)]
        elif buf:
            n = rng.randint(1, 16)
            buf[at:at] = buf[max(0, at - n) : at]
    return bytes(buf[:MAX_LEN])


def run_mutations(target: str, runs: int, seed: int) -> int:
    from .targets import TARGETS

    check = TARGETS[target]
    pool = corpus(target) or [b""]
    rng = random.Random(seed)
    for i in range(runs):
        data = mutate(rng.choice(pool), rng)
        try:
            check(data)
        except Exception:
            save_crash(target, data)
            traceback.print_exc()
            print(f"{target}: failed on input {i}", file=sys.stderr)
            return 1
    return 0


def save_crash(target: str, data: bytes) -> Path:
    CRASHES.mkdir(exist_ok=True)
    path = CRASHES / f"{target}-{hashlib.sha1(data).hexdigest()[:16]}"
    path.write_bytes(data)
    print(f"the failing input is in {path}", file=sys.stderr)
    return path


def run_atheris(target: str, runs: int) -> int:
    """In this process: atheris exits it when done, so the caller runs one per target."""
    import atheris

    # coverage of the project's own code (the parsers, and what they call of it); cbor2's
    # decoder is C or Rust and is fuzzed through them
    with atheris.instrument_imports(include=["ambrosia_edge", "tools"]):
        from . import targets

    check = targets.TARGETS[target]
    (CORPUS / target).mkdir(parents=True, exist_ok=True)
    CRASHES.mkdir(exist_ok=True)
    atheris.Setup(
        [
            sys.argv[0],
            str(CORPUS / target),
            f"-runs={runs}",
            f"-max_len={MAX_LEN}",
            f"-rss_limit_mb={RSS_LIMIT_MB}",
            f"-timeout={TIMEOUT_S}",
            f"-artifact_prefix={CRASHES}/{target}-",
            "-print_final_stats=1",
        ],
        check,
    )
    atheris.Fuzz()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.fuzz", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("targets", nargs="*", metavar="TARGET", help="default: all (see --list)")
    parser.add_argument("--runs", type=int, default=1_000_000, help="inputs per target")
    parser.add_argument("--list", action="store_true", help="name the targets and stop")
    parser.add_argument("--seed", action="store_true", help="(re)write the seed corpus and stop")
    parser.add_argument(
        "--engine",
        choices=("atheris", "mutate"),
        help="default: atheris when installed, else random mutations of the corpus",
    )
    parser.add_argument("--one", help=argparse.SUPPRESS)  # a child process: run this target
    args = parser.parse_args(argv)
    if args.one:
        return run_atheris(args.one, args.runs)  # before anything imports the project
    from .targets import TARGETS

    if args.list:
        for name, fn in TARGETS.items():
            print(f"{name:<12} {(fn.__doc__ or '').split(chr(10))[0]}")
        return 0
    if args.seed:
        write_seeds()
        return 0
    unknown = [t for t in args.targets if t not in TARGETS]
    if unknown:
        parser.error(f"unknown target {', '.join(unknown)}; --list names them")
    engine = args.engine or ("atheris" if importlib.util.find_spec("atheris") else "mutate")
    if engine == "mutate" and args.engine is None:
        print("atheris is not installed (pip install atheris): random mutations, no coverage")
    failed = []
    for target in args.targets or list(TARGETS):
        started = time.monotonic()
        if engine == "atheris":
            code = subprocess.call(
                [sys.executable, "-m", "tools.fuzz", "--one", target, "--runs", str(args.runs)],
                cwd=HERE.parent.parent,
            )
        else:
            code = run_mutations(target, args.runs, seed=int(time.time()))
        took = time.monotonic() - started
        print(f"{target}: {args.runs:,} inputs in {took:,.0f} s: {'ok' if code == 0 else 'FAILED'}")
        if code != 0:
            failed.append(target)
    if failed:
        print(f"failed: {', '.join(failed)} (inputs in {CRASHES})", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
