"""The MQTT bridge's options, declared apart from the bridge so that reading them imports no paho.

``ambrosia-edge --help``, the config loader and a process that does not use MQTT read these
declarations without importing paho-mqtt (a small board starts faster without it); the bridge
itself, :mod:`ambrosia_edge.transports.mqtt`, is imported only when ``--mqtt`` is given.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from .errors import ConfigError
from .kinds import COUNT, SECRET, SIZE, TEXT
from .options import At, Kind, check_fields, option, options

if TYPE_CHECKING:
    from .sources import ImpulseSource

__all__ = [
    "MQTT_PASSWORD_ENV",
    "MQTT_USERNAME_ENV",
    "MqttOptions",
    "Route",
    "mqtt_publisher",
    "mqtt_source",
]

#: Environment variables read when the config gives no username or password.
MQTT_USERNAME_ENV = "AMBROSIA_EDGE_MQTT_USERNAME"
MQTT_PASSWORD_ENV = "AMBROSIA_EDGE_MQTT_PASSWORD"

_MiB = 1 << 20
_METHOD_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class Route:
    """One ``--subscribe FILTER=METHOD[:json]``: where messages of a topic filter go."""

    __slots__ = ("json", "method", "topic_filter")

    def __init__(self, topic_filter: str, method: str, json: bool) -> None:
        self.topic_filter = topic_filter
        self.method = method
        self.json = json

    @classmethod
    def parse(cls, text: str) -> Route:
        """``home/+/temperature=reading`` or ``home/+/temperature=reading:json``.

        Raises ValueError with the reason. The filter is split at its last ``=``, since a
        topic may contain one and a method name may not.
        """
        topic_filter, eq, method = text.rpartition("=")
        if not eq or not topic_filter:
            raise ValueError("expected TOPIC-FILTER=METHOD")
        method, colon, form = method.partition(":")
        if colon and form != "json":
            raise ValueError(f"unknown payload form {form!r} after the method (only :json)")
        if not _METHOD_RE.fullmatch(method):
            raise ValueError(f"{method!r} is not a method name")
        for i, level in enumerate(parts := topic_filter.split("/")):
            if ("#" in level and (level != "#" or i != len(parts) - 1)) or (
                "+" in level and level != "+"
            ):
                raise ValueError(
                    f"bad topic filter {topic_filter!r}: '+' must be a whole level and '#' the "
                    "whole last level"
                )
        return cls(topic_filter, method, bool(colon))

    def __str__(self) -> str:
        return f"{self.topic_filter}={self.method}{':json' if self.json else ''}"


def _url(value: object, at: At) -> str:
    if not isinstance(value, str) or not value.strip():
        raise at.bad("expected mqtt://HOST[:PORT] or mqtts://HOST[:PORT]", value)
    parts = urlsplit(value)
    if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
        raise at.bad("expected mqtt://HOST[:PORT] or mqtts://HOST[:PORT] (TLS)", value)
    try:
        parts.port  # noqa: B018 (reading it checks it)
    except ValueError:
        raise at.bad("the port is not a number from 1 to 65535", value) from None
    if parts.password is not None:
        raise at.bad(
            f"put no password in the URL (it would show in ps and logs); set mqtt_password in "
            f"the config file or {MQTT_PASSWORD_ENV}",
            value,
            show=False,
        )
    return value


def _routes(value: object, at: At) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list | tuple):
        raise at.bad("expected a list of TOPIC-FILTER=METHOD", value)
    for item in items:
        if not isinstance(item, str):
            raise at.bad("expected TOPIC-FILTER=METHOD", item)
        try:
            Route.parse(item)
        except ValueError as exc:
            raise at.bad(str(exc), item) from None
    return tuple(items)


def _qos(value: object, at: At) -> int:
    if isinstance(value, str) and value.strip() in ("0", "1", "2"):
        value = int(value)
    if value not in (0, 1, 2) or isinstance(value, bool):
        raise at.bad("QoS is 0, 1 or 2", value)
    assert isinstance(value, int)
    return value


def _qos_in_code(value: object, at: At) -> int:
    if isinstance(value, str):
        raise at.bad("QoS is the int 0, 1 or 2", value)
    return _qos(value, at)


URL = Kind(_url, _url, metavar="URL")
ROUTES = Kind(
    _routes,
    _routes,
    metavar="FILTER=METHOD",
    merge=lambda old, new: tuple(dict.fromkeys((*old, *new))),
    repeat=True,
)
QOS = Kind(_qos, _qos_in_code, metavar="QOS")


def _protocol(value: object, at: At) -> str:
    if value not in ("5", "3.1.1"):
        raise at.bad("the MQTT protocol version is '5' or '3.1.1'", value)
    assert isinstance(value, str)
    return value


PROTOCOL = Kind(_protocol, _protocol, metavar="VERSION")


@options
class MqttOptions:
    """Which broker feeds the immortal, which topics go to which ``@impulse``, and how; and
    how its publishes (``self.publish``) go out to that broker."""

    mqtt: str | None = option(
        default=None,
        kind=URL,
        flag="--mqtt",
        help="the MQTT broker that feeds @impulse methods (--subscribe) and takes "
        "self.publish(...) (mqtts:// for TLS)",
        example="mqtt://127.0.0.1:1883",
    )
    subscribe: tuple[str, ...] = option(
        default=(),
        kind=ROUTES,
        flag="--subscribe",
        help="send messages of a topic filter to an @impulse method, called as "
        "METHOD(topic, payload); FILTER=METHOD:json passes the decoded JSON value; repeat "
        "for each route",
        example="home/+/temperature=reading",
        toml_example='subscribe = ["home/+/temperature=reading"]',
    )
    mqtt_qos: int = option(
        default=1,
        kind=QOS,
        flag="--mqtt-qos",
        help="QoS of the subscriptions; 1 loses nothing across crashes (see docs/mqtt.md)",
    )
    mqtt_client_id: str | None = option(
        default=None,
        kind=TEXT,
        flag="--mqtt-client-id",
        metavar="ID",
        help="MQTT client id, the key of the broker's session "
        "(default: ambrosia-edge-NAME, stable across restarts)",
        example="ambrosia-edge-sensors",
    )
    mqtt_protocol: str = option(
        default="5",
        kind=PROTOCOL,
        flag="--mqtt-protocol",
        help="MQTT protocol version: 5 or 3.1.1",
    )
    mqtt_username: str | None = option(
        default=None,
        kind=TEXT,
        flag="--mqtt-username",
        metavar="USER",
        help=f"user name for the broker (default: ${MQTT_USERNAME_ENV})",
        example="sensors",
    )
    # No flag: a password on the command line is visible to every user of the machine.
    mqtt_password: str | None = option(
        default=None,
        kind=SECRET,
        repr=False,
        help=f"password for the broker (or ${MQTT_PASSWORD_ENV})",
        toml_example=f"# export {MQTT_PASSWORD_ENV}=...",
    )
    mqtt_ca: str | None = option(
        default=None,
        kind=TEXT,
        flag="--mqtt-ca",
        metavar="FILE",
        help="CA certificates for mqtts:// (default: the system's)",
        example="/etc/ssl/certs/broker-ca.pem",
    )
    mqtt_id_property: str = option(
        default="message-id",
        kind=TEXT,
        flag="--mqtt-id-property",
        metavar="NAME",
        help="MQTT 5 user property carrying the publisher's message id, used to drop a "
        "redelivered message already taken",
    )
    mqtt_id_field: str | None = option(
        default=None,
        kind=TEXT,
        flag="--mqtt-id-field",
        metavar="FIELD",
        help="take the message id from this field of a JSON payload instead",
        example="id",
    )
    mqtt_dedup_window: int = option(
        default=10_000,
        kind=COUNT,
        flag="--mqtt-dedup-window",
        help="how many recent message ids the immortal remembers to drop duplicates",
    )
    mqtt_max_payload: int = option(
        default=1 * _MiB,
        kind=SIZE,
        flag="--mqtt-max-payload",
        help="larger messages are rejected (acknowledged and not fed)",
    )
    mqtt_inflight: int = option(
        default=100,
        kind=COUNT,
        flag="--mqtt-inflight",
        help="messages the broker may send before the first is acknowledged (MQTT 5 Receive "
        "Maximum): bounds memory and what a crash makes the broker send again",
    )
    mqtt_session_expiry: int = option(
        default=7 * 24 * 3600,
        kind=COUNT,
        flag="--mqtt-session-expiry",
        metavar="SECONDS",
        help="how long the broker keeps the session (and queues messages) while the immortal "
        "is down (MQTT 5)",
    )

    mqtt_publish_window: int = option(
        default=1000,
        kind=COUNT,
        flag="--mqtt-publish-window",
        help="publishes handed to the broker ahead of the last logged acknowledgement: at most "
        "this many are sent again, with the same id, after a crash",
    )

    def __post_init__(self) -> None:
        check_fields(self)
        self.check_routes()

    def check_routes(self) -> None:
        """Fields that only make sense together."""
        if self.subscribe and self.mqtt is None:
            raise ConfigError(
                "--subscribe needs a broker; add --mqtt mqtt://HOST:PORT "
                "(for example: --mqtt mqtt://127.0.0.1:1883)"
            )

    def routes(self) -> list[Route]:
        return [Route.parse(text) for text in self.subscribe]


def mqtt_source(settings: Any) -> ImpulseSource:
    """The bridge for ``settings`` (an :class:`MqttOptions`); imports paho-mqtt only now."""
    from .sources import source_factory

    source: ImpulseSource = source_factory("mqtt").from_options(settings)
    return source


def mqtt_publisher(settings: Any) -> Any:
    """The sender of ``self.publish`` outputs to the broker of ``settings``; imports paho-mqtt
    only now (transports/mqtt_out.py)."""
    import importlib

    try:
        module = importlib.import_module("ambrosia_edge.transports.mqtt_out")
    except ImportError as exc:
        raise ConfigError(
            f"MQTT is not available ({exc}); install it with: pip install 'ambrosia-edge[mqtt]'"
        ) from exc
    return module.MqttPublisher.from_options(settings)
