"""Replay speed: rebuild an immortal from its log, in a fresh process, and time it.

``python -m benchmarks.replay LOG TARGET NAME`` prints one JSON line: the seconds
``Runtime.recover(read_only=True)`` took, the pages it replayed and the messages in them.
"""

from __future__ import annotations

import json
import sys
import time

from ambrosia_edge import codec
from ambrosia_edge.checkpoint import decode_checkpoint
from ambrosia_edge.config import Settings
from ambrosia_edge.loader import load_class
from ambrosia_edge.runtime import Runtime


def _counted(state: dict[str, object]) -> int:
    return sum(int(state.get(field, 0)) for field in ("received", "count", "pings"))  # type: ignore[call-overload]


def main(argv: list[str]) -> int:
    log, target, name = argv
    cls = load_class(target)
    runtime = Runtime(cls, Settings(target=target, name=name, log=log))  # type: ignore[arg-type]
    started = time.perf_counter()
    runtime.recover(read_only=True)
    seconds = time.perf_counter() - started
    # the BenchServer counts every message it executes; subtract what the checkpoint held
    after = _counted(vars(runtime.immortal))
    before = 0
    n = runtime.recovery["checkpoint"]
    if n:
        checkpoint = decode_checkpoint(runtime.store.read_checkpoint(n), f"checkpoint {n}")
        before = _counted(codec.decode(checkpoint.state))
    messages = after - before
    print(
        json.dumps(
            {
                "seconds": seconds,
                "pages": runtime.recovery["pages"],
                "checkpoint": runtime.recovery["checkpoint"],
                "messages": messages,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
