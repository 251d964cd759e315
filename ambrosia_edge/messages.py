"""Message bodies: what the binding puts inside the opaque bytes the coordinator carries.

The coordinator looks at one thing only, the IMPULSE bit of the first byte, because impulses are
counted apart from replayable messages (paper §4.2). Everything after the first byte is a CBOR
array encoded with :mod:`ambrosia_edge.codec`::

    CALL       [method, args, kwargs]              fork call, no reply
    REQUEST    [call_id, method, args, kwargs]     awaited call; the callee replies
    REPLY      [call_id, value]                    return value of a REQUEST
    FAILURE    [call_id, type_name, message]       the REQUEST raised
    START      []                                  logical start: runs on_first_start
    CAPTURE    [call_id, value]                    a value captured live, sent to oneself
    CAPTURE_FAILED [call_id, type_name, message]   the captured function raised
"""

from __future__ import annotations

import enum
import itertools
from collections.abc import Callable
from typing import Any, NamedTuple

import cbor2

from . import codec, plaincbor
from .errors import CodecError
from .wire import MESSAGE_LENGTH

IMPULSE = 0x80


class Kind(enum.IntEnum):
    CALL = 1
    REQUEST = 2
    REPLY = 3
    FAILURE = 4
    START = 5
    CAPTURE = 6
    CAPTURE_FAILED = 7


_START = bytes([Kind.START]) + codec.encode([])


def call(method: str, args: tuple[Any, ...], kwargs: dict[str, Any], *, impulse: bool) -> bytes:
    if not kwargs:
        # Plain arguments: the bytes the codec would write, assembled from a cached head
        # (kind, array of 3, method name), the arguments and an empty map.
        heads = _IMPULSE_HEADS if impulse else _CALL_HEADS
        head = heads.get(method)
        if head is None:
            head = heads[method] = _call_head(method, impulse)
        if len(args) == 1 and type(args[0]) is bytes:  # the commonest call of all: f(data)
            # inline, not through a function: this line is the producer's hot path (fork_run
            # checks runs against the same shape)
            data = args[0]
            return b"".join((head, _ONE, plaincbor.head(0x40, len(data)), data, _EMPTY_MAP))
        parts = [head, plaincbor.head(0x80, len(args))]
        if plaincbor.add_plain(parts, args):
            parts.append(_EMPTY_MAP)
            return b"".join(parts)
        if _LEAVES.issuperset(map(type, args)):
            return head + cbor2.dumps(args) + _EMPTY_MAP
    kind = _IMPULSE_CALL if impulse else _CALL
    return kind + codec.encode([method, list(args), kwargs], where=f"{method}() argument")


def _call_head(method: str, impulse: bool) -> bytes:
    """A call's first bytes: kind, array of 3, method name."""
    return (_IMPULSE_CALL if impulse else _CALL) + b"\x83" + cbor2.dumps(method)


_CALL = bytes([Kind.CALL])
_CALL_HEADS: dict[str, bytes] = {}
_IMPULSE_HEADS: dict[str, bytes] = {}
_REQUEST = bytes([Kind.REQUEST])
_REQUEST_ARRAY = _REQUEST + b"\x84"  # kind, then [call_id, method, args, kwargs]
_REPLY = bytes([Kind.REPLY])
_REPLY_ARRAY = _REPLY + b"\x82"  # kind, then [call_id, value]
_IMPULSE_CALL = bytes([Kind.CALL | IMPULSE])
_EMPTY_MAP = b"\xa0"
_ONE = b"\x81"  # an array of one
#: types the codec passes to cbor2 unchanged
_LEAVES = frozenset({type(None), bool, int, float, str, bytes})


