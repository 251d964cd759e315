"""The new side of a live migration: ``ambrosia-edge run ... --migrate-from HOST:PORT``.

Before recovering, the new instance connects to the running one, proves the deployment secret
(HELLO with ``"role": "migrate"``), receives the newest checkpoint and the log after it as an
``export`` archive (:mod:`.archive`), and unpacks it into a *staging* directory beside its
``--log`` (``LOG.migrating``), never into the log location itself. Once the copy is durable it
says READY; the old instance seals its log (:mod:`.handover`, :mod:`.seal`) and answers SEALED;
only then does the staging directory become the log, by one rename. Recovery then runs as
after any restart, and the immortal becomes primary here in the next epoch.

What a crash at each point leaves (docs/devices.md, "Moving an immortal to another device"):

* before READY: the old instance goes on as the primary; the staging directory is only a
  partial copy, never a log, and the next attempt replaces it;
* after SEALED: the staging directory is marked sealed first, so the next start (with or
  without ``--migrate-from``) finishes the rename by itself;
* between the two (the old instance or this one died in the few milliseconds between READY
  and SEALED), the copy is complete but nobody here knows whether the old log was sealed. The
  next attempt asks the old instance: if it runs, it never sealed and offers its log again.
  If it does not run, starting it tells: a sealed log refuses to start and names the new home
  (then ``mv LOG.migrating LOG`` finishes the move), an unsealed one runs again as before.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import logging
import os
import shutil
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio

from . import failpoints, handshake, wire
from .archive import ArchiveError, import_log
from .errors import AuthenticationError, ConnectionClosed, MigrationError, ProtocolError
from .kinds import NAME_RE, PeerAddress
from .seal import find_seal
from .wire import Frame

if TYPE_CHECKING:
    from .config import Settings
    from .discovery import Discovery
    from .store import LogStore
    from .transport import Link, Transport

__all__ = ["STAGING_SUFFIX", "finish_unfinished", "migrate_in"]

log = logging.getLogger("ambrosia_edge")

#: The copy is unpacked into the log location's name plus this, beside it.
STAGING_SUFFIX = ".migrating"
#: In the staging directory: where the copy came from, and whether the old log is sealed.
MARKER = "MIGRATING.json"
#: How long the new instance waits for SEALED after READY (the old one appends one record).
SEALED_TIMEOUT = 30.0
#: Files a log location may hold without holding a log (a writer's lock, zeroed spares).
_NOT_A_LOG = ("LOCK", "spare-")


@dataclass(frozen=True)
class _NewInstance:
    """What the new side needs of the process that hosts the immortal."""

    name: str
    settings: Settings
    store: LogStore
    transport: Transport
    discovery: Discovery


def migrate_in(
    settings: Settings, store: LogStore, transport: Transport, discovery: Discovery
) -> None:
    """Move the immortal here from its running instance (``settings.migrate_from``), before
    it recovers from ``store``. Raises MigrationError, with the log location untouched, if
    it cannot be done."""
    runtime = _NewInstance(settings.name, settings, store, transport, discovery)
    target = settings.migrate_from
    assert target is not None
    path = _local_path(runtime.store)
    staging = path.with_name(path.name + STAGING_SUFFIX)
    marker = _read_marker(staging)
    if marker is not None and marker.get("sealed"):
        _commit(staging, path)
        log.info("%s: finished the move from %s found in %s", runtime.name, target, staging)
        return
    _check_target(runtime.store, path)
    listen = settings.listen
    if listen is None or listen.port == 0:
        raise MigrationError(
            "--migrate-from needs --listen HOST:PORT with a port: the old instance records "
            "it as the immortal's new home, and its peers find it there"
        )
    host = listen.host
    if host in ("0.0.0.0", "::", ""):
        host = socket.gethostname()
    home = str(PeerAddress(host, listen.port))
    anyio.run(_take_over, runtime, target, home, path, staging)


def finish_unfinished(store: LogStore, name: str) -> None:
    """Before a plain start: finish a move into this log that was sealed but not renamed into
    place, and refuse to start on a location whose move is still undecided (no log here yet,
    a copy beside it)."""
    path = getattr(store, "path", None)
    if not isinstance(path, Path):
        return
    staging = path.with_name(path.name + STAGING_SUFFIX)
    if not staging.exists():
        return
    marker = _read_marker(staging)
    if marker is not None and marker.get("sealed"):
        _commit(staging, path)
        log.info("%s: finished the move from %s found in %s", name, marker.get("from"), staging)
        return
    if store.list_chunks() or store.list_checkpoints():
        return  # a log is here: the copy beside it is a leftover of an attempt, not ours to use
    origin = marker.get("from", "the old instance") if marker else "the old instance"
    raise MigrationError(
        f"{staging} holds an unfinished move of {name} from {origin}, and {path} no log: "
        f"finish it with --migrate-from {origin} (the old instance still runs), or, if "
        f"starting the old instance refuses because its log is sealed, with "
        f"mv {staging} {path}; or delete {staging} to start {name} afresh here"
    )


# ---------------------------------------------------------------------------------------------


def _local_path(store: LogStore) -> Path:
    path = getattr(store, "path", None)
    if not isinstance(path, Path) or getattr(store, "lease", None) is None:
        raise MigrationError(
            f"--migrate-from copies the log into a local directory, and {store.url} is not "
            "one. On a shared mount or an object store the new device reads the same log: "
            "stop the immortal and start it there (docs/devices.md)"
        )
    return path


def _check_target(store: LogStore, path: Path) -> None:
    """The log location must hold no log, or a sealed one (moving back to where it was)."""
    if store.list_chunks() or store.list_checkpoints():
        seal = find_seal(store)
        if seal is None:
            raise MigrationError(
                f"{path} already holds a log of its own; --migrate-from moves a log into an "
                "empty location (or over a sealed one); nothing was written"
            )
        return
    if path.exists():
        other = [p.name for p in path.iterdir() if not p.name.startswith(_NOT_A_LOG)]
        if other:
            raise MigrationError(
                f"{path} holds other files ({', '.join(sorted(other)[:3])}); give --log an "
                "empty or new directory; nothing was written"
            )


async def _resolve(runtime: _NewInstance, target: str) -> list[PeerAddress]:
    if ":" in target:
        return [PeerAddress.parse(target)]
    if not NAME_RE.fullmatch(target):
        raise MigrationError(f"--migrate-from {target!r} is neither HOST:PORT nor a name")
    try:
        addresses = await runtime.discovery.resolve(target)
    except OSError as exc:
        raise MigrationError(f"cannot find {target} through discovery: {exc}") from None
    if not addresses:
        raise MigrationError(
            f"no address is known for {target!r}: give --migrate-from HOST:PORT, or run a "
            "discovery that finds it"
        )
    return addresses


async def _connect(runtime: _NewInstance, addresses: list[PeerAddress]) -> tuple[Link, PeerAddress]:
    failure: BaseException | None = None
    for address in addresses:
        try:
            link = await runtime.transport.connect(address.host, address.port, name=runtime.name)
            return link, address
        except (ConnectionClosed, OSError) as exc:
            failure = exc
    where = " or ".join(str(a) for a in addresses)
    raise MigrationError(
        f"cannot reach the running instance at {where} ({failure}); is it running, with "
        "--listen on that address? Nothing was written"
    )


async def _take_over(
    runtime: _NewInstance, target: str, home: str, path: Path, staging: Path
) -> None:
    name = runtime.name
    addresses = await _resolve(runtime, target)
    link, address = await _connect(runtime, addresses)
    ready_sent = False
    try:
        started = time.monotonic()
        offer = await _handshake(link, runtime, address, home)
        where = f"{name} at {address}"
        size, digest = offer["bytes"], offer["sha256"]
        log.info(
            "%s: taking over from %s: epoch %d, %d pages, %d bytes to copy",
            name,
            address,
            offer["epoch"],
            offer["last_page"],
            size,
        )
        _remove(staging)  # an earlier attempt's: the old instance offers, so it never sealed
        path.parent.mkdir(parents=True, exist_ok=True)
        archive = path.with_name(f".{path.name}.handover.tar")
        try:
            await _receive_archive(link, archive, size, digest, where)
            try:
                await anyio.to_thread.run_sync(_unpack, archive, staging)
            except ArchiveError as exc:
                raise MigrationError(f"the copy from {where} was refused: {exc}") from None
        finally:
            archive.unlink(missing_ok=True)
        _write_marker(staging, {"from": target, "sha256": digest, "sealed": False, **offer})
        if failpoints.armed and failpoints.reached("migrate-ready"):
            failpoints.crash()
        ready_sent = True
        await link.send(wire.control(Frame.READY, {"sha256": digest}))
        sealed = None
        with anyio.move_on_after(SEALED_TIMEOUT):
            sealed = await _receive_sealed(link, where)
        if sealed is None:
            raise ConnectionClosed(f"{where} did not confirm the seal in {SEALED_TIMEOUT:g} s")
        _write_marker(staging, {"from": target, "sha256": digest, "sealed": True, **offer})
        if failpoints.armed and failpoints.reached("migrate-sealed"):
            failpoints.crash()
        _commit(staging, path)
        log.info(
            "%s: moved here from %s in %.2f s; its log is sealed, this one takes over in epoch %d",
            name,
            address,
            time.monotonic() - started,
            sealed["epoch"],
        )
    except (ConnectionClosed, OSError, ProtocolError) as exc:
        if not ready_sent:
            _remove(staging)
            if isinstance(exc, AuthenticationError):
                raise MigrationError(f"{address} failed authentication: {exc}") from None
            if isinstance(exc, ProtocolError):
                raise MigrationError(
                    f"{address} is not an ambrosia-edge instance of {name} ({exc}); "
                    "nothing was written"
                ) from None
            raise MigrationError(
                f"the move from {address} failed before the copy was complete ({exc}); the "
                "old instance goes on as the primary; nothing was written"
            ) from None
        raise MigrationError(
            f"the move from {address} was interrupted after the copy was made ({exc}), and "
            f"whether the old instance sealed its log is not known. The complete copy is in "
            f"{staging}. On the old device, `ambrosia-edge status` on its log tells: if it says "
            f"the log is sealed and the immortal moved here, the move happened: finish it with "
            f"mv {staging} {path}. If not, start the old instance again (it still owns the "
            f"immortal) and run this same command again"
        ) from None
    finally:
        with anyio.CancelScope(shield=True):
            await link.aclose()


async def _handshake(
    link: Link, runtime: _NewInstance, address: PeerAddress, home: str
) -> dict[str, Any]:
    """CHALLENGE, HELLO as the migrating instance, then OFFER (or REFUSE): the offer's fields."""
    name = runtime.name
    settings = runtime.settings
    secret = settings.secret
    challenge: tuple[Frame, bytes] | None = None
    with anyio.move_on_after(settings.handshake_timeout):
        challenge = await link.receive()
    if challenge is None:
        raise ProtocolError(f"it sent nothing in {settings.handshake_timeout:g} s")
    ftype, payload = challenge
    if ftype is not Frame.CHALLENGE:
        raise ProtocolError(f"it opened with {ftype.name}, not a challenge")
    fields = wire.parse_control(payload, "v", "nonce")
    if fields["v"] != wire.PROTOCOL_VERSION:
        raise ProtocolError(f"it speaks protocol version {fields['v']}")
    their_nonce = wire.bytes_field(fields, "nonce", handshake.NONCE_BYTES)
    our_nonce = os.urandom(handshake.NONCE_BYTES)
    hello: dict[str, Any] = {
        "v": wire.PROTOCOL_VERSION,
        "from": name,
        "to": name,
        "role": handshake.MIGRATE,
        "home": home,
    }
    if secret is not None:
        hello["mac"] = handshake.mac(secret, their_nonce, name, name, label=handshake.MIGRATE_LABEL)
        hello["nonce"] = our_nonce
    await link.send(wire.control(Frame.HELLO, hello))
    # The old instance sends OFFER and the archive's PART frames back to back, and a link may
    # parse frames as they arrive: full-size frames are allowed from here on. (This end dials
    # an address its user gave, once; the OFFER's MAC and the archive's SHA-256 are checked
    # before anything is written.)
    link.authenticated()
    ftype, payload = await link.receive()
    if ftype is Frame.REFUSE:
        refusal = wire.parse_control(payload, "message")
        raise MigrationError(
            f"{address} refused to hand {name} over: {refusal['message']}; nothing was written"
        )
    if ftype is not Frame.OFFER:
        raise ProtocolError(f"it answered the migration's hello with {ftype.name}")
    offer = wire.parse_control(payload, "immortal", "epoch", "last_page", "bytes", "sha256")
    if secret is not None:
        expected = handshake.mac(secret, our_nonce, name, name, label=handshake.OFFER_LABEL)
        given = offer.get("mac")
        if not isinstance(given, bytes) or not hmac.compare_digest(given, expected):
            raise AuthenticationError(f"{address} did not prove the deployment secret")
    if offer["immortal"] != name:
        raise ProtocolError(f"it offers immortal {offer['immortal']!r}, not {name!r}")
    for key in ("epoch", "last_page", "bytes"):
        wire.int_field(offer, key)
    if not isinstance(offer["sha256"], str):
        raise ProtocolError("its offer's sha256 is not text")
    return {key: offer[key] for key in ("epoch", "last_page", "bytes", "sha256")}


