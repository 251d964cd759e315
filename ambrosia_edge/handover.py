"""The old side of a live migration: hold every input, hand the log over, seal it.

A new instance of this immortal, started elsewhere with ``--migrate-from``, connects to our
listening address like a peer but says ``"role": "migrate"`` in its HELLO
(:mod:`.migration` is its side; docs/protocol.md 4.19 the frames). Then, in order:

1. **Hold.** Inbound links are closed and new ones refused with REFUSE ``"moved"`` (senders
   try their next address), our own senders and the link to ourselves stop, checkpoints are
   put off. The committer writes what it had accepted, and the log stands still at page N.
2. **Offer.** The newest checkpoint and the log after it, packed as an ``export`` archive
   (:mod:`.archive`), go over the link: OFFER (size, SHA-256, our MAC), then PART frames.
3. **Seal.** When the new instance says READY (its copy is durable), we append the seal
   (:mod:`.seal`): the log now ends saying where the immortal went, in epoch E + 1. That
   record is the moment ownership passes. SEALED tells the new instance, and this process
   stops (``ambrosia-edge run`` exits 0 saying where the immortal went).

If the link fails, or READY does not come in time, before the seal, nothing was given away:
the hold is lifted and this instance goes on as the primary. Whatever happened to the new
side, its copy is not a log yet (it is kept beside the log location until the seal is known).
"""

from __future__ import annotations

import hashlib
import io
import logging
from typing import TYPE_CHECKING, Any

import anyio

from . import failpoints, handshake, tls, wire
from .archive import pack_log, write_archive
from .errors import ConnectionClosed, ProtocolError
from .seal import Seal
from .wakeup import Wakeup
from .wire import Frame

if TYPE_CHECKING:
    from .coordinator_options import CoordinatorOptions
    from .logwriter import LogWriter
    from .page import Entry
    from .store import LogStore
    from .transport import Link

log = logging.getLogger("ambrosia_edge")

#: The archive travels in PART frames of at most this many bytes.
PART_BYTES = 1 << 20
#: How long the old instance waits for READY: this long, plus a second for every 5 MB offered
#: (the new side verifies and writes the copy first), before it gives up and goes on.
READY_TIMEOUT = 60.0


