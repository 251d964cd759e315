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
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support import APPS, Child, free_port, wait_for

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
from paho.mqtt.packettypes import PacketTypes  # noqa: E402
from paho.mqtt.properties import Properties  # noqa: E402

RESULTS = int(os.environ.get("AMBROSIA_TEST_RESULTS", "10000"))
KILLS = int(os.environ.get("AMBROSIA_TEST_MQTT_OUT_KILLS", "5"))
#: publishes the producer may hand the broker ahead of its last logged acknowledgement
WINDOW = 200
#: seconds without the broker; the acceptance's minute runs with AMBROSIA_TEST_MQTT_MINUTE=1
OUTAGES = [
    pytest.param(3.0, id="3s"),
    pytest.param(
        60.0,
        id="1min",
        marks=pytest.mark.skipif(
            not os.environ.get("AMBROSIA_TEST_MQTT_MINUTE"),
            reason="a minute without the broker: set AMBROSIA_TEST_MQTT_MINUTE=1",
        ),
    ),
]


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    yield from running_broker(tmp_path)


class Collector:
    """A plain paho subscriber that keeps every message it gets: (message-id, topic, payload)."""

    def __init__(
        self, broker: Broker, topic_filter: str, client_id: str = "", qos: int = 1
    ) -> None:
        """With a ``client_id``, on a session the broker keeps (and queues for) across a
        restart of either."""
        self.got: list[tuple[str | None, str, bytes]] = []
        #: topic -> (QoS, retained, content type) of its last message
        self.details: dict[str, tuple[int, bool, str | None]] = {}
        self.lock = threading.Lock()
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv5
        )
        self.client.on_message = self._on_message
        subscribed = threading.Event()
        self.client.on_subscribe = lambda *_: subscribed.set()
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 3600 if client_id else 0
        self.client.connect("127.0.0.1", broker.port, clean_start=not client_id, properties=props)
        self.client.subscribe(topic_filter, qos)
        self.client.loop_start()
        wait_for(subscribed.is_set, 10, "the subscription")

    def _on_message(self, _c: Any, _u: Any, message: Any) -> None:
        props = dict(getattr(message.properties, "UserProperty", None) or ())
        content_type = getattr(message.properties, "ContentType", None)
        with self.lock:
            self.got.append((props.get("message-id"), message.topic, message.payload))
            self.details[message.topic] = (message.qos, bool(message.retain), content_type)

    def ids(self) -> set[str | None]:
        with self.lock:
            return {m for m, _, _ in self.got}

    def payloads(self, topic: str) -> list[bytes]:
        with self.lock:
            return [p for _, t, p in self.got if t == topic]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def producer(tmp_path: Path, broker: Broker, *extra: str, qos: int = 1) -> MqttChild:
    return MqttChild(
        tmp_path,
        broker,
        ["--mqtt-publish-window", str(WINDOW), *extra],
        cls="Producer",
        name="producer",
        env={"AMBROSIA_TEST_RESULTS": str(RESULTS), "AMBROSIA_TEST_RESULTS_QOS": str(qos)},
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


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


@pytest.mark.parametrize("qos", [1, 0])
def test_broker_down_at_start_holds_publishes_in_a_bounded_buffer(
    tmp_path: Path, broker: Broker, qos: int
) -> None:
    """No broker when the producer starts: its publishes fill a 64 KiB buffer and then its
    handlers wait (back-pressure), memory flat; once the broker is up every result arrives,
    at QoS 0 too: nothing is handed over while the broker is away."""
    collector = Collector(broker, "results/#", "collector")
    broker.stop()  # (the collector's session and subscription are kept, persistence on)
    prod = producer(tmp_path, broker, "--buffer-bytes", "64KiB", qos=qos)
    try:
        prod.start()
        wait_for(lambda: (s := prod.status()) and s["done"] > 0, 30, "the producer", prod.output)
        assert prod.proc is not None
        # publishes of ~40 bytes each: the buffer stops the producer near 64 KiB of them
        bound = 64 * 1024 // 30 + 10
        deadline = time.monotonic() + 1.5
        rss = rss_kib(prod.proc.pid)
        while time.monotonic() < deadline:  # watching an invariant over time, not waiting
            status = prod.status()
            assert status is not None and status["done"] <= bound, status
        assert rss_kib(prod.proc.pid) - rss < 5 * 1024
        assert "no MQTT broker" not in prod.output()  # one is configured: it is away
        broker.start()
        wait_for(lambda: len(collector.ids()) >= RESULTS, 120, "every result", prod.output)
        wait_for(lambda: (s := prod.status()) and s["done"] == RESULTS, 30, "the last step")
    finally:
        collector.close()
        prod.kill()
    ids = Counter(m for m, _, _ in collector.got)
    assert set(ids) == {f"producer:{n}" for n in range(1, RESULTS + 1)}
    assert sum(ids.values()) - RESULTS <= WINDOW  # a reconnection resends what was in flight


@pytest.mark.parametrize("outage", OUTAGES)
def test_broker_gone_while_serving_peers_then_back(
    tmp_path: Path, broker: Broker, outage: float
) -> None:
    """MQTT in and out on one immortal; the broker goes away for ``outage`` seconds. The
    immortal keeps serving a peer's 300 awaited calls meanwhile; when the broker is back, the
    publishes made meanwhile go out and the readings queued for it come in, each once."""
    make_session(broker, ["sensors/#"], "ambrosia-edge-server")
    collector = Collector(broker, "relay/#", "collector")
    ps, pc = free_port(), free_port()
    relay = MqttChild(
        tmp_path,
        broker,
        [
            "--subscribe",
            "sensors/#=reading",
            "--listen",
            f"127.0.0.1:{ps}",
            "--peer",
            f"client=127.0.0.1:{pc}",
        ],
        cls="Relay",
        name="server",
    )
    peer = Child(
        f"{APPS}:Client", "client", tmp_path / "client-log", pc, {"server": ps},
        relay.status_dir, {"AMBROSIA_TEST_CALLS": "300"},
    )  # fmt: skip
    publisher = client(broker, "sensors")
    try:
        relay.start()
        publish_all(publisher, [("sensors/a", str(n).encode(), f"a/{n}") for n in range(1, 101)])
        wait_for(lambda: len(collector.payloads("relay/out")) >= 100, 60, "100", relay.output)
        assert relay.proc is not None
        rss = rss_kib(relay.proc.pid)
        broker.stop()
        gone = time.monotonic()
        peer.start()
        wait_for(lambda: (s := peer.status()) and s["done"], 60, "the peer's calls", peer.output)
        assert peer.status()["seen"] == list(range(1, 301))  # type: ignore[index]
        wait_for(lambda: time.monotonic() - gone >= outage, outage + 10, "the outage to last")
        assert relay.proc.poll() is None
        assert rss_kib(relay.proc.pid) - rss < 20 * 1024
        broker.start()
        # (paho's reconnection delays double while the broker is away: up to a minute here)
        wait_for(publisher.is_connected, 30 + outage, "the sensors to reconnect")
        publish_all(publisher, [("sensors/a", str(n).encode(), f"a/{n}") for n in range(101, 201)])
        wait_for(
            lambda: len(collector.ids()) >= 500,
            60 + outage,
            "the 200 readings and 300 calls published",
            relay.output,
        )
        wait_for(
            lambda: (s := relay.status()) and (s["count"], s["calls"]) == (200, 300),
            30,
            "the relay's status",
        )
        assert relay.status()["out_of_order"] == 0  # type: ignore[index]
    finally:
        publisher.disconnect()
        publisher.loop_stop()
        collector.close()
        peer.kill()
        relay.kill()
    ids = {m for m, _, _ in collector.got}
    assert ids == {f"server:{n}" for n in range(1, 501)}
    out = {int(p) for p in collector.payloads("relay/out")}
    calls = {int(p) for p in collector.payloads("relay/peer")}
    assert (out, calls) == (set(range(1, 201)), set(range(1, 301)))


def test_each_payload_kind_and_qos_arrives_with_its_id_and_content_type(
    tmp_path: Path, broker: Broker
) -> None:
    collector = Collector(broker, "kinds/#", qos=2)  # the broker delivers at the lower QoS
    kinds = MqttChild(tmp_path, broker, [], cls="Kinds", name="kinds")
    try:
        kinds.start()
        wait_for(lambda: len(collector.got) >= 3, 30, "three publishes", kinds.output)
    finally:
        collector.close()
        kinds.kill()
    assert sorted(collector.got) == [
        ("kinds:1", "kinds/bytes", b"\x00\x01"),
        ("kinds:2", "kinds/text", "héllo".encode()),
        ("kinds:3", "kinds/json", b'{"a":[1,2.5,null]}'),
    ]
    assert collector.details == {
        "kinds/bytes": (0, False, None),
        "kinds/text": (1, False, "text/plain; charset=utf-8"),
        "kinds/json": (2, False, "application/json"),  # retained, but delivered live
    }
    late = Collector(broker, "kinds/#")  # a subscriber that comes later gets the retained one
    try:
        wait_for(lambda: late.got, 10, "the retained publish")
        assert late.got == [("kinds:3", "kinds/json", b'{"a":[1,2.5,null]}')]
        assert late.details["kinds/json"][1] is True
    finally:
        late.close()
