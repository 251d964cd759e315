"""The immortal of the MQTT-in benchmark (benchmarks/mqtt.py), run by ``ambrosia-edge run``.

It counts readings and prints the moment of the first and of the last one: the benchmark
measures the immortal between those, as it measures the plain paho client.
"""

from __future__ import annotations

import os
import time

from ambrosia_edge import Immortal, impulse

TOTAL = int(os.environ.get("AMBROSIA_BENCH_MQTT_MESSAGES", "20000"))


class MqttSink(Immortal):
    def __init__(self) -> None:
        self.count = 0

    @impulse
    def reading(self, topic: str, payload: bytes) -> None:
        self.count += 1
        if self.count == 1:
            print(f"first {time.monotonic()!r}", flush=True)  # (a fresh log: never replayed)
        if self.count == TOTAL:
            print(f"last {time.monotonic()!r}", flush=True)
