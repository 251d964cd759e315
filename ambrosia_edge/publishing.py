"""MQTT out as an output: what ``self.publish`` records, and what the publisher needs from the
coordinator (docs/mqtt.md, "MQTT out").

A publish is an output like a call to another immortal, so it gets the same treatment (paper
§3.3, §4.2): handlers run only once the page holding their input is durable, so a publish
never goes out for an input a crash could lose; it waits in an output buffer, here the one of
the destination :data:`MQTT_OUT`, which no immortal can be named (a name has no colon); replay
regenerates it with the same sequence number, its replayable number on that buffer; and the
watermark of what the broker acknowledged (PUBACK) is logged the way a peer's ACK is, as the
buffer's trim watermark in the next page, so replay drops what the broker already has.

The id of a publish is the immortal's name and that number (``sensors:42``), sent in the MQTT 5
user property ``message-id``: the one copy a crash can repeat carries the same id, and an MQTT
in source of another immortal drops it by that id (once.py).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple, Protocol

from . import messages
from .errors import CodecError

if TYPE_CHECKING:
    from .outputs import Output
    from .wakeup import Wakeup

__all__ = [
    "MQTT_OUT",
    "Outlet",
    "Publish",
    "check_topic",
    "decode_publish",
    "encode_publish",
    "message_id",
    "payload_bytes",
]

#: The destination of publishes in the coordinator's output buffers; not a valid immortal name.
MQTT_OUT = "mqtt:"
#: The method name a publish is recorded under (what ``replay --show sends`` prints).
_METHOD = "publish"

#: Content types set on a publish (MQTT 5), by what the handler gave.
JSON_TYPE = "application/json"
TEXT_TYPE = "text/plain; charset=utf-8"


class Publish(NamedTuple):
    """One publish as the publisher sends it."""

    topic: str
    payload: bytes
    qos: int
    retain: bool
    #: "application/json", "text/plain; charset=utf-8", or None for bytes
    content_type: str | None


def message_id(immortal: str, number: int) -> str:
    """The stable id of publish ``number`` of ``immortal``: the same after any crash."""
    return f"{immortal}:{number}"


def check_topic(topic: object) -> str:
    """A topic name a publish may use (MQTT 3.1.1 §4.7: no wildcards, not empty)."""
    if not isinstance(topic, str):
        raise TypeError(f"publish(): the topic must be a str, not {type(topic).__name__}")
    if not topic:
        raise ValueError("publish(): the topic is empty")
    if "+" in topic or "#" in topic:
        raise ValueError(
            f"publish(): topic {topic!r} contains a wildcard ('+' or '#'); those are for "
            "subscriptions, a publish names one topic"
        )
    if "\0" in topic or len(topic.encode()) > 65535:
        raise ValueError(f"publish(): topic {topic[:80]!r} has a NUL or is over 65,535 bytes")
    return topic


def payload_bytes(payload: object) -> tuple[bytes, str | None]:
    """What goes on the wire for ``payload``, and its content type.

    bytes (or bytearray, memoryview) as they are; a str as UTF-8; anything else as compact
    JSON (``json.dumps`` of dicts, lists, numbers, booleans, None), which is deterministic, so
    replay regenerates the same bytes. NaN and infinities are refused: JSON has none.
    """
    if isinstance(payload, bytes):
        return payload, None
    if isinstance(payload, bytearray | memoryview):
        return bytes(payload), None
    if isinstance(payload, str):
        return payload.encode(), TEXT_TYPE
    try:
        text = json.dumps(payload, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise CodecError(
            f"publish(): a payload of type {type(payload).__name__} is neither bytes, str nor "
            f"JSON-able ({exc}); encode it yourself and pass bytes"
        ) from None
    return text.encode(), JSON_TYPE


def encode_publish(topic: object, payload: object, qos: object, retain: object) -> bytes:
    """The output message of ``self.publish(topic, payload, qos, retain)``, checked."""
    check_topic(topic)
    if qos not in (0, 1, 2) or isinstance(qos, bool):
        raise ValueError(f"publish(): qos is 0, 1 or 2, not {qos!r}")
    if not isinstance(retain, bool):
        raise TypeError(f"publish(): retain is True or False, not {retain!r}")
    data, content_type = payload_bytes(payload)
    return messages.call(_METHOD, (topic, data, qos, retain, content_type), {}, impulse=False)


def decode_publish(message: bytes) -> Publish:
    """The publish an output message holds (``encode_publish`` read back)."""
    kind, _, fields = messages.decode(message)
    if kind is not messages.Kind.CALL or fields[0] != _METHOD or len(fields[1]) != 5:
        raise CodecError(f"not a publish: {fields!r:.200}")
    topic, payload, qos, retain, content_type = fields[1]
    return Publish(str(topic), bytes(payload), int(qos), bool(retain), content_type)


class Outlet(Protocol):
    """What the publisher needs from the coordinator (coordinator.py implements it)."""

    name: str
    #: told the trim watermarks of each page that carries some, once it is durable
    on_trims_durable: Callable[[dict[str, int]], None] | None

    def output(self, destination: str) -> Output: ...

    def wakeup(self, destination: str) -> Wakeup:
        """Set whenever a page run sends something to ``destination``."""

    def acknowledged(self, destination: str, replayable: int) -> None:
        """The receiver holds everything up to ``replayable``: trim it, and log the mark with
        the next page."""

    def log_trims(self) -> None:
        """Write the trim watermarks waiting for a page now, in a page of their own if no
        input comes to carry them."""
