"""The MQTT source's own in-flight window (transports/mqtt_window.py), one layer alone."""

from __future__ import annotations

from ambrosia_edge.transports.mqtt_window import InflightWindow


def test_a_broker_within_its_receive_maximum_is_left_alone() -> None:
    w: InflightWindow[int] = InflightWindow(3)
    for _ in range(10):  # three in flight at most: every one acknowledged before the next
        assert not w.receive(1)
        assert w.has_room()
        w.fed()
        w.acknowledge(fed=True)
        assert not w.needs_barrier()
    assert not w.enforced


def test_overshooting_the_window_turns_the_bound_on_and_barriers_confirm() -> None:
    w: InflightWindow[int] = InflightWindow(4)
    assert not w.receive(4)
    for _ in range(4):
        w.fed()
    assert w.receive(1)  # five unacknowledged on a window of four: the broker overshoots
    assert w.enforced and not w.has_room()  # four fed, none confirmed
    assert not w.receive(5)  # reported once
    w.acknowledge(fed=True)
    assert not w.needs_barrier()  # three fed messages still wait for their page
    for _ in range(3):
        w.acknowledge(fed=True)
    assert w.needs_barrier()
    w.barrier_sent(7)
    assert not w.needs_barrier() and not w.has_room()  # sent is not answered
    w.confirmed(7)
    assert w.has_room() and w.unconfirmed == 0


def test_half_a_window_acknowledged_gets_a_barrier_behind_later_pages() -> None:
    w: InflightWindow[int] = InflightWindow(4)
    w.enforced = True
    for _ in range(4):
        w.fed()
    w.acknowledge(fed=True)
    assert not w.needs_barrier()
    w.acknowledge(fed=True)
    assert w.needs_barrier()  # two of four: confirm them without waiting for the rest


def test_rejected_messages_count_as_acknowledged_but_not_as_fed() -> None:
    w: InflightWindow[int] = InflightWindow(2)
    w.enforced = True
    w.acknowledge(fed=False)
    assert w.sent == 1 and w.unconfirmed == 0 and not w.needs_barrier()


def test_a_new_connection_starts_the_count_again_but_stays_enforced() -> None:
    w: InflightWindow[int] = InflightWindow(2)
    assert w.receive(3)
    w.fed()
    w.fed()
    w.acknowledge(fed=True)
    w.barrier_sent(1)
    w.new_connection()  # what the old one left unconfirmed the broker delivers again
    assert w.enforced and w.has_room()
    assert (w.received, w.sent, w.unconfirmed, w.barriers) == (0, 0, 0, {})
    w.confirmed(1)  # an answer to the old connection's barrier changes nothing
    assert w.unconfirmed == 0
