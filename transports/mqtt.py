"""MQTT messages as impulses: the ``mqtt`` source, on paho-mqtt 2.x (see docs/mqtt.md).

What a broker hands over must never be lost, so a QoS 1 message is acknowledged (PUBACK) only
once the impulse it became is durable in the log, on a session the broker keeps while the
immortal is down (MQTT 5: ``clean_start=False`` on every connect and a session expiry interval;
3.1.1: ``clean_session=False``). A crash of the immortal before the PUBACK makes the broker
deliver the message again; when the publisher gave it an id (the user property ``message-id``,
or a JSON field), the executor drops the copy already logged (ambrosia_edge/once.py).

How many executed messages a crash can make the broker deliver again is bounded by the source
itself, not left to the broker's Receive Maximum (mqtt_window.py says why).

paho runs its network loop in a thread of its own. Messages cross to the event loop in batches,
each as a small record (``Delivery``): the paho thread appends to a deque and, only when the
deque was empty and the loop has room for more, writes a byte to a socket pair the loop waits
on, so a burst costs one wake-up and the paho thread never waits for the loop. Acknowledgements
and barriers go the other way through ``client.ack`` and ``client.unsubscribe``, which paho
guards with its own locks.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import socket
import threading
from collections import deque
from typing import Any, NamedTuple
from urllib.parse import parse_qs, unquote, urlsplit

import anyio
import anyio.lowlevel
import anyio.to_thread
import paho.mqtt.client as paho
from anyio.abc import TaskStatus
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from ambrosia_edge.errors import ConfigError
from ambrosia_edge.mqtt_options import MQTT_PASSWORD_ENV, MQTT_USERNAME_ENV, MqttOptions
from ambrosia_edge.once import ONCE
from ambrosia_edge.sources import ImpulseFeed

from .mqtt_window import BARRIER_FILTER, InflightWindow

log = logging.getLogger("ambrosia_edge")

__all__ = ["MqttSource"]


class Delivery(NamedTuple):
    """A message as the bridge keeps it until it is fed.

    paho's message object is dropped in the callback: each holds a ``Condition`` and a
    ``Properties`` object, and a broker that sends a whole backlog at once (mosquitto 2.0.11)
    left tens of thousands of them waiting, which made the cyclic garbage collector a third of
    the process's work.
    """

    #: the connection it came on (``on_connect`` counts them)
    generation: int
    topic: str
    payload: bytes
    qos: int
    mid: int
    dup: bool
    #: the publisher's id from the user property, when ids are taken from there
    key: str | None


class MqttSource:
    """Feeds ``@impulse`` methods from the subscriptions of one MQTT broker."""

    def __init__(self, options: MqttOptions) -> None:
        if options.mqtt is None:
            raise ConfigError("the MQTT source needs a broker URL (--mqtt mqtt://HOST:PORT)")
        if not options.subscribe:
            raise ConfigError(
                "--mqtt is given but nothing is subscribed; add --subscribe FILTER=METHOD, "
                "for example: --subscribe 'home/+/temperature=reading'"
            )
        self.options = options
        self.routes = options.routes()
        #: messages taken and fed, rejected (bad payload, no such @impulse, too large)
        self.fed = 0
        self.rejected = 0
        self.redelivered = 0
        self.acknowledged = 0
        #: received on a connection that was lost, left for the broker to deliver again
        self.left_to_broker = 0
        self.connected = False

    @classmethod
    def from_options(cls, options: Any) -> MqttSource:
        """From settings (anything with the fields of MqttOptions, such as Settings)."""
        fields = {name: getattr(options, name) for name in MqttOptions.__dataclass_fields__}
        return cls(MqttOptions(**fields))

    @classmethod
    def from_url(cls, url: str) -> MqttSource:
        """``mqtt://HOST:PORT?subscribe=FILTER%3DMETHOD&qos=1``, for ``impulse_sources``."""
        parts = urlsplit(url)
        query = parse_qs(parts.query)
        known = {"subscribe", "qos", "client_id", "protocol"}
        unknown = sorted(set(query) - known)
        if unknown:
            raise ConfigError(
                f"MQTT source {url!r}: unknown parameter {unknown[0]!r} "
                f"(known: {', '.join(sorted(known))})"
            )
        broker = parts._replace(query="", fragment="").geturl()
        try:
            return cls(
                MqttOptions(
                    mqtt=broker,
                    subscribe=tuple(unquote(s) for s in query.get("subscribe", [])),
                    mqtt_qos=int(query.get("qos", ["1"])[-1]),
                    mqtt_client_id=query.get("client_id", [None])[-1],
                    mqtt_protocol=query.get("protocol", ["5"])[-1],
                )
            )
        except ValueError as exc:
            raise ConfigError(f"MQTT source {url!r}: {exc}") from None

    # --- the paho side -----------------------------------------------------------------------

    async def run(
        self, feed: ImpulseFeed, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        o = self.options
        host, port = broker_address(o)
        client_id = o.mqtt_client_id or f"ambrosia-edge-{feed.immortal}"
        client = paho_client(o, client_id, manual_ack=True)
        inbox: deque[Delivery] = deque()
        #: barriers answered: (generation, packet id)
        answered: deque[tuple[int, int]] = deque()
        lock = threading.Lock()
        # the paho thread rings by writing a byte, which never blocks it (a call into the
        # event loop would, once per burst)
        bell, ringer = socket.socketpair()
        bell.setblocking(False)
        ringer.setblocking(False)
        state: dict[str, Any] = {
            "generation": 0,
            "session_present": False,
            "stopped": False,
            # the loop wants messages (its window has room): only then does one ring the bell,
            # so a full window leaves the paho thread reading alone while a backlog floods in
            "hungry": True,
        }

        def ring() -> None:
            with contextlib.suppress(OSError):  # full: a ring is pending; closed: stopped
                ringer.send(b"\0")

        def on_connect(c: paho.Client, _u: Any, flags: Any, reason: Any, _p: Any) -> None:
            if reason.is_failure:
                log.warning(
                    "%s: MQTT broker %s refused the connection: %s", feed.immortal, o.mqtt, reason
                )
                return
            with lock:
                state["generation"] += 1
                state["session_present"] = bool(flags.session_present)
            self.connected = True
            log.info(
                "%s: connected to MQTT broker %s as %s (session present: %s; so far fed %d, "
                "rejected %d, redelivered %d)",
                feed.immortal,
                o.mqtt,
                client_id,
                flags.session_present,
                self.fed,
                self.rejected,
                self.redelivered,
            )
            # again on every connect: the session may predate a route added since
            c.subscribe([(route.topic_filter, o.mqtt_qos) for route in self.routes])
            ring()  # the loop learns of the new connection even if nothing arrives

        def on_disconnect(_c: paho.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
            self.connected = False
            if not state["stopped"]:
                log.warning(
                    "%s: lost MQTT broker %s (%s); reconnecting", feed.immortal, o.mqtt, reason
                )

        def on_message(_c: paho.Client, _u: Any, message: paho.MQTTMessage) -> None:
            key = self._property_id(message)
            topic, payload = message.topic, message.payload
            if not isinstance(payload, bytes):  # paho's type allows a bytearray
                payload = bytes(payload)
            with lock:
                wake = not inbox and state["hungry"]
                inbox.append(
                    Delivery(
                        state["generation"], topic, payload, message.qos, message.mid,
                        bool(message.dup), key,
                    )
                )  # fmt: skip
            if wake and not state["stopped"]:
                ring()

        def on_unsubscribe(_c: paho.Client, _u: Any, mid: int, _r: Any, _p: Any) -> None:
            with lock:
                first = not answered
                answered.append((state["generation"], mid))
            if first and not state["stopped"]:
                ring()

        client.on_connect = on_connect
        client.on_disconnect = on_disconnect
        client.on_message = on_message
        client.on_unsubscribe = on_unsubscribe
        properties = None
        if o.mqtt_protocol == "5":
            properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            properties.SessionExpiryInterval = o.mqtt_session_expiry
            properties.ReceiveMaximum = min(o.mqtt_inflight, 65535)
            client.connect_async(host, port, clean_start=False, properties=properties)
        else:
            client.connect_async(host, port)
        client.loop_start()
        task_status.started()
        window: InflightWindow[Delivery] = InflightWindow(o.mqtt_inflight)
        current = 0
        try:
            while True:
                with lock:
                    state["hungry"] = hungry = window.has_room() or not window.held
                    waiting = bool(inbox) and hungry
                if not waiting:
                    await anyio.wait_readable(bell)
                with contextlib.suppress(BlockingIOError):
                    bell.recv(4096)
                with lock:
                    batch = list(inbox)
                    inbox.clear()
                    barriers = list(answered)
                    answered.clear()
                    generation, present = state["generation"], state["session_present"]
                if generation != current:
                    current = generation
                    window.new_connection()
                for barrier_generation, mid in barriers:
                    if barrier_generation == current:
                        window.confirmed(mid)
                window.held.extend(batch)
                arrived = sum(1 for d in batch if d.generation == current and d.qos > 0)
                if window.receive(arrived):
                    log.warning(
                        "%s: MQTT broker %s sent more than --mqtt-inflight (%d) messages before "
                        "the first was acknowledged (mosquitto before 2.0.13 does); the bridge "
                        "now bounds what a crash can repeat itself, at some cost in throughput",
                        feed.immortal,
                        o.mqtt,
                        window.size,
                    )
                self._feed_held(feed, client, window, current, present, state)
                self._barrier(client, window)
                await anyio.lowlevel.checkpoint()
        finally:
            state["stopped"] = True
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(_stop, client)
            bell.close()
            ringer.close()

    def _feed_held(
        self,
        feed: ImpulseFeed,
        client: paho.Client,
        window: InflightWindow[Delivery],
        current: int,
        present: bool,
        state: dict[str, Any],
    ) -> None:
        """Feed the waiting messages, in order, while the window has room."""
        held = window.held
        while held:
            delivery = held[0]
            if delivery.generation != current and delivery.qos > 0:
                if present:
                    # unacknowledged on a lost connection of a session that lives on: the broker
                    # delivers it again on this one, so feeding this copy would run it twice
                    held.popleft()
                    self.left_to_broker += 1
                    continue
            elif delivery.qos > 0 and not window.has_room():
                return
            held.popleft()
            self._take(feed, client, delivery, state, window, current)

    def _take(
        self,
        feed: ImpulseFeed,
        client: paho.Client,
        delivery: Delivery,
        state: dict[str, Any],
        window: InflightWindow[Delivery],
        current: int,
    ) -> None:
        """Feed one message to its route, and acknowledge it once its impulse is durable."""
        generation, topic, payload, qos, mid, dup, key = delivery
        if dup:
            self.redelivered += 1

        def ack(_receipt: object = None, *, counted: bool = False) -> None:
            # an ack of an older connection would name a packet id the broker has reassigned;
            # the broker redelivers that message instead, and its id makes the copy harmless
            if qos > 0 and state["generation"] == generation and not state["stopped"]:
                client.ack(mid, qos)
                self.acknowledged += 1
                window.acknowledge(fed=counted)
                if counted:
                    self._barrier(client, window)

        route = next(
            (r for r in self.routes if paho.topic_matches_sub(r.topic_filter, topic)), None
        )
        problem = None
        value: object = payload
        if route is None:
            problem = "no route matches it"
        elif len(payload) > self.options.mqtt_max_payload:
            size, limit = len(payload), self.options.mqtt_max_payload
            problem = f"its payload of {size} bytes is over --mqtt-max-payload ({limit})"
        elif route.json:
            try:
                value = json.loads(payload)
            except ValueError as exc:
                problem = f"its payload is not JSON ({exc}) and route {route} wants JSON"
        if problem is None:
            assert route is not None
            if self.options.mqtt_id_field is not None:
                key = self._field_id(value)
            kwargs = {ONCE: [key, self.options.mqtt_dedup_window]} if key is not None else {}
            try:
                receipt = feed.send(route.method, topic, value, **kwargs)
            except Exception as exc:
                problem = str(exc)
            else:
                self.fed += 1
                counted = qos > 0 and generation == current
                if counted:
                    window.fed()
                receipt.add_done_callback(functools.partial(ack, counted=counted))
                return
        self.rejected += 1
        log.error(
            "%s: MQTT message on %r rejected, acknowledged and dropped: %s",
            feed.immortal,
            topic,
            problem,
        )
        ack()

    def _barrier(self, client: paho.Client, window: InflightWindow[Delivery]) -> None:
        if window.needs_barrier() and self.connected:
            rc, mid = client.unsubscribe(BARRIER_FILTER)
            if rc == paho.MQTT_ERR_SUCCESS and mid is not None:
                window.barrier_sent(mid)

    def _field_id(self, value: object) -> str | None:
        """The publisher's id from a field of the JSON payload (``--mqtt-id-field``)."""
        field = self.options.mqtt_id_field
        if isinstance(value, dict) and field in value:
            return str(value[field])
        return None

    def _property_id(self, message: paho.MQTTMessage) -> str | None:
        """The publisher's id from the user property (``--mqtt-id-property``), unless ids are
        taken from a JSON field instead."""
        if self.options.mqtt_id_field is not None:
            return None
        props = getattr(message, "properties", None)
        for name, text in getattr(props, "UserProperty", None) or ():
            if name == self.options.mqtt_id_property:
                return str(text)
        return None

    def __repr__(self) -> str:
        routes = ", ".join(str(r) for r in self.routes)
        return f"<MQTT source {self.options.mqtt} [{routes}]>"


def paho_client(o: MqttOptions, client_id: str, *, manual_ack: bool) -> paho.Client:
    """A paho client for the broker of ``o``: protocol, credentials, TLS, reconnect delays.

    MQTT 3.1.1 sessions are kept (``clean_session=False``) when messages are taken in
    (``manual_ack``); in MQTT 5 that is chosen on each connect (``clean_start``).
    """
    parts = urlsplit(o.mqtt or "")
    v5 = o.mqtt_protocol == "5"
    client = paho.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=paho.MQTTv5 if v5 else paho.MQTTv311,
        clean_session=None if v5 else not manual_ack,
        manual_ack=manual_ack,
    )
    username = o.mqtt_username or (unquote(parts.username) if parts.username else None)
    username = username or os.environ.get(MQTT_USERNAME_ENV)
    password = o.mqtt_password or os.environ.get(MQTT_PASSWORD_ENV)
    if username or password:
        client.username_pw_set(username, password)
    if parts.scheme == "mqtts":
        client.tls_set(ca_certs=o.mqtt_ca)
    client.reconnect_delay_set(min_delay=1, max_delay=30)
    client.on_socket_open = _no_delay
    return client


def _no_delay(_client: paho.Client, _userdata: Any, sock: Any) -> None:
    """Send small packets at once (paho leaves Nagle's algorithm on).

    Acknowledgements and barriers are a few bytes each: with Nagle on, one written while an
    earlier one waits for the broker's TCP ACK waits too, up to the broker's delayed-ACK timer
    (40 ms on Linux), and every barrier took that long.
    """
    with contextlib.suppress(OSError, AttributeError):  # not a TCP socket: nothing to do
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def broker_address(o: MqttOptions) -> tuple[str, int]:
    parts = urlsplit(o.mqtt or "")
    return parts.hostname or "127.0.0.1", parts.port or (8883 if parts.scheme == "mqtts" else 1883)


def stop_client(client: paho.Client) -> None:
    """Disconnect and stop paho's thread (blocking: run it in a worker thread)."""
    _stop(client)


def _stop(client: paho.Client) -> None:
    with contextlib.suppress(Exception):  # not connected: nothing to say goodbye to
        client.disconnect()
    client.loop_stop()
