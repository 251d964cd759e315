"""The counter of the AMBROSIA paper (§1): a client awaits ``server.inc()`` over and over.

Run the server and the client in two terminals (see README.md), kill either of them with
``kill -9`` while the client is counting, and start it again with the same command: the client
still sees 1, 2, 3, ... with no number missing and none repeated, because every call and every
reply was logged before it ran and the restarted process replays its log.
"""

from __future__ import annotations

import os

from ambrosia_edge import Immortal, rpc


def calls_wanted() -> int:
    return int(os.environ.get("COUNTER_CALLS", "10000"))


class Counter(Immortal):
    def __init__(self) -> None:
        self.count = 0

    @rpc
    async def inc(self) -> int:
        self.count += 1
        return self.count


class Client(Immortal):
    def __init__(self) -> None:
        self.seen: list[int] = []

    async def on_first_start(self) -> None:
        # The environment may differ when a recovering process replays this line, so its value
        # is captured: read once, logged, and read back from the log on every later replay.
        calls: int = await self.capture(calls_wanted)
        server = self.proxy("server")
        for _ in range(calls):
            self.seen.append(await server.inc())
            if len(self.seen) % 100 == 0:
                # Replay runs this handler again, so after a restart these lines appear a second
                # time, quickly, while the client rebuilds its state; then it carries on.
                print(f"client: {len(self.seen)} calls, last reply {self.seen[-1]}", flush=True)
        verdict = "exactly" if self.seen == list(range(1, calls + 1)) else "NOT exactly"
        print(f"client: done, the replies were {verdict} 1..{calls}", flush=True)
