"""Links on asyncio's own protocol API, which lets the kernel write a large frame straight into
the bytes object it is delivered in.

Through a byte stream, a 4 MiB DATA frame arrives as some sixteen 256 KiB chunks that must then
be joined: a copy of every byte, on the event loop, holding the GIL for a millisecond at a time
while the log writer's thread waits for it. Here the protocol parses frames as bytes arrive,
and hands the socket the frame's own storage to read the rest of a large body into. Small
frames are cut from one reusable buffer. On trio, links are anyio streams (transports/tcp.py).
"""

from __future__ import annotations

import asyncio
import copy
import ssl
import sys
from collections import deque
from typing import Any, cast

from ambrosia_edge.errors import BrokenByPeer, ClosedByUs, ProtocolError
from ambrosia_edge.tls import certificate_names
from ambrosia_edge.wire import (
    DATA_HEAD_SIZE,
    FRAME_HEAD_SIZE,
    MAX_FRAME,
    PREAUTH_MAX_FRAME,
    Frame,
    parse_head,
)

#: Bodies from this size on are read straight into their own bytes object.
LARGE_BODY = 64 * 1024
#: The buffer small frames are received into; a small frame's body is under LARGE_BODY.
_BUFFER = 256 * 1024
#: The buffer before the handshake: room for two frames of PREAUTH_MAX_FRAME (so a whole one
#: always fits after the unparsed rest is moved to the front), and an idle stranger costs
#: 8 KiB, not 256.
_PREAUTH_BUFFER = 2 * (FRAME_HEAD_SIZE + PREAUTH_MAX_FRAME)
#: Parsed frames not yet taken by the coordinator, in bytes, beyond which reading pauses (the
#: coordinator stops taking frames while its next page is full).
_PAUSE_AT = 8 * 1024 * 1024
#: What a parsed frame counts for against _PAUSE_AT besides its payload: its objects, so that a
#: flood of empty frames pauses reading too.
_FRAME_COST = 128
#: Frames whose payload is delivered as a fixed head apart from the rest (Link.receive_split).
_SPLIT = {Frame.DATA: DATA_HEAD_SIZE}


def _bytes_to_fill(n: int) -> tuple[bytes | None, memoryview]:
    """A new bytes object of ``n`` bytes and a writable view of its storage.

    CPython builds bytes this way itself (PyBytes_FromStringAndSize(NULL, n), then writes into
    it): the object is filled here before any other code can see it, and it is immutable
    from then on. Where that is not available, the body is read into a bytearray, and
    ``_Body.finish`` copies it into bytes once (``None`` stands for that bytes object here).
    """
    if _new_bytes is None:
        return None, memoryview(bytearray(n))
    data = _new_bytes(None, n)
    return data, _view_of(id(data) + _BYTES_DATA_OFFSET, n, _PYBUF_WRITE)


def _bytes_in_place() -> tuple[Any, Any]:
    """CPython's two functions the trick needs, if this interpreter is CPython and they
    behave as expected (checked once, on a small object)."""
    try:
        import ctypes

        new_bytes = ctypes.pythonapi.PyBytes_FromStringAndSize
        new_bytes.restype = ctypes.py_object
        new_bytes.argtypes = (ctypes.c_char_p, ctypes.c_ssize_t)
        view_of = ctypes.pythonapi.PyMemoryView_FromMemory
        view_of.restype = ctypes.py_object
        view_of.argtypes = (ctypes.c_void_p, ctypes.c_ssize_t, ctypes.c_int)
        probe = new_bytes(None, 8)
        view_of(id(probe) + _BYTES_DATA_OFFSET, 8, _PYBUF_WRITE)[:] = b"ambrosia"
        if probe != b"ambrosia":
            return None, None
    except (ImportError, AttributeError, OSError):  # no ctypes, or not CPython
        return None, None
    return new_bytes, view_of


#: where a bytes object's data starts (PyBytesObject.ob_sval), and PyBUF_WRITE
_BYTES_DATA_OFFSET = bytes.__basicsize__ - 1
_PYBUF_WRITE = 0x200
_new_bytes: Any
_view_of: Any
_new_bytes, _view_of = _bytes_in_place() if sys.implementation.name == "cpython" else (None, None)


class _Body:
    """A large body being read straight into its bytes object."""

    __slots__ = ("data", "filled", "ftype", "head", "view")

    def __init__(self, ftype: Frame, head: bytes, size: int) -> None:
        self.ftype = ftype
        self.head = head
        self.data, self.view = _bytes_to_fill(size)
        self.filled = 0

    def finish(self) -> bytes:
        """The body, once the view is filled."""
        return self.data if self.data is not None else bytes(self.view)


