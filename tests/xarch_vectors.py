"""Logs written on one architecture, recovered on another: the vectors of tests/vectors/xarch.

    python tests/xarch_vectors.py make OUT     # run the Ledger immortal; OUT/log, OUT/expected.json
    python tests/xarch_vectors.py check LOG EXPECTED.json   # recover LOG (a copy), compare

``make`` runs one immortal that forks itself a few hundred steps, with checkpoints small enough
that the log holds several chunks and a checkpoint with pages after it, then stops cleanly.
Its state covers what differs between machines if anything does: integers past 32 and 64 bits,
negative zero and the largest doubles, non-ASCII text, bytes, nesting, tuples and a set of large
integers (whose iteration order differs on 32-bit Python, so the app never iterates it).
``check`` recovers a copy of a log read-only and compares the state with the one ``make``
recorded, printing ``ok`` or what differs. The vectors were made by running ``make`` under
qemu-user on arm64, 32-bit ARM and big-endian s390x (``tests/test_xarch.py`` says how); the
test suite checks them on the machine it runs on, and ``pytest -m xarch`` the reverse.

Only the package is imported, so the script runs in a bare Debian root with cbor2, anyio and
platformdirs installed and the package on PYTHONPATH.
"""

from __future__ import annotations

import json
import platform
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import anyio

from ambrosia_edge import Immortal, rpc
from ambrosia_edge.config import Settings
from ambrosia_edge.immortal import state_of
from ambrosia_edge.runtime import Runtime
from ambrosia_edge.testing import eventually

STEPS = 240
NAME = "ledger"


class Ledger(Immortal):
    def __init__(self) -> None:
        self.step_count = 0
        self.total = 0
        self.big = 2**31 - 1
        self.floats = [-0.0, 1e308, 5e-324, 65504.0, 0.1]
        self.text = "grüße, 温度, ☃"
        self.blob = b"\x00\xff"
        self.nested: dict[str, Any] = {"rooms": {}, "pairs": (1, 2)}
        self.seen: set[int] = set()
        self.done = False

    async def on_first_start(self) -> None:
        self.this.fork.step(0)

    @rpc
    def step(self, n: int) -> None:
        self.step_count += 1
        self.total += n * n
        self.big = self.big * 3 + n  # past 2**64 within the run
        self.floats.append(n / 7)
        self.text += chr(0x3B1 + n % 24)
        self.blob = (self.blob + bytes([n % 256]))[-64:]
        room = f"room-{n % 5}"
        self.nested["rooms"].setdefault(room, []).append(n)
        self.seen.add(2**40 + n * 2**33)  # large keys: their order differs on 32-bit Python
        if n + 1 < STEPS:
            self.this.fork.step(n + 1)
        else:
            self.done = True


def summary(obj: Any) -> Any:
    """The state as JSON, exactly: floats by repr, bytes in hex, sets sorted, tuples marked."""
    if isinstance(obj, dict):
        return {str(k): summary(v) for k, v in sorted(obj.items(), key=lambda kv: str(kv[0]))}
    if isinstance(obj, tuple):
        return {"tuple": [summary(v) for v in obj]}
    if isinstance(obj, list):
        return [summary(v) for v in obj]
    if isinstance(obj, set | frozenset):
        return {"set": [summary(v) for v in sorted(obj)]}
    if isinstance(obj, bytes):
        return {"bytes": obj.hex()}
    if isinstance(obj, float):
        return {"float": repr(obj)}
    if isinstance(obj, int) and not isinstance(obj, bool):
        return {"int": str(obj)}
    return obj


def settings(log: Path) -> Settings:
    return Settings(target=f"{__name__}:Ledger", name=NAME, log=str(log), checkpoint_bytes=4096)


def make(out: Path) -> dict[str, Any]:
    log = out / "log"
    runtime = Runtime(Ledger, settings(log))

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            await tg.start(runtime.serve)
            await eventually(lambda: runtime.immortal.done, "the last step", timeout=600)
            tg.cancel_scope.cancel()

    anyio.run(main)
    expected = {
        "machine": platform.machine(),
        "byteorder": sys.byteorder,
        "word_bits": 64 if sys.maxsize > 2**32 else 32,
        "state": summary(state_of(runtime.immortal)),
    }
    (out / "expected.json").write_text(json.dumps(expected, indent=1, sort_keys=True) + "\n")
    return expected


def recovered(log: Path, checkpoint: int) -> Any:
    """The state recovered from a copy of ``log`` (recovery may cut a torn tail), starting at
    ``checkpoint`` (-1: the newest)."""
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "log"
        shutil.copytree(log, copy)
        runtime = Runtime(Ledger, settings(copy))
        runtime.recover(from_checkpoint=checkpoint)
        runtime.store.close()
        return summary(state_of(runtime.immortal))


def checkpoints(log: Path) -> list[int]:
    return sorted(int(p.stem.split("-")[1]) for p in log.glob("checkpoint-*.cbor"))


def check(log: Path, expected_file: Path) -> bool:
    """Recover from each checkpoint the log keeps (the oldest replays the most pages)."""
    expected = json.loads(expected_file.read_text())["state"]
    made_on = expected_file.parent.name
    same = True
    for n in checkpoints(log):
        got = recovered(log, n)
        if got == expected:
            print(f"ok: {platform.machine()} recovered the log of {made_on} from checkpoint {n}")
            continue
        same = False
        for key in sorted(set(expected) | set(got)):
            if expected.get(key) != got.get(key):
                print(f"{key}: expected {expected.get(key)!r:.300}, got {got.get(key)!r:.300}")
    return same


def main(argv: list[str]) -> int:
    if len(argv) == 2 and argv[0] == "make":
        out = Path(argv[1])
        out.mkdir(parents=True, exist_ok=True)
        made = make(out)
        print(f"made {out} on {made['machine']}")
        return 0
    if len(argv) == 3 and argv[0] == "check":
        return 0 if check(Path(argv[1]), Path(argv[2])) else 1
    print(__doc__.split("\n\n")[1], file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
