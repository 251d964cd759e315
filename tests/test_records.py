"""Record framing: exact bytes, and how the scanner tells a torn tail from corruption."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

import ambrosia_edge.records as records
from ambrosia_edge.errors import CorruptLogError
from ambrosia_edge.records import (
    FORMAT_VERSION,
    HEADER_SIZE,
    MAGIC,
    MAX_RECORD_BODY,
    RecordScan,
    RecordType,
    encode_record,
    scan_file,
    scan_records,
)

HELLO_VECTOR = "41450101050000009ee3040368656c6c6f"
EMPTY_CHUNK_HEADER_VECTOR = "414501000000000093171ab8"
ADVICE = (
    "the files were left untouched; restore this chunk from a copy, "
    "or move it aside to recover from the previous checkpoint"
)


def collect(scan: RecordScan) -> list[tuple[int, int, bytes]]:
    return list(scan)


def frame_all(bodies: list[bytes]) -> tuple[bytes, list[int]]:
    data = bytearray()
    offsets = []
    for body in bodies:
        offsets.append(len(data))
        data += encode_record(body, RecordType.PAGE)
    return bytes(data), offsets


# -- encoding ------------------------------------------------------------------------------------


def test_hello_vector() -> None:
    assert encode_record(b"hello", 1).hex() == HELLO_VECTOR


def test_empty_chunk_header_vector() -> None:
    assert encode_record(b"", RecordType.CHUNK_HEADER).hex() == EMPTY_CHUNK_HEADER_VECTOR


def test_module_docstring_carries_the_vector() -> None:
    assert records.__doc__ is not None
    assert f'encode_record(b"hello", 1).hex() == "{HELLO_VECTOR}"' in records.__doc__


def test_header_layout() -> None:
    frame = encode_record(b"abc", 7)
    magic, version, rtype, length, crc = struct.unpack("<2sBBII", frame[:12])
    assert (magic, version, rtype, length) == (b"AE", 1, 7, 3)
    assert (MAGIC, FORMAT_VERSION, HEADER_SIZE, MAX_RECORD_BODY) == (b"AE", 1, 12, 1 << 30)
    assert frame[12:] == b"abc"
    # Checked against a plain bitwise CRC-32C so a fault in the crc32c package cannot hide here.
    assert crc == _bitwise_crc32c(frame[2:8] + b"abc")


def _bitwise_crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def test_bitwise_crc_reference_is_castagnoli() -> None:
    assert _bitwise_crc32c(b"123456789") == 0xE3069283


def test_record_types() -> None:
    assert [(t.name, int(t)) for t in RecordType] == [("CHUNK_HEADER", 0), ("PAGE", 1), ("SEAL", 2)]


def test_bytes_like_bodies_frame_the_same() -> None:
    expected = encode_record(b"hello", 1)
    assert encode_record(bytearray(b"hello"), 1) == expected
    assert encode_record(memoryview(b"xhellox")[1:6], 1) == expected


@pytest.mark.parametrize("rtype", [-1, 256])
def test_type_must_fit_a_byte(rtype: int) -> None:
    with pytest.raises(ValueError, match=f"record type {rtype} does not fit in one byte"):
        encode_record(b"x", rtype)


def test_body_over_the_limit_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(records, "MAX_RECORD_BODY", 4)
    assert encode_record(b"1234", 1)[12:] == b"1234"
    with pytest.raises(ValueError, match="record body of 5 bytes exceeds the 4-byte limit"):
        encode_record(b"12345", 1)


# -- scanning intact data ------------------------------------------------------------------------


def test_empty_buffer() -> None:
    scan = scan_records(b"", source="empty")
    assert collect(scan) == []
    assert (scan.valid_length, scan.torn, scan.torn_reason, scan.finished) == (0, False, None, True)


def test_records_in_order_with_offsets_and_types() -> None:
    data = encode_record(b"head", 0) + encode_record(b"", 1) + encode_record(b"p" * 300, 200)
    scan = scan_records(data, source="c")
    assert iter(scan) is scan
    assert collect(scan) == [(0, 0, b"head"), (16, 1, b""), (28, 200, b"p" * 300)]
    assert (scan.valid_length, scan.torn, scan.size) == (len(data), False, len(data))


def test_start_offset() -> None:
    data, offsets = frame_all([b"a", b"bb", b"ccc"])
    scan = scan_records(data, source="c", start=offsets[1])
    assert collect(scan) == [(offsets[1], 1, b"bb"), (offsets[2], 1, b"ccc")]


def test_bodies_are_independent_bytes() -> None:
    buf = bytearray(encode_record(b"keep", 1))
    ((_, _, body),) = collect(scan_records(buf, source="c"))
    buf[12:16] = b"XXXX"
    assert body == b"keep"
    assert type(body) is bytes


# -- torn tails ----------------------------------------------------------------------------------


def test_cut_at_every_offset_of_the_last_record() -> None:
    data, offsets = frame_all([b"first", b"second", b"the last record"])
    for cut in range(offsets[2] + 1, len(data)):
        scan = scan_records(data[:cut], source="c")
        assert collect(scan) == [(0, 1, b"first"), (offsets[1], 1, b"second")], cut
        assert scan.torn, cut
        assert scan.valid_length == offsets[2], cut


def test_torn_reasons() -> None:
    data, offsets = frame_all([b"first", b"last"])
    short = scan_records(data[: offsets[1] + 11], source="c")
    assert collect(short) == [(0, 1, b"first")]
    assert short.torn_reason == "incomplete record header"
    past = scan_records(data[:-1], source="c")
    collect(past)
    assert past.torn_reason == "record of 4 body bytes runs past the end of the data"


def test_damaged_last_record_reaching_the_end_is_torn() -> None:
    data, _ = frame_all([b"first", b"last"])
    damaged = bytearray(data)
    damaged[-1] ^= 0xFF
    scan = scan_records(damaged, source="c")
    assert collect(scan) == [(0, 1, b"first")]
    assert (scan.torn, scan.torn_reason, scan.valid_length) == (True, "checksum mismatch", 17)


def test_zeros_after_the_last_record_end_it_cleanly() -> None:
    data, _ = frame_all([b"first", b"second"])
    for zeros in (1, 11, 12, 4096):
        scan = scan_records(data + bytes(zeros), source="c")
        assert collect(scan) == [(0, 1, b"first"), (17, 1, b"second")]
        assert (scan.torn, scan.torn_reason, scan.finished) == (False, None, True)
        assert (scan.valid_length, scan.padding) == (len(data), zeros)


def test_an_append_torn_inside_zero_fill_is_torn() -> None:
    # The header landed and part of the body, the rest of the body is still the zeros that
    # were written ahead: the writer died while appending into zero-filled space.
    data, offsets = frame_all([b"first", b"second" * 20])
    torn = bytearray(data + bytes(1000))
    torn[offsets[1] + 40 : offsets[1] + 12 + 120] = bytes(120 + 12 - 40)
    scan = scan_records(torn, source="c")
    assert collect(scan) == [(0, 1, b"first")]
    assert (scan.torn, scan.torn_reason, scan.valid_length) == (True, "checksum mismatch", 17)


def test_an_append_whose_header_never_landed_is_torn() -> None:
    data, offsets = frame_all([b"first", b"second" * 20])
    torn = bytearray(data + bytes(1000))
    torn[offsets[1] : offsets[1] + 12] = bytes(12)
    scan = scan_records(torn, source="c")
    assert collect(scan) == [(0, 1, b"first")]
    assert (scan.torn, scan.torn_reason) == (True, "bad magic bytes b'\\x00\\x00'")


def test_a_record_ending_before_nonzero_bytes_is_corruption() -> None:
    # A header that landed and claims a record ending before the end of the file, followed by
    # bytes that are neither zeros nor a record: not what a torn append leaves.
    data, offsets = frame_all([b"first", b"second"])
    damaged = bytearray(data + b"\x01" * 100)
    damaged[offsets[1] + 12] ^= 0xFF
    with pytest.raises(CorruptLogError, match=r"at byte offset 17: checksum mismatch"):
        collect(scan_records(damaged, source="c"))


def test_length_over_the_limit_in_a_small_buffer_is_torn() -> None:
    data = encode_record(b"ok", 1) + struct.pack("<2sBBII", b"AE", 1, 1, MAX_RECORD_BODY + 1, 0)
    scan = scan_records(data + b"\x01" * 64, source="c")
    assert collect(scan) == [(0, 1, b"ok")]
    assert (
        scan.torn_reason == f"body length {MAX_RECORD_BODY + 1} exceeds the 1073741824-byte limit"
    )


def test_short_nonzero_garbage_is_torn() -> None:
    data, _ = frame_all([b"first"])
    scan = scan_records(data + b"\xff" * 11, source="c")
    assert collect(scan) == [(0, 1, b"first")]
    assert scan.torn


def test_high_length_byte_damage_in_the_middle_is_corruption() -> None:
    # The damaged length points past the end of the file, like a torn write would; the intact
    # record after it shows it is not the tail, so it must not be cut.
    data, offsets = frame_all([b"first", b"second", b"third"])
    damaged = bytearray(data)
    damaged[offsets[1] + 7] ^= 0x01
    scan = scan_records(damaged, source="c")
    assert next(scan) == (0, 1, b"first")
    with pytest.raises(CorruptLogError, match=f"at byte offset {offsets[1]}: record of"):
        next(scan)


def test_high_length_byte_damage_in_the_last_record_is_torn() -> None:
    data, offsets = frame_all([b"first", b"second"])
    damaged = bytearray(data)
    damaged[offsets[1] + 7] ^= 0x01
    scan = scan_records(damaged, source="c")
    assert collect(scan) == [(0, 1, b"first")]
    assert (scan.torn, scan.valid_length) == (True, offsets[1])


# -- corruption ----------------------------------------------------------------------------------


def corrupt_message(source: str, offset: int, problem: str) -> str:
    return f"corrupt log record in {source} at byte offset {offset}: {problem}; {ADVICE}"


def test_body_damage_in_the_middle_is_corruption_with_full_message() -> None:
    data, offsets = frame_all([b"first", b"second", b"third"])
    damaged = bytearray(data)
    damaged[offsets[1] + 12] ^= 0x01
    scan = scan_records(damaged, source="/log/chunk-00000004.log")
    assert next(scan) == (0, 1, b"first")
    with pytest.raises(CorruptLogError) as info:
        next(scan)
    assert str(info.value) == corrupt_message(
        "/log/chunk-00000004.log", offsets[1], "checksum mismatch"
    )
    assert info.value.code == "log-corrupt"


@pytest.mark.parametrize(
    ("index", "value", "problem"),
    [
        (0, ord("X"), "bad magic bytes b'XE'"),
        (1, ord("X"), "bad magic bytes b'AX'"),
        (2, 2, "unknown record format version 2"),
        (3, 0, "checksum mismatch"),  # the type is covered by the checksum
        (4, 7, "checksum mismatch"),  # so is the length
        (8, 0, "checksum mismatch"),
    ],
)
def test_header_damage_in_the_middle_is_corruption(index: int, value: int, problem: str) -> None:
    data, offsets = frame_all([b"first", b"second", b"third"])
    damaged = bytearray(data)
    damaged[offsets[1] + index] = value
    with pytest.raises(CorruptLogError) as info:
        collect(scan_records(damaged, source="c"))
    assert str(info.value) == corrupt_message("c", offsets[1], problem)


def test_nonzero_garbage_followed_by_more_data_is_corruption() -> None:
    data, _ = frame_all([b"first"])
    garbage = b"ZZ\x01\x01" + struct.pack("<I", 3) + b"\x00" * 4 + b"abc" + b"tail"
    with pytest.raises(CorruptLogError, match=r"at byte offset 17: bad magic bytes b'ZZ'"):
        collect(scan_records(data + garbage, source="c"))


def test_a_nonzero_header_in_a_zero_tail_is_corruption_when_it_ends_inside() -> None:
    data, _ = frame_all([b"first"])
    tail = bytearray(64)
    tail[0:2] = b"ZZ"
    tail[4] = 3  # claims 3 body bytes, then more non-zero bytes follow
    tail[30] = 1
    with pytest.raises(CorruptLogError, match=r"at byte offset 17: bad magic bytes b'ZZ'"):
        collect(scan_records(data + tail, source="c"))


# -- reading from a file -------------------------------------------------------------------------


CASES = {
    "intact": frame_all([b"a", b"b" * 50, b"c" * 3000, b""])[0],
    "torn": frame_all([b"a", b"b" * 50, b"c" * 3000])[0][:-7],
    "zero-tail": frame_all([b"a", b"b" * 50])[0] + bytes(5000),
}


def outcome(scan: RecordScan) -> tuple[list[tuple[int, int, bytes]], int, bool]:
    return collect(scan), scan.valid_length, scan.torn


@pytest.mark.parametrize("block", [1, 7, 64, 4096, 1 << 20])
@pytest.mark.parametrize("case", sorted(CASES))
def test_file_scan_matches_buffer_scan(tmp_path: Path, case: str, block: int) -> None:
    data = CASES[case]
    path = tmp_path / "chunk"
    path.write_bytes(data)
    fd = os.open(path, os.O_RDONLY)
    try:
        from_file = outcome(scan_file(fd, source=str(path), block=block))
    finally:
        os.close(fd)
    assert from_file == outcome(scan_records(data, source="c"))


def test_file_scan_reports_corruption_with_the_file_name(tmp_path: Path) -> None:
    data, offsets = frame_all([b"first", b"second", b"third"])
    damaged = bytearray(data)
    damaged[offsets[1] + 14] ^= 0x40
    path = tmp_path / "chunk-00000002.log"
    path.write_bytes(damaged)
    fd = os.open(path, os.O_RDONLY)
    try:
        with pytest.raises(CorruptLogError) as info:
            collect(scan_file(fd, source=str(path), block=8))
    finally:
        os.close(fd)
    assert str(info.value) == corrupt_message(str(path), offsets[1], "checksum mismatch")
    assert path.read_bytes() == damaged


def test_file_scan_stops_at_the_size_it_was_given(tmp_path: Path) -> None:
    data, offsets = frame_all([b"first", b"second", b"third"])
    path = tmp_path / "chunk"
    path.write_bytes(data)
    fd = os.open(path, os.O_RDONLY)
    try:
        whole = scan_file(fd, source="c", size=offsets[2])
        assert outcome(whole) == ([(0, 1, b"first"), (offsets[1], 1, b"second")], offsets[2], False)
        mid = scan_file(fd, source="c", size=offsets[2] + 5)
        assert outcome(mid) == ([(0, 1, b"first"), (offsets[1], 1, b"second")], offsets[2], True)
    finally:
        os.close(fd)


def test_file_that_shrank_after_the_size_was_taken_reads_as_torn(tmp_path: Path) -> None:
    data, offsets = frame_all([b"first", b"second", b"third"])
    path = tmp_path / "chunk"
    path.write_bytes(data[: offsets[2] + 14])
    fd = os.open(path, os.O_RDONLY)
    try:
        scan = scan_file(fd, source="c", size=len(data), block=4)
        assert outcome(scan) == ([(0, 1, b"first"), (offsets[1], 1, b"second")], offsets[2], True)
        assert scan.torn_reason == "the data shrank while it was being read"
    finally:
        os.close(fd)


# -- properties ----------------------------------------------------------------------------------


@given(
    bodies=st.lists(st.binary(max_size=40), min_size=1, max_size=8),
    rtypes=st.lists(st.integers(0, 255), min_size=8, max_size=8),
    cut=st.integers(0, 1000),
)
def test_any_cut_yields_exactly_the_complete_prefix(
    bodies: list[bytes], rtypes: list[int], cut: int
) -> None:
    frames = [encode_record(body, rtype) for body, rtype in zip(bodies, rtypes, strict=False)]
    data = b"".join(frames)
    cut = min(cut, len(data))
    expected = []
    end = 0
    for frame, body, rtype in zip(frames, bodies, rtypes, strict=False):
        if end + len(frame) > cut:
            break
        expected.append((end, rtype, body))
        end += len(frame)
    scan = scan_records(data[:cut], source="c")
    assert collect(scan) == expected
    assert scan.valid_length == end
    assert scan.torn == (cut != end)
