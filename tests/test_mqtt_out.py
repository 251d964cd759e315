"""MQTT out, end to end: ``self.publish`` from a real ``ambrosia-edge run`` child, SIGKILLed,
into a real mosquitto (mqttbroker.py), read by a plain paho subscriber and by another immortal.

Exactly-once is judged by ids: every publish carries ``message-id`` = immortal name and number,
so the plain subscriber sees each number at least once, and each repeated one only inside the
window a crash can repeat (``--mqtt-publish-window`` per kill); the immortal subscribed to the
results drops the repeats by itself and counts each result once, in order per topic.
"""

from __future__ import annotations

import os
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support import wait_for

paho = pytest.importorskip("paho.mqtt.client")
from mqttbroker import (  # noqa: E402
    Broker,
    MqttChild,
    client,
    make_session,
    publish_all,
    running_broker,
)
from paho.mqtt.enums import CallbackAPIVersion  # noqa: E402

RESULTS = int(os.environ.get("AMBROSIA_TEST_RESULTS", "10000"))
KILLS = int(os.environ.get("AMBROSIA_TEST_MQTT_OUT_KILLS", "5"))
#: publishes the producer may hand the broker ahead of its last logged acknowledgement
WINDOW = 200


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    yield from running_broker(tmp_path)


class Collector:
    """A plain paho subscriber that keeps every message it gets: (message-id, topic, payload)."""

    def __init__(self, broker: Broker, topic_filter: str) -> None:
        self.got: list[tuple[str | None, str, bytes]] = []
        self.lock = threading.Lock()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
        self.client.on_message = self._on_message
        subscribed = threading.Event()
        self.client.on_subscribe = lambda *_: subscribed.set()
        self.client.connect("127.0.0.1", broker.port)
        self.client.subscribe(topic_filter, 1)
        self.client.loop_start()
        wait_for(subscribed.is_set, 10, "the subscription")

    def _on_message(self, _c: Any, _u: Any, message: Any) -> None:
        props = dict(getattr(message.properties, "UserProperty", None) or ())
        with self.lock:
            self.got.append((props.get("message-id"), message.topic, message.payload))

    def ids(self) -> set[str | None]:
        with self.lock:
            return {m for m, _, _ in self.got}

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def producer(tmp_path: Path, broker: Broker, *extra: str) -> MqttChild:
    return MqttChild(
        tmp_path,
        broker,
        ["--mqtt-publish-window", str(WINDOW), *extra],
        cls="Producer",
        name="producer",
        env={"AMBROSIA_TEST_RESULTS": str(RESULTS)},
    )


def expected(n: int) -> tuple[str, bytes]:
    """Topic and payload of result ``n`` (tests/apps/mqtt_sink.py, Producer.step)."""
    return f"results/{n % 4}", str((n - 1) // 4 + 1).encode()


def test_results_published_while_killed_are_seen_once_by_id(tmp_path: Path, broker: Broker) -> None:
    """10,000 results, the producer SIGKILLed five times: the ids seen are exactly 1..10,000
    with the right payloads, repeats stay within a window per kill, and an immortal subscribed
    to the results executes each exactly once, in order per topic."""
    make_session(broker, ["results/#"])  # the sink's session, before anything is published
    sink = MqttChild(tmp_path, broker, ["--subscribe", "results/#=reading"])
    sink.start()
    collector = Collector(broker, "results/#")
    prod = producer(tmp_path, broker)
    kills = 0
    try:
        prod.start()
        for k in range(KILLS):
            target = (k + 1) * RESULTS // (KILLS + 2)
            wait_for(
                lambda t=target: len(collector.ids()) >= t, 60, f"{target} results", prod.output
            )
            prod.kill()
            kills += 1
            prod.start()
        wait_for(lambda: len(collector.ids()) >= RESULTS, 120, "every result", prod.output)
        wait_for(
            lambda: (s := sink.status()) and s["count"] >= RESULTS, 60, "the sink", sink.output
        )
        # a repeat still on its way would show up behind this fence
        publisher = client(broker, "fence")
        try:
            publish_all(publisher, [("results/fence", b"1", "fence")])
        finally:
            publisher.disconnect()
            publisher.loop_stop()
        wait_for(lambda: (s := sink.status()) and "results/fence" in s["last"], 60, "the fence")
        wait_for(lambda: ("fence", "results/fence", b"1") in collector.got, 60, "the fence")
        status = sink.status()
        assert status is not None
    finally:
        collector.close()
        prod.kill()
        sink.kill()

    got = [g for g in collector.got if g[0] != "fence"]
    ids = Counter(m for m, _, _ in got)
    assert set(ids) == {f"producer:{n}" for n in range(1, RESULTS + 1)}
    for message_id, topic, payload in got:
        assert (topic, payload) == expected(int(str(message_id).split(":")[1])), message_id
    repeats = len(got) - RESULTS
    print(f"{RESULTS} results, {kills} kills: {repeats} repeated (same id), window {WINDOW}")
    assert kills == KILLS
    assert repeats <= kills * WINDOW
    # the subscribed immortal dropped every repeat by its id: each result once, in order
    assert status["count"] == RESULTS + 1, sink.output()[-3000:]
    assert status["out_of_order"] == 0
    assert status["last"] == {
        **{f"results/{t}": RESULTS // 4 for t in range(4)},
        "results/fence": 1,
    }
