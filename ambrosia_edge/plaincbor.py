"""CBOR for plain values, written directly: the encoder of the call hot path.

A producer forking small calls in a loop spends most of its time encoding them, and for the
common arguments (byte strings, text, integers, None, booleans) ``cbor2.dumps`` of a small tuple
costs ~450 ns, mostly in setting up its encoder. Writing the few header bytes here costs a
fraction of that. The output is byte-for-byte what ``cbor2.dumps`` writes for the same values
(tests/test_plaincbor.py checks it); anything else (floats, big integers, containers, text that
is not valid UTF-8) is declined, and the caller takes the codec's general path.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from typing import Any, Final

__all__ = ["add_plain", "head", "head_size", "plain_size"]

_U8: Final = struct.Struct(">BB")
_U16: Final = struct.Struct(">BH")
_U32: Final = struct.Struct(">BI")
_U64: Final = struct.Struct(">BQ")
_TINY: Final = {
    major: [bytes([major | n]) for n in range(24)] for major in (0, 0x20, 0x40, 0x60, 0x80)
}
_NONE: Final = b"\xf6"
_TRUE: Final = b"\xf5"
_FALSE: Final = b"\xf4"
_LIMIT: Final = 1 << 64


def head(major: int, n: int) -> bytes:
    """The header of a CBOR item of major type ``major`` (as its top 3 bits) and argument n."""
    if n < 24:
        return _TINY[major][n]
    if n < 0x100:
        return _U8.pack(major | 24, n)
    if n < 0x10000:
        return _U16.pack(major | 25, n)
    if n < 0x100000000:
        return _U32.pack(major | 26, n)
    return _U64.pack(major | 27, n)


def add_plain(parts: list[bytes], values: Iterable[Any]) -> bool:
    """Append the encodings of ``values`` to ``parts``; False (parts then undefined) if one of
    them is not plain."""
    for v in values:
        t = type(v)
        if t is bytes:
            parts.append(head(0x40, len(v)))
            parts.append(v)
        elif t is str:
            try:
                raw = v.encode()
            except UnicodeEncodeError:
                return False
            parts.append(head(0x60, len(raw)))
            parts.append(raw)
        elif t is int:
            if 0 <= v < _LIMIT:
                parts.append(head(0, v))
            elif -_LIMIT <= v < 0:
                parts.append(head(0x20, -1 - v))
            else:
                return False
        elif v is None:
            parts.append(_NONE)
        elif t is bool:
            parts.append(_TRUE if v else _FALSE)
        else:
            return False
    return True


def head_size(n: int) -> int:
    """How many bytes ``head(major, n)`` takes."""
    if n < 24:
        return 1
    if n < 0x100:
        return 2
    if n < 0x10000:
        return 3
    return 5 if n < 0x100000000 else 9


def plain_size(v: Any) -> int:
    """The length of the shortest encoding of plain value ``v`` (what ``add_plain`` writes),
    or -1 if ``v`` is not plain. No encoding of a value is shorter, which is what lets a
    decoder check that items it decoded together each filled exactly their own bytes."""
    t = type(v)
    if t is bytes:
        n = len(v)
        return head_size(n) + n
    if t is str:
        if v.isascii():
            n = len(v)
        else:
            try:
                n = len(v.encode())
            except UnicodeEncodeError:
                return -1  # as add_plain declines it
        return head_size(n) + n
    if t is int:
        if 0 <= v < _LIMIT:
            return head_size(v)
        if -_LIMIT <= v < 0:
            return head_size(-1 - v)
        return -1
    if v is None or t is bool:
        return 1
    return -1
