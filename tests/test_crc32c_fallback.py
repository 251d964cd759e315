"""The CRC-32C used where no ``crc32c`` wheel exists gives the compiled package's values."""

from __future__ import annotations

import random
import subprocess
import sys
import textwrap

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ambrosia_edge import crc32c_fallback
from ambrosia_edge.records import encode_record

crc32c = pytest.importorskip("crc32c").crc32c

# Sizes around the switch to numpy lanes and around lane and word boundaries; Hypothesis itself
# is slow to draw long byte strings, so those are seeded random bytes.
_LONG = st.builds(
    lambda n, seed: random.Random(seed).randbytes(n),
    st.sampled_from([4095, 8191, 8192, 8193, 12_345, 65_536, 70_001]),
    st.integers(0, 2**32),
)


@settings(max_examples=200, deadline=None)
@given(
    pieces=st.lists(st.one_of(st.binary(max_size=64), _LONG), max_size=6),
    start=st.integers(0, 0xFFFFFFFF),
    mode=st.sampled_from([-1, 0, 1]),
)
def test_incremental_three_argument_calls_match_the_compiled_package(
    pieces: list[bytes], start: int, mode: int
) -> None:
    """As records.py uses it: the CRC of each piece continues from the previous one."""
    ours, theirs = start, start
    for piece in pieces:
        ours = crc32c_fallback.crc32c(memoryview(piece), ours, mode)
        theirs = crc32c(piece, theirs, mode)
        assert ours == theirs
    assert crc32c_fallback.crc32c(b"".join(pieces), start) == crc32c(b"".join(pieces), start)


def test_check_value_and_buffer_kinds() -> None:
    assert crc32c_fallback.crc32c(b"123456789") == 0xE3069283
    data = bytes(range(256)) * 100
    expected = crc32c(data)
    assert crc32c_fallback.crc32c(bytearray(data)) == expected
    assert crc32c_fallback.crc32c(memoryview(data).cast("I")) == expected


def test_without_numpy_large_inputs_take_the_pure_python_loop() -> None:
    data = bytes(range(256)) * 64
    code = textwrap.dedent(
        f"""
        import sys
        sys.modules["numpy"] = None
        from ambrosia_edge import crc32c_fallback as f
        assert f.crc32c({data!r}, 7) == {crc32c(data, 7)}
        assert f._lanes is f._update
        """
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_records_use_the_fallback_when_crc32c_cannot_be_imported() -> None:
    expected = encode_record(b"hello", 1).hex()
    code = textwrap.dedent(
        """
        import sys
        sys.modules["crc32c"] = None  # what an install without the wheel looks like
        from ambrosia_edge import crc32c_fallback, records
        assert records.crc32c is crc32c_fallback.crc32c, records.crc32c
        print(records.encode_record(b"hello", 1).hex())
        """
    )
    run = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == expected == "41450101050000009ee3040368656c6c6f"


def test_records_keep_a_crc32c_without_the_gil_argument() -> None:
    """Debian's python3-crc32c 2.3 takes (data, value) only."""
    code = textwrap.dedent(
        """
        import sys, types
        import crc32c as real
        old = types.ModuleType("crc32c")
        old.crc32c = lambda data, value=0: real.crc32c(data, value)
        sys.modules["crc32c"] = old
        from ambrosia_edge import records
        assert records.crc32c(b"abc", 5, 1) == real.crc32c(b"abc", 5)
        print(records.encode_record(b"hello", 1).hex())
        """
    )
    run = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "41450101050000009ee3040368656c6c6f"


def test_records_use_the_compiled_crc32c_where_installed() -> None:
    from ambrosia_edge import records

    assert records.crc32c is crc32c