class FrameProtocol(asyncio.BufferedProtocol):
    """Parses frames as they arrive into (type, fixed head, rest) for AsyncioLink."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.frames: deque[tuple[Frame, bytes, bytes]] = deque()
        self.held = 0  # what ``frames`` holds, in bytes: payloads, and _FRAME_COST each
        self._buffer = bytearray(_PREAUTH_BUFFER)
        self._view = memoryview(self._buffer)
        self.max_frame = PREAUTH_MAX_FRAME  # until authenticated()
        self._start = 0  # unparsed bytes are _buffer[_start:_end]
        self._end = 0
        self._body: _Body | None = None
        self.error: Exception | None = None  # a malformed frame, or the connection's end
        self.closed = False
        self._waiter: asyncio.Future[None] | None = None
        self._writable: asyncio.Future[None] | None = None
        self._paused = False

    @property
    def buffered(self) -> int:
        body = self._body
        return self.held + self._end - self._start + (body.filled if body is not None else 0)

    def authenticated(self) -> None:
        """Lift the limits of a peer that has not authenticated: frames up to MAX_FRAME, and
        the full-size buffer (what is unparsed in the small one moves over)."""
        if self.max_frame == MAX_FRAME:
            return
        self.max_frame = MAX_FRAME
        rest = self._end - self._start
        buffer = bytearray(max(_BUFFER, rest))
        buffer[:rest] = self._view[self._start : self._end]
        self._buffer, self._view = buffer, memoryview(buffer)
        self._start, self._end = 0, rest

    # -- asyncio's side --------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def get_buffer(self, sizehint: int) -> memoryview:
        body = self._body
        if body is not None:
            return body.view[body.filled :]
        if self._start and len(self._buffer) - self._end < LARGE_BODY:
            # keep room for at least one small frame after what is still unparsed
            rest = self._end - self._start
            self._view[:rest] = self._view[self._start : self._end]
            self._start, self._end = 0, rest
        return self._view[self._end :]

    def buffer_updated(self, nbytes: int) -> None:
        body = self._body
        if body is not None:
            body.filled += nbytes
            if body.filled == len(body.view):
                self._body = None
                self._deliver(body.ftype, body.head, body.finish())
            return
        self._end += nbytes
        try:
            self._parse()
        except (ProtocolError, MemoryError) as exc:
            # nothing after a malformed head can be framed: stop reading, and leave the link
            # to the coordinator, which refuses the peer and closes it
            self._fail(exc)
            self._start = self._end = 0
            if self.transport is not None:
                self.transport.pause_reading()

    def eof_received(self) -> bool:
        self._fail(ConnectionResetError("the peer closed the connection"))
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(exc or ConnectionResetError("the connection closed"))
        # Nothing more can arrive: a half-received body (up to 64 MiB) and the buffer go now,
        # even if an exception's traceback keeps this protocol alive until a collection.
        self._body = None
        self._buffer = bytearray()
        self._view = memoryview(self._buffer)
        self._start = self._end = 0
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)

    def pause_writing(self) -> None:
        self._writable = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)
        self._writable = None

    # -- parsing ---------------------------------------------------------------------------------

    def _parse(self) -> None:
        view, start, end, limit = self._view, self._start, self._end, self.max_frame
        while end - start >= FRAME_HEAD_SIZE:
            length, ftype = parse_head(bytes(view[start : start + FRAME_HEAD_SIZE]), limit)
            split = _SPLIT.get(ftype, 0)
            if length < split:
                split = 0  # too short for its fixed head: delivered whole, for the link to refuse
            at = start + FRAME_HEAD_SIZE
            rest = length - split
            if rest >= LARGE_BODY:
                if end - at < split:
                    break  # the fixed head first
                head = bytes(view[at : at + split])
                at += split
                body = _Body(ftype, head, rest)
                have = min(end - at, rest)
                body.view[:have] = view[at : at + have]
                body.filled = have
                start = at + have
                if have == rest:
                    self._deliver(ftype, head, body.finish())
                    continue
                self._body = body  # the socket reads the rest straight into it
                break
            if end - at < length:
                break
            head = bytes(view[at : at + split]) if split else b""
            self._deliver(ftype, head, bytes(view[at + split : at + length]))
            start = at + length
        if start == end:
            start = end = 0
        self._start, self._end = start, end

    def _deliver(self, ftype: Frame, head: bytes, body: bytes) -> None:
        self.frames.append((ftype, head, body))
        self.held += len(head) + len(body) + _FRAME_COST
        if self.held >= _PAUSE_AT and not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()
        self.wake()

    def _fail(self, exc: Exception) -> None:
        if self.error is None:
            self.error = exc
        self.wake()

    def wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- the link's side -------------------------------------------------------------------------

    async def next_frame(self) -> tuple[Frame, bytes, bytes]:
        while not self.frames:
            if self.closed:
                raise ClosedByUs("closed")
            if self.error is not None:
                # a copy: raising the stored error would give it a traceback through this
                # frame, and so a cycle (error, traceback, frame, protocol, error) that keeps
                # the protocol and what it holds until the cycle collector runs
                raise copy.copy(self.error)
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        frame = self.frames.popleft()
        self.held -= len(frame[1]) + len(frame[2]) + _FRAME_COST
        if (
            self._paused
            and self.held < _PAUSE_AT // 2
            and self.error is None  # (after an error reading stays paused: see buffer_updated)
            and self.transport is not None
        ):
            self._paused = False
            self.transport.resume_reading()
        return frame

    async def writable(self) -> None:
        if self._writable is not None:
            # shielded: the future is shared, and a cancelled waiter must not cancel it for
            # the others (a REFUSE sent after the ACK writer was cancelled)
            await asyncio.shield(self._writable)


class AsyncioLink:
    """A framed TCP connection on asyncio's protocol API; see the module's docstring."""

    def __init__(self, transport: asyncio.Transport, protocol: FrameProtocol) -> None:
        self._transport = transport
        self._protocol = protocol
        address = transport.get_extra_info("peername")
        self.peer = f"{address[0]}:{address[1]}" if isinstance(address, tuple) else "?"
        self.certificate_names: frozenset[str] | None = None
        if transport.get_extra_info("sslcontext") is not None:
            self.certificate_names = certificate_names(transport.get_extra_info("peercert"))
        # writelines is a gathered write on uvloop and on Python 3.12+, but before 3.12.9
        # and 3.13.2 the latter never paused the writer (CPython issue 127655)
        self._gather = type(transport).__module__.startswith("uvloop") or (
            (3, 12, 9) <= sys.version_info[:3] < (3, 13) or sys.version_info[:3] >= (3, 13, 2)
        )

    @property
    def buffered(self) -> int:
        return self._protocol.buffered

    def authenticated(self) -> None:
        self._protocol.authenticated()

    async def send(self, data: bytes) -> None:
        self._check_open()
        self._transport.write(data)
        await self._protocol.writable()

    async def send_parts(self, parts: list[bytes]) -> None:
        self._check_open()
        if self._gather:
            self._transport.writelines(parts)
        else:
            self._transport.write(b"".join(parts))
        await self._protocol.writable()

    def _check_open(self) -> None:
        protocol = self._protocol
        if protocol.closed:
            raise ClosedByUs(f"link to {self.peer} was closed")
        if protocol.error is not None or self._transport.is_closing():
            raise BrokenByPeer(f"link to {self.peer} broke: {protocol.error or 'closed'}")

    async def receive(self) -> tuple[Frame, bytes]:
        ftype, _, payload = await self.receive_split(0)
        return ftype, payload

    async def receive_split(self, head: int) -> tuple[Frame, bytes, bytes]:
        try:
            ftype, first, rest = await self._protocol.next_frame()
        except ClosedByUs:
            raise ClosedByUs(f"link to {self.peer} was closed") from None
        except ProtocolError:
            raise
        except Exception as exc:  # the connection's end, or what broke parsing (no memory)
            raise BrokenByPeer(f"link to {self.peer} broke: {exc or type(exc).__name__}") from exc
        if len(first) != head:  # delivered split otherwise than asked: split as asked
            payload = first + rest
            first, rest = payload[:head], payload[head:]
        return ftype, first, rest

    async def aclose(self) -> None:
        """Close after what is written so far has gone, but not wait for a peer that stopped
        reading: the connection is aborted after _CLOSE_GRACE seconds."""
        protocol = self._protocol
        protocol.closed = True
        protocol.wake()
        transport = self._transport
        if not transport.is_closing():
            transport.close()
            asyncio.get_running_loop().call_later(_CLOSE_GRACE, transport.abort)


#: How long a closed link may take to deliver what was written before it is aborted.
_CLOSE_GRACE = 1.0


def on_asyncio() -> bool:
    """Whether this is asyncio's event loop (anyio may run on trio's instead)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


