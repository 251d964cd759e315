"""MQTT in, end to end: a real mosquitto, a real ``ambrosia-edge run`` child, SIGKILL.

The broker is started by a fixture (mqttbroker.py) with persistence on. Exactly-once is judged
on the immortal's final state: the count of readings executed and their order per topic.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import wait_for

from ambrosia_edge.config import load_settings
from ambrosia_edge.errors import ConfigError

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


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    yield from running_broker(tmp_path)


MESSAGES = int(os.environ.get("AMBROSIA_TEST_MQTT_MESSAGES", "2000"))
TOPICS = 4
RESTARTS = [int(x) for x in os.environ.get("AMBROSIA_TEST_MQTT_RESTARTS", "2,5").split(",") if x]
KILLS = int(os.environ.get("AMBROSIA_TEST_MQTT_KILLS", "6"))


#: QoS 1 messages the broker may send the immortal before it acknowledges the first
INFLIGHT = 20


@pytest.mark.parametrize("with_ids", [True, False], ids=["publisher-ids", "no-ids"])
def test_qos1_across_immortal_kills_and_broker_restarts(
    tmp_path: Path, broker: Broker, with_ids: bool
) -> None:
    """With publisher ids, every message executed exactly once, in order per topic; without,
    at least once, and at most the in-flight window again per crash of either side."""
    make_session(broker, ["sensors/#"])
    sink = MqttChild(
        tmp_path, broker, ["--subscribe", "sensors/#=reading", "--mqtt-inflight", str(INFLIGHT)]
    )
    sink.start()
    publisher = client(broker, "publisher")
    numbered = [(f"sensors/{i % TOPICS}", i // TOPICS + 1) for i in range(MESSAGES)]
    items = [(t, str(n).encode(), f"{t}/{n}" if with_ids else None) for t, n in numbered]
    chunks = 8
    size = -(-MESSAGES // chunks)
    kills = restarts = 0
    try:
        for c in range(chunks):
            publish_all(publisher, items[c * size : (c + 1) * size])
            if c in RESTARTS:  # the broker goes down with messages queued for the immortal
                broker.stop()
                broker.start()
                restarts += 1
                wait_for(publisher.is_connected, 30, "the publisher to reconnect")
            if c < KILLS:  # killed while it takes messages in
                target = min(MESSAGES, (c + 1) * size) - size // 2
                wait_for(
                    lambda t=target: (s := sink.status()) and s["count"] >= t,
                    60,
                    "progress",
                    sink.output,
                )
                sink.kill()
                kills += 1
                sink.start()
        wait_for(
            lambda: (s := sink.status()) and s["count"] >= MESSAGES,
            120,
            f"all {MESSAGES} readings",
            sink.output,
        )
        # a redelivery still in flight would show up as a count above MESSAGES: give it time to
        # land by waiting for one more message behind everything else
        publish_all(publisher, [("sensors/fence", b"1", "fence")])
        wait_for(lambda: (s := sink.status()) and "sensors/fence" in s["last"], 60, "the fence")
        status = sink.status()
        assert status is not None
        assert kills >= min(KILLS, 5) and restarts >= min(len(RESTARTS), 2)
        duplicates = status["count"] - (MESSAGES + 1)
        print(
            f"{MESSAGES} messages, {kills} kills, {restarts} broker restarts: "
            f"{duplicates} duplicates"
        )
        if with_ids:
            assert duplicates == 0, sink.output()[-3000:]
            assert status["out_of_order"] == 0
        else:
            # at least once: every message is there (the per-topic maxima below), some twice,
            # and no more than the window for each time the immortal or the broker went down
            assert 0 <= duplicates <= (kills + restarts) * INFLIGHT, sink.output()[-3000:]
        assert status["last"] == {
            **{
                f"sensors/{t}": len([1 for x, _ in numbered if x == f"sensors/{t}"])
                for t in range(TOPICS)
            },
            "sensors/fence": 1,
        }
    finally:
        publisher.disconnect()
        publisher.loop_stop()
        sink.kill()


def test_bad_input_is_acknowledged_and_counted_not_fatal(tmp_path: Path, broker: Broker) -> None:
    make_session(broker, ["json/#", "rpc/#", "nothing/#", "ok/#"])
    sink = MqttChild(
        tmp_path,
        broker,
        [
            "--subscribe", "json/#=record:json",
            "--subscribe", "rpc/#=not_an_impulse",
            "--subscribe", "nothing/#=no_such_method",
            "--subscribe", "ok/#=reading",
            "--mqtt-max-payload", "100",
        ],
    )  # fmt: skip
    sink.start()
    publisher = client(broker, "publisher")
    try:
        publish_all(
            publisher,
            [
                ("json/a", b"{not json", "1"),
                ("json/a", b'{"t": 21.5}', "2"),
                ("rpc/a", b"x", "3"),
                ("nothing/a", b"x", "4"),
                ("ok/a", b"1" * 200, "5"),
                ("ok/a", b"1", "6"),
            ],
        )
        wait_for(
            lambda: (s := sink.status()) and s["count"] == 1, 60, "the good reading", sink.output
        )
        status = sink.status()
        assert status is not None
        assert status["values"] == [["json/a", {"t": 21.5}]]
        out = sink.output()
        assert "is not JSON" in out
        assert "not an @impulse" in out
        assert "no @impulse method 'no_such_method'" in out
        assert "over --mqtt-max-payload" in out
        # all were acknowledged: after a restart nothing is redelivered
        sink.kill()
        sink.start()
        publish_all(publisher, [("ok/a", b"2", "7")])
        wait_for(lambda: (s := sink.status()) and s["count"] == 2, 60, "the next reading")
        assert sink.status()["values"] == [["json/a", {"t": 21.5}]]  # type: ignore[index]
        assert sink.output().count("is not JSON") == 1
    finally:
        publisher.disconnect()
        publisher.loop_stop()
        sink.kill()


def test_settings_from_flags_and_file(tmp_path: Path) -> None:
    config = tmp_path / "sink.toml"
    config.write_text(
        'target = "sink.py:Sink"\nmqtt = "mqtts://broker.example:8883"\n'
        'subscribe = ["home/+/temperature=reading"]\nmqtt_password = "pw"\n'
    )
    s = load_settings(config, subscribe=["home/+/humidity=humid:json"], mqtt_qos="0")
    assert s.mqtt == "mqtts://broker.example:8883"
    assert s.subscribe == ("home/+/temperature=reading", "home/+/humidity=humid:json")
    assert s.mqtt_qos == 0
    assert "pw" not in repr(s)
    with pytest.raises(ConfigError, match="--subscribe: bad topic filter"):
        load_settings(None, target="a.py:A", mqtt="mqtt://h", subscribe=["home/#/x=reading"])
    with pytest.raises(ConfigError, match="--subscribe needs a broker"):
        load_settings(None, target="a.py:A", subscribe=["a=reading"])
    with pytest.raises(ConfigError, match="--mqtt: expected mqtt://"):
        load_settings(None, target="a.py:A", mqtt="http://h")
    with pytest.raises(ConfigError, match="--mqtt-qos: QoS is 0, 1 or 2"):
        load_settings(None, target="a.py:A", mqtt_qos="3")


def test_paho_is_not_imported_without_mqtt() -> None:
    code = (
        "import sys; from ambrosia_edge.config import load_settings; "
        "from ambrosia_edge import runtime; "
        "assert not [m for m in sys.modules if m.startswith('paho')], 'paho imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_broker_down_at_start_then_back(tmp_path: Path, broker: Broker) -> None:
    """The immortal runs without its broker, and takes the queued messages once it is back."""
    make_session(broker, ["sensors/#"])
    publisher = client(broker, "publisher")
    try:
        publish_all(publisher, [("sensors/a", str(n).encode(), f"a/{n}") for n in (1, 2, 3)])
        broker.stop()
        sink = MqttChild(tmp_path, broker, ["--subscribe", "sensors/#=reading"])
        sink.start()
        try:
            wait_for(sink.status, 30, "the immortal to run without its broker", sink.output)
            assert sink.status()["count"] == 0  # type: ignore[index]
            broker.start()
            wait_for(publisher.is_connected, 30, "the publisher to reconnect")
            publish_all(publisher, [("sensors/a", b"4", "a/4")])
            wait_for(
                lambda: (s := sink.status()) and s["count"] == 4,
                60,
                "the queued readings",
                sink.output,
            )
            assert sink.status()["out_of_order"] == 0  # type: ignore[index]
        finally:
            sink.kill()
    finally:
        publisher.disconnect()
        publisher.loop_stop()


def test_mqtt_311_with_ids_in_json_exactly_once_across_kills(
    tmp_path: Path, broker: Broker
) -> None:
    """MQTT 3.1.1 has no user properties: the id comes from a JSON field; the session persists
    with clean_session=False."""
    c = paho.Client(CallbackAPIVersion.VERSION2, client_id="ambrosia-edge-sink",
                    protocol=paho.MQTTv311, clean_session=False)  # fmt: skip
    c.connect("127.0.0.1", broker.port)
    c.loop_start()
    info = c.subscribe("json/#", 1)
    wait_for(lambda: c.is_connected() and info, 10, "the subscription")
    c.disconnect()
    c.loop_stop()
    sink = MqttChild(
        tmp_path,
        broker,
        ["--mqtt-protocol", "3.1.1", "--subscribe", "json/#=record:json", "--mqtt-id-field", "id"],
    )
    sink.start()
    publisher = client(broker, "publisher")
    total = 400
    try:
        for part in range(4):
            numbers = range(part * 100 + 1, part * 100 + 101)
            publish_all(
                publisher,
                [("json/t", json.dumps({"id": n, "n": n}).encode(), None) for n in numbers],
            )
            if part < 3:
                wait_for(
                    lambda p=part: (s := sink.status()) and len(s["values"]) >= p * 100 + 50,
                    60,
                    "progress",
                    sink.output,
                )
                sink.kill()
                sink.start()
        wait_for(lambda: (s := sink.status()) and len(s["values"]) >= total, 60, "all", sink.output)
        publish_all(publisher, [("json/t", b'{"id": "fence", "n": 0}', None)])
        wait_for(lambda: (s := sink.status()) and len(s["values"]) > total, 60, "the fence")
        values = sink.status()["values"]  # type: ignore[index]
        assert [v["n"] for _, v in values] == [*range(1, total + 1), 0]
    finally:
        publisher.disconnect()
        publisher.loop_stop()
        sink.kill()
