"""The direct encoder of plain call arguments writes exactly what cbor2 writes, or declines."""

from __future__ import annotations

from typing import Any

import cbor2
from hypothesis import given
from hypothesis import strategies as st

from ambrosia_edge import messages, plaincbor

PLAIN = (
    st.binary(max_size=300)
    | st.text(max_size=100)
    | st.integers(min_value=-(1 << 64), max_value=(1 << 64) - 1)
    | st.none()
    | st.booleans()
)
EDGES = [0, 23, 24, 255, 256, 65535, 65536, (1 << 32) - 1, 1 << 32, (1 << 64) - 1]


def encoded(values: list[Any]) -> bytes | None:
    parts = [plaincbor.head(0x80, len(values))]
    return b"".join(parts) if plaincbor.add_plain(parts, values) else None


@given(st.lists(PLAIN, max_size=30))
def test_plain_values_encode_as_cbor2_does(values: list[Any]) -> None:
    assert encoded(values) == cbor2.dumps(values)


def test_integer_and_length_edges() -> None:
    for n in EDGES:
        for v in (n, -1 - n):
            assert encoded([v]) == cbor2.dumps([v]), v
    for n in (0, 23, 24, 255, 256, 65535, 65536):
        assert encoded([b"x" * n, "y" * n]) == cbor2.dumps([b"x" * n, "y" * n]), n
    assert encoded([None] * 24) == cbor2.dumps([None] * 24)


def test_anything_else_is_declined() -> None:
    for value in (1.5, 1 << 64, -(1 << 64) - 1, [1], {"a": 1}, bytearray(b"x"), "\udc80"):
        assert encoded([value]) is None, value


@given(st.text(min_size=1, max_size=20), st.lists(PLAIN | st.floats(allow_nan=False), max_size=5))
def test_calls_requests_and_replies_decode_to_their_fields(method: str, args: list[Any]) -> None:
    decoder = messages.codec.make_decoder(None)
    call = messages.call(method, tuple(args), {}, impulse=False)
    assert messages.decode(call, decoder=decoder)[2] == [method, args, {}]
    request = messages.request(7, method, tuple(args), {})
    assert messages.decode(request, decoder=decoder)[2] == [7, method, args, {}]
    value = args[0] if args else None
    reply = messages.reply(7, value, where="test")
    assert messages.decode(reply, decoder=decoder)[2] == [7, value]


def test_a_call_with_one_byte_string_is_what_the_codec_writes() -> None:
    for n in (0, 23, 24, 255, 256, 65535, 65536):
        data = bytes(range(256)) * (n // 256) + bytes(n % 256)
        message = messages.call("receive", (data,), {}, impulse=False)
        assert message == bytes([messages.Kind.CALL]) + messages.codec.encode(
            ["receive", [data], {}]
        ), n