def request(call_id: int, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bytes:
    if not kwargs:
        parts = [_REQUEST_ARRAY]
        if plaincbor.add_plain(parts, (call_id, method)):
            parts.append(plaincbor.head(0x80, len(args)))
            if plaincbor.add_plain(parts, args):
                parts.append(_EMPTY_MAP)
                return b"".join(parts)
        if _LEAVES.issuperset(map(type, args)):
            return _REQUEST + cbor2.dumps([call_id, method, list(args), kwargs])
    body = codec.encode([call_id, method, list(args), kwargs], where=f"{method}() argument")
    return _REQUEST + body


def reply(call_id: int, value: Any, *, where: str) -> bytes:
    parts = [_REPLY_ARRAY]
    if plaincbor.add_plain(parts, (call_id, value)):
        return b"".join(parts)
    if type(value) in _LEAVES:
        return _REPLY + cbor2.dumps([call_id, value])
    return _REPLY + codec.encode([call_id, value], where=where)


def failure(call_id: int, exc: BaseException, *, kind: Kind = Kind.FAILURE) -> bytes:
    return bytes([kind]) + codec.encode([call_id, type(exc).__name__, str(exc)])


def start() -> bytes:
    return _START


def capture(call_id: int, value: Any) -> bytes:
    return bytes([Kind.CAPTURE]) + codec.encode([call_id, value], where="captured value")


def is_impulse(message: bytes) -> bool:
    return bool(message[0] & IMPULSE)


def decode(
    message: bytes, proxy_factory: Any = None, *, decoder: Callable[[bytes], Any] | None = None
) -> tuple[Kind, bool, list[Any]]:
    """Split a message into (kind, is_impulse, fields); ``decoder`` from codec.make_decoder."""
    if not message:
        raise CodecError("an empty message")
    if decoder is None:
        return decode_parts(message[0], message[1:], codec.make_decoder(proxy_factory))
    return decode_parts(message[0], message[1:], decoder)


def decode_parts(
    head: int, body: bytes, decoder: Callable[[bytes], Any]
) -> tuple[Kind, bool, list[Any]]:
    """``decode`` for a message already split into its first byte and the rest (no copy)."""
    try:
        kind = _KINDS[head & ~IMPULSE]
    except KeyError:
        raise CodecError(f"unknown message kind {head & ~IMPULSE}") from None
    fields = decoder(body)
    if not _well_formed(kind, fields):
        raise CodecError(f"a {kind.name} message has the wrong fields: {fields!r:.200}")
    return kind, bool(head & IMPULSE), fields


def _well_formed(kind: Kind, fields: Any) -> bool:
    """Check the shape before dispatch: a logged message is replayed forever, so a malformed
    one must be dropped the same way each time rather than crash the executor."""
    if type(fields) is not list:
        return False
    if kind is Kind.CALL:
        return (
            len(fields) == 3
            and type(fields[0]) is str
            and type(fields[1]) is list
            and type(fields[2]) is dict
        )
    if kind is Kind.REQUEST:
        return (
            len(fields) == 4
            and type(fields[0]) is int
            and type(fields[1]) is str
            and type(fields[2]) is list
            and type(fields[3]) is dict
        )
    if kind in (Kind.REPLY, Kind.CAPTURE):
        return len(fields) == 2 and type(fields[0]) is int
    if kind in (Kind.FAILURE, Kind.CAPTURE_FAILED):
        return (
            len(fields) == 3 and type(fields[0]) is int and all(type(f) is str for f in fields[1:])
        )
    return fields == []


def decode_plain_forks(
    batch: bytes, start: int, count: int, load: Callable[[bytes], Any]
) -> tuple[list[tuple[str, list[Any]]], int] | None:
    """Decode ``count`` framed messages of ``batch`` from offset ``start``, if they are all
    plain forks, with one call to cbor2.

    Returns ``(method, args)`` per message and the offset after them, or None unless every
    message is a CALL (not an impulse) without keyword arguments whose arguments are all plain
    (bytes, text, integers, None, booleans) and whose body is exactly the shortest encoding of
    what it decodes to.
    The caller then dispatches the messages one by one, which is always correct; this is only
    faster (one decoder for the batch instead of one per message).

    Why decoding the bodies back to back cannot shift a value from one message to the next:
    ``load`` gets an array of ``count + 1`` items, the bodies followed by an END marker. No
    encoding of a value is shorter than the shortest one, so each item took at least the
    computed size of its value; the sizes are checked to equal the bodies' lengths, so the
    items took at least all the bodies' bytes; and the END marker decoded after them needs
    the last nine bytes, so they took at most those. Hence each took exactly its own body.
    """
    unpack = MESSAGE_LENGTH.unpack_from
    view = memoryview(batch)
    parts: list[bytes | memoryview] = [plaincbor.head(0x80, count + 1)]
    sizes: list[int] = []
    offset = start
    end = len(batch)
    for _ in range(count):
        if offset + 4 > end:
            return None
        (length,) = unpack(batch, offset)
        stop = offset + 4 + length
        if length < 2 or stop > end or batch[offset + 4] != _PLAIN_CALL:
            return None
        parts.append(view[offset + 5 : stop])
        sizes.append(length - 1)
        offset = stop
    parts.append(codec.FRAME_TAIL)
    try:
        items = load(b"".join(parts))
    except Exception:
        return None  # the one-by-one path says what is wrong, message by message
    if items[count] != codec.END:
        return None
    forks: list[tuple[str, list[Any]]] = []
    size_of, head_size = plaincbor.plain_size, plaincbor.head_size
    for fields, body_size in zip(items, sizes, strict=False):
        if type(fields) is not list or len(fields) != 3:
            return None
        method, args, kwargs = fields
        if type(method) is not str or type(args) is not list or type(kwargs) is not dict or kwargs:
            return None
        size = 2 + size_of(method) + head_size(len(args))  # 2: the array and map heads
        for arg in args:
            n = size_of(arg)
            if n < 0:
                return None
            size += n
        if size != body_size:
            return None
        forks.append((method, args))
    return forks, offset


class ForkRun(NamedTuple):
    """``forks`` framed forks to ``method``, ``stride`` bytes apart, whose one argument is the
    ``size`` bytes at ``first``, ``first + stride``, ... (see :func:`fork_run`)."""

    method: str
    first: int
    size: int
    stride: int
    forks: int


def fork_run(
    batch: bytes, start: int, count: int, load: Callable[[bytes], Any], *, least: int
) -> ForkRun | None:
    """Find, at offset ``start`` of ``batch``, a run of at least ``least`` (and at most
    ``count``) framed forks that differ in nothing but the value of their one bytes argument.

    Producers of fixed-size records (sensor samples, packed structs, the benchmark's payloads)
    send such runs. Their arguments can be cut out of the batch by position, which takes no
    decoder at all: this is what lets replay run several times faster than live.

    Why a run found here decodes exactly as one message at a time would: the first message
    is checked to be the shortest encoding of ``method(data)`` for the bytes ``data`` it
    decodes to. Every message of the run has the same length and the same bytes as the first
    outside the argument's value (compared a column at a time: the i-th byte of every
    message). So each is the shortest encoding of ``method`` called with the bytes at its
    argument's place, whatever those bytes are, and the run ends on a message boundary.
    """
    end = len(batch)
    if start + 5 > end:
        return None
    (length,) = MESSAGE_LENGTH.unpack_from(batch, start)
    stride = 4 + length
    limit = min(count, (end - start) // stride)
    if limit < least or length < 2 or batch[start + 4] != _PLAIN_CALL:
        return None
    message = batch[start + 4 : start + stride]
    try:
        fields = load(message[1:])
    except Exception:
        return None  # the one-by-one path says what is wrong
    if type(fields) is not list or len(fields) != 3:
        return None
    method, args, kwargs = fields
    if type(method) is not str or type(args) is not list or len(args) != 1 or kwargs != {}:
        return None
    (data,) = args
    if type(data) is not bytes:
        return None
    # not through call(), whose cache of heads must not grow with names a peer or a log brings
    head = _call_head(method, False)
    if message != b"".join((head, _ONE, plaincbor.head(0x40, len(data)), data, _EMPTY_MAP)):
        return None
    at = stride - len(_EMPTY_MAP) - len(data)  # where the argument's value starts
    run = limit
    for column in itertools.chain(range(at), range(at + len(data), stride)):
        cells = batch[start + column : start + run * stride : stride]
        same = run - len(cells.lstrip(batch[start + column : start + column + 1]))
        if same < run:
            if same < least:
                return None
            run = same
    return ForkRun(method, start + at, len(data), stride, run)


_PLAIN_CALL = int(Kind.CALL)

#: Enum construction is slow on the dispatch hot path; a plain lookup is not.
_KINDS = {int(kind): kind for kind in Kind}
