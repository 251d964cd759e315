"""The MQTT source's own in-flight window: how many executed messages a crash can repeat.

A QoS 1 message is acknowledged once its impulse is durable. If the immortal dies before the
broker has *processed* that PUBACK, the broker delivers the message again and, without a
publisher id, it runs twice. So what a crash can repeat is the number of messages logged whose
PUBACK the broker has not taken in. MQTT 5's Receive Maximum bounds that from the broker's
side: a broker sends no more than that many messages before the oldest is acknowledged, and
while it keeps to it, the source needs to do nothing.

Not every broker keeps to it. mosquitto 2.0.11 (Debian 12's) sends up to a whole window more on
every PUBACK that names the oldest message in flight (eclipse-mosquitto issue #2306, fixed in
2.0.13), so a backlog floods in at once; and it reads one packet per wake-up, so PUBACKs pile up
unread in its socket and a SIGKILL of the immortal throws them away. Measured with that broker:
100-300 messages ran twice per kill with a window of 20.

So the source watches: more messages received on a connection and not acknowledged than the
window allows means the broker does not keep to it, and from then on the source keeps the bound
itself. It feeds a message only while fewer than ``size`` fed messages are unconfirmed; the
others wait in memory, unacknowledged, which is safe: if the immortal dies the broker still holds
them, delivers them again, and they were never logged. An acknowledgement is confirmed by a
barrier: an UNSUBSCRIBE of a filter nobody subscribes to, sent after a batch of PUBACKs. A
broker answers a connection's packets in order, so its UNSUBACK says every PUBACK sent before it
was processed. One barrier per page of the log costs one small packet each way; what it costs
in throughput is that a flood must be read before the answer behind it (docs/mqtt.md).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Generic, TypeVar

__all__ = ["BARRIER_FILTER", "InflightWindow"]

#: unsubscribed from as the barrier; never subscribed, so the UNSUBSCRIBE changes nothing
BARRIER_FILTER = "ambrosia-edge/acknowledgement-barrier"

M = TypeVar("M")


@dataclass
class InflightWindow(Generic[M]):
    """Executed messages whose acknowledgement the broker has not taken in, at most ``size``."""

    size: int
    #: the broker was seen sending beyond ``size``: the source keeps the bound from then on
    #: (for the life of the source: a broker that did it once does it again)
    enforced: bool = False
    #: QoS 1 and 2 messages received on this connection, and PUBACKs sent on it
    received: int = 0
    sent: int = 0
    #: fed, not acknowledged yet (their impulses are not durable yet)
    unacknowledged: int = 0
    #: fed and acknowledged since the last barrier was sent
    acknowledged: int = 0
    #: barrier packet id -> the acknowledgements it confirms when answered
    barriers: dict[int, int] = field(default_factory=dict)
    #: received, in order, waiting for room (not fed, not acknowledged)
    held: deque[M] = field(default_factory=deque)

    def receive(self, count: int) -> bool:
        """``count`` messages arrived; True the first time they show the broker overshooting."""
        self.received += count
        if self.enforced or self.received - self.sent <= self.size:
            return False
        self.enforced = True
        return True

    @property
    def unconfirmed(self) -> int:
        """Fed, acknowledged or not, with no barrier answered behind the acknowledgement yet."""
        return self.unacknowledged + self.acknowledged + sum(self.barriers.values())

    def has_room(self) -> bool:
        return not self.enforced or self.unconfirmed < self.size

    def fed(self) -> None:
        self.unacknowledged += 1

    def acknowledge(self, *, fed: bool) -> None:
        """A PUBACK was sent, for a message fed on this connection or for one rejected."""
        self.sent += 1
        if fed:
            self.unacknowledged -= 1
            self.acknowledged += 1

    def needs_barrier(self) -> bool:
        """Whether to send a barrier now: once everything fed is acknowledged (the page is
        durable), or once half a window waits for one behind later pages."""
        return (
            self.enforced
            and self.acknowledged > 0
            and (self.unacknowledged == 0 or 2 * self.acknowledged >= self.size)
        )

    def barrier_sent(self, mid: int) -> None:
        self.barriers[mid] = self.acknowledged
        self.acknowledged = 0

    def confirmed(self, mid: int) -> None:
        """The broker answered barrier ``mid``: the acknowledgements before it are processed."""
        self.barriers.pop(mid, None)

    def new_connection(self) -> None:
        """A new connection: what the old one left unconfirmed the broker delivers again."""
        self.received = self.sent = 0
        self.unacknowledged = self.acknowledged = 0
        self.barriers.clear()
