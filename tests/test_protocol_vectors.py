"""Every byte-level test vector in docs/protocol.md, recomputed with the real code.

The vectors are read out of the document itself: a fenced block whose info string is
``hex vector=NAME`` holds the bytes of vector NAME as hex digits, with any whitespace and
``#`` comments ignored. Each name is built here by a function of the real encoders, and the
decoders are run over the document's bytes as well, so neither side can drift from the other.
The worked examples of the document (deduplication, rebase, resume) are replayed too, the
batch rules are checked against ``wire.scan_batch``, and the real handshake code of both ends is
run against the documented frames.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import hashlib
import hmac
import logging
import math
import re
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any
from uuid import UUID

import anyio
import cbor2
import pytest

from ambrosia_edge import codec, handshake, messages, wire
from ambrosia_edge.checkpoint import Checkpoint, decode_checkpoint
from ambrosia_edge.codec import ProxyRef
from ambrosia_edge.coordinator import MAX_MESSAGE, Coordinator, CoordinatorOptions
from ambrosia_edge.errors import (
    AuthenticationError,
    BrokenByPeer,
    CodecError,
    CorruptLogError,
    ProtocolError,
)
from ambrosia_edge.executor import Executor
from ambrosia_edge.handshake import MIGRATE_LABEL, OFFER_LABEL
from ambrosia_edge.handshake import mac as _mac
from ambrosia_edge.immortal import Immortal, rpc
from ambrosia_edge.messages import Kind
from ambrosia_edge.outputs import Output
from ambrosia_edge.page import Entry, Page, chunk_header, decode_chunk_header, decode_page
from ambrosia_edge.peers import MAX_BATCH
from ambrosia_edge.records import RecordType, encode_record, scan_records
from ambrosia_edge.seal import Seal, decode_seal, is_seal
from ambrosia_edge.wire import Frame

DOC = Path(__file__).resolve().parent.parent / "docs" / "protocol.md"
_FENCE = re.compile(r"^```hex vector=(\S+)[ \t]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
_OPENING = re.compile(r"^```hex\b.*$", re.MULTILINE)


def _hex_of(text: str, name: str) -> bytes:
    digits = "".join(line.split("#", 1)[0] for line in text.splitlines())
    digits = "".join(digits.split())
    if not digits or not re.fullmatch(r"(?:[0-9a-f]{2})+", digits):
        raise AssertionError(f"vector {name} in {DOC.name} is not lower-case hex bytes")
    return bytes.fromhex(digits)


def doc_vectors() -> dict[str, bytes]:
    text = DOC.read_text(encoding="utf-8")
    found: dict[str, bytes] = {}
    for match in _FENCE.finditer(text):
        name = match[1]
        if name in found:
            raise AssertionError(f"vector {name} appears twice in {DOC.name}")
        found[name] = _hex_of(match[2], name)
    openings = len(_OPENING.findall(text))
    assert openings == len(found), f"{DOC.name} has a hex block that is not tagged vector=NAME"
    return found


_VECTORS = doc_vectors()


def vector(name: str) -> bytes:
    return _VECTORS[name]


# --- the values the vectors are built from -----------------------------------------------------

NONCE = bytes(range(16))  # the CHALLENGE's
HELLO_NONCE = bytes(range(16, 32))  # the HELLO's, which the WELCOME MAC covers
SECRET = "correct horse"


@dataclasses.dataclass
class Point:
    x: int
    y: int


class Colour(enum.Enum):
    RED = 1
    GREEN = 2


codec.register(Point, "example.Point")
codec.register(Colour, "example.Colour")

CALL_INC = messages.call("inc", (1,), {}, impulse=False)
CALL_TICK = messages.call("tick", (), {}, impulse=True)
REPLY_VALUE = (1, {300, -1, 10, "a"})


SEAL = Seal("server", "10.0.0.7:7001", 4, 978, "2026-12-05T00:50:08Z")
MIGRATE_HELLO = {
    "v": 1,
    "from": "server",
    "to": "server",
    "role": "migrate",
    "home": "10.0.0.7:7001",
    "mac": _mac(SECRET, NONCE, "server", "server", label=MIGRATE_LABEL),
    "nonce": HELLO_NONCE,
}
OFFER = {
    "immortal": "server",
    "epoch": 3,
    "last_page": 978,
    "bytes": 81920,
    "sha256": "ab" * 32,
    "mac": _mac(SECRET, HELLO_NONCE, "server", "server", label=OFFER_LABEL),
}


def page_batch() -> bytes:
    return wire.frame_message(CALL_INC) + wire.frame_message(CALL_TICK)


def page() -> Page:
    entry = Entry("client", 5, 4, 2, 1, page_batch())
    return Page(7, 2, [entry], {"client": (6, 4)}, {"client": 3})


def checkpoint() -> Checkpoint:
    return Checkpoint(
        immortal="server",
        class_path="counter:Counter",
        class_version=1,
        chunk=2,
        next_page=8,
        epoch=2,
        state=codec.encode({"count": 4}),
        next_call_id=1,
        inputs={"server": (1, 1), "client": (6, 4)},
        outputs={"server": (2, []), "client": (5, [(4, messages.reply(3, 4, where="inc"))])},
    )


def hello_fields(with_mac: bool, with_nonce: bool = False) -> dict[str, Any]:
    fields: dict[str, Any] = {"v": 1, "from": "client", "to": "server", "epoch": 3}
    if with_mac:
        fields["mac"] = _mac(SECRET, NONCE, "client", "server")
    if with_nonce:
        fields["nonce"] = HELLO_NONCE
    return fields


def welcome_fields(with_mac: bool) -> dict[str, Any]:
    fields: dict[str, Any] = {"total": 300, "replayable": 200}
    if with_mac:
        # the receiver proves the secret: its own name first, over the sender's nonce
        fields["mac"] = _mac(SECRET, HELLO_NONCE, "server", "client", welcome=True)
    return fields


REFUSAL = {"code": "auth", "message": "client at 10.0.0.7:50312 failed authentication"}
AWARE = datetime(2024, 5, 1, 12, 30, tzinfo=timezone(timedelta(hours=2)))
NAIVE = datetime(2024, 5, 1, 12, 30, 0, 500)
UID = UUID("12345678-1234-5678-1234-567812345678")

#: the value each codec vector encodes (decoding the vector must give it back)
CODEC_VALUES: dict[str, Any] = {
    "codec-int": [0, 23, 24, -1, -25, 1000, 2**64 - 1, -(2**64)],
    "codec-bignum": [2**64, -(2**64) - 1],
    "codec-float": [1.5, -0.0],
    "codec-float-special": [math.inf, -math.inf],
    "codec-text-bytes": ["é", b"\x00\xff", None, True, False],
    "codec-dict-order": {"b": 1, "a": 2},
    "codec-tuple": (1, "a"),
    "codec-tuple-key": {(1, 2): "x"},
    "codec-set": {300, -1, 10, "a"},
    "codec-frozenset": frozenset({2, 1}),
    "codec-dataclass": Point(1, 2),
    "codec-enum": Colour.GREEN,
    "codec-proxy": ProxyRef("server"),
    "codec-datetime-aware": AWARE,
    "codec-datetime-utc": datetime(2024, 5, 1, 10, 30, tzinfo=UTC),
    "codec-datetime-naive": NAIVE,
    "codec-date": date(2024, 5, 1),
    "codec-decimal": Decimal("-0.10"),
    "codec-uuid": UID,
    "codec-fraction": Fraction(1, 3),
}

VECTORS: dict[str, Callable[[], bytes]] = {
    # messages (section 3)
    "msg-call": lambda: messages.call("deposit", ("alice", 25), {"memo": "rent"}, impulse=False),
    "msg-call-inc": lambda: CALL_INC,
    "msg-call-impulse": lambda: CALL_TICK,
    "msg-request": lambda: messages.request(7, "add", (2, 3), {}),
    "msg-reply": lambda: messages.reply(7, REPLY_VALUE, where="add"),
    "msg-failure": lambda: messages.failure(7, ValueError("negative amount")),
    "msg-start": messages.start,
    "msg-capture": lambda: messages.capture(9, 1.5),
    "msg-capture-failed": lambda: messages.failure(
        9, OSError("no clock"), kind=Kind.CAPTURE_FAILED
    ),
    # frames (section 4)
    "framed-message": lambda: wire.frame_message(messages.start()),
    "frame-challenge": lambda: wire.control(Frame.CHALLENGE, {"v": 1, "nonce": NONCE}),
    "frame-hello": lambda: wire.control(Frame.HELLO, hello_fields(True)),
    "frame-hello-mutual": lambda: wire.control(Frame.HELLO, hello_fields(True, True)),
    "frame-hello-nomac": lambda: wire.control(Frame.HELLO, hello_fields(False)),
    "frame-welcome": lambda: wire.control(Frame.WELCOME, welcome_fields(False)),
    "frame-welcome-mac": lambda: wire.control(Frame.WELCOME, welcome_fields(True)),
    "frame-data": lambda: wire.data(
        1, 2, 1, [wire.frame_message(CALL_INC), wire.frame_message(CALL_TICK)]
    ),
    "frame-ack": lambda: wire.ack(5, 4),
    "frame-refuse": lambda: wire.control(Frame.REFUSE, REFUSAL),
    "hello-mac-input": lambda: b"ambrosia-edge/hello\0" + NONCE + b"client" + b"\0" + b"server",
    "hello-mac": lambda: _mac(SECRET, NONCE, "client", "server"),
    "welcome-mac-input": lambda: (
        b"ambrosia-edge/welcome\0" + HELLO_NONCE + b"server" + b"\0" + b"client"
    ),
    "welcome-mac": lambda: _mac(SECRET, HELLO_NONCE, "server", "client", welcome=True),
    # live migration (section 4.19)
    "migrate-mac-input": lambda: MIGRATE_LABEL + NONCE + b"server\0server",
    "migrate-mac": lambda: _mac(SECRET, NONCE, "server", "server", label=MIGRATE_LABEL),
    "offer-mac": lambda: _mac(SECRET, HELLO_NONCE, "server", "server", label=OFFER_LABEL),
    "frame-hello-migrate": lambda: wire.control(Frame.HELLO, MIGRATE_HELLO),
    "frame-offer": lambda: wire.control(Frame.OFFER, OFFER),
    "frame-part": lambda: wire.frame(Frame.PART, b"ustar"),
    "frame-ready": lambda: wire.control(Frame.READY, {"sha256": "ab" * 32}),
    "frame-sealed": lambda: wire.control(Frame.SEALED, {"moved_to": "10.0.0.7:7001", "epoch": 4}),
    # log records (section 5)
    "record-hello": lambda: encode_record(b"hello", 1),
    "record-empty": lambda: encode_record(b"", 0),
    "record-chunk-header": lambda: encode_record(
        chunk_header("server", 2, 8), RecordType.CHUNK_HEADER
    ),
    "record-chunk-header-upgrade": lambda: encode_record(
        chunk_header("server", 3, 12, class_version=2, incarnation="3f9c0a61d2e4b870"),
        RecordType.CHUNK_HEADER,
    ),
    "record-page": lambda: encode_record(page().encode(), RecordType.PAGE),
    "record-seal": lambda: SEAL.record(),
    # checkpoints (section 6)
    "checkpoint": lambda: checkpoint().encode(),
    "checkpoint-state": lambda: codec.encode({"count": 4}),
}
for _name, _value in CODEC_VALUES.items():
    VECTORS[_name] = functools.partial(codec.encode, _value)


# --- the document and the code agree, byte for byte ----------------------------------------------


def test_the_document_holds_exactly_the_vectors_built_here() -> None:
    assert sorted(_VECTORS) == sorted(VECTORS)


@pytest.mark.parametrize("name", sorted(VECTORS))
def test_vector_is_what_the_code_produces(name: str) -> None:
    produced = VECTORS[name]()
    assert produced.hex() == vector(name).hex(), f"docs/protocol.md vector {name} is stale"


def test_the_record_docstring_vector_is_in_the_document() -> None:
    import ambrosia_edge.records as records

    assert vector("record-hello").hex() in (records.__doc__ or "")


# --- and the decoders read the document's bytes back ---------------------------------------------


def test_records_scan_back_to_type_and_body() -> None:
    data = vector("record-hello") + vector("record-empty")
    scan = scan_records(data, source="vectors")
    assert list(scan) == [(0, 1, b"hello"), (17, 0, b"")]
    assert scan.finished and not scan.torn and scan.valid_length == len(data)


def test_a_chunk_is_its_header_record_then_its_pages() -> None:
    data = vector("record-chunk-header") + vector("record-page")
    (o1, t1, header), (o2, t2, body) = list(scan_records(data, source="chunk"))
    assert (o1, t1, o2, t2) == (0, 0, len(vector("record-chunk-header")), 1)
    assert decode_chunk_header(header, "chunk") == {
        "format": "ambrosia-edge/log",
        "version": 1,
        "immortal": "server",
        "chunk": 2,
        "first_page": 8,
    }
    decoded = decode_page(body, "chunk")
    assert decoded == page()
    (entry,) = decoded.entries
    batch = list(wire.split_messages(entry.batch, entry.count))
    assert batch == [CALL_INC, CALL_TICK]
    assert [messages.is_impulse(m) for m in batch] == [False, True]
    assert entry.replayable == sum(not messages.is_impulse(m) for m in batch)


def test_page_body_is_the_documented_cbor_array() -> None:
    body = vector("record-page")[12:]
    assert cbor2.loads(body) == [
        7,
        2,
        [["client", 5, 4, 2, 1, page_batch()]],
        {"client": [6, 4]},
        {"client": 3},
    ]


def test_frames_parse_back() -> None:
    heads = {
        "frame-challenge": Frame.CHALLENGE,
        "frame-hello": Frame.HELLO,
        "frame-hello-mutual": Frame.HELLO,
        "frame-hello-nomac": Frame.HELLO,
        "frame-welcome": Frame.WELCOME,
        "frame-welcome-mac": Frame.WELCOME,
        "frame-data": Frame.DATA,
        "frame-ack": Frame.ACK,
        "frame-refuse": Frame.REFUSE,
    }
    payloads = {}
    for name, ftype in heads.items():
        data = vector(name)
        length, parsed = wire.parse_head(data[: wire.FRAME_HEAD_SIZE])
        assert parsed is ftype
        assert length == len(data) - wire.FRAME_HEAD_SIZE, name
        payloads[name] = data[wire.FRAME_HEAD_SIZE :]
    assert wire.parse_control(payloads["frame-challenge"], "v", "nonce") == {
        "v": 1,
        "nonce": NONCE,
    }
    assert wire.parse_control(payloads["frame-hello"]) == hello_fields(True)
    assert list(wire.parse_control(payloads["frame-hello"])) == ["v", "from", "to", "epoch", "mac"]
    mutual = wire.parse_control(payloads["frame-hello-mutual"])
    assert mutual == hello_fields(True, True)
    assert list(mutual) == ["v", "from", "to", "epoch", "mac", "nonce"]
    assert wire.parse_control(payloads["frame-hello-nomac"]) == hello_fields(False)
    assert wire.parse_control(payloads["frame-welcome"]) == {"total": 300, "replayable": 200}
    welcome = wire.parse_control(payloads["frame-welcome-mac"])
    assert welcome == welcome_fields(True)
    assert list(welcome) == ["total", "replayable", "mac"]
    assert wire.parse_control(payloads["frame-refuse"]) == REFUSAL
    assert wire.parse_ack(payloads["frame-ack"]) == (5, 4)
    first, count, replayable, batch = wire.parse_data(payloads["frame-data"])
    assert (first, count, replayable) == (1, 2, 1)
    assert list(wire.split_messages(batch, count)) == [CALL_INC, CALL_TICK]
    assert list(wire.split_messages(vector("framed-message"), 1)) == [messages.start()]


def test_frame_head_limits() -> None:
    with pytest.raises(ProtocolError):
        wire.parse_head(bytes.fromhex("0000000005"))  # length 0 cannot even hold the type
    with pytest.raises(ProtocolError):
        wire.parse_head(bytes.fromhex("010000000b"))  # type 11 is not defined
    with pytest.raises(ProtocolError):
        wire.parse_head((wire.MAX_FRAME + 1).to_bytes(4, "little") + b"\x05")
    assert wire.parse_head(wire.MAX_FRAME.to_bytes(4, "little") + b"\x04")[0] == wire.MAX_FRAME - 1
    with pytest.raises(ProtocolError):
        wire.parse_data(bytes(16))  # first_total 0
    with pytest.raises(ProtocolError):
        wire.parse_data(bytes.fromhex("0100000000000000" + "01000000" + "02000000"))  # 2 of 1


def test_hello_mac_is_hmac_sha256_of_the_documented_input() -> None:
    mac = hmac.new(SECRET.encode(), vector("hello-mac-input"), hashlib.sha256).digest()
    assert mac == vector("hello-mac")
    assert wire.parse_control(vector("frame-hello")[5:])["mac"] == mac
    assert wire.parse_control(vector("frame-hello-mutual")[5:])["mac"] == mac


def test_welcome_mac_is_hmac_sha256_of_the_documented_input() -> None:
    mac = hmac.new(SECRET.encode(), vector("welcome-mac-input"), hashlib.sha256).digest()
    assert mac == vector("welcome-mac")
    assert wire.parse_control(vector("frame-welcome-mac")[5:])["mac"] == mac
    assert wire.parse_control(vector("frame-hello-mutual")[5:])["nonce"] == HELLO_NONCE
    # bound to its direction: the same nonce and names never give the HELLO MAC
    assert mac != _mac(SECRET, HELLO_NONCE, "server", "client")
    assert mac != _mac(SECRET, HELLO_NONCE, "client", "server", welcome=True)


def test_messages_decode_back() -> None:
    expected: dict[str, tuple[Kind, bool, list[Any]]] = {
        "msg-call": (Kind.CALL, False, ["deposit", ["alice", 25], {"memo": "rent"}]),
        "msg-call-inc": (Kind.CALL, False, ["inc", [1], {}]),
        "msg-call-impulse": (Kind.CALL, True, ["tick", [], {}]),
        "msg-request": (Kind.REQUEST, False, [7, "add", [2, 3], {}]),
        "msg-reply": (Kind.REPLY, False, [7, REPLY_VALUE]),
        "msg-failure": (Kind.FAILURE, False, [7, "ValueError", "negative amount"]),
        "msg-start": (Kind.START, False, []),
        "msg-capture": (Kind.CAPTURE, False, [9, 1.5]),
        "msg-capture-failed": (Kind.CAPTURE_FAILED, False, [9, "OSError", "no clock"]),
    }
    for name, want in expected.items():
        assert messages.decode(vector(name)) == want, name
    _, _, (_, value) = messages.decode(vector("msg-reply"))
    assert type(value) is tuple and type(value[1]) is set


@pytest.mark.parametrize("name", sorted(CODEC_VALUES))
def test_codec_vector_decodes_to_its_value(name: str) -> None:
    want = CODEC_VALUES[name]
    got = codec.decode(vector(name))
    assert got == want
    assert type(got) is type(want)
    if isinstance(want, dict):
        assert list(got) == list(want)  # insertion order survives
        assert [type(k) for k in got] == [type(k) for k in want]
    if isinstance(want, datetime):
        assert got.utcoffset() == want.utcoffset()
    if isinstance(want, list):
        assert [type(v) for v in got] == [type(v) for v in want]


def test_nan_is_the_half_precision_quiet_nan() -> None:
    assert codec.encode(math.nan) == bytes.fromhex("f97e00")
    assert codec.encode(math.inf) == bytes.fromhex("f97c00")


def test_checkpoint_vector_decodes() -> None:
    data = vector("checkpoint")
    assert decode_checkpoint(data, "vector") == checkpoint()
    doc = cbor2.loads(data)
    assert list(doc) == [
        "format",
        "version",
        "immortal",
        "class",
        "class_version",
        "chunk",
        "next_page",
        "epoch",
        "state",
        "next_call_id",
        "inputs",
        "outputs",
    ]
    assert doc["state"] == vector("checkpoint-state")
    assert codec.decode(doc["state"]) == {"count": 4}


# --- the worked examples of section 4 ------------------------------------------------------------


def receiver(name: str = "server", secret: str | None = None, nonce: bytes = NONCE) -> Coordinator:
    """A coordinator that is only fed batches or links: it needs no store and no transport.
    Its fresh nonces are ``nonce``, so that it writes the documented frames."""
    return Coordinator(
        name,
        None,  # type: ignore[arg-type]
        None,  # type: ignore[arg-type]
        CoordinatorOptions(secret=secret),
        nonce=lambda n: nonce,
    )


R = messages.call("inc", (), {}, impulse=False)
I = messages.call("tick", (), {}, impulse=True)  # noqa: E741


def framed(*batch: bytes) -> bytes:
    return b"".join(wire.frame_message(m) for m in batch)


def test_dedup_example_cuts_the_prefix_already_received() -> None:
    coordinator = receiver()
    coordinator.received["client"] = [4, 3]
    batch = framed(I, R, R, I)  # totals 3, 4, 5, 6
    coordinator.accept_batch("client", 3, 4, 2, batch)
    (entry,) = coordinator._pending
    assert (entry.first_total, entry.first_replayable) == (5, 4)
    assert (entry.count, entry.replayable) == (2, 1)
    assert entry.batch == framed(R, I)
    assert coordinator.received["client"] == [6, 4]
    coordinator.accept_batch("client", 5, 2, 1, framed(R, I))  # wholly a duplicate: ignored
    assert len(coordinator._pending) == 1 and coordinator.received["client"] == [6, 4]
    with pytest.raises(ProtocolError, match="gap"):
        coordinator.accept_batch("client", 8, 1, 1, framed(R))


def test_rebase_example_after_the_sender_recovered() -> None:
    out = Output("server")
    # the checkpoint kept replayable 161..175; replay regenerated 176..200
    out.restore(176, [(n, R) for n in range(161, 176)])
    for _ in range(176, 201):
        out.append(R, impulse=False)
    out.trim_replayable(170)  # the server's acknowledgement logged in a replayed page
    out.drop_impulses()
    # live, before the first connection: an impulse, replayable 201, an impulse
    out.append(I, impulse=True)
    out.append(R, impulse=False)
    out.append(I, impulse=True)
    assert len(out) == 33 and not out.has_unsent()
    out.rebase(250, 180)  # WELCOME {"total": 250, "replayable": 200 - 20}
    first, replayable, batch = out.unsent(1 << 20)
    assert (first, len(batch), replayable) == (251, 23, 21)
    assert out.next_total == 274 and out.next_replayable == 202
    assert batch[:20] == [wire.frame_message(R)] * 20
    assert batch[20:] == [wire.frame_message(m) for m in (I, R, I)]
    # the receiver accepts it as the continuation of what it holds
    coordinator = receiver()
    coordinator.received["client"] = [250, 180]
    coordinator.accept_batch("client", first, len(batch), replayable, b"".join(batch))
    (entry,) = coordinator._pending
    assert (entry.first_total, entry.first_replayable) == (251, 181)
    assert coordinator.received["client"] == [273, 201]


def test_resume_example_after_a_plain_reconnection() -> None:
    out = Output("server")
    out.rebase(0, 0)
    for n in range(1, 11):
        out.append(I if n in (3, 7) else R, impulse=n in (3, 7))
    assert out.unsent(1 << 20)[:2] == (1, 8)  # sent 1..10 on the first connection
    out.trim(4)  # ACK {total 4, replayable 3}
    out.resume(6)  # WELCOME {"total": 6, ...} on the new connection
    first, replayable, batch = out.unsent(1 << 20)
    assert (first, len(batch), replayable) == (7, 4, 3)
    assert len(out) == 4
    with pytest.raises(ProtocolError):
        out.resume(11)


# --- the batch check of section 4.4 ---------------------------------------------------------------


def test_a_documented_batch_scans_to_its_offsets_and_replayable_count() -> None:
    payload = vector("frame-data")[wire.FRAME_HEAD_SIZE :]
    _, count, replayable, batch = wire.parse_data(payload)
    assert wire.scan_batch(batch, count) == ([0, 13], replayable)


@pytest.mark.parametrize(
    ("batch", "count"),
    [
        pytest.param(framed(R, I), 3, id="fewer messages than the count"),
        pytest.param(framed(R, I) + b"\x00", 2, id="bytes left after the count"),
        pytest.param(framed(R) + bytes(4), 2, id="a zero-length message"),
        pytest.param(framed(R)[:-1], 1, id="a length running past the end"),
        pytest.param(framed(R) + b"\x01\x00\x00\x00", 2, id="a length and no message byte"),
    ],
)
def test_a_malformed_batch_is_refused_before_it_reaches_a_page(batch: bytes, count: int) -> None:
    with pytest.raises(ProtocolError):
        wire.scan_batch(batch, count)
    coordinator = receiver()
    with pytest.raises(ProtocolError):
        coordinator.accept_batch("client", 1, count, 1, batch)
    assert not coordinator._pending and coordinator.received.get("client", [0, 0]) == [0, 0]


def test_the_replayable_count_must_match_the_impulse_bits() -> None:
    coordinator = receiver()
    for claimed in (0, 2):
        with pytest.raises(ProtocolError, match="replayable"):
            coordinator.accept_batch("client", 1, 2, claimed, framed(R, I))
    assert not coordinator._pending and coordinator.received.get("client", [0, 0]) == [0, 0]
    coordinator.accept_batch("client", 1, 2, 1, framed(R, I))
    assert coordinator.received["client"] == [2, 1]
    # checked before the duplicate rule: a lying resend of what is already held is refused too
    with pytest.raises(ProtocolError):
        coordinator.accept_batch("client", 1, 2, 2, framed(R, I))
    assert len(coordinator._pending) == 1


def test_size_limits_keep_a_data_frame_within_max_frame() -> None:
    assert MAX_BATCH == wire.MAX_FRAME // 2 == 33_554_432
    assert MAX_MESSAGE == wire.MAX_FRAME // 4 == 16_777_216
    # a batch stops growing at MAX_BATCH, so it ends at most one framed message past it
    largest = wire.FRAME_HEAD_SIZE + 16 + MAX_BATCH + 4 + MAX_MESSAGE
    assert largest - 4 <= wire.MAX_FRAME  # the length field does not count itself
    coordinator = receiver()
    with pytest.raises(CodecError):
        coordinator.send("client", bytes(MAX_MESSAGE + 1), impulse=False)
    assert len(coordinator.output("client")) == 0
    coordinator.send("client", bytes(MAX_MESSAGE), impulse=False)
    assert len(coordinator.output("client")) == 1


# --- messages that cannot be decoded (section 3.1) ------------------------------------------------


class Tally(Immortal):
    def __init__(self) -> None:
        self.count = 0

    @rpc
    def inc(self, n: int) -> None:
        self.count += n


@pytest.mark.parametrize("replaying", [False, True], ids=["live", "replay"])
def test_an_undecodable_message_is_dropped_and_execution_goes_on(
    replaying: bool, caplog: pytest.LogCaptureFixture
) -> None:
    coordinator = receiver()
    tally = Tally()
    executor = Executor("server", tally, coordinator)
    executor.replaying = replaying
    with caplog.at_level(logging.ERROR, logger="ambrosia_edge"):
        executor.dispatch("client", bytes([0x09]) + b"\x80")  # kind 9 does not exist
        executor.dispatch("client", CALL_INC[:-1])  # the CBOR item is cut short
        executor.dispatch("client", CALL_INC)
    assert tally.count == 1
    assert not coordinator.outputs
    dropped = [r for r in caplog.records if "cannot be decoded" in r.getMessage()]
    assert len(dropped) == (0 if replaying else 2)


# --- the handshake of section 4.6, run with the real code of both ends ----------------------------


class ScriptedLink:
    """A Link that hands the code under test the given frames, then breaks, recording what it
    sends."""

    peer = "scripted"
    certificate_names = None
    buffered = 0

    def __init__(self, *frames: bytes) -> None:
        self.incoming = list(frames)
        self.sent: list[bytes] = []

    async def send(self, data: bytes) -> None:
        self.sent.append(bytes(data))

    async def send_parts(self, parts: list[bytes]) -> None:
        self.sent.append(b"".join(parts))

    async def receive(self) -> tuple[Frame, bytes]:
        if not self.incoming:
            raise BrokenByPeer("end of the script")
        data = self.incoming.pop(0)
        length, ftype = wire.parse_head(data[: wire.FRAME_HEAD_SIZE])
        assert len(data) == wire.FRAME_HEAD_SIZE + length
        return ftype, data[wire.FRAME_HEAD_SIZE :]

    async def receive_split(self, head: int) -> tuple[Frame, bytes, bytes]:
        ftype, payload = await self.receive()
        return ftype, payload[:head], payload[head:]

    def authenticated(self) -> None:
        pass

    async def aclose(self) -> None:
        pass


async def initiate(client: Coordinator, link: ScriptedLink, destination: str) -> tuple[int, int]:
    """The sender's side of the handshake, as the client's sender runs it."""
    return await handshake.initiate(
        link,  # type: ignore[arg-type]
        name=client.name,
        destination=destination,
        epoch=client.epoch,
        secret=client.options.secret,
        nonce=client._nonce,
    )


def sender(secret: str | None) -> Coordinator:
    client = receiver("client", secret, nonce=HELLO_NONCE)
    client.epoch = 3
    return client


def refusal(data: bytes) -> dict[str, Any]:
    _, ftype = wire.parse_head(data[: wire.FRAME_HEAD_SIZE])
    assert ftype is Frame.REFUSE
    return wire.parse_control(data[wire.FRAME_HEAD_SIZE :], "code", "message")


@pytest.mark.anyio
async def test_the_sender_writes_the_documented_hello_and_accepts_the_welcome() -> None:
    link = ScriptedLink(vector("frame-challenge"), vector("frame-welcome-mac"))
    assert await initiate(sender(SECRET), link, "server") == (300, 200)
    assert link.sent == [vector("frame-hello-mutual")]
    # without a secret: no mac, no nonce, and a WELCOME mac is ignored
    link = ScriptedLink(vector("frame-challenge"), vector("frame-welcome-mac"))
    assert await initiate(sender(None), link, "server") == (300, 200)
    assert link.sent == [vector("frame-hello-nomac")]


WELCOME_MAC = _mac(SECRET, HELLO_NONCE, "server", "client", welcome=True)


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("challenge", "welcome", "error"),
    [
        pytest.param({"v": 2, "nonce": NONCE}, None, ProtocolError, id="challenge v 2"),
        pytest.param({"v": 1, "nonce": NONCE[:15]}, None, ProtocolError, id="nonce 15 bytes"),
        pytest.param({"v": 1, "nonce": "0" * 16}, None, ProtocolError, id="nonce as text"),
        pytest.param(None, {"total": 300, "replayable": 200}, AuthenticationError, id="no mac"),
        pytest.param(
            None,
            {"total": 300, "replayable": 200, "mac": vector("hello-mac")},
            AuthenticationError,
            id="the hello mac",
        ),
        pytest.param(
            None,
            {"total": 300, "replayable": 200, "mac": WELCOME_MAC.hex()},
            AuthenticationError,
            id="mac as text",
        ),
        pytest.param(
            None, {"total": -1, "replayable": 0, "mac": WELCOME_MAC}, ProtocolError, id="negative"
        ),
        pytest.param(
            None, {"total": True, "replayable": 0, "mac": WELCOME_MAC}, ProtocolError, id="bool"
        ),
        pytest.param(
            None, {"total": "300", "replayable": 0, "mac": WELCOME_MAC}, ProtocolError, id="text"
        ),
        pytest.param(
            None,
            {"total": 200, "replayable": 300, "mac": WELCOME_MAC},
            ProtocolError,
            id="replayable above total",
        ),
    ],
)
async def test_the_sender_refuses_a_bad_challenge_or_welcome(
    challenge: dict[str, Any] | None,
    welcome: dict[str, Any] | None,
    error: type[Exception],
) -> None:
    frames = [
        vector("frame-challenge")
        if challenge is None
        else wire.control(Frame.CHALLENGE, challenge),
        vector("frame-welcome-mac") if welcome is None else wire.control(Frame.WELCOME, welcome),
    ]
    link = ScriptedLink(*frames)
    with pytest.raises(error) as caught:
        await initiate(sender(SECRET), link, "server")
    if error is ProtocolError:
        assert not isinstance(caught.value, AuthenticationError)
    assert len(link.sent) == (0 if challenge is not None else 1)


@pytest.mark.anyio
async def test_the_receiver_writes_the_documented_challenge_and_welcome() -> None:
    server = receiver(secret=SECRET)
    server.received["client"] = [300, 200]
    server.durable["client"] = (300, 200)
    link = ScriptedLink(vector("frame-hello-mutual"))
    await server.serve_link(link)
    assert link.sent == [vector("frame-challenge"), vector("frame-welcome-mac"), wire.ack(300, 200)]
    # a receiver without a secret ignores mac and nonce, and proves nothing
    server = receiver()
    server.received["client"] = [300, 200]
    server.durable["client"] = (300, 200)
    link = ScriptedLink(vector("frame-hello-mutual"))
    await server.serve_link(link)
    assert link.sent == [vector("frame-challenge"), vector("frame-welcome"), wire.ack(300, 200)]


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("hello", "code"),
    [("frame-hello", "protocol"), ("frame-hello-nomac", "auth")],
    ids=["mac without nonce", "no mac"],
)
async def test_a_receiver_with_the_secret_refuses_an_incomplete_hello(
    hello: str, code: str
) -> None:
    link = ScriptedLink(vector(hello))
    await receiver(secret=SECRET).serve_link(link)
    challenge, refused = link.sent
    assert challenge == vector("frame-challenge")
    assert refusal(refused)["code"] == code


@pytest.mark.anyio
async def test_welcome_waits_until_the_received_watermark_is_durable() -> None:
    server = receiver(secret=SECRET)
    server.received["client"] = [300, 200]  # accepted, still in the page being built
    server.durable["client"] = (250, 180)
    link = ScriptedLink(vector("frame-hello-mutual"))
    async with anyio.create_task_group() as tg:
        tg.start_soon(server.serve_link, link)
        await anyio.wait_all_tasks_blocked()
        assert link.sent == [vector("frame-challenge")]
        server.durable["client"] = (300, 200)  # the page is written
        server._durable_changed.set()
    assert link.sent == [vector("frame-challenge"), vector("frame-welcome-mac"), wire.ack(300, 200)]


def test_a_seal_is_told_from_a_page_by_its_body_and_refused_as_a_page() -> None:
    ((_, rtype, body),) = scan_records(vector("record-seal"), source="vector")
    assert rtype == RecordType.SEAL and is_seal(body)
    assert decode_seal(body, "vector") == SEAL
    assert not is_seal(vector("record-page")[12:])
    # a release-1 reader takes every record after the chunk header for a page: it stops here
    with pytest.raises(CorruptLogError, match=r"not a valid page .* incompatible version"):
        decode_page(body, "vector")
