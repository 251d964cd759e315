"""MQTT out: the publisher that sends ``self.publish`` outputs to the broker (docs/mqtt.md).

The publishes wait in the coordinator's output buffer for :data:`MQTT_OUT`, numbered by their
replayable numbers (publishing.py). This task runs on the primary only, after recovery, and
hands them to paho in order, at most ``--mqtt-publish-window`` beyond the last acknowledgement
the log holds; each PUBACK (for QoS 0: the write to the socket) moves the acknowledged mark,
which trims the buffer and rides to the log with the next page, as a peer's ACK does. No page
is written for it alone unless the window is full or the mark has waited a second, so
publishing costs no fsync of its own under load.

What a crash can repeat is therefore what was handed to paho and not yet logged as
acknowledged: at most the window. Each copy carries the same ``message-id`` user property.

While the broker is away nothing is handed over: publishes wait in the buffer, whose bound
(``--buffer-bytes``) makes the handlers that publish wait too, so memory stays bounded and
nothing is dropped. paho resends what it had in flight (QoS 1 and 2) when it reconnects.
"""

from __future__ import annotations

import contextlib
import logging
import math
import socket
import threading
import time
from collections import deque
from typing import Any

import anyio
import anyio.to_thread
import paho.mqtt.client as paho
from anyio.abc import TaskStatus
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from ambrosia_edge.errors import CodecError, ConfigError
from ambrosia_edge.mqtt_options import MqttOptions
from ambrosia_edge.publishing import MQTT_OUT, Outlet, decode_publish, message_id

from .mqtt import broker_address, paho_client, stop_client

log = logging.getLogger("ambrosia_edge")

__all__ = ["MqttPublisher"]

#: An acknowledgement waits this long for a page to carry it before one is written for it.
LOG_ACKS_AFTER = 1.0
#: Not a packet id (paho's start at 1): the mark of a new connection among the acknowledgements.
_CONNECTED = 0
#: paho numbers packets up to 65,535 and then wraps: stay well below
_MAX_WINDOW = 50_000
#: Bytes handed to paho at most per round (its own queue is not ours to fill).
_ROUND_BYTES = 1 << 20


