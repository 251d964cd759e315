"""Coordinator-to-coordinator links over TCP: on asyncio through its protocol API
(transports/asyncio_link.py), on trio through anyio's byte streams."""

from __future__ import annotations

import contextlib
import errno
import logging
import socket
import ssl
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from functools import partial
from typing import Any

import anyio
import anyio.abc
from anyio.abc import SocketAttribute, SocketStream
from anyio.streams.tls import TLSAttribute, TLSStream

from ambrosia_edge.errors import BrokenByPeer, ClosedByUs, ListenError
from ambrosia_edge.tls import TlsFiles, certificate_names
from ambrosia_edge.wire import FRAME_HEAD_SIZE, MAX_FRAME, PREAUTH_MAX_FRAME, Frame, parse_head

from . import asyncio_link
from .asyncio_link import AsyncioLink

_BROKEN = (anyio.EndOfStream, anyio.BrokenResourceError, anyio.IncompleteRead, OSError)
#: accept() errors that pass once connections close; retried after _ACCEPT_BACKOFF seconds,
#: doubling up to _MAX_ACCEPT_BACKOFF while they last (the connections waiting to be accepted
#: keep the socket readable: without a pause the loop would spin)
_OUT_OF_RESOURCES = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
_ACCEPT_BACKOFF = 0.1
_MAX_ACCEPT_BACKOFF = 1.0
#: accept() errors about the pending connection itself (Linux passes them on): skip it
_PEER_GONE = frozenset(
    getattr(errno, name)
    for name in (
        "ECONNABORTED",
        "ECONNRESET",
        "EPROTO",
        "ENETDOWN",
        "ENOPROTOOPT",
        "EHOSTDOWN",
        "ENONET",
        "EHOSTUNREACH",
        "EOPNOTSUPP",
        "ENETUNREACH",
    )
    if hasattr(errno, name)
)
log = logging.getLogger("ambrosia_edge")


#: The most one receive asks for: what asyncio and uvloop read from a socket at once, so their
#: chunks are never split (a split copies the rest of the chunk).
_RECEIVE_BYTES = 256 * 1024


class _FrameReader:
    """Exact-size reads from a byte stream, copying each byte once.

    Chunks are kept as they arrive and a read is sliced from one or joined from several.
    (anyio's BufferedByteReceiveStream copies every byte into a buffer, out of it and into
    bytes again: three copies, which at 64 KiB messages cost more than the rest of receiving.)
    """

    def __init__(self, stream: anyio.abc.ByteStream) -> None:
        self._stream = stream
        self._chunks: deque[bytes] = deque()
        self._start = 0  # where the unread part of the first chunk starts
        self._size = 0  # unread bytes in all chunks

    @property
    def buffered(self) -> int:
        return self._size

    def drop(self) -> None:
        self._chunks.clear()
        self._start = self._size = 0

    async def read(self, n: int) -> bytes:
        chunks = self._chunks
        while self._size < n:
            chunk = await self._stream.receive(_RECEIVE_BYTES)
            chunks.append(chunk)
            self._size += len(chunk)
        self._size -= n
        first, start = chunks[0], self._start
        if len(first) - start > n:
            self._start = start + n
            return first[start : start + n]
        if len(first) - start == n:
            chunks.popleft()
            self._start = 0
            return first[start:] if start else first
        parts: list[bytes | memoryview] = [memoryview(first)[start:]]
        need = n - (len(first) - start)
        chunks.popleft()
        while len(chunks[0]) <= need:
            need -= len(chunks[0])
            parts.append(chunks.popleft())
            if not need:
                self._start = 0
                return b"".join(parts)
        parts.append(memoryview(chunks[0])[:need])
        self._start = need
        return b"".join(parts)


