"""A sensor hub on a Raspberry Pi, and the dashboard it reports to on a laptop.

The hub is fed by two sensor sources declared in ``hub.toml``: the CPU temperature every few
seconds, and a push button on a GPIO pin. Each reading is an impulse: logged before it runs,
so it counts exactly once however often the Pi loses power. Every ``SUMMARY_EVERY`` readings,
and on every press, the hub tells the dashboard, which keeps the latest of each.

Run the hub on the Pi with ``ambrosia-edge run --config hub.toml`` and the dashboard on the
laptop with ``ambrosia-edge run sensor_hub.py:Dashboard`` (README.md has the whole walk-through).
"""

from __future__ import annotations

from typing import Any

from ambrosia_edge import Immortal, impulse, rpc

#: readings folded into one summary for the dashboard
SUMMARY_EVERY = 12


class Hub(Immortal):
    """Aggregates readings; its state is a few numbers, checkpointed as CBOR."""

    def __init__(self) -> None:
        self.readings = 0
        self.low: float | None = None
        self.high: float | None = None
        self.total = 0.0
        self.presses = 0

    @impulse
    def temperature(self, celsius: float) -> None:
        self.readings += 1
        self.total += celsius
        self.low = celsius if self.low is None else min(self.low, celsius)
        self.high = celsius if self.high is None else max(self.high, celsius)
        if self.readings % SUMMARY_EVERY == 0:
            self.proxy("dashboard").fork.summary(self.summary())

    @impulse
    def button(self, edge: dict[str, Any]) -> None:
        if edge["active"]:  # pressed, not released
            self.presses += 1
            self.proxy("dashboard").fork.pressed(self.presses)

    def summary(self) -> dict[str, Any]:
        return {
            "readings": self.readings,
            "low": self.low,
            "high": self.high,
            "mean": round(self.total / self.readings, 2) if self.readings else None,
            "presses": self.presses,
        }


class Dashboard(Immortal):
    """What the hub last said. It prints as it hears; after a restart, replay prints the same
    lines again before new ones follow (the output of a handler is not itself logged)."""

    def __init__(self) -> None:
        self.latest: dict[str, Any] | None = None
        self.presses = 0

    @rpc
    def summary(self, summary: dict[str, Any]) -> None:
        self.latest = summary
        print(
            f"hub: {summary['readings']} readings, {summary['low']}-{summary['high']} °C, "
            f"mean {summary['mean']} °C, {summary['presses']} presses",
            flush=True,
        )

    @rpc
    def pressed(self, presses: int) -> None:
        self.presses = presses
        print(f"hub: button pressed ({presses} in all)", flush=True)