class MqttPublisher:
    """Sends the immortal's publishes to the broker of ``--mqtt``."""

    def __init__(self, options: MqttOptions) -> None:
        if options.mqtt is None:
            raise ConfigError("MQTT out needs a broker URL (--mqtt mqtt://HOST:PORT)")
        self.options = options
        #: handed to paho, acknowledged (PUBACK, or written for QoS 0), refused by the broker
        self.published = 0
        self.acknowledged = 0
        self.refused = 0
        self.connected = False
        #: the highest publish number the log holds as acknowledged
        self.logged = 0

    @classmethod
    def from_options(cls, options: Any) -> MqttPublisher:
        """From settings (anything with the fields of MqttOptions, such as Settings)."""
        fields = {name: getattr(options, name) for name in MqttOptions.__dataclass_fields__}
        return cls(MqttOptions(**fields))

    async def run(
        self, outlet: Outlet, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        o = self.options
        out = outlet.output(MQTT_OUT)
        if out.rebase_pending:
            # after replay the buffer holds what the broker may not have, numbered from the
            # first after the logged mark: totals are made the replayable numbers
            first = next((r for _, r, _ in out.peek()), out.next_replayable)
            out.rebase(first - 1, first - 1)
        self.logged = acked = handed = out.sent_total
        window = min(o.mqtt_publish_window, _MAX_WINDOW)
        v5 = o.mqtt_protocol == "5"
        name = outlet.name
        client_id = f"{o.mqtt_client_id or f'ambrosia-edge-{name}'}-out"
        client = paho_client(o, client_id, manual_ack=False)
        client.max_inflight_messages_set(min(window, 65535))
        client.max_queued_messages_set(0)
        numbers: dict[int, int] = {}  # paho's mid -> publish number, while in flight
        #: QoS 0 publishes paho has not written yet, by mid: paho forgets them when the
        #: connection breaks (it keeps only QoS 1 and 2), so they are handed over again
        unwritten: dict[int, tuple[int, Any, Any]] = {}
        done: set[int] = set()  # acknowledged numbers above `acked`
        events: deque[tuple[int, Any]] = deque()  # (mid, reason) from paho's thread
        lock = threading.Lock()
        bell, ringer = socket.socketpair()
        bell.setblocking(False)
        ringer.setblocking(False)
        stopped = False
        wake = outlet.wakeup(MQTT_OUT)

        def ring() -> None:
            if not stopped:
                with contextlib.suppress(OSError):  # full: a ring is pending; closed: stopped
                    ringer.send(b"\0")

        def on_connect(c: paho.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
            if reason.is_failure:
                log.warning("%s: MQTT broker %s refused to publish: %s", name, o.mqtt, reason)
                return
            self.connected = True
            log.info("%s: publishing to MQTT broker %s as %s", name, o.mqtt, client_id)
            on_publish(c, None, _CONNECTED, None, None)

        def on_disconnect(_c: paho.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
            self.connected = False
            if not stopped:
                log.warning(
                    "%s: lost MQTT broker %s (%s); publishes wait until it is back",
                    name,
                    o.mqtt,
                    reason,
                )

        def on_publish(_c: paho.Client, _u: Any, mid: int, reason: Any, _p: Any) -> None:
            with lock:
                was_empty = not events
                events.append((mid, reason))
            if was_empty:
                ring()

        def on_logged(trims: dict[str, int]) -> None:
            mark = trims.get(MQTT_OUT)
            if mark is not None and mark > self.logged:
                self.logged = mark
                wake.set()

        client.on_connect = on_connect
        client.on_disconnect = on_disconnect
        client.on_publish = on_publish
        host, port = broker_address(o)
        if v5:
            client.connect_async(host, port, clean_start=True)
        else:
            client.connect_async(host, port)
        client.loop_start()
        outlet.on_trims_durable = on_logged

        async def take_events() -> None:
            nonlocal acked
            while True:
                await anyio.wait_readable(bell)
                with contextlib.suppress(BlockingIOError):
                    bell.recv(4096)
                with lock:
                    batch = list(events)
                    events.clear()
                moved = False
                for mid, reason in batch:
                    if mid == _CONNECTED:
                        resend_unwritten()
                        continue
                    unwritten.pop(mid, None)
                    number = numbers.pop(mid, None)
                    if number is None:
                        continue  # not ours any more (a stale callback)
                    if getattr(reason, "is_failure", False):
                        self.refused += 1
                        log.error(
                            "%s: the MQTT broker refused publish %s: %s (not sent again)",
                            name,
                            message_id(name, number),
                            reason,
                        )
                    self.acknowledged += 1
                    done.add(number)
                    while acked + 1 in done:
                        acked += 1
                        done.discard(acked)
                        moved = True
                if moved:
                    outlet.acknowledged(MQTT_OUT, acked)
                wake.set()  # room in the window, or the broker is back

        def resend_unwritten() -> None:
            """A new connection: the QoS 0 publishes the last one never wrote go out now."""
            for mid, (number, p, properties) in sorted(unwritten.items(), key=lambda i: i[1][0]):
                info = client.publish(p.topic, p.payload, p.qos, p.retain, properties)
                if info.rc == paho.MQTT_ERR_NO_CONN:
                    return  # broken again: the next connection tries once more
                del unwritten[mid]
                del numbers[mid]
                numbers[info.mid] = number
                unwritten[info.mid] = (number, p, properties)

        def hand_over(room: int) -> None:
            """Give paho the next publishes, at most ``room`` of them."""
            nonlocal handed
            first, _, batch = out.unsent(_ROUND_BYTES, room)
            for index, framed in enumerate(batch):
                number = first + index
                handed = number
                try:
                    p = decode_publish(framed[4:])
                except CodecError as exc:  # not written by publish(): nothing to send
                    log.error("%s: dropped output %d to MQTT: %s", name, number, exc)
                    numbers[-number] = number
                    on_publish(client, None, -number, None, None)  # done, as if sent
                    continue
                properties = None
                if v5:
                    properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
                    properties.UserProperty = (o.mqtt_id_property, message_id(name, number))
                    if p.content_type is not None:
                        properties.PayloadFormatIndicator = 1
                        properties.ContentType = p.content_type
                info = client.publish(p.topic, p.payload, p.qos, p.retain, properties)
                if info.rc == paho.MQTT_ERR_NO_CONN and p.qos == 0:
                    # QoS 0 is not queued by paho: keep it and the rest for the reconnection
                    out.sent_total = handed = number - 1
                    return
                numbers[info.mid] = number
                if p.qos == 0:
                    unwritten[info.mid] = (number, p, properties)
                self.published += 1

        waiting_since = math.inf  # since when `acked` is past `logged` with no page for it
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(take_events)
                task_status.started()
                while True:
                    room = self.logged + window - handed
                    if self.connected and room > 0:
                        hand_over(room)
                    delay = math.inf
                    if acked > self.logged:
                        now = time.monotonic()
                        waiting_since = min(waiting_since, now)
                        full = handed - self.logged >= window
                        if full or now - waiting_since >= LOG_ACKS_AFTER:
                            outlet.log_trims()
                            waiting_since = now
                        delay = waiting_since + LOG_ACKS_AFTER - now
                    else:
                        waiting_since = math.inf
                    with anyio.move_on_after(delay):
                        await wake.wait()
        finally:
            stopped = True
            if outlet.on_trims_durable is on_logged:
                outlet.on_trims_durable = None
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(stop_client, client)
            bell.close()
            ringer.close()
