"""What is fuzzed: every parser that reads bytes a stranger or a damaged disk can hand us.

Each target takes one input (bytes) and returns normally when the input ended as it must:
accepted as a valid value, or refused with the project's own error (an ``AmbrosiaError``, which
the CLI prints as one line naming the thing). Anything else raises :class:`Finding`, or escapes
as the unexpected exception it is (a ``KeyError`` from a parser is a bug: it would crash a
coordinator or print a traceback to an operator). A target also checks what it accepted: a
frame, record or page it returns must be the one its bytes encode, so corrupt input is never
taken for data.

The targets run under atheris (coverage-guided, ``python -m tools.fuzz``) and under Hypothesis
with the committed corpus in the test suite (``tests/test_fuzz.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ambrosia_edge.transports.asyncio_link import FrameProtocol

from ambrosia_edge import wire
from ambrosia_edge.checkpoint import decode_checkpoint
from ambrosia_edge.config import load_settings
from ambrosia_edge.errors import AmbrosiaError
from ambrosia_edge.handshake import Hello, check
from ambrosia_edge.page import decode_chunk_header, decode_page
from ambrosia_edge.records import encode_record, scan_records

__all__ = ["TARGETS", "Finding"]


class Finding(AssertionError):
    """An input the target handled wrongly: accepted what it should not, or lost something."""


class _Transport(asyncio.Transport):
    """What FrameProtocol asks of its transport while bytes arrive: to pause reading."""

    def __init__(self) -> None:
        super().__init__()
        self.paused = False

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False


def frames(data: bytes) -> None:
    """Bytes from a peer, cut into reads as the first byte says, into frames: every frame
    delivered is exactly the bytes it came from, in order; a malformed head is a
    ProtocolError and nothing after it is delivered. The first bit of the second byte says
    whether the peer has authenticated (large frames allowed) or not."""
    if len(data) < 2:
        return
    step, authenticated, stream = data[0] + 1, data[1] & 1, data[2:]
    protocol = FrameProtocol()
    protocol.connection_made(_Transport())
    if authenticated:
        protocol.authenticated()
    at = 0
    while at < len(stream) and protocol.error is None:
        buffer = protocol.get_buffer(step)
        n = min(len(buffer), step, len(stream) - at)
        buffer[:n] = stream[at : at + n]
        at += n
        protocol.buffer_updated(n)
    delivered = b"".join(wire.frame(ftype, head + body) for ftype, head, body in protocol.frames)
    if not stream.startswith(delivered):
        raise Finding("the frames delivered are not the bytes that arrived")
    if protocol.error is not None and not isinstance(protocol.error, AmbrosiaError):
        raise protocol.error
    protocol.connection_lost(None)


def hello(data: bytes) -> None:
    """A HELLO from a peer that has not authenticated: parsed and checked as the listener
    does, with and without a shared secret. Refusal is a ProtocolError."""
    try:
        fields = wire.parse_control(data, "v", "from", "to")
        received = Hello(str(fields["from"]), fields, b"\x00" * 16)
        for secret in (None, "s3cret"):
            with contextlib.suppress(AmbrosiaError):
                check(received, name="server", secret=secret, peer="127.0.0.1:1")
    except AmbrosiaError:
        return


def control(data: bytes) -> None:
    """Any control frame's fields (CHALLENGE, WELCOME, ACK, REFUSE): the field readers
    accept only what they promise (a non-negative int, bytes of one size)."""
    try:
        fields = wire.parse_control(data)
    except AmbrosiaError:
        return
    for key in list(fields)[:4]:
        if not isinstance(key, str):
            continue
        try:
            value = wire.int_field(fields, key)
        except AmbrosiaError:
            pass
        else:
            if type(value) is not int or value < 0:
                raise Finding(f"int_field accepted {value!r}")
        try:
            raw = wire.bytes_field(fields, key, 16)
        except AmbrosiaError:
            pass
        else:
            if not isinstance(raw, bytes) or len(raw) != 16:
                raise Finding(f"bytes_field accepted {raw!r}")
    with contextlib.suppress(AmbrosiaError):
        wire.parse_ack(data)
    with contextlib.suppress(AmbrosiaError):
        wire.parse_data(data)


def records(data: bytes) -> None:
    """A chunk file's bytes, damaged anywhere: each record the scanner accepts re-encodes to
    the very bytes it was read from (its checksum held), and the pages among them decode or
    are refused as corrupt."""
    try:
        scan = scan_records(data, source="fuzz")
        for offset, rtype, body in scan:
            if (
                encode_record(body, rtype)
                != data[offset : offset + len(encode_record(body, rtype))]
            ):
                raise Finding(f"record at {offset} accepted but not what its bytes encode")
            with contextlib.suppress(AmbrosiaError):
                if offset == 0:
                    decode_chunk_header(body, "fuzz")
                else:
                    decode_page(body, "fuzz")
    except AmbrosiaError:
        return


def page(data: bytes) -> None:
    """A page body whose checksum held (a buggy or older writer): decoded, or CorruptLogError."""
    try:
        decoded = decode_page(data, "fuzz")
    except AmbrosiaError:
        return
    if decode_page(decoded.encode(), "again") != decoded:
        raise Finding("a decoded page does not survive its own round trip")


def checkpoint(data: bytes) -> None:
    """A checkpoint document from a store: decoded, or CheckpointError."""
    try:
        doc = decode_checkpoint(data, "fuzz")
    except AmbrosiaError:
        return
    if decode_checkpoint(doc.encode(), "again") != doc:
        raise Finding("a decoded checkpoint does not survive its own round trip")


_CONFIG_DIR = Path(tempfile.mkdtemp(prefix="ambrosia-fuzz-config-"))


def config(data: bytes) -> None:
    """A TOML config file's bytes: Settings, or a ConfigError naming the file."""
    path = _CONFIG_DIR / "app.toml"
    path.write_bytes(data)
    saved = {k: os.environ.pop(k) for k in list(os.environ) if k.startswith("AMBROSIA_EDGE_")}
    try:
        load_settings(path)
    except AmbrosiaError:
        pass
    finally:
        os.environ.update(saved)


TARGETS: dict[str, Callable[[bytes], Any]] = {
    "frames": frames,
    "hello": hello,
    "control": control,
    "records": records,
    "page": page,
    "checkpoint": checkpoint,
    "config": config,
}
