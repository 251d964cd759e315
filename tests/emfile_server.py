"""A server immortal that runs out of file descriptors: started by test_preauth_limits.py in a
child process, whose descriptor limit it lowers to what it has open plus a few once it listens.

Usage: python emfile_server.py LOG PORT CLIENT_PORT SPARE
"""

from __future__ import annotations

import os
import resource
import sys
from pathlib import Path

import anyio
from apps.counting import Counter
from instances import Instance, settings


async def main(log: Path, port: int, client: int, spare: int) -> None:
    async with anyio.create_task_group() as tg:
        server = Instance(
            tg,
            Counter,
            settings(
                "server",
                log,
                port,
                {"client": client},
                max_handshakes=10_000,  # no cap: the descriptors run out first
                handshake_timeout=600.0,
            ),
        )
        await server.start()
        open_now = len(os.listdir("/proc/self/fd"))
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        resource.setrlimit(resource.RLIMIT_NOFILE, (open_now + spare, hard))
        print("ready", flush=True)
        await anyio.sleep_forever()


if __name__ == "__main__":
    anyio.run(main, Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
