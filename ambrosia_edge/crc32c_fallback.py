"""CRC-32C without a C build, for platforms where PyPI has no ``crc32c`` wheel.

PyPI has ``crc32c`` wheels for x86-64, arm64 and riscv64 Linux, macOS and Windows, but none for
32-bit ARM, s390x, ppc64le or 32-bit x86, and Debian's ``python3-crc32c`` 2.3 lacks the third
argument the log writer passes. There the log's checksums are computed here instead, with the
same call signature and results as ``crc32c.crc32c``, so the log files stay byte-for-byte the
same on every board.

Two ways, picked by input size:

- slicing-by-8 in pure Python (eight 256-entry tables, one loop turn per 8 bytes);
- where numpy happens to be installed (it is not a dependency), inputs from 8 KiB on are cut
  into lanes whose CRCs numpy computes side by side, one 4-byte word of every lane per step,
  and which are then folded together by the linear "append n zero bytes" operator of the CRC.

Measured on the x86-64 development machine (Python 3.11, numpy 2.4, best of 5 runs), in MB/s:

==============================  ==============  ===============  =========================
input                           pure Python     numpy lanes      crc32c 2.9 (C, SSE4.2)
==============================  ==============  ===============  =========================
64-byte pieces, incrementally   3.2                              680
4 KiB                           4-7                              16,000
64 KiB                          4.3             61               25,000
1 MiB                           3.5-4.5         100-120          28,000
==============================  ==============  ===============  =========================

So where this module is used, checksumming costs a log writer about 0.3 s per MB of small
messages (a page's messages are checksummed one by one), and scanning a log on recovery 10 ms
per MB with numpy. Pure Python under emulation or on a Raspberry Pi's core is some 5-10x slower
again. A ``crc32c`` built for the board (piwheels has them, or ``pip install crc32c`` with a
compiler) is used instead whenever it is importable.
"""

from __future__ import annotations

import importlib
import struct
from collections.abc import Callable
from typing import Any, Final

__all__ = ["crc32c"]

_POLY: Final = 0x82F63B78  # Castagnoli, reflected
_MASK: Final = 0xFFFFFFFF


def _tables() -> list[list[int]]:
    base = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ (_POLY if c & 1 else 0)
        base.append(c)
    tables = [base]
    for _ in range(7):
        prev = tables[-1]
        tables.append([(c >> 8) ^ base[c & 0xFF] for c in prev])
    return tables


_T: Final = _tables()
_WORDS: Final = struct.Struct("<II")


def _update(reg: int, data: Any) -> int:
    """Feed ``data`` to the CRC register ``reg`` (no pre- or post-inversion)."""
    t0, t1, t2, t3, t4, t5, t6, t7 = _T
    mv = memoryview(data).cast("B")
    whole = len(mv) & ~7
    for lo, hi in _WORDS.iter_unpack(mv[:whole]):
        lo ^= reg
        reg = (
            t7[lo & 0xFF]
            ^ t6[(lo >> 8) & 0xFF]
            ^ t5[(lo >> 16) & 0xFF]
            ^ t4[lo >> 24]
            ^ t3[hi & 0xFF]
            ^ t2[(hi >> 8) & 0xFF]
            ^ t1[(hi >> 16) & 0xFF]
            ^ t0[hi >> 24]
        )
    for byte in mv[whole:]:
        reg = t0[(reg ^ byte) & 0xFF] ^ (reg >> 8)
    return reg


#: From this size on numpy lanes beat the pure-Python loop by far (and their setup is paid off).
_LANES_FROM: Final = 1 << 13
_lanes: Callable[[int, Any], int] | None = None


def _numpy_lanes() -> Callable[[int, Any], int] | None:
    try:  # through importlib: numpy is optional, and its types are not needed here
        np: Any = importlib.import_module("numpy")
    except ImportError:
        return None

    u32 = np.uint32
    slices = [np.array(t, dtype=u32) for t in _T[:4]]
    # The operator "feed one zero byte" as 4 byte-indexed tables: x -> T[x & 255] ^ (x >> 8).
    b = np.arange(256, dtype=u32)
    shifts = [[slices[0], b, b << u32(8), b << u32(16)]]  # shifts[i]: feed 2**i zero bytes

    def apply(op: list[Any], v: Any) -> Any:
        return (
            op[0][v & u32(0xFF)]
            ^ op[1][(v >> u32(8)) & u32(0xFF)]
            ^ op[2][(v >> u32(16)) & u32(0xFF)]
            ^ op[3][v >> u32(24)]
        )

    def shift(i: int) -> list[Any]:
        while len(shifts) <= i:
            last = shifts[-1]
            shifts.append([apply(last, t) for t in last])  # the operator composed with itself
        return shifts[i]

    s0, s1, s2, s3 = slices

    def lanes(reg: int, data: Any) -> int:
        n = len(data)
        # 2**p-byte lanes, about 4096 of them: fewer steps, but each over more lanes
        p = max(n.bit_length() - 13, 4)
        width = 1 << p
        count = n >> p
        words = np.frombuffer(data, dtype="<u4", count=count * width // 4)
        columns = np.ascontiguousarray(words.reshape(count, width // 4).T).astype(u32, copy=False)
        crcs = np.zeros(count, dtype=u32)
        crcs[0] = reg
        for column in columns:
            x = crcs ^ column
            crcs = (
                s3[x & u32(0xFF)]
                ^ s2[(x >> u32(8)) & u32(0xFF)]
                ^ s1[(x >> u32(16)) & u32(0xFF)]
                ^ s0[x >> u32(24)]
            )
        # Fold pairs: crc(A + B) = shift_len(B)(crc(A)) ^ crc_from_0(B). A leading zero lane
        # changes nothing, so an odd count gets one.
        level = p
        while len(crcs) > 1:
            if len(crcs) & 1:
                crcs = np.concatenate((np.zeros(1, dtype=u32), crcs))
            crcs = apply(shift(level), crcs[0::2]) ^ crcs[1::2]
            level += 1
        return _update(int(crcs[0]), memoryview(data)[count * width :])

    return lanes


def crc32c(data: Any, value: int = 0, gil_release_mode: int = -1) -> int:
    """``crc32c.crc32c`` in Python: the CRC-32C of ``data`` continuing from ``value`` (the
    CRC of what came before). ``gil_release_mode`` is accepted and ignored."""
    global _lanes
    reg = ~value & _MASK
    if type(data) is not bytes:
        data = memoryview(data).cast("B")
    if len(data) >= _LANES_FROM:
        if _lanes is None:
            _lanes = _numpy_lanes() or _update
        return ~_lanes(reg, data) & _MASK
    return ~_update(reg, data) & _MASK
