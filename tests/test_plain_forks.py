"""Batches of plain forks decoded in one go give exactly what decoding them one by one gives."""

from __future__ import annotations

from typing import Any

import cbor2
from hypothesis import given
from hypothesis import strategies as st

from ambrosia_edge import codec, messages, wire
from ambrosia_edge.messages import Kind

LOAD = codec.make_loader(None)
DECODE = codec.make_decoder(None)
PLAIN = (
    st.binary(max_size=40)
    | st.text(max_size=20)
    | st.integers(-(1 << 64), (1 << 64) - 1)
    | st.none()
    | st.booleans()
)


def framed(bodies: list[bytes], kind: int = Kind.CALL) -> bytes:
    return b"".join(wire.frame_message(bytes([kind]) + body) for body in bodies)


def one_by_one(batch: bytes, count: int) -> list[Any]:
    """What the message-by-message path makes of each message: fields, or the error."""
    out: list[Any] = []
    for head, body in wire.message_parts(batch, count):
        try:
            out.append(messages.decode_parts(head, body, DECODE)[2])
        except Exception as exc:
            out.append(type(exc))
    return out


def together(batch: bytes, count: int) -> list[Any] | None:
    decoded = messages.decode_plain_forks(batch, 0, count, LOAD)
    if decoded is None:
        return None
    forks, end = decoded
    assert end == len(batch)
    return [[method, args, {}] for method, args in forks]


@given(
    st.lists(
        st.tuples(st.text(min_size=1, max_size=10), st.lists(PLAIN, max_size=4)),
        min_size=1,
        max_size=20,
    )
)
def test_plain_forks_decode_together_as_one_by_one(calls: list[tuple[str, list[Any]]]) -> None:
    batch = b"".join(
        wire.frame_message(messages.call(m, tuple(a), {}, impulse=False)) for m, a in calls
    )
    expected = [[m, a, {}] for m, a in calls]
    assert one_by_one(batch, len(calls)) == expected
    assert together(batch, len(calls)) == expected


@given(st.lists(st.binary(min_size=1, max_size=12), min_size=1, max_size=8))
def test_whatever_the_bytes_a_result_is_what_one_by_one_gives(bodies: list[bytes]) -> None:
    # hostile bodies: whenever the batch decode accepts them, it agrees with the careful path
    batch = framed(bodies)
    result = together(batch, len(bodies))
    if result is not None:
        assert result == one_by_one(batch, len(bodies))


@given(st.data())
def test_valid_calls_cut_at_other_places_are_never_misread(data: st.DataObject) -> None:
    calls = data.draw(st.lists(st.lists(PLAIN, max_size=3), min_size=2, max_size=6))
    stream = b"".join(cbor2.dumps(["m", args, {}]) for args in calls)
    cuts = sorted(data.draw(st.sets(st.integers(1, len(stream) - 1), max_size=len(calls))))
    bodies = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
    batch = framed(bodies)
    result = together(batch, len(bodies))
    if result is not None:
        assert result == one_by_one(batch, len(bodies))


def test_what_is_left_to_the_one_by_one_path() -> None:
    plain = messages.call("m", (1,), {}, impulse=False)
    cases = {
        "an impulse": messages.call("m", (1,), {}, impulse=True),
        "keyword arguments": messages.call("m", (1,), {"k": 2}, impulse=False),
        "a float": messages.call("m", (1.5,), {}, impulse=False),
        "a list argument": messages.call("m", ([1],), {}, impulse=False),
        "a request": messages.request(1, "m", (1,), {}),
        "a longer encoding than needed": bytes([Kind.CALL]) + b"\x83\x61m\x81\x18\x01\xa0",
    }
    for what, odd in cases.items():
        batch = b"".join(wire.frame_message(m) for m in (plain, odd, plain))
        assert together(batch, 3) is None, what
    assert (
        together(b"".join(wire.frame_message(plain) for _ in range(3)), 3) == [["m", [1], {}]] * 3
    )
