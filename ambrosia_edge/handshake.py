"""The link handshake of docs/protocol.md 4.6, both ends of it, and its HMAC.

The receiver opens with CHALLENGE (its nonce), the sender answers HELLO (who it is, to whom,
and with a deployment secret a MAC over the receiver's nonce plus a nonce of its own), and the
receiver answers WELCOME (how much of the sender's output it holds durably, with a MAC over
the sender's nonce) or REFUSE. :func:`initiate` is the sender's side, :func:`accept` and
:func:`welcome` the receiver's, split because the receiver waits between the two until what it
announces is durable.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import anyio

from . import wire
from .errors import (
    AuthenticationError,
    BrokenByPeer,
    ConnectionClosed,
    IncarnationError,
    ProtocolError,
    StandbyError,
)
from .transport import Link
from .wire import Frame

NONCE_BYTES = 16

#: HELLO's ``"role"`` when the new instance of an immortal comes to take it over from the
#: running one (a live migration, docs/protocol.md 4.19); a HELLO without it opens a link.
MIGRATE = "migrate"
#: The labels of the two MACs of a migration: the new instance's HELLO, the old one's OFFER.
MIGRATE_LABEL = b"ambrosia-edge/migrate\0"
OFFER_LABEL = b"ambrosia-edge/offer\0"

#: Where fresh nonces come from; a test passes a fixed one to reproduce the documented frames.
NonceSource = Callable[[int], bytes]


def mac(
    secret: str,
    nonce: bytes,
    source: str,
    destination: str,
    *,
    welcome: bool = False,
    label: bytes | None = None,
) -> bytes:
    """HMAC-SHA256 proving knowledge of the deployment secret, bound to the peer's nonce and
    to the direction, so a HELLO cannot be replayed as a WELCOME or to another immortal.
    ``label`` overrides the direction's label (a migration's MACs have their own)."""
    if label is None:
        label = b"ambrosia-edge/welcome\0" if welcome else b"ambrosia-edge/hello\0"
    message = label + nonce + source.encode() + b"\0" + destination.encode()
    return hmac.new(secret.encode(), message, hashlib.sha256).digest()


def _verify(fields: dict[str, Any], expected: bytes, who: str) -> None:
    given = fields.get("mac")
    if not isinstance(given, bytes) or not hmac.compare_digest(given, expected):
        raise AuthenticationError(f"{who} failed authentication")


async def initiate(
    link: Link,
    *,
    name: str,
    destination: str,
    epoch: int,
    secret: str | None,
    nonce: NonceSource,
    timeout: float = math.inf,
    incarnation: str | None = None,
    on_incarnation: Callable[[str], None] | None = None,
) -> tuple[int, int]:
    """The sender's side: answer the challenge; return the receiver's watermarks of our output
    (total, replayable), which it holds durably.

    ``incarnation`` is our log's id, sent in HELLO; ``on_incarnation`` is given the receiver's
    (from CHALLENGE, if it sent one) once WELCOME has passed its checks, before anything is
    realigned on it, and stops the handshake by raising.

    ``timeout`` bounds the wait for the challenge, which any listener sends at once. Not the
    wait for WELCOME: the receiver sends it only once what it announces is durable."""
    with anyio.move_on_after(timeout):
        ftype, payload = await link.receive()
        timeout = 0
    if timeout:
        raise BrokenByPeer(f"{destination} at {link.peer} sent no challenge within {timeout:g} s")
    if ftype is not Frame.CHALLENGE:
        raise ProtocolError(f"{destination} did not open with a challenge")
    challenge = wire.parse_control(payload, "v", "nonce")
    if challenge["v"] != wire.PROTOCOL_VERSION:
        raise ProtocolError(
            f"{destination} speaks protocol version {challenge['v']}, we speak "
            f"{wire.PROTOCOL_VERSION}; run the same ambrosia-edge release on both"
        )
    their_nonce = wire.bytes_field(challenge, "nonce", NONCE_BYTES)
    hello: dict[str, Any] = {
        "v": wire.PROTOCOL_VERSION,
        "from": name,
        "to": destination,
        "epoch": epoch,
    }
    if incarnation is not None:
        hello["incarnation"] = incarnation
    our_nonce = nonce(NONCE_BYTES)
    if secret is not None:
        hello["mac"] = mac(secret, their_nonce, name, destination)
        hello["nonce"] = our_nonce
    await link.send(wire.control(Frame.HELLO, hello))
    ftype, payload = await link.receive()
    if ftype is Frame.REFUSE:
        refusal = wire.parse_control(payload, "message")
        if refusal.get("code") == MOVED:
            # an ordinary outcome, like a peer gone: the sender tries its next address
            raise PeerMoving(f"{destination} at {link.peer} is moving: {refusal['message']}")
        if refusal.get("code") == StandbyError.code:
            raise StandbyError(f"{destination} at {link.peer} is a standby")
        kind = IncarnationError if refusal.get("code") == IncarnationError.code else ProtocolError
        raise kind(f"{destination} refused the connection: {refusal['message']}")
    if ftype is not Frame.WELCOME:
        raise ProtocolError(f"{destination} answered the hello with {ftype.name}")
    welcomed = wire.parse_control(payload, "total", "replayable")
    total = wire.int_field(welcomed, "total")
    replayable = wire.int_field(welcomed, "replayable")
    if secret is not None:
        # the receiver proves it knows the secret too: a stranger's WELCOME could
        # otherwise make us trim messages nobody has logged
        _verify(welcomed, mac(secret, our_nonce, destination, name, welcome=True), destination)
    if replayable > total:
        raise ProtocolError(f"{destination} sent inconsistent watermarks {total}/{replayable}")
    theirs = challenge.get("incarnation")
    if on_incarnation is not None and isinstance(theirs, str) and theirs:
        # only now: with a secret, the WELCOME has proved that this is the receiver
        on_incarnation(theirs)
    return total, replayable


@dataclass(frozen=True, slots=True)
class Hello:
    """A sender's HELLO, as the receiver keeps it until it welcomes the sender."""

    source: str  # who it claims to be, checked by :func:`check`
    fields: dict[str, Any]
    challenge: bytes  # the nonce we sent it, which its MAC must cover


