"""``self.publish`` without a broker: what a publish records, where it may be called, and how
the log keeps the broker's acknowledgements so replay regenerates only what it may lack."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import anyio
import pytest
from instances import eventually, settings
from support import free_port

from ambrosia_edge import Immortal, NotAnImpulseError, impulse, rpc
from ambrosia_edge.errors import CodecError
from ambrosia_edge.publishing import (
    JSON_TYPE,
    MQTT_OUT,
    TEXT_TYPE,
    decode_publish,
    encode_publish,
    message_id,
    payload_bytes,
)
from ambrosia_edge.runtime import Runtime


def test_payloads_are_bytes_text_or_json() -> None:
    assert payload_bytes(b"\x00raw") == (b"\x00raw", None)
    assert payload_bytes(bytearray(b"ab")) == (b"ab", None)
    assert payload_bytes("21.5 °C") == ("21.5 °C".encode(), TEXT_TYPE)
    assert payload_bytes({"t": 21.5, "room": "kitchen", "ok": [True, None]}) == (
        b'{"t":21.5,"room":"kitchen","ok":[true,null]}',
        JSON_TYPE,
    )
    assert payload_bytes(3) == (b"3", JSON_TYPE)
    with pytest.raises(CodecError, match="neither bytes, str nor JSON-able"):
        payload_bytes({1, 2})
    with pytest.raises(CodecError, match="JSON-able"):
        payload_bytes(math.nan)


def test_a_publish_is_checked_when_made_and_reads_back() -> None:
    message = encode_publish("home/kitchen/stats", {"n": 1}, 1, True)
    p = decode_publish(message)
    assert (p.topic, p.payload, p.qos, p.retain, p.content_type) == (
        "home/kitchen/stats",
        b'{"n":1}',
        1,
        True,
        JSON_TYPE,
    )
    with pytest.raises(ValueError, match="wildcard"):
        encode_publish("home/+/stats", b"", 1, False)
    with pytest.raises(ValueError, match="empty"):
        encode_publish("", b"", 1, False)
    with pytest.raises(TypeError, match="must be a str"):
        encode_publish(b"topic", b"", 1, False)
    with pytest.raises(ValueError, match="qos is 0, 1 or 2"):
        encode_publish("t", b"", 3, False)
    with pytest.raises(TypeError, match="retain is True or False"):
        encode_publish("t", b"", 1, "yes")
    assert message_id("rooms", 17) == "rooms:17"


class Publisher(Immortal):
    def __init__(self) -> None:
        self.count = 0
        self.errors: list[str] = []

    async def on_first_start(self) -> None:
        self.publish("started", "yes", qos=0)

    @rpc
    def tick(self, n: int) -> None:
        self.count += 1
        self.publish(f"ticks/{n % 2}", {"n": n}, retain=n % 2 == 0)

    @impulse
    def go(self, n: int) -> None:
        for i in range(n):
            self.this.fork.tick(i + 1)

    async def becoming_primary(self) -> None:
        try:
            self.publish("not/here", b"")
        except NotAnImpulseError as exc:
            self.errors.append(str(exc))


def held(runtime: Runtime) -> list[tuple[int, str, bytes]]:
    """The publishes waiting for the broker: (number, topic, payload)."""
    out = runtime.coordinator.output(MQTT_OUT)
    return [
        (number, p.topic, p.payload)
        for _, number, framed in out.peek()
        if framed is not None and (p := decode_publish(framed[4:]))
    ]


@pytest.mark.anyio
async def test_replay_regenerates_publishes_and_drops_what_the_broker_acknowledged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """No broker: publishes wait in memory (with a warning). Acknowledgements given to the
    coordinator are logged in a page of their own when asked, and replay drops exactly those."""
    s = settings("pub", tmp_path / "log", free_port(), {})
    caplog.set_level(logging.WARNING, "ambrosia_edge")
    first = Runtime(Publisher, s)
    async with anyio.create_task_group() as tg:
        await tg.start(first.serve)
        obj: Any = first.immortal
        obj.this.fork.go(10)  # an impulse, from outside the handlers
        await eventually(lambda: obj.count == 10, "ten ticks", 10)
        assert obj.errors and "publish() is an output of deterministic code" in obj.errors[0]
        numbers = [n for n, _, _ in held(first)]
        assert numbers == list(range(1, 12))  # "started", then ten ticks
        assert held(first)[1] == (2, "ticks/1", b'{"n":1}')
        # the broker acknowledged the first four: logged in a page with no input
        ran = first.coordinator.stats["pages"]  # (a page runs once it is durable)
        first.coordinator.acknowledged(MQTT_OUT, 4)
        first.coordinator.log_trims()
        await eventually(
            lambda: first.coordinator.stats["pages"] > ran, "a durable page for the marks", 10
        )
        # then three more, which only the memory knows when the process dies
        first.coordinator.acknowledged(MQTT_OUT, 7)
        tg.cancel_scope.cancel()
    assert "no MQTT broker is configured" in caplog.text

    again = Runtime(Publisher, s)
    again.recover()
    again.store.close()
    assert [n for n, _, _ in held(again)] == list(range(5, 12))
    assert held(again)[0] == (5, "ticks/0", b'{"n":4}')  # the same bytes, the same number
