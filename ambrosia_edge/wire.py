"""Frames exchanged between coordinators over a byte stream (see docs/protocol.md).

Every frame is ``u32 length | u8 type | payload`` (little-endian; length counts type + payload).
Each TCP connection carries one sender's data one way and the receiver's acknowledgements the
other way, so acks never queue behind data (paper §3.3 uses a second connection for the same
reason). Control frames carry CBOR maps; DATA and ACK are fixed binary so the hot path does no
CBOR work at all.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Iterator, Sequence
from typing import Any

import cbor2

from .errors import ProtocolError

PROTOCOL_VERSION = 1
MAX_FRAME = 64 * 1024 * 1024
#: The longest frame a link reads before the handshake completes (docs/protocol.md 4.6): a
#: HELLO is a few hundred bytes, and a stranger must not make us hold 64 MiB for it.
PREAUTH_MAX_FRAME = 4096

_FRAME_HEAD = struct.Struct("<IB")
_DATA_HEAD = struct.Struct("<QII")
#: A DATA payload is this fixed head, then the batch.
DATA_HEAD_SIZE = _DATA_HEAD.size
_ACK = struct.Struct("<QQ")
#: the u32 length before each message in a batch
MESSAGE_LENGTH = struct.Struct("<I")


class Frame(enum.IntEnum):
    CHALLENGE = 1  # receiver -> sender: {"v", "nonce"}
    HELLO = 2  # sender -> receiver: {"v", "from", "to", "epoch", "mac"?}
    WELCOME = 3  # receiver -> sender: {"total", "replayable", "mac"?} durable watermarks
    DATA = 4  # sender -> receiver: first_total u64, count u32, replayable u32, messages
    ACK = 5  # receiver -> sender: durable total u64, durable replayable u64
    REFUSE = 6  # either way, then close: {"code", "message"}
    # live migration (docs/protocol.md 4.19): new instance <-> old instance of one immortal
    OFFER = 7  # old -> new: {"immortal", "epoch", "last_page", "bytes", "sha256", "mac"?}
    PART = 8  # old -> new: the next bytes of the archive offered
    READY = 9  # new -> old: {"sha256"} the copy is durable; seal your log
    SEALED = 10  # old -> new: {"moved_to", "epoch"} the old log is sealed; the move is done


def frame(ftype: Frame, payload: bytes | bytearray | memoryview) -> bytes:
    return _FRAME_HEAD.pack(len(payload) + 1, ftype) + payload


def parse_head(head: bytes, limit: int = MAX_FRAME) -> tuple[int, Frame]:
    """Validate a 5-byte frame head; returns (payload length, type). ``limit`` is lower than
    MAX_FRAME on a link that has not been through the handshake (PREAUTH_MAX_FRAME)."""
    length, ftype = _FRAME_HEAD.unpack(head)
    if length < 1 or length > limit:
        if length > limit < MAX_FRAME:
            raise ProtocolError(
                f"frame length {length} before the handshake completed; at most {limit} "
                "bytes are read from a peer that has not authenticated"
            )
        raise ProtocolError(f"frame length {length} is outside 1..{limit}")
    try:
        return length - 1, Frame(ftype)
    except ValueError:
        raise ProtocolError(f"unknown frame type {ftype}") from None


FRAME_HEAD_SIZE = _FRAME_HEAD.size


def control(ftype: Frame, fields: dict[str, Any]) -> bytes:
    return frame(ftype, cbor2.dumps(fields))


def parse_control(payload: bytes, *required: str) -> dict[str, Any]:
    try:
        fields = cbor2.loads(payload)
    except Exception as exc:  # cbor2 raises several types; all mean the same to us
        raise ProtocolError(f"malformed control frame: {exc}") from None
    if not isinstance(fields, dict):
        raise ProtocolError("control frame is not a CBOR map")
    missing = [key for key in required if key not in fields]
    if missing:
        raise ProtocolError(f"control frame lacks {', '.join(missing)}")
    return dict(fields)


def int_field(fields: dict[str, Any], key: str) -> int:
    value = fields.get(key)
    if type(value) is not int or value < 0:
        raise ProtocolError(f"control frame field {key!r} must be a non-negative integer")
    return value


def bytes_field(fields: dict[str, Any], key: str, size: int) -> bytes:
    value = fields.get(key)
    if not isinstance(value, bytes) or len(value) != size:
        raise ProtocolError(f"control frame field {key!r} must be {size} bytes")
    return value


def frame_message(message: bytes) -> bytes:
    """Length-prefix one message, the unit stored in out-buffers, DATA frames and log pages."""
    return MESSAGE_LENGTH.pack(len(message)) + message


def data(first_total: int, count: int, replayable: int, framed: Sequence[bytes]) -> bytes:
    # one join for the whole frame: the messages are most of it, and copied once
    return b"".join(data_parts(first_total, count, replayable, framed))


def data_parts(
    first_total: int, count: int, replayable: int, framed: Sequence[bytes]
) -> list[bytes]:
    """A DATA frame as its head followed by the messages: for a gathered send."""
    size = sum(map(len, framed))
    head = _FRAME_HEAD.pack(size + 1 + _DATA_HEAD.size, Frame.DATA) + _DATA_HEAD.pack(
        first_total, count, replayable
    )
    return [head, *framed]


def parse_data(payload: bytes) -> tuple[int, int, int, bytes]:
    first, count, replayable = parse_data_head(payload[:DATA_HEAD_SIZE])
    return first, count, replayable, payload[DATA_HEAD_SIZE:]


def parse_data_head(head: bytes) -> tuple[int, int, int]:
    """(first total, count, replayable) of a DATA frame, from its first DATA_HEAD_SIZE bytes."""
    if len(head) < DATA_HEAD_SIZE:
        raise ProtocolError("DATA frame shorter than its header")
    first, count, replayable = _DATA_HEAD.unpack(head)
    if replayable > count or first < 1:
        raise ProtocolError(f"DATA frame header is inconsistent ({first}, {count}, {replayable})")
    return first, count, replayable


def ack(total: int, replayable: int) -> bytes:
    return frame(Frame.ACK, _ACK.pack(total, replayable))


def parse_ack(payload: bytes) -> tuple[int, int]:
    if len(payload) != _ACK.size:
        raise ProtocolError("ACK frame has the wrong size")
    total, replayable = _ACK.unpack(payload)
    return total, replayable


def split_messages(batch: bytes | memoryview, count: int) -> Iterator[bytes]:
    """Iterate the length-prefixed messages of a batch, checking it holds exactly ``count``."""
    view = memoryview(batch)
    offset = 0
    end = len(view)
    for _ in range(count):
        if offset + 4 > end:
            raise ProtocolError("batch ends inside a message length")
        (length,) = MESSAGE_LENGTH.unpack_from(view, offset)
        offset += 4
        if offset + length > end or length == 0:
            raise ProtocolError("batch ends inside a message")
        yield bytes(view[offset : offset + length])
        offset += length
    if offset != end:
        raise ProtocolError("batch holds more bytes than its message count says")


def message_parts(batch: bytes, count: int) -> Iterator[tuple[int, bytes]]:
    """Iterate (first byte, rest) of each message of a batch: what dispatch needs, one slice
    per message instead of a copy of the message and then of its body."""
    unpack = MESSAGE_LENGTH.unpack_from
    offset = 0
    end = len(batch)
    for _ in range(count):
        if offset + 4 > end:
            raise ProtocolError("batch ends inside a message length")
        (length,) = unpack(batch, offset)
        start = offset + 4
        offset = start + length
        if offset > end or length == 0:
            raise ProtocolError("batch ends inside a message")
        yield batch[start], batch[start + 1 : offset]
    if offset != end:
        raise ProtocolError("batch holds more bytes than its message count says")


def scan_batch(batch: bytes, count: int) -> tuple[list[int], int]:
    """Check a received batch before it is logged: (message offsets, replayable count).

    A malformed batch must be refused at the door; once logged it would be replayed, and fail,
    forever.
    """
    offsets = []
    offset = 0
    end = len(batch)
    replayable = 0
    unpack = MESSAGE_LENGTH.unpack_from
    for _ in range(count):
        if offset + 5 > end:
            raise ProtocolError("batch ends before its message count is reached")
        offsets.append(offset)
        (length,) = unpack(batch, offset)
        if length == 0 or offset + 4 + length > end:
            raise ProtocolError("batch has a message length that runs past its end")
        if not batch[offset + 4] & 0x80:
            replayable += 1
        offset += 4 + length
    if offset != end:
        raise ProtocolError("batch holds more bytes than its message count says")
    return offsets, replayable