async def accept(link: Link, *, nonce: NonceSource, incarnation: str | None = None) -> Hello:
    """The receiver's side, up to a HELLO read but not yet checked: a refusal can then name
    the sender it claims to be. ``incarnation``, our log's id, goes in the CHALLENGE."""
    challenge = nonce(NONCE_BYTES)
    opening: dict[str, Any] = {"v": wire.PROTOCOL_VERSION, "nonce": challenge}
    if incarnation is not None:
        opening["incarnation"] = incarnation
    await link.send(wire.control(Frame.CHALLENGE, opening))
    ftype, payload = await link.receive()
    if ftype is not Frame.HELLO:
        raise ProtocolError(f"expected HELLO, got {ftype.name}")
    hello = wire.parse_control(payload, "v", "from", "to")
    return Hello(str(hello["from"]), hello, challenge)


def check_migration(hello: Hello, *, name: str, secret: str | None, peer: str) -> None:
    """Raise ProtocolError (or AuthenticationError) unless ``hello`` is the new instance of this
    very immortal asking to take it over, proving the deployment secret if there is one."""
    fields = hello.fields
    if fields["v"] != wire.PROTOCOL_VERSION:
        raise ProtocolError(f"protocol version {fields['v']} is not {wire.PROTOCOL_VERSION}")
    if fields["to"] != name or hello.source != name:
        raise ProtocolError(
            f"this is immortal {name!r}: a migration of {fields['to']!r} cannot take it over"
        )
    if secret is not None:
        expected = mac(secret, hello.challenge, name, name, label=MIGRATE_LABEL)
        _verify(fields, expected, f"the new instance of {name} at {peer}")


def check(hello: Hello, *, name: str, secret: str | None, peer: str) -> None:
    """Raise ProtocolError (or its subclass AuthenticationError) if ``hello`` must be refused."""
    fields, source = hello.fields, hello.source
    if fields["v"] != wire.PROTOCOL_VERSION:
        raise ProtocolError(f"protocol version {fields['v']} is not {wire.PROTOCOL_VERSION}")
    if fields["to"] != name:
        raise ProtocolError(f"this is immortal {name!r}, not {fields['to']!r}")
    if source == name:
        raise ProtocolError(f"a connection claims to come from {name!r}, which is us")
    if secret is not None:
        _verify(fields, mac(secret, hello.challenge, source, name), f"{source} at {peer}")


async def welcome(
    link: Link, hello: Hello, *, name: str, secret: str | None, total: int, replayable: int
) -> None:
    """Tell an accepted sender how much of its output we hold durably."""
    fields: dict[str, Any] = {"total": total, "replayable": replayable}
    if secret is not None:
        their_nonce = wire.bytes_field(hello.fields, "nonce", NONCE_BYTES)
        fields["mac"] = mac(secret, their_nonce, name, hello.source, welcome=True)
    await link.send(wire.control(Frame.WELCOME, fields))


class PeerMoving(BrokenByPeer):
    """The receiver refused with code "moved": it is handing itself over to a new instance,
    which will listen elsewhere soon."""


#: REFUSE's code from an immortal that is handing itself over to a new instance: try the next
#: address (an ordinary outcome, not a protocol error).
MOVED = "moved"


async def refuse(link: Link, exc: ProtocolError, *, code: str | None = None) -> None:
    """Tell the peer why, if it still listens (for a second at most)."""
    fields = {"code": code or exc.code, "message": str(exc)}
    with anyio.move_on_after(1), contextlib.suppress(ConnectionClosed):
        await link.send(wire.control(Frame.REFUSE, fields))
