"""Peer sessions: where peers connect. Outbound senders with backoff, inbound receivers.

For each immortal it sends to, a sender resolves the name through discovery on every attempt,
connects to each address in turn and runs the handshake (:mod:`.handshake`): a standby refuses
with its own code, as does an instance moving away, and the next address is tried at once, with
no backoff while only standbys answer. Then it realigns its output buffer with what the receiver
holds and sends DATA while reading ACKs; when the link breaks
it waits (50 ms doubling to 5 s) and starts over, at once when discovery says the peer's
addresses changed; a connected sender whose peer is announced elsewhere leaves for the new
address (a peer that lost power never closes its end). While a sender waits on the socket, new
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

from . import handshake, incarnation, tls, wire
from .errors import (
    AuthenticationError,
    ClosedByUs,
    ConnectionClosed,
    IncarnationError,
    ProtocolError,
    StandbyError,
)
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
#: How often a sender that cannot reach its peer says again that it waits (seconds).
WAITING_REPEAT = 60.0
#: For this long after a peer said it is moving to a new instance, it is retried every 50 ms
#: rather than with a growing back-off: the move takes a moment, not minutes.
MOVE_GRACE = 30.0
#: The wait before asking again when only standbys answered (one is about to take over).
STANDBY_RETRY = 0.02
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
        incarnation: str | None
        peer_incarnations: dict[str, str]
        stopped_links: dict[str, str]

        def output(self, destination: str) -> Output: ...
        def _sender_wakeup(self, destination: str) -> Wakeup: ...

        # of the committer
        _trims: dict[str, int]
        _live_values: bool
        _met: dict[str, str]
        _durable_changed: Wakeup

        async def wait_page_room(self) -> None: ...

        # of the handover
        holding: bool

        async def wait_released(self) -> None: ...
        async def until_held(self) -> None: ...
        async def serve_handover(self, link: Link, hello: handshake.Hello) -> None: ...
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
        #: peers we send to over an authenticated link now, and where (shown by the web page)
        self.links_out: dict[str, PeerAddress] = {}
        self._handshaking = 0  # inbound connections not yet through the handshake
        self._turned_away_said = -math.inf  # when we last logged that the cap was reached
        self._moved_wakeups: dict[str, Wakeup] = {}
        #: the address each destination was last reached at (see _open_link)
        self._reached_at: dict[str, PeerAddress] = {}
        #: each sender's link while it is up
        self._outbound: dict[str, Link] = {}
        #: the largest epoch each source has said hello in (a new primary's is larger)
        self._hello_epochs: dict[str, int] = {}
        #: until when each destination that said it is moving is retried without back-off
        self._moving_until: dict[str, float] = {}

    def _moved(self, destination: str) -> Wakeup:
        """Set when discovery says ``destination``'s addresses may have changed."""
        wake = self._moved_wakeups.get(destination)
        if wake is None:
            wake = self._moved_wakeups[destination] = Wakeup()
        return wake

    def links_in(self) -> list[str]:
        """The peers sending to us over a link now (shown by the web page)."""
        return sorted(self._inbound)

    # --- outbound links ---------------------------------------------------------------------

    async def _sender(self, destination: str) -> None:
        backoff = 0.05
        out = self.output(destination)
        moved = self._moved(destination)
        waiting_since = waiting_said = -math.inf  # not waiting
        while True:
            await self.wait_released()  # a handover holds our output (handover.py)
            link: Link | None = None
            addresses: list[PeerAddress] = []
            try:
                # resolved on every attempt: an immortal that moved is found where it is now
                addresses = await self.discovery.resolve(destination)
                link, address, total, replayable = await self._open_link(destination, addresses)
                link.authenticated()
                self.links_out[destination] = address
                self._outbound[destination] = link
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
                waiting_since = waiting_said = -math.inf
                await _until_first_ends(
                    partial(self._read_acks, link, out),
                    partial(self._send_loop, link, out),
                    partial(self._leave_if_moved, destination, address),
                    self.until_held,
                )
            except IncarnationError as exc:
                # retrying cannot help: this link stays stopped until someone resolves it
                self.stopped_links[destination] = str(exc)
                log.error("%s: link to %s stopped: %s", self.name, destination, exc)
                return  # (the link is closed below)
            except (ConnectionClosed, ProtocolError, OSError) as exc:
                if isinstance(exc, StandbyError):
                    # only standbys answered: one of them takes over as soon as the primary's
                    # lease lapses, so ask again soon rather than backing off
                    log.debug("%s: %s", self.name, exc)
                    backoff = STANDBY_RETRY
                elif isinstance(exc, AuthenticationError | ProtocolError):
                    log.error("%s: link to %s failed: %s", self.name, destination, exc)
                elif backoff >= 0.4 and anyio.current_time() - waiting_said >= WAITING_REPEAT:
                    # a few quick retries failed: say that we wait, and why; again every
                    # WAITING_REPEAT seconds while it lasts (a peer that never comes is no error)
                    now = anyio.current_time()
                    tried = " or ".join(f"{a.host}:{a.port}" for a in addresses)
                    where = f" at {tried}" if tried else ""
                    if waiting_since == -math.inf:
                        waiting_since = now
                        still = ""
                    else:
                        still = f"still (for {now - waiting_since:.0f} s) "
                    log.info(
                        "%s: %swaiting for %s%s (%s); calls to it are kept and sent when it is "
                        "back",
                        self.name,
                        still,
                        destination,
                        where,
                        exc,
                    )
                    waiting_said = now
                else:
                    log.debug("%s: link to %s down: %s", self.name, destination, exc)
                if anyio.current_time() < self._moving_until.get(destination, -math.inf):
                    backoff = 0.05  # its new instance listens any moment: look again soon
            finally:
                self.links_out.pop(destination, None)
                if link is not None and self._outbound.get(destination) is link:
                    del self._outbound[destination]
                if link is not None:
                    with anyio.CancelScope(shield=True):
                        await link.aclose()
            with anyio.move_on_after(backoff):
                await moved.wait()
                backoff = 0.025  # told where it is now: try there at once
            backoff = min(backoff * 2, MAX_BACKOFF)

    async def _leave_if_moved(self, destination: str, address: PeerAddress) -> None:
        """End a working link when discovery announces its peer elsewhere: a device that lost
        power never closes its end, and a link to it could stay open for minutes."""
        moved = self._moved(destination)
        while True:
            await moved.wait()
            now = await self.discovery.resolve(destination)
            if now and now[0] != address:
                log.info(
                    "%s: %s is announced at %s now; leaving %s",
                    self.name,
                    destination,
                    now[0],
                    address,
                )
                raise ClosedByUs(f"{destination} moved to {now[0]}")

    async def _open_link(
        self, destination: str, addresses: list[PeerAddress]
    ) -> tuple[Link, PeerAddress, int, int]:
        """Connect and handshake with the first of ``addresses`` that takes us as the name's
        primary. A standby refuses with its own code and an instance moving away with its own;
        they, and an address that cannot be reached or does not answer, are passed over for
        the next at once: an immortal listed at several addresses (``--peer NAME=A,B``) is
        found at whichever serves it now.

        After a link ends, the addresses after the one it went to are tried first: that
        instance may be paused rather than gone (its port still accepts), and a standby of it
        may be the primary now.
        """
        if not addresses:
            raise ConnectionError("no address is known for it")
        reached = self._reached_at.get(destination)
        if reached in addresses:
            at = addresses.index(reached) + 1
            addresses = addresses[at:] + addresses[:at]
        failure: BaseException | None = None

        def failed(exc: BaseException) -> None:
            nonlocal failure
            if not isinstance(failure, StandbyError):  # "a standby answered" says the most
                failure = exc

        for address in addresses:
            try:
                with anyio.fail_after(self.options.handshake_timeout):
                    # a host that is gone would otherwise hold the sender for minutes of SYNs
                    link = await self.transport.connect(
                        address.host, address.port, name=destination
                    )
            except TimeoutError:
                timeout = self.options.handshake_timeout
                failed(TimeoutError(f"{address} did not answer within {timeout:g} s"))
                continue
            except (ConnectionClosed, OSError) as exc:
                failed(exc)
                continue
            try:
                total, replayable = await handshake.initiate(
                    link,
                    name=self.name,
                    destination=destination,
                    epoch=self.epoch,
                    secret=self.options.secret,
                    nonce=self._nonce,
                    timeout=self.options.handshake_timeout,
                    incarnation=self.incarnation,
                    on_incarnation=partial(self._meet, destination),
                )
            except BaseException as exc:
                with anyio.CancelScope(shield=True):
                    await link.aclose()
                if isinstance(exc, IncarnationError):
                    raise  # the same log at every address: the next cannot help
                if isinstance(exc, handshake.PeerMoving):
                    self._moving_until[destination] = anyio.current_time() + MOVE_GRACE
                if isinstance(exc, ProtocolError) and not isinstance(exc, StandbyError):
                    if address == addresses[-1]:
                        raise
                    log.error("%s: link to %s failed: %s", self.name, destination, exc)
                elif not isinstance(exc, StandbyError | ConnectionClosed | OSError):
                    raise
                failed(exc)
                continue
            self._reached_at[destination] = address
            return link, address, total, replayable
        assert failure is not None
        raise failure

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
        live = False  # the batch taken holds a capture's value (kept if taken back)
        while True:
            await self.wait_released()  # a handover holds every input
            captures = out.materialized
            first, replayable, batch = out.unsent(min(self.options.page_bytes, MAX_BATCH))
            if not batch:
                await wake.wait()
                continue
            live = live or out.materialized != captures
            await self.wait_page_room()
            if self.holding:
                out.sent_total = first - 1  # taken back: sent again once the hold is lifted
                continue
            if live:
                self._live_values = True  # its page must not run ahead (committer.py)
                live = False
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
                hello = await handshake.accept(
                    link, nonce=self._nonce, incarnation=self.incarnation
                )
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
            if hello.fields.get("role") == handshake.MIGRATE:
                await self.serve_handover(link, hello)  # the new instance of this immortal
                return
            if self.holding:
                raise _Moving(f"{self.name} is handing itself over to a new instance")
            secret = self.options.secret
            handshake.check(hello, name=self.name, secret=secret, peer=link.peer)
            tls.check_claim(link.certificate_names, source, link.peer)
            self._meet(source, hello.fields.get("incarnation"))
            link.authenticated()
            authenticated = True
            self._handshaking -= 1
            await self._note_epoch(source, hello.fields.get("epoch"))
            if self.holding:
                raise _Moving(f"{self.name} is handing itself over to a new instance")
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
        except _Moving as exc:
            log.debug("%s: turned %s (%s) away: %s", self.name, source, link.peer, exc)
            await handshake.refuse(link, exc, code=handshake.MOVED)
        except ProtocolError as exc:
            self.stats["refused"] += 1
            if isinstance(exc, IncarnationError):
                log.error("%s: refused link from %s (%s): %s", self.name, source, link.peer, exc)
            else:
                log.warning("%s: refused link from %s (%s): %s", self.name, source, link.peer, exc)
            await handshake.refuse(link, exc)
        except ConnectionClosed as exc:
            log.debug("%s: link from %s closed: %s", self.name, source, exc)
        finally:
            if not authenticated:
                self._handshaking -= 1
            if self._inbound.get(source) is link:
                del self._inbound[source]

    def _meet(self, peer: str, seen: object) -> None:
        """Check ``peer``'s log id from its handshake against the one we talked to before;
        remember it if it is the first (logged with the next page, so a crash of ours does not
        forget it). Raise IncarnationError if it changed. A peer that sends none is not
        checked."""
        if not isinstance(seen, str) or not seen:
            return
        known = self.peer_incarnations.get(peer)
        if known is None:
            self.peer_incarnations[peer] = self._met[peer] = seen
        elif known != seen:
            exc = incarnation.changed(self.name, peer, known, seen)
            self.stopped_links[peer] = str(exc)
            raise exc

    async def _note_epoch(self, source: str, epoch: object) -> None:
        """A source that says hello in a larger epoch than before has a new primary (a standby
        took over): our link to it, if still up, goes to the instance it replaced, which may be
        paused rather than dead, so it is closed and the sender finds the new one."""
        if type(epoch) is not int:
            return
        before = self._hello_epochs.get(source)
        self._hello_epochs[source] = max(epoch, before or 0)
        stale = self._outbound.get(source)
        if before is not None and epoch > before and stale is not None:
            log.info(
                "%s: %s is in epoch %d now; reconnecting to its new primary",
                self.name,
                source,
                epoch,
            )
            with anyio.CancelScope(shield=True):
                await stale.aclose()

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


class _Moving(ProtocolError):
    """A connection turned away because this immortal is handing itself over: refused with
    code "moved", so the sender tries its next address."""


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
