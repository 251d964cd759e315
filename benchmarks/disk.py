"""The physical floor: what the disk under the logs gives to appends that must be durable.

Both figures use ``fdatasync``, as the local log tier does for its appends, on a file in the
directory where the benchmark logs live.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

_FLUSH = os.fdatasync if hasattr(os, "fdatasync") else os.fsync


def append_latencies(directory: Path, count: int, size: int = 4096, warmup: int = 20) -> list[int]:
    """Nanoseconds of each ``write(size bytes) + fdatasync`` appended to one file."""
    path = directory / "disk-latency.bin"
    block = b"\xa5" * size
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_TRUNC, 0o644)
    samples: list[int] = []
    clock = time.perf_counter_ns
    try:
        for i in range(warmup + count):
            started = clock()
            os.write(fd, block)
            _FLUSH(fd)
            if i >= warmup:
                samples.append(clock() - started)
    finally:
        os.close(fd)
        path.unlink()
    return samples


def sequential_bandwidth(directory: Path, total: int, block: int = 4 << 20) -> float:
    """Bytes per second of appending ``total`` bytes in ``block``-sized writes, each flushed."""
    path = directory / "disk-bandwidth.bin"
    data = os.urandom(block)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_TRUNC, 0o644)
    try:
        started = time.perf_counter()
        written = 0
        while written < total:
            written += os.write(fd, data)
            _FLUSH(fd)
        elapsed = time.perf_counter() - started
    finally:
        os.close(fd)
        path.unlink()
    return written / elapsed
