"""Peer sessions: where peers connect. Outbound senders with backoff, inbound receivers.

For each immortal it sends to, a sender resolves the name through discovery on every attempt,
connects to each address in turn, runs the handshake (:mod:`.handshake`), realigns its output
buffer with what the receiver holds, then sends DATA while reading ACKs; when the link breaks
it waits (50 ms doubling to 5 s) and starts over. While a sender waits on the socket, new
output joins its next DATA frame. Each inbound connection is served by :meth:`serve_link`:
handshake, then DATA into the committer and ACKs of what is durable. Messages to oneself take
a link that never leaves the process (:meth:`_self_sender`), so the log is the single order of
everything the immortal executes.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable
from functools import partial
from typing import TYPE_CHECKING

import anyio

from . import handshake, tls, wire
from .errors import AuthenticationError, ConnectionClosed, ProtocolError
from .kinds import PeerAddress
from .transport import Link, Transport
from .wakeup import Wakeup
from .wire import Frame

if TYPE_CHECKING:
    from .coordinator_options import CoordinatorOptions
    from .discovery import Discovery
    from .outputs import Output

log = logging.getLogger("ambrosia_edge")

MAX_BACKOFF = 5.0
#: A DATA frame must fit in wire.MAX_FRAME: batches stop at half of it.
MAX_BATCH = wire.MAX_FRAME // 2
#: The least time between two ACKs on one connection (docs/protocol.md 4.9).
ACK_INTERVAL = 0.002
#: Batches of messages this large (the first and the last) are handed to the transport in
#: pieces, not joined into one frame first: a copy of every byte saved. Small ones are joined:
#: one gathered write of thousands of pieces cost more than the copy (16 B messages: 0.98M
#: against 1.17M msg/s).
GATHER_FROM = 8 * 1024


class Peers:
    """The link-keeping part of :class:`~ambrosia_edge.coordinator.Coordinator` (a mixin)."""

    if TYPE_CHECKING:
        # of the coordinator
        name: str
        transport: Transport
        discovery: Discovery
        options: CoordinatorOptions
        epoch: int
        received: dict[str, list[int]]
        durable: dict[str, tuple[int, int]]
        stats: dict[str, int]
        _output_room: Wakeup

        def output(self, destination: str) -> Output: ...
        def _sender_wakeup(self, destination: str) -> Wakeup: ...

        # of the committer
        _trims: dict[str, int]
        _live_values: bool
        _durable_changed: Wakeup

        async def wait_page_room(self) -> None: ...
        def accept_batch(
            self,
            source: str,
            first: int,
            count: int,
            replayable: int,
            batch: bytes,
            *,
            trusted: bool = False,
            last: bool = False,
        ) -> None: ...

    def _init_peers(self, nonce: handshake.NonceSource) -> None:
        self._nonce = nonce
        self._ack_wanted: dict[str, Wakeup] = {}
        self._inbound: dict[str, Link] = {}
        self._handshaking = 0  # inbound connections not yet through the handshake
        self._turned_away_said = -math.inf  # when we last logged that the cap was reached

    # --- outbound links ---------------------------------------------------------------------

    async def _sender(self, destination: str) -> None:
        backoff = 0.05
        out = self.output(destination)
        waiting_said = False
        while True:
            link: Link | None = None
            addresses: list[PeerAddress] = []
            try:
                # resolved on every attempt: an immortal that moved is found where it is now
                addresses = await self.discovery.resolve(destination)
                link, address = await _connect(self.transport, addresses, destination)
                total, replayable = await handshake.initiate(
                    link,
                    name=self.name,
                    destination=destination,
                    epoch=self.epoch,
                    secret=self.options.secret,
                    nonce=self._nonce,
                    timeout=self.options.handshake_timeout,
                )
                link.authenticated()
                if out.rebase_pending:
                    out.rebase(total, replayable)
                else:
                    out.resume(total)
                self._output_room.set()
                log.info(
                    "%s: connected to %s at %s:%d (it holds %d of our messages)",
                    self.name,
                    destination,
                    address.host,
                    address.port,
                    total,
                )
                backoff = 0.05
                waiting_said = False
                await _until_first_ends(
                    partial(self._read_acks, link, out), partial(self._send_loop, link, out)
                )
            except (ConnectionClosed, ProtocolError, OSError) as exc:
                if isinstance(exc, AuthenticationError | ProtocolError):
                    log.error("%s: link to %s failed: %s", self.name, destination, exc)
                elif backoff >= 0.4 and not waiting_said:
                    # a few quick retries failed: say once that we wait, and why
                    tried = " or ".join(f"{a.host}:{a.port}" for a in addresses)
                    where = f" at {tried}" if tried else ""
                    log.info(
                        "%s: waiting for %s%s (%s); calls to it are kept and sent when it is back",
                        self.name,
                        destination,
                        where,
                        exc,
                    )
                    waiting_said = True
                else:
                    log.debug("%s: link to %s down: %s", self.name, destination, exc)
            finally:
                if link is not None:
                    with anyio.CancelScope(shield=True):
                        await link.aclose()
            await anyio.sleep(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF)

    async def _send_loop(self, link: Link, out: Output) -> None:
        wake = self._sender_wakeup(out.destination)
        max_batch = min(self.options.page_bytes, MAX_BATCH)
        while True:
            first, replayable, batch = out.unsent(max_batch)
            if not batch:
                await wake.wait()
                continue
            if len(batch[0]) >= GATHER_FROM <= len(batch[-1]):
                await link.send_parts(wire.data_parts(first, len(batch), replayable, batch))
            else:
                await link.send(wire.data(first, len(batch), replayable, batch))

    async def _read_acks(self, link: Link, out: Output) -> None:
        while True:
            ftype, payload = await link.receive()
            if ftype is not Frame.ACK:
                raise ProtocolError(f"{out.destination} sent {ftype.name} where ACK was expected")
            total, replayable = wire.parse_ack(payload)
            out.trim(total)
            out.acked_total, out.acked_replayable = total, replayable
            self._trims[out.destination] = replayable
            self._output_room.set()

    async def _self_sender(self) -> None:
        """The link to oneself: output to our own name goes straight into the next page."""
        out = self.output(self.name)
        mark = self.received.get(self.name, [0, 0])
        out.rebase(mark[0], mark[1])
        wake = self._sender_wakeup(self.name)
        while True:
            captures = out.materialized
            first, replayable, batch = out.unsent(min(self.options.page_bytes, MAX_BATCH))
            if not batch:
                await wake.wait()
                continue
            await self.wait_page_room()
            if out.materialized != captures:
                self._live_values = True  # its page must not run ahead (committer.py)
            self.accept_batch(
                self.name, first, len(batch), replayable, b"".join(batch), trusted=True
            )

    # --- inbound links ----------------------------------------------------------------------

    async def serve_link(self, link: Link) -> None:
        """Handle one connection from a sender: authenticate, handshake, log what it sends.

        Until it has authenticated, a connection is a stranger's: its frames are small (the
        link's own limit), it has ``handshake_timeout`` seconds, and at most ``max_handshakes``
        such connections are served at once; the others are refused as they arrive.
        """
        if self._handshaking >= self.options.max_handshakes:
            await self._turn_away(link)
            return
        self._handshaking += 1
        authenticated = False
        source = "?"
        try:
            hello: handshake.Hello | None = None
            with anyio.move_on_after(self.options.handshake_timeout):
                hello = await handshake.accept(link, nonce=self._nonce)
            if hello is None:
                self.stats["timed_out"] += 1
                log.warning(
                    "%s: closed the connection from %s: no handshake within %g s",
                    self.name,
                    link.peer,
                    self.options.handshake_timeout,
                )
                return
            source = hello.source
            secret = self.options.secret
            handshake.check(hello, name=self.name, secret=secret, peer=link.peer)
            tls.check_claim(link.certificate_names, source, link.peer)
            link.authenticated()
            authenticated = True
            self._handshaking -= 1
            previous = self._inbound.get(source)
            self._inbound[source] = link  # a newer connection from the same sender wins
            if previous is not None:
                await previous.aclose()
            # The sender trims (or, after its own recovery, renumbers) everything we say we
            # hold, so say it only once it is durable: a page still being written could be
            # lost in a crash, and the sender must still have its messages then.
            mark = self.received.setdefault(source, [0, 0])
            while self.durable.get(source, (0, 0)) != (mark[0], mark[1]):
                await self._durable_changed.wait()
            await handshake.welcome(
                link, hello, name=self.name, secret=secret, total=mark[0], replayable=mark[1]
            )
            await _until_first_ends(
                partial(self._write_acks, link, source), partial(self._read_data, link, source)
            )
        except ProtocolError as exc:
            self.stats["refused"] += 1
            log.warning("%s: refused link from %s (%s): %s", self.name, source, link.peer, exc)
            await handshake.refuse(link, exc)
        except ConnectionClosed as exc:
            log.debug("%s: link from %s closed: %s", self.name, source, exc)
        finally:
            if not authenticated:
                self._handshaking -= 1
            if self._inbound.get(source) is link:
                del self._inbound[source]

    async def _turn_away(self, link: Link) -> None:
        """Refuse a connection because too many others are in the handshake (a flood, or a
        scan): said in the log once a minute at most, counted in ``stats["turned_away"]``."""
        self.stats["turned_away"] += 1
        cap = self.options.max_handshakes
        now = anyio.current_time()
        if now - self._turned_away_said >= 60:
            self._turned_away_said = now
            log.warning(
                "%s: refusing connections: %d are in the handshake, the most allowed "
                "(--max-handshakes); %d refused so far",
                self.name,
                cap,
                self.stats["turned_away"],
            )
        busy = ProtocolError(f"{self.name} has {cap} connections in the handshake; retry later")
        await handshake.refuse(link, busy)

    async def _read_data(self, link: Link, source: str) -> None:
        while True:
            await self.wait_page_room()
            ftype, head, batch = await link.receive_split(wire.DATA_HEAD_SIZE)
            if ftype is not Frame.DATA:
                raise ProtocolError(f"{source} sent {ftype.name} where DATA was expected")
            first, count, replayable = wire.parse_data_head(head)
            if self._inbound.get(source) is not link:
                return  # replaced by a newer connection
            self.accept_batch(source, first, count, replayable, batch, last=not link.buffered)

    async def _write_acks(self, link: Link, source: str) -> None:
        wake = self._ack_wanted.setdefault(source, Wakeup())
        sent = (-1, -1)
        while True:
            mark = self.durable.get(source, (0, 0))
            if mark != sent:
                await link.send(wire.ack(*mark))
                sent = mark
                await anyio.sleep(ACK_INTERVAL)  # let the pages of the next moment share one
                continue
            await wake.wait()


async def _until_first_ends(*halves: Callable[[], Awaitable[None]]) -> None:
    """Run the two directions of a link until one ends; re-raise its error unwrapped.

    A task group would wrap a broken link in an ExceptionGroup; the reconnect logic wants the
    plain ConnectionClosed or ProtocolError to tell "retry" from "refuse".
    """
    failures: list[BaseException] = []
    async with anyio.create_task_group() as tg:

        async def run(half: Callable[[], Awaitable[None]]) -> None:
            try:
                await half()
            except (ConnectionClosed, ProtocolError, OSError) as exc:
                failures.append(exc)
            finally:
                tg.cancel_scope.cancel()

        for half in halves:
            tg.start_soon(run, half)
    if failures:
        error = failures[0]
        failures.clear()
        try:
            raise error
        finally:
            # no cycle (error, traceback, this frame, error): it would keep the link and
            # what it holds alive until the cycle collector runs
            del error


async def _connect(
    transport: Transport, addresses: list[PeerAddress], name: str
) -> tuple[Link, PeerAddress]:
    """A connection to the first of ``addresses`` that answers; the last failure if none does."""
    if not addresses:
        raise ConnectionError("no address is known for it")
    failure: BaseException | None = None
    for address in addresses:
        try:
            return await transport.connect(address.host, address.port, name=name), address
        except (ConnectionClosed, OSError) as exc:
            failure = exc
    assert failure is not None
    raise failure