class TcpLink:
    """A framed TCP connection (over TLS or not); foreign exceptions are translated at this
    boundary."""

    def __init__(self, stream: anyio.abc.ByteStream) -> None:
        self._stream = stream
        self.certificate_names: frozenset[str] | None = None
        if isinstance(stream, TLSStream):
            cert = stream.extra(TLSAttribute.peer_certificate, None)
            self.certificate_names = certificate_names(cert)
        self._reader = _FrameReader(stream)
        self._max_frame = PREAUTH_MAX_FRAME  # until authenticated()
        try:
            stream.extra(SocketAttribute.raw_socket).setsockopt(
                socket.IPPROTO_TCP, socket.TCP_NODELAY, 1
            )
            address = stream.extra(SocketAttribute.remote_address)
            self.peer = f"{address[0]}:{address[1]}" if isinstance(address, tuple) else str(address)
        except (OSError, anyio.TypedAttributeLookupError, ValueError):
            self.peer = "?"

    @property
    def buffered(self) -> int:
        return self._reader.buffered

    def authenticated(self) -> None:
        self._max_frame = MAX_FRAME

    async def send(self, data: bytes) -> None:
        try:
            await self._stream.send(data)
        except anyio.ClosedResourceError:
            raise ClosedByUs(f"link to {self.peer} was closed") from None
        except _BROKEN as exc:
            raise BrokenByPeer(f"link to {self.peer} broke: {exc or type(exc).__name__}") from None

    async def send_parts(self, parts: list[bytes]) -> None:
        await self.send(b"".join(parts))  # anyio's streams write one buffer at a time

    async def receive(self) -> tuple[Frame, bytes]:
        ftype, _, payload = await self.receive_split(0)
        return ftype, payload

    async def receive_split(self, head: int) -> tuple[Frame, bytes, bytes]:
        read = self._reader.read
        try:
            length, ftype = parse_head(await read(FRAME_HEAD_SIZE), self._max_frame)
            if length <= head:
                return ftype, await read(length) if length else b"", b""
            first = await read(head) if head else b""
            return ftype, first, await read(length - head)
        except anyio.ClosedResourceError:
            raise ClosedByUs(f"link to {self.peer} was closed") from None
        except _BROKEN as exc:
            raise BrokenByPeer(f"link to {self.peer} broke: {exc or type(exc).__name__}") from None

    async def aclose(self) -> None:
        # what was received of a frame not yet whole (up to 64 MiB) goes now, even if an
        # exception's traceback keeps this link alive until a collection
        self._reader.drop()
        with contextlib.suppress(*_BROKEN):
            await self._stream.aclose()


