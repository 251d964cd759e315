"""An immortal fed by a sensor, for the crash tests of sensor sources (run through the CLI).

``AMBROSIA_TEST_SENSOR`` picks the sensor: ``cpu`` (a CpuTemperature on the fake tree at
``AMBROSIA_TEST_SENSOR_ROOT``, polled every 5 ms), ``gpio`` (mock pin 17, toggled by a thread of
this process as fast as it can), or nothing. Every reading carries a number from the source,
``[pid, n]``, and the source notes in ``AMBROSIA_TEST_JOURNAL`` each number whose receipt said
durable: what the test may demand to find in the state after any number of SIGKILLs.
"""

from __future__ import annotations

import os
import threading
from typing import Any

import anyio
from ambrosia_edge.devices.sensors import CpuTemperature, GpioSource
from anyio.abc import TaskStatus

from ambrosia_edge import Immortal, impulse
from ambrosia_edge.sources import ImpulseFeed, ImpulseSource, Receipt
from ambrosia_edge.testing.progress import report_progress


class Numbered:
    """The feed a sensor sends through: numbers each reading, journals the durable ones."""

    def __init__(self, feed: ImpulseFeed, journal: Any) -> None:
        self.inner = feed
        self.journal = journal
        self.n = 0

    @property
    def immortal(self) -> str:
        return self.inner.immortal

    def send(self, method: str, /, *args: Any, **kwargs: Any) -> Receipt:
        number = [os.getpid(), self.n]
        self.n += 1
        receipt = self.inner.send(method, number, *args, **kwargs)
        receipt.add_done_callback(lambda _: self._durable(number))
        return receipt

    def _durable(self, number: list[int]) -> None:
        self.journal.write(f"{number[0]} {number[1]}\n")
        self.journal.flush()


class Journaled:
    """Runs ``sensor`` through a :class:`Numbered` feed; ``pin``: then toggles that mock pin."""

    def __init__(self, sensor: ImpulseSource, pin: int | None = None) -> None:
        self.sensor = sensor
        self.pin = pin

    async def run(
        self, feed: ImpulseFeed, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        with open(os.environ["AMBROSIA_TEST_JOURNAL"], "a") as journal:
            async with anyio.create_task_group() as tg:
                await tg.start(self.sensor.run, Numbered(feed, journal))
                if self.pin is not None:
                    threading.Thread(target=toggle, args=(self.pin,), daemon=True).start()
                task_status.started()


def toggle(pin: int) -> None:
    from gpiozero import Device

    mock = Device.pin_factory.pin(pin)
    while True:
        mock.drive_high()
        mock.drive_low()
        threading.Event().wait(0.002)


class Sensing(Immortal):
    def __init__(self) -> None:
        self.readings: list[Any] = []

    @impulse
    def reading(self, number: list[int], value: Any) -> None:
        self.readings.append([number, value])

    def impulse_sources(self) -> list[ImpulseSource]:
        sensor = os.environ.get("AMBROSIA_TEST_SENSOR")
        if sensor == "cpu":
            root = os.environ["AMBROSIA_TEST_SENSOR_ROOT"]
            return [Journaled(CpuTemperature("reading", every="5ms", root=root))]
        if sensor == "gpio":
            return [Journaled(GpioSource("reading", pin=17), pin=17)]
        return []

    async def becoming_primary(self) -> None:
        self.spawn(report_progress, self, ("readings",))