async def _receive_archive(link: Link, archive: Path, size: int, digest: str, where: str) -> None:
    hasher = hashlib.sha256()
    got = 0
    with open(archive, "wb") as out:
        while got < size:
            ftype, payload = await link.receive()
            if ftype is not Frame.PART:
                raise ProtocolError(f"{where} sent {ftype.name} inside the archive")
            got += len(payload)
            if got > size:
                raise ProtocolError(f"{where} sent more than the {size} bytes it offered")
            hasher.update(payload)
            await anyio.to_thread.run_sync(out.write, payload)
    if hasher.hexdigest() != digest:
        raise ProtocolError(f"the archive from {where} does not match its SHA-256")


async def _receive_sealed(link: Link, where: str) -> dict[str, Any]:
    ftype, payload = await link.receive()
    if ftype is not Frame.SEALED:
        raise ConnectionClosed(f"{where} answered READY with {ftype.name}")
    sealed = wire.parse_control(payload, "moved_to", "epoch")
    wire.int_field(sealed, "epoch")
    return sealed


def _unpack(archive: Path, staging: Path) -> None:
    """Import the archive into the staging directory and make every file of it durable."""
    import_log(archive, str(staging), sync=False)
    for file in staging.iterdir():
        if file.is_file():
            with open(file, "rb+") as fh:
                os.fsync(fh.fileno())
    _flush_directory(staging)
    _flush_directory(staging.parent)


def _read_marker(staging: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((staging / MARKER).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _write_marker(staging: Path, fields: dict[str, Any]) -> None:
    """Replace the marker durably (write, flush, rename, flush the directory)."""
    tmp = staging / (MARKER + ".tmp")
    with open(tmp, "w") as fh:
        json.dump(fields, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, staging / MARKER)
    _flush_directory(staging)


def _commit(staging: Path, path: Path) -> None:
    """Make the copy the log, by renames: a sealed log it replaces is moved aside first."""
    replaced = path.with_name(path.name + ".replaced")
    if path.exists():
        if any(not p.name.startswith(_NOT_A_LOG) for p in path.iterdir()):
            _remove(replaced)
            os.replace(path, replaced)
        else:
            shutil.rmtree(path)
    os.replace(staging, path)
    (path / MARKER).unlink(missing_ok=True)
    _flush_directory(path)
    _flush_directory(path.parent)
    _remove(replaced)


def _remove(path: Path) -> None:
    if path.exists():
        shutil.rmtree(path)
        _flush_directory(path.parent)


def _flush_directory(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
