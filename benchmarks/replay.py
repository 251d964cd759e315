"""Replay speed: rebuild an immortal from its log, in a fresh process, and time it.

``python -m benchmarks.replay LOG TARGET NAME [--from-start]`` prints one JSON line: the seconds
a read-only :class:`~ambrosia_edge.recovery.Replayer` took to load and replay the log, the pages
it replayed, the messages in them and the counters of the state it ended with. By default
replay starts from the newest checkpoint, as a restart does; ``--from-start`` ignores the
checkpoints and replays every page of the log.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from ambrosia_edge import codec
from ambrosia_edge.checkpoint import decode_checkpoint
from ambrosia_edge.config import Settings
from ambrosia_edge.loader import load_class
from ambrosia_edge.recovery import Replayer
from ambrosia_edge.store import LogStore, open_store

#: The BenchServer's counters; each message it executes adds one to exactly one of them.
COUNTERS = ("received", "count", "pings")


def counted(state: dict[str, object]) -> int:
    return sum(int(state.get(field, 0)) for field in COUNTERS)  # type: ignore[call-overload]


def checkpoint_state(store: LogStore, n: int) -> dict[str, object]:
    """The BenchServer state in checkpoint ``n``: what a recovery from it starts with."""
    checkpoint = decode_checkpoint(store.read_checkpoint(n), f"checkpoint {n}")
    state: dict[str, object] = codec.decode(checkpoint.state)
    return state


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.replay")
    parser.add_argument("log")
    parser.add_argument("target")
    parser.add_argument("name")
    parser.add_argument("--from-start", action="store_true", help="ignore the checkpoints")
    args = parser.parse_args(argv)
    cls = load_class(args.target)
    settings = Settings(target=args.target, name=args.name, log=args.log)
    store = open_store(settings.log, fsync=settings.fsync)
    started = time.perf_counter()
    replayer = Replayer(
        cls,  # type: ignore[arg-type]
        store,
        name=args.name,
        checkpoint=None if args.from_start else -1,
        read_only=True,
    )
    replayer.run()
    seconds = time.perf_counter() - started
    # the BenchServer counts every message it executes; subtract what the checkpoint held
    state = replayer.state
    n = replayer.checkpoint.chunk if replayer.checkpoint is not None else None
    before = counted(checkpoint_state(store, n)) if n else 0
    print(
        json.dumps(
            {
                "seconds": seconds,
                "pages": replayer.pages,
                "checkpoint": n,
                "messages": counted(state) - before,
                "state": {k: int(state.get(k, 0)) for k in (*COUNTERS, "bytes")},
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
