"""Host one immortal for a benchmark: ``ambrosia-edge run`` with ``--no-fsync`` honoured.

``python -m benchmarks.host TARGET --name N --log DIR ... [--no-fsync]`` takes exactly the
arguments of ``ambrosia-edge run`` and builds the same Settings, then hands the runtime the
store of ``--log`` (any tier) with its fsync switch following ``--fsync/--no-fsync``. The
durable and the no-fsync variants of every benchmark therefore go through the same code, and
differ in the flush alone. The event loop is the one ``ambrosia-edge run`` picks (uvloop when
it is installed, unless ``AMBROSIA_EDGE_UVLOOP=0``).
"""

from __future__ import annotations

import logging
import signal
import sys
from typing import Any

import anyio

from ambrosia_edge import runtime as runtime_module
from ambrosia_edge.cli import build_parser, build_run_settings
from ambrosia_edge.errors import LogLockedError
from ambrosia_edge.loader import load_class
from ambrosia_edge.runtime import Runtime
from ambrosia_edge.store import open_store

log = logging.getLogger("ambrosia_edge")


def backend_options() -> dict[str, Any]:
    """What ``ambrosia-edge run`` passes to ``anyio.run`` (older runtimes: nothing)."""
    choose = getattr(runtime_module, "_backend_options", None)
    options: dict[str, Any] = choose() if callable(choose) else {}
    return options


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(["run", *argv])
    settings = build_run_settings(args)
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("ambrosia-edge: %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    cls = load_class(settings.target)
    store = open_store(settings.log, fsync=settings.fsync)
    runtime = Runtime(cls, settings, store=store)
    options = backend_options()
    fsync = "on" if settings.fsync else "off"
    loop = "uvloop" if options else "the asyncio loop"
    log.info("%s: benchmark host, fsync %s, %s", settings.name, fsync, loop)

    async def serve() -> None:
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with anyio.create_task_group() as tg:
                await tg.start(runtime.serve)
                async for _ in signals:
                    tg.cancel_scope.cancel()
                    return

    try:
        runtime.recover()
    except LogLockedError:
        runtime.stand_by()  # another instance holds the log: follow it (the failover figure)
    anyio.run(serve, backend_options=options)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