async def connect(
    host: str, port: int, *, tls: ssl.SSLContext | None = None, name: str | None = None
) -> AsyncioLink:
    """A link to ``host:port``; with ``tls``, over TLS to a peer whose certificate is for
    ``name``."""
    loop = asyncio.get_running_loop()
    try:
        if tls is None:
            transport, protocol = await loop.create_connection(FrameProtocol, host, port)
        else:
            transport, protocol = await loop.create_connection(
                FrameProtocol, host, port, ssl=tls, server_hostname=name
            )
    except OSError as exc:  # ssl.SSLError and ssl.CertificateError among them
        raise BrokenByPeer(f"cannot connect to {host}:{port}: {exc}") from None
    return _link(transport, protocol)


async def accepted(sock: Any, *, tls: ssl.SSLContext | None = None) -> AsyncioLink:
    """The link of a connection just accepted (raises OSError if it is already gone, or if
    the TLS handshake fails)."""
    loop = asyncio.get_running_loop()
    if tls is None:
        transport, protocol = await loop.connect_accepted_socket(FrameProtocol, sock)
    else:
        transport, protocol = await loop.connect_accepted_socket(FrameProtocol, sock, ssl=tls)
    return _link(transport, protocol)


def _link(transport: Any, protocol: Any) -> AsyncioLink:
    # uvloop returns its own TLS protocol for an accepted TLS socket, not the one it was given;
    # the transport's protocol is ours on every loop
    if not isinstance(protocol, FrameProtocol):
        protocol = transport.get_protocol()
    return AsyncioLink(transport, protocol)
