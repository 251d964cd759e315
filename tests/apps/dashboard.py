"""An immortal for the web page's tests: a thermostat that ticks by itself and takes settings.

Run through the CLI by the browser test, and in-process by the page's other tests. The ticks
are impulses a spawned task sends while it is primary, so the page has counts that move.
"""

from __future__ import annotations

import os
from typing import Any

import anyio

from ambrosia_edge import Immortal, impulse, rpc

TICK = float(os.environ.get("AMBROSIA_TEST_TICK", "0.05"))
#: a peer each tick reports this room's temperature to (a call the page counts)
REPORT_TO = os.environ.get("AMBROSIA_TEST_REPORT_TO") or None


class Thermostat(Immortal):
    #: seconds between two ticks it sends itself while primary (0: none)
    tick_every = TICK
    report_to = REPORT_TO

    def __init__(self) -> None:
        self.ticks = 0
        self.target = 20.0
        self.rooms: dict[str, float] = {}
        self.presses: list[int] = []
        self.schedule: Any = None
        self.away = False

    async def becoming_primary(self) -> None:
        if self.tick_every > 0:
            self.spawn(self._ticking)

    async def _ticking(self) -> None:
        while True:
            self.this.fork.tick()
            await anyio.sleep(self.tick_every)

    @impulse
    def tick(self) -> None:
        self.ticks += 1
        if self.report_to:
            self.proxy(self.report_to).fork.report(self.name, 18 + self.ticks % 7 / 2)

    @rpc
    def report(self, room: str, celsius: float) -> None:
        self.rooms[room] = celsius

    @impulse
    def set_target(self, celsius: float, room: str = "living", note: str | None = None) -> None:
        """Set a room's target temperature."""
        self.rooms[room] = celsius
        self.target = celsius

    @impulse
    def press(self, times: int) -> None:
        """The button on the wall, pressed ``times`` times."""
        self.presses.append(times)

    @impulse
    def configure(self, schedule: dict[str, Any], away: bool = False) -> None:
        self.schedule = schedule
        self.away = away

    @impulse
    def fail(self, reason: str) -> None:
        raise ValueError(reason)

    @rpc
    def read(self) -> float:
        return self.target