class TcpTransport:
    """TCP links; with ``tls`` (ambrosia_edge/tls.py), TLS links with mutual authentication,
    whose TLS handshake on accepting must end within ``handshake_timeout`` seconds, at most
    ``max_handshakes`` at once (more are closed as they arrive: they come before the HELLO, so
    the coordinator's own cap cannot see them)."""

    def __init__(
        self,
        *,
        tls: TlsFiles | None = None,
        handshake_timeout: float = 10.0,
        max_handshakes: int = 64,
    ) -> None:
        self._server_tls = tls.server_context() if tls is not None else None
        self._client_tls = tls.client_context() if tls is not None else None
        self._handshake_timeout = handshake_timeout
        self._max_handshakes = max_handshakes
        self._handshaking = 0  # TLS handshakes under way on accepted connections

    async def connect(
        self, host: str, port: int, *, name: str | None = None
    ) -> TcpLink | AsyncioLink:
        tls = self._client_tls
        if asyncio_link.on_asyncio():
            return await asyncio_link.connect(host, port, tls=tls, name=name)
        try:
            stream: anyio.abc.ByteStream = await anyio.connect_tcp(host, port)
        except _BROKEN as exc:
            raise BrokenByPeer(f"cannot connect to {host}:{port}: {exc}") from None
        if tls is not None:
            try:
                stream = await TLSStream.wrap(
                    stream, hostname=name, ssl_context=tls, standard_compatible=False
                )
            except BaseException as exc:
                with anyio.CancelScope(shield=True):
                    await anyio.aclose_forcefully(stream)
                if isinstance(exc, (*_BROKEN, ssl.SSLError)):
                    raise BrokenByPeer(f"cannot connect to {host}:{port}: {exc}") from None
                raise
        return TcpLink(stream)

    async def serve(
        self,
        host: str,
        port: int,
        handler: Callable[[TcpLink | AsyncioLink], Awaitable[None]],
        *,
        task_status: Any = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        try:
            listener = await anyio.create_tcp_listener(
                local_host=host, local_port=port, reuse_port=False
            )
        except OSError as exc:
            raise _listen_error(host, port, exc) from exc
        bound = listener.extra(SocketAttribute.local_port)
        # one per address family that ``host`` resolves to
        listeners = getattr(listener, "listeners", [listener])

        async def accepted(link: TcpLink | AsyncioLink) -> None:
            try:
                await handler(link)
            finally:
                await link.aclose()

        secure = None
        if self._server_tls is not None:
            secure = partial(self._secure, self._server_tls, accepted)
        async with listener, anyio.create_task_group() as tg:
            for one in listeners:
                raw = one.extra(SocketAttribute.raw_socket)
                tg.start_soon(_accept, raw, accepted, tg, secure)
            task_status.started(bound)

    async def _secure(
        self,
        context: ssl.SSLContext,
        accepted: Callable[[TcpLink | AsyncioLink], Coroutine[Any, Any, None]],
        conn: socket.socket,
    ) -> None:
        """The TLS handshake of an accepted connection, in its own task (a slow or silent peer
        must not hold up accepting others), then ``accepted``."""
        if self._handshaking >= self._max_handshakes:
            conn.close()  # a flood: the TLS handshakes under way are enough
            return
        self._handshaking += 1
        try:
            link = await _tls_link(context, self._handshake_timeout, conn)
        finally:
            self._handshaking -= 1
        if link is not None:
            await accepted(link)


#: what to do about the bind() errors a user can cause with ``--listen``
_LISTEN_HINTS = {
    errno.EADDRINUSE: "another process holds it; stop it or pick another --listen port",
    errno.EADDRNOTAVAIL: "no interface of this machine has that address; pick one it has",
    errno.EACCES: "ports below 1024 need privileges; pick another --listen port",
}


def _listen_error(host: str, port: int, exc: OSError) -> ListenError:
    """The failure to listen as one line naming the address, since the user chose it."""
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    if isinstance(exc, socket.gaierror):
        return ListenError(f"cannot listen on {where}: {exc.strerror or exc} (check the host name)")
    reason = (exc.strerror or str(exc)).lower()
    hint = _LISTEN_HINTS.get(exc.errno or 0)
    return ListenError(f"cannot listen on {where}: {reason}" + (f" ({hint})" if hint else ""))


async def _tls_link(
    context: ssl.SSLContext, timeout: float, conn: socket.socket
) -> TcpLink | AsyncioLink | None:
    """The link of ``conn`` after the TLS handshake as its server; None if that failed, which
    is logged, and the connection closed: nothing from it reaches the coordinator."""
    try:
        where = "{}:{}".format(*conn.getpeername()[:2])
    except OSError:
        where = "?"
    link: TcpLink | AsyncioLink | None = None
    try:
        with anyio.fail_after(timeout):
            if asyncio_link.on_asyncio():
                link = await asyncio_link.accepted(conn, tls=context)
            else:
                stream = await SocketStream.from_socket(conn)
                link = TcpLink(
                    await TLSStream.wrap(
                        stream, server_side=True, ssl_context=context, standard_compatible=False
                    )
                )
    except (*_BROKEN, ssl.SSLError, ValueError) as exc:
        reason = "no TLS handshake in time" if isinstance(exc, TimeoutError) else str(exc)
        log.warning("refused a connection from %s: TLS: %s", where, reason or type(exc).__name__)
        conn.close()
        return None
    except BaseException:  # cancelled: the server stops
        conn.close()
        raise
    return link


async def _accept(
    sock: socket.socket,
    accepted: Callable[[TcpLink | AsyncioLink], Coroutine[Any, Any, None]],
    tg: anyio.abc.TaskGroup,
    secure: Callable[[socket.socket], Coroutine[Any, Any, None]] | None = None,
) -> None:
    """Accept connections on a listening socket, each handled in a task of its own.

    Not ``listener.serve()``: on Python 3.11's asyncio its accept can fail with
    InvalidStateError when it is cancelled just as a connection arrives (CPython issue
    153761), an error the loop reports while the server is being stopped.
    """
    backoff = 0.0  # while accept() fails for want of resources: the pause before retrying
    failures = 0
    while True:
        await anyio.wait_readable(sock)
        try:
            conn, _ = sock.accept()
        except (BlockingIOError, InterruptedError):
            continue  # taken by another waiter, or a signal: wait again
        except OSError as exc:
            if exc.errno in _PEER_GONE:
                continue  # the connection was reset or failed while it waited to be accepted
            if exc.errno not in _OUT_OF_RESOURCES:
                raise
            # too many connections at once (a flood, or a descriptor limit set low): the
            # links already up go on, and new ones are taken again when some have closed;
            # said once, not at every retry
            if not failures:
                log.warning(
                    "cannot accept connections on %s: %s; retrying, links already up go on",
                    sock.getsockname(),
                    exc,
                )
            failures += 1
            backoff = min(max(backoff * 2, _ACCEPT_BACKOFF), _MAX_ACCEPT_BACKOFF)
            await anyio.sleep(backoff)
            continue
        if failures:
            log.warning(
                "accepting connections on %s again, after %d failed attempts",
                sock.getsockname(),
                failures,
            )
            backoff, failures = 0.0, 0
        if secure is not None:
            tg.start_soon(secure, conn)  # the TLS handshake, then ``accepted``
            continue
        try:
            if asyncio_link.on_asyncio():
                link: TcpLink | AsyncioLink = await asyncio_link.accepted(conn)
            else:
                link = TcpLink(await SocketStream.from_socket(conn))
        except (OSError, ValueError):
            # reset between accept() and here (anyio then says "must be connected"): a port
            # scanner or a client that gave up must not take the server down
            conn.close()
            continue
        except BaseException:
            conn.close()
            raise
        tg.start_soon(accepted, link)
