"""Valid inputs for each fuzz target, the starting corpus: mutating what the project really
writes reaches deeper than random bytes, which every parser refuses at its first byte."""

from __future__ import annotations

from ambrosia_edge import wire
from ambrosia_edge.checkpoint import Checkpoint, CoordinatorState
from ambrosia_edge.handshake import mac
from ambrosia_edge.page import Entry, Page, chunk_header
from ambrosia_edge.records import RecordType, encode_record
from ambrosia_edge.wire import Frame


def _page(number: int) -> Page:
    batch = b"".join(wire.frame_message(b"\x83\x01fmsg%d" % i) for i in range(3))
    return Page(
        number,
        2,
        [Entry("client", 10 * number + 1, 1, 3, 1, batch)],
        {"client": (10 * number + 3, 1)},
        {"server": 4},
    )


def seeds() -> dict[str, list[bytes]]:
    hello_fields = {"v": wire.PROTOCOL_VERSION, "from": "client", "to": "server"}
    signed = {
        **hello_fields,
        "nonce": b"n" * 16,
        "mac": mac("s3cret", b"\x00" * 16, "client", "server"),
    }
    stream = (
        wire.control(Frame.CHALLENGE, {"v": wire.PROTOCOL_VERSION, "nonce": b"c" * 16})
        + wire.control(Frame.HELLO, hello_fields)
        + wire.data(1, 2, 1, [wire.frame_message(b"one"), wire.frame_message(b"two")])
        + wire.ack(7, 3)
    )
    chunk = (
        encode_record(chunk_header("server", 1, 1), RecordType.CHUNK_HEADER)
        + encode_record(_page(1).encode(), RecordType.PAGE)
        + encode_record(_page(2).encode(), RecordType.PAGE)
    )
    doc = Checkpoint.build(
        immortal="server",
        class_path="app:Server",
        class_version=1,
        chunk=2,
        state=b"\xa1ecount\x05",
        next_call_id=9,
        coordinator=CoordinatorState(2, 3, {"client": (23, 1)}, {"client": (4, [(3, b"m")])}),
    ).encode()
    config = (
        b'target = "app.py:Server"\nname = "server"\nlog = "/var/lib/app/server"\n'
        b'listen = "127.0.0.1:7001"\n[peers]\nclient = "127.0.0.1:7002"\n'
        b'[[sources]]\nkind = "cpu_temperature"\nimpulse = "reading"\nevery = "5s"\n'
    )
    return {
        "frames": [b"\x07\x00" + stream, b"\xff\x01" + stream, b"\x00\x00" + stream[:9]],
        "hello": [
            wire.control(Frame.HELLO, hello_fields)[5:],
            wire.control(Frame.HELLO, signed)[5:],
        ],
        "control": [
            wire.control(Frame.WELCOME, {"total": 5, "replayable": 2, "mac": b"m" * 32})[5:],
            wire.control(Frame.REFUSE, {"code": "standby", "message": "try the next"})[5:],
            wire.ack(7, 3)[5:],
        ],
        "records": [chunk, chunk[: len(chunk) - 3], chunk + b"\x00" * 16],
        "page": [_page(1).encode(), Page(1, 1).encode()],
        "checkpoint": [doc],
        "config": [config, b'target = "app.py:Server"\n'],
    }