class Handover:
    """The migrating-away part of :class:`~ambrosia_edge.coordinator.Coordinator` (a mixin)."""

    if TYPE_CHECKING:
        # of the coordinator
        name: str
        store: LogStore
        options: CoordinatorOptions
        epoch: int
        next_page: int

        # of the committer
        _pending: list[Entry]
        _writer: LogWriter
        _committer_idle: bool
        _durable_changed: Wakeup
        _have_input: Wakeup

        # of checkpointing
        _unstored: tuple[int, bytes | None] | None

        # of the peer sessions
        _inbound: dict[str, Link]
        _nonce: handshake.NonceSource

    def _init_handover(self) -> None:
        #: a handover holds every input (links, our own output to ourselves, checkpoints)
        self.holding = False
        self._hold_changed = Wakeup()
        #: set once the log is sealed: the immortal lives elsewhere now
        self.moved_to: Seal | None = None
        self._handed_over = Wakeup()

    async def wait_released(self) -> None:
        """Return at once unless a handover holds inputs; then when it lets go."""
        while self.holding:
            await self._hold_changed.wait()

    async def until_held(self) -> None:
        """Return when a handover starts holding (a link's third half: it ends the link)."""
        while not self.holding:
            await self._hold_changed.wait()

    async def wait_moved(self) -> Seal:
        """Return the seal once this instance has handed the immortal over."""
        while self.moved_to is None:
            await self._handed_over.wait()
        return self.moved_to

    def _set_holding(self, holding: bool) -> None:
        self.holding = holding
        self._hold_changed.set()
        self._have_input.set()  # an idle committer looks again (at a checkpoint put off)

    async def serve_handover(self, link: Link, hello: handshake.Hello) -> None:
        """Hand the immortal over to the new instance that sent ``hello`` on ``link``.

        Raises ProtocolError for a HELLO that must be refused (the caller refuses it)."""
        secret = self.options.secret
        handshake.check_migration(hello, name=self.name, secret=secret, peer=link.peer)
        tls.check_claim(link.certificate_names, hello.source, link.peer)
        link.authenticated()
        home = hello.fields.get("home")
        if not isinstance(home, str) or not home:
            raise ProtocolError("a migration HELLO must say where the immortal goes (home)")
        if self.holding or self.moved_to is not None:
            raise ProtocolError(f"{self.name} is already handing itself over")
        log.info("%s: handing over to a new instance at %s (from %s)", self.name, home, link.peer)
        self._set_holding(True)
        sealed = False
        try:
            for source, inbound in list(self._inbound.items()):
                del self._inbound[source]  # its reader stops before accepting anything more
                await inbound.aclose()
            await self._quiesce()
            last_page = self.next_page - 1
            manifest, members = await anyio.to_thread.run_sync(pack_log, self.store, self.store.url)
            buffer = io.BytesIO()
            write_archive(manifest, members, buffer)
            archive = buffer.getvalue()
            digest = hashlib.sha256(archive).hexdigest()
            offer: dict[str, Any] = {
                "immortal": self.name,
                "epoch": self.epoch,
                "last_page": last_page,
                "bytes": len(archive),
                "sha256": digest,
            }
            if secret is not None:
                their_nonce = wire.bytes_field(hello.fields, "nonce", handshake.NONCE_BYTES)
                offer["mac"] = handshake.mac(
                    secret, their_nonce, self.name, self.name, label=handshake.OFFER_LABEL
                )
            await link.send(wire.control(Frame.OFFER, offer))
            view = memoryview(archive)
            for start in range(0, len(archive), PART_BYTES):
                await link.send(wire.frame(Frame.PART, view[start : start + PART_BYTES]))
            ready = None
            with anyio.move_on_after(READY_TIMEOUT + len(archive) / 5e6):
                ready = await _receive_ready(link, digest)
            if ready is None:
                raise ConnectionClosed("the new instance did not confirm its copy in time")
            if self.next_page - 1 != last_page:  # (cannot happen while held; never seal then)
                raise ProtocolError("the log grew during the handover; not sealing")
            if failpoints.armed and failpoints.reached("handover-seal"):
                failpoints.crash()
            seal = Seal(self.name, home, self.epoch + 1, last_page)
            await anyio.to_thread.run_sync(self.store.append, seal.record())
            sealed = True
            if failpoints.armed and failpoints.reached("handover-sealed"):
                failpoints.crash()
            with anyio.move_on_after(5):
                try:
                    await link.send(
                        wire.control(Frame.SEALED, {"moved_to": home, "epoch": seal.epoch})
                    )
                except ConnectionClosed as exc:
                    log.warning(
                        "%s: sealed, but the new instance did not hear it (%s): it finishes "
                        "when started again",
                        self.name,
                        exc,
                    )
            log.info(
                "%s: moved to %s (epoch %d); this log is sealed after page %d",
                self.name,
                home,
                seal.epoch,
                last_page,
            )
            self.moved_to = seal
            self._handed_over.set()
        except (ConnectionClosed, OSError) as exc:
            if sealed:
                raise
            log.warning(
                "%s: handover to %s abandoned (%s); still the primary here", self.name, home, exc
            )
        finally:
            if not sealed:
                self._set_holding(False)

    async def _quiesce(self) -> None:
        """Wait until everything accepted is logged and nothing else is being written."""
        while (
            self._pending
            or self._writer.in_flight
            or self._unstored is not None
            or not self._committer_idle
        ):
            with anyio.move_on_after(0.05):
                await self._durable_changed.wait()


async def _receive_ready(link: Link, digest: str) -> dict[str, Any]:
    ftype, payload = await link.receive()
    if ftype is Frame.REFUSE:
        refusal = wire.parse_control(payload, "message")
        raise ConnectionClosed(f"the new instance gave up: {refusal['message']}")
    if ftype is not Frame.READY:
        raise ProtocolError(f"the new instance sent {ftype.name} where READY was expected")
    ready = wire.parse_control(payload, "sha256")
    if ready["sha256"] != digest:
        raise ProtocolError("the new instance confirmed another archive than the one offered")
    return ready
