"""The object-store tier: ``s3://BUCKET/PREFIX``, ``gs://BUCKET/PREFIX``, ``az://CONTAINER/PREFIX``.

Built on obstore (Rust's object_store), one library for S3 and S3-compatible servers, Google
Cloud Storage and Azure Blob. Endpoint, region and credentials come from each cloud's usual
environment variables (``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``,
``AWS_REGION``, ``AWS_ALLOW_HTTP=true`` for a plain-http endpoint; ``AZURE_STORAGE_*``;
``GOOGLE_*``), read by obstore itself.

Objects are immutable, so a chunk is not one object but a numbered sequence of them::

    lease                         who writes, in which epoch (JSON; replaced with If-Match)
    chunk-00000001/0000000000     the framed records of one append, in order
    chunk-00000001/0000000001     ...
    checkpoint-00000001.cbor      state as of the first page of chunk 1 (a put is atomic)

A chunk's bytes are the concatenation of its objects, read through the same scanner as the
disk tier. A put is atomic, so a torn tail cannot happen here, but a number missing from the
middle of a sequence can (someone deleted an object): that is reported as corruption, loudly,
never skipped.

Fencing follows SlateDB's writer protocol, with create-only puts (``If-None-Match: *``) alone:

* every object at the end of the log is created with ``mode="create"``, under the next number;
  two writers that try the same name cannot both succeed;
* a new writer first takes the ``lease`` with an ETag-conditional put that raises the epoch,
  then *claims the end of the log*: it creates an empty "fence" object under the next number of
  the last chunk. A deposed writer's next create meets that name (or a later one) and fails:
  it stops with :class:`DeposedError`, and nothing it writes after the takeover is in the log;
* a new chunk is begun by first creating a "seal" object at the end of the previous chunk
  (chunk 0, never listed, stands before chunk 1 for this purpose), so a deposed writer cannot
  escape the fence by opening a chunk the new writer has not seen;
* every object records the writer's holding id and epoch in its metadata, so a create that
  obstore retried after an ambiguous failure (a timeout after the server stored it) and that
  then finds its name taken is recognised as our own put rather than reported as fenced.

The lease also expires: its holder renews it every ``lease_ttl / 4`` seconds, and a writer that
sees it unchanged for ``lease_ttl`` may take the log over (at once if the holder recorded a pid
on this host that no longer runs). The lease decides who *should* write; the create-only
puts make sure nobody else *can*.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any, Final, TypeVar
from urllib.parse import urlsplit

import obstore
from obstore import exceptions as obx
from obstore.store import from_url

from ambrosia_edge.errors import (
    CheckpointError,
    ConfigError,
    CorruptLogError,
    DeposedError,
    LogLockedError,
    StoreError,
)
from ambrosia_edge.lease import LeaseHolder, LeaseInfo, process_alive
from ambrosia_edge.records import BytesLike, scan_records

from .standbys import standby_alive

__all__ = ["DEFAULT_LEASE_TTL", "ObjectLease", "ObjectStore"]

#: Seconds a lease stays valid without renewal; a standby takes over after this much silence.
DEFAULT_LEASE_TTL: Final = 2.0
LEASE_NAME: Final = "lease"
#: where standbys record themselves (ambrosia_edge.standby): one small JSON object each
_STANDBYS: Final = "standbys/"
_SCHEMES: Final = ("s3", "gs", "az")
_CHUNK_RE: Final = re.compile(r"chunk-(\d{8,})")
_CHECKPOINT_RE: Final = re.compile(r"checkpoint-(\d{8,})\.cbor")
_SEQ_RE: Final = re.compile(r"(\d{10,})")
# metadata keys: lower case (S3 lower-cases them) and letters only (Azure refuses a name that
# is not an identifier, "-" included, with a 400; a proxy such as nginx drops "_" by default)
_WRITER: Final = "ambrosiawriter"
_EPOCH: Final = "ambrosiaepoch"
_KIND: Final = "ambrosiakind"
_NEXT: Final = "ambrosianext"
_FENCE_ATTEMPTS: Final = 1000
#: what tells one write of the lease from another
_LEASE_IDENTITY: Final = ("holding", "epoch", "renewals", "state")
#: where each cloud's client is told its endpoint, for the error that says it cannot be reached
_ENDPOINT_HINT: Final = {
    "s3": "AWS_ENDPOINT_URL (and AWS_ALLOW_HTTP=true for a plain-http endpoint)",
    "az": "AZURE_STORAGE_ACCOUNT_NAME and AZURE_STORAGE_ENDPOINT (for Azurite: "
    "AZURE_STORAGE_USE_EMULATOR=true and AZURITE_BLOB_STORAGE_URL)",
    "gs": "the bucket's name and GOOGLE_SERVICE_ACCOUNT (or GOOGLE_APPLICATION_CREDENTIALS)",
}
#: GETs in flight at once when a chunk is read back
_READERS: Final = 16

T = TypeVar("T")


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _chunk_prefix(chunk: int) -> str:
    return f"chunk-{chunk:08d}"


def _object_name(chunk: int, seq: int) -> str:
    return f"{_chunk_prefix(chunk)}/{seq:010d}"


def _checkpoint_name(n: int) -> str:
    return f"checkpoint-{n:08d}.cbor"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class _Client:
    """obstore behind one door, so that every failure leaves it as a StoreError that names the
    log, the object and what to do."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme not in _SCHEMES or not parts.netloc:
            raise ConfigError(
                f"log URL {url!r} is not of the form s3://BUCKET/PREFIX, gs://BUCKET/PREFIX "
                "or az://CONTAINER/PREFIX"
            )
        if parts.query or parts.fragment:
            raise ConfigError(f"log URL {url!r}: an object-store URL takes no ?query or #fragment")
        self.url = url
        self.scheme = parts.scheme
        self.bucket = parts.netloc
        try:
            self.store: Any = from_url(url)
        except Exception as exc:
            raise ConfigError(
                f"log URL {url!r} cannot be used: {_first_line(exc)}; check the URL and the "
                "store's environment variables (AWS_*, AZURE_STORAGE_*, GOOGLE_*)"
            ) from exc

    def where(self, key: str) -> str:
        return f"{self.url.rstrip('/')}/{key}"

    def call(self, what: str, key: str, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except (obx.AlreadyExistsError, obx.PreconditionError, FileNotFoundError):
            raise  # the caller asked for a condition, or tells a missing object from a bucket
        except obx.BaseError as exc:
            raise self.translate(what, key, exc) from exc

    def translate(self, what: str, key: str, exc: BaseException) -> StoreError:
        text = str(exc)
        where = self.where(key)
        if "NoSuchBucket" in text or "ContainerNotFound" in text:
            return StoreError(
                f"{what} {where}: bucket {self.bucket!r} does not exist; create it or fix the "
                "log URL"
            )
        if isinstance(exc, obx.UnauthenticatedError | obx.PermissionDeniedError) or any(
            marker in text
            for marker in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", " 403 ")
        ):
            return StoreError(
                f"{what} {where}: the store refused the credentials ({_first_line(exc)}); "
                "check AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY (or AZURE_STORAGE_*, GOOGLE_*)"
            )
        if "error sending request" in text or "Connect" in text or "dns error" in text:
            return StoreError(
                f"{what} {where}: the object store cannot be reached ({_first_line(exc)}); "
                f"check {_ENDPOINT_HINT[self.scheme]} and that the server is up"
            )
        return StoreError(f"{what} {where}: {_first_line(exc)}")

    def missing(self, what: str, key: str, exc: FileNotFoundError) -> StoreError | None:
        """A 404 that is a missing bucket, not a missing object, as the StoreError to raise."""
        if "NoSuchBucket" in str(exc) or "ContainerNotFound" in str(exc):
            return self.translate(what, key, exc)
        return None

    # -- operations ----------------------------------------------------------------------------

    def get(self, what: str, key: str) -> tuple[bytes, dict[str, Any], str | None] | None:
        """The object's bytes, attributes and ETag; None if it does not exist."""
        try:
            result = self.call(what, key, lambda: obstore.get(self.store, key))
            data = bytes(result.bytes())
        except FileNotFoundError as exc:
            bad = self.missing(what, key, exc)
            if bad is not None:
                raise bad from exc
            return None
        except obx.BaseError as exc:
            raise self.translate(what, key, exc) from exc
        return data, dict(result.attributes), result.meta.get("e_tag")

    def head(self, what: str, key: str) -> dict[str, Any] | None:
        """The object's attributes (from a GET of it: HEAD does not return them)."""
        got = self.get(what, key)
        return None if got is None else got[1]

    def put(
        self,
        what: str,
        key: str,
        data: BytesLike,
        *,
        mode: Any = "overwrite",
        attributes: dict[str, str] | None = None,
    ) -> str | None:
        """Store ``data``; AlreadyExistsError and PreconditionError pass through for callers
        that asked for a condition. Returns the new ETag."""
        try:
            result = self.call(
                what,
                key,
                lambda: obstore.put(
                    self.store, key, bytes(data), mode=mode, attributes=attributes or {}
                ),
            )
        except FileNotFoundError as exc:
            raise (self.missing(what, key, exc) or self.translate(what, key, exc)) from exc
        etag: str | None = result.get("e_tag")
        return etag

    def delete(self, what: str, key: str) -> None:
        try:
            self.call(what, key, lambda: obstore.delete(self.store, key))
        except FileNotFoundError as exc:
            bad = self.missing(what, key, exc)
            if bad is not None:
                raise bad from exc

    def list_objects(self, what: str, prefix: str) -> list[dict[str, Any]]:
        def run() -> list[dict[str, Any]]:
            return [dict(meta) for batch in obstore.list(self.store, prefix) for meta in batch]

        try:
            return self.call(what, prefix, run)
        except FileNotFoundError as exc:
            raise (self.missing(what, prefix, exc) or self.translate(what, prefix, exc)) from exc

    def list_dirs(self, what: str) -> tuple[list[str], list[dict[str, Any]]]:
        def run() -> Any:
            return obstore.list_with_delimiter(self.store)

        try:
            result = self.call(what, "", run)
        except FileNotFoundError as exc:
            raise (self.missing(what, "", exc) or self.translate(what, "", exc)) from exc
        return list(result["common_prefixes"]), list(result["objects"])


class ObjectLease:
    """The writer lease of one log: a small JSON object replaced with ETag-conditional puts.

    Holding it means: the epoch recorded is ours, and we renew it every ``ttl / 4`` seconds
    from a thread of our own. A renewal that meets another ETag means another writer took the
    log over; a lease not renewed for ``ttl`` (the store unreachable) counts as lost too, since
    a standby may have taken it meanwhile. Either way :attr:`lost` says why, and the store
    refuses to write from then on.
    """

    def __init__(self, client: _Client, *, ttl: float = DEFAULT_LEASE_TTL) -> None:
        self._client = client
        self.resource = client.url.rstrip("/")
        self.ttl = ttl
        self._standby_key: str | None = None
        self._mutex = threading.Lock()
        self._etag: str | None = None
        self._record: dict[str, Any] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._renewed = 0.0
        #: why the lease was lost while held (None while it is held or was released)
        self.lost: str | None = None
        #: this holding's id, stored with every object it creates
        self.holding = ""

    def __repr__(self) -> str:
        return f"ObjectLease({self.resource!r}, {'held' if self.held else 'not held'})"

    @property
    def held(self) -> bool:
        return self._etag is not None and self.lost is None

    @property
    def epoch(self) -> int | None:
        epoch = self._record.get("epoch")
        return epoch if isinstance(epoch, int) and self._etag is not None else None

    def _read(self) -> tuple[dict[str, Any] | None, str | None]:
        got = self._client.get("reading the lease", LEASE_NAME)
        if got is None:
            return None, None
        data, _, etag = got
        try:
            record = json.loads(data)
        except ValueError:
            record = {}
        return (record if isinstance(record, dict) else {}), etag

    @staticmethod
    def _takeable_now(record: dict[str, Any]) -> bool:
        if record.get("state") != "held":
            return True
        holder = record.get("holder") or {}
        pid = holder.get("pid")
        return (
            holder.get("host") == socket.gethostname()
            and isinstance(pid, int)
            and pid != os.getpid()
            and not process_alive(pid)
        )

    def acquire(self) -> None:
        """Take the lease with a larger epoch, or raise LogLockedError if its holder renews it."""
        if self.held:
            return
        self.lost = None
        watched: tuple[str | None, float] | None = None  # (etag, first seen) of a live holder
        while True:
            record, etag = self._read()
            if record is not None and not self._takeable_now(record):
                now = time.monotonic()
                if watched is None or watched[0] != etag:
                    if watched is not None:  # it was renewed while we watched: it lives
                        raise LogLockedError(self._locked_message(record))
                    watched = (etag, now)
                ttl = record.get("ttl")
                # the holder renews at its own pace: wait for the longer of the two
                wait = max(self.ttl, ttl if isinstance(ttl, int | float) else 0.0)
                if now - watched[1] < wait:
                    time.sleep(min(0.05, self.ttl / 8))
                    continue
            epoch = int((record or {}).get("epoch", 0)) + 1
            holding = f"{uuid.uuid4().hex}-{epoch}"
            new = {
                "state": "held",
                "epoch": epoch,
                "holding": holding,
                "holder": {"pid": os.getpid(), "host": socket.gethostname(), "since": _now()},
                "ttl": self.ttl,
                "renewals": 0,
            }
            mode: Any = "create" if etag is None else {"e_tag": etag}
            try:
                new_etag = self._client.put(
                    "taking the lease", LEASE_NAME, json.dumps(new).encode(), mode=mode
                )
            except (obx.AlreadyExistsError, obx.PreconditionError):
                new_etag = self._landed(new)
                if new_etag is None:
                    watched = None
                    continue  # someone else moved first: look again
            with self._mutex:
                self._etag = new_etag
                self._record = new
                self.holding = holding
                self._renewed = time.monotonic()
            self._stop = threading.Event()
            self._thread = threading.Thread(
                target=self._renew_loop, name=f"lease {self.resource}", daemon=True
            )
            self._thread.start()
            return

    def _landed(self, written: dict[str, Any]) -> str | None:
        """The lease's ETag if it holds exactly ``written``: a put whose answer was lost and
        that obstore retried meets its own first try (412) and must not take it for a rival."""
        record, etag = self._read()
        if record is not None and all(record.get(k) == written[k] for k in _LEASE_IDENTITY):
            return etag
        return None

    def _locked_message(self, record: dict[str, Any]) -> str:
        holder = record.get("holder") or {}
        return (
            f"log {self.resource} is in use by pid {holder.get('pid')} on host "
            f"{holder.get('host')} since {holder.get('since')} (epoch {record.get('epoch')}); "
            "stop that process or pass another --log"
        )

    def _renew_loop(self) -> None:
        stop = self._stop
        while not stop.wait(self.ttl / 4):
            if not self._renew_loop_once():
                return

    def _renew_loop_once(self) -> bool:
        """Renew once; False once there is nothing more to renew (released or lost)."""
        with self._mutex:
            etag, record = self._etag, dict(self._record)
        if etag is None:
            return False
        record["renewals"] = int(record.get("renewals", 0)) + 1
        try:
            new_etag = self._client.put(
                "renewing the lease",
                LEASE_NAME,
                json.dumps(record).encode(),
                mode={"e_tag": etag},
            )
        except obx.PreconditionError:
            new_etag = self._landed(record)
            if new_etag is not None:
                with self._mutex:
                    if self._etag == etag:
                        self._etag, self._record = new_etag, record
                        self._renewed = time.monotonic()
                return True
            self._lose(
                f"the lease of {self.resource} was taken over by a newer writer "
                f"(this one held epoch {record.get('epoch')})"
            )
            return False
        except (StoreError, obx.BaseError) as exc:
            if time.monotonic() - self._renewed > self.ttl:
                self._lose(
                    f"the lease of {self.resource} could not be renewed for {self.ttl:g} s "
                    f"({_first_line(exc)}); a standby may have taken over"
                )
                return False
            return True
        with self._mutex:
            if self._etag == etag:
                self._etag, self._record = new_etag, record
                self._renewed = time.monotonic()
        return True

    def _lose(self, why: str) -> None:
        with self._mutex:
            self.lost = why

    def check(self) -> None:
        """Raise DeposedError if the lease was lost; a writer calls this before each write."""
        lost = self.lost
        if lost is not None:
            raise DeposedError(f"{lost}; this writer was deposed and stops writing")

    def release(self) -> None:
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join()
        with self._mutex:
            etag, record = self._etag, dict(self._record)
            self._etag = None
        if etag is None or self.lost is not None:
            return
        record["state"] = "free"
        # a failure leaves the lease to lapse, which is what a crash would do
        with contextlib.suppress(StoreError, obx.BaseError):
            self._client.put(
                "releasing the lease", LEASE_NAME, json.dumps(record).encode(), mode={"e_tag": etag}
            )

    # -- standbys (ambrosia_edge.standby), recorded beside the lease -----------------------------

    def record_standby(self, address: str | None) -> None:
        """Record (again) this process as a standby of the log, listening on ``address``."""
        host = socket.gethostname()
        key = f"{_STANDBYS}{host}-{os.getpid()}.json"
        data = {"pid": os.getpid(), "host": host, "address": address, "renewed": time.time()}
        with contextlib.suppress(StoreError, obx.BaseError):
            self._client.put("recording a standby", key, json.dumps(data).encode())
            self._standby_key = key

    def drop_standby(self) -> None:
        key, self._standby_key = self._standby_key, None
        if key is not None:
            with contextlib.suppress(StoreError, obx.BaseError):
                self._client.delete("removing a standby's record", key)

    def standbys(self) -> list[dict[str, Any]]:
        """The standbys following the log now: pid, host, address."""
        found = []
        try:
            for meta in self._client.list_objects("listing the standbys", _STANDBYS):
                got = self._client.get("reading a standby's record", str(meta["path"]))
                record = json.loads(got[0]) if got is not None else None
                if isinstance(record, dict) and standby_alive(record):
                    found.append(record)
        except (StoreError, ValueError):
            return []
        return sorted(found, key=lambda r: (str(r.get("host")), str(r.get("pid"))))

    def info(self) -> LeaseInfo:
        try:
            record, _ = self._read()
        except StoreError as exc:
            return LeaseInfo("unknown", str(exc))
        if record is None:
            return LeaseInfo("none", "no lease object: no writer has opened this log")
        holder = record.get("holder") or {}
        epoch = record.get("epoch")
        who = LeaseHolder(
            pid=holder.get("pid"),
            host=holder.get("host"),
            since=holder.get("since"),
            epoch=epoch if isinstance(epoch, int) else None,
        )
        if record.get("state") == "free":
            return LeaseInfo("free", "the last writer stopped cleanly", who)
        if record.get("state") != "held":
            return LeaseInfo("unknown", "the lease object names no writer")
        return LeaseInfo("held", f"recorded in {self._client.where(LEASE_NAME)}", who)


class ObjectStore:
    """One log under a bucket prefix (see the module's docstring for the layout and fencing)."""

    def __init__(
        self, url: str, *, fsync: bool = True, lease_ttl: float = DEFAULT_LEASE_TTL
    ) -> None:
        # a put is durable when acknowledged; there is nothing to fsync
        self._client = _Client(url)
        self.url = url.rstrip("/")
        self.lease = ObjectLease(self._client, ttl=lease_ttl)
        #: (chunk, next number) where this writer's next object goes; None until open()
        self._end: tuple[int, int] | None = None
        self._chunk: int | None = None

    def __repr__(self) -> str:
        return f"ObjectStore({self.url!r})"

    def _source(self, chunk: int) -> str:
        return f"{self.url}/{_chunk_prefix(chunk)}"

    # -- the writer role -----------------------------------------------------------------------

    def open(self) -> None:
        """Take the lease, then claim the end of the log so that the previous writer is fenced."""
        if self.lease.held:
            return
        self.lease.acquire()
        self._chunk = None
        try:
            self._end = self._claim_end()
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        self._chunk = None
        self._end = None
        self.lease.release()

    def _require_writer(self, action: str) -> None:
        if not self.lease.held and self.lease.lost is None:
            raise StoreError(f"log {self.url} is not open for writing; call open() before {action}")
        self.lease.check()

    def _attributes(self, kind: str, **extra: str) -> dict[str, str]:
        return {
            _WRITER: self.lease.holding,
            _EPOCH: str(self.lease.epoch),
            _KIND: kind,
            **extra,
        }

    def _create(self, chunk: int, seq: int, data: BytesLike, kind: str, **extra: str) -> bool:
        """Create object ``seq`` of ``chunk``; False if another writer's object has the name.

        A name held by an object of our own holding is our earlier try that landed (obstore
        retries a put whose answer was lost), so it counts as created.
        """
        key = _object_name(chunk, seq)
        try:
            self._client.put(
                f"writing {kind} to",
                key,
                data,
                mode="create",
                attributes=self._attributes(kind, **extra),
            )
        except obx.AlreadyExistsError:
            attrs = self._client.head("checking", key) or {}
            return bool(attrs.get(_WRITER) == self.lease.holding)
        return True

    def _deposed(self, chunk: int, seq: int) -> DeposedError:
        key = _object_name(chunk, seq)
        attrs = self._client.head("checking", key) or {}
        other = attrs.get(_EPOCH, "unknown")
        why = (
            f"log {self.url}: this writer (epoch {self.lease.epoch}) was deposed: "
            f"{self._client.where(key)} was written by epoch {other}, a newer writer took the "
            "log over; nothing more is written here"
        )
        # every later write (a checkpoint too, which no create fences) is refused from now on
        self.lease._lose(why)
        return DeposedError(why)

    def _claim_end(self) -> tuple[int, int]:
        chunks = self._all_chunks()
        chunk = chunks[-1] if chunks else 0
        seq = len(self._objects(chunk)) if chunks else 0
        for _ in range(_FENCE_ATTEMPTS):
            if self._create(chunk, seq, b"", "fence"):
                return chunk, seq + 1
            attrs = self._client.head("checking", _object_name(chunk, seq)) or {}
            if attrs.get(_KIND) == "seal" and str(attrs.get(_NEXT, "")).isdigit():
                chunk, seq = int(attrs[_NEXT]), 0
            else:
                seq += 1
        raise StoreError(f"log {self.url}: could not claim the end of the log; is a writer racing?")

    # -- listing and reading -------------------------------------------------------------------

    def _all_chunks(self) -> list[int]:
        """Chunk numbers with at least one object, ascending.

        Some servers (SeaweedFS) keep listing a prefix whose objects were all deleted, so the
        oldest prefixes, which retention empties, are looked into until one has an object.
        """
        prefixes, _ = self._client.list_dirs("listing")
        numbers = []
        for prefix in prefixes:
            m = _CHUNK_RE.fullmatch(prefix.rstrip("/").rsplit("/", 1)[-1])
            if m:
                numbers.append(int(m.group(1)))
        numbers.sort()
        zero = numbers[:1] if numbers[:1] == [0] else []
        numbers = numbers[len(zero) :]
        while numbers and not self._has_objects(numbers[0]):
            numbers.pop(0)
        return zero + numbers

    def _has_objects(self, chunk: int) -> bool:
        return bool(self._client.list_objects("listing", _chunk_prefix(chunk) + "/"))

    def list_chunks(self) -> list[int]:
        return [n for n in self._all_chunks() if n > 0]

    def list_checkpoints(self) -> list[int]:
        _, objects = self._client.list_dirs("listing")
        numbers = []
        for meta in objects:
            m = _CHECKPOINT_RE.fullmatch(str(meta["path"]).rsplit("/", 1)[-1])
            if m:
                numbers.append(int(m.group(1)))
        return sorted(numbers)

    def _objects(self, chunk: int) -> list[dict[str, Any]]:
        """The objects of ``chunk`` in order; CorruptLogError if one is missing in between."""
        found: dict[int, dict[str, Any]] = {}
        for meta in self._client.list_objects("listing", _chunk_prefix(chunk) + "/"):
            m = _SEQ_RE.fullmatch(str(meta["path"]).rsplit("/", 1)[-1])
            if m:
                found[int(m.group(1))] = meta
        for expected, seq in enumerate(sorted(found)):
            if seq != expected:
                raise CorruptLogError(
                    f"corrupt log chunk {self._source(chunk)}: object {expected:010d} is missing "
                    f"before {seq:010d}; the objects were left untouched; restore the missing "
                    "object from a copy, or move the chunk aside to recover from the previous "
                    "checkpoint"
                )
        return [found[seq] for seq in sorted(found)]

    def chunk_objects(self, chunk: int) -> list[tuple[str, bytes]]:
        """Each object of ``chunk`` as (name, bytes), in order.

        Fetched ``_READERS`` at a time: a chunk has one object per append, and one GET after
        another (~1.5-3 ms each on a server next door, tens of ms in a cloud) would make a
        recovery wait for the sum of them.
        """
        return self._fetch(chunk, [str(meta["path"]) for meta in self._objects(chunk)])

    def _fetch(self, chunk: int, names: list[str]) -> list[tuple[str, bytes]]:
        def fetch(name: str) -> bytes:
            got = self._client.get("reading", name)
            if got is None:
                raise CorruptLogError(
                    f"corrupt log chunk {self._source(chunk)}: object {name} vanished while it "
                    "was read; restore it from a copy"
                )
            return got[0]

        if len(names) <= 1:
            return [(name, fetch(name)) for name in names]
        with ThreadPoolExecutor(min(_READERS, len(names)), thread_name_prefix="log read") as pool:
            return list(zip(names, pool.map(fetch, names), strict=True))

    def read_chunk_bytes(self, chunk: int) -> bytes:
        return b"".join(data for _, data in self.chunk_objects(chunk))

    def replace_chunk_bytes(self, chunk: int, data: bytes) -> None:
        """Make ``data`` the whole of ``chunk`` (one object), as a bad disk would; for tests."""
        for meta in reversed(self._objects(chunk)):
            self._client.delete("deleting", str(meta["path"]))
        self._client.put("writing", _object_name(chunk, 0), data)

    def read_records(self, chunk: int, *, repair: bool = False) -> Iterator[tuple[int, bytes]]:
        return ((offset, body) for offset, _, body in self.read_typed_records(chunk, repair=repair))

    def read_records_from(self, chunk: int, start: int) -> Iterator[tuple[int, bytes]]:
        """:meth:`read_records` from byte ``start``, where a record read before begins: how a
        standby reads on as the log grows, fetching only the objects from there on (their
        sizes come with the listing)."""
        base, names = 0, list[str]()
        for meta in self._objects(chunk):
            size = int(meta.get("size", 0))
            if not names and base + size <= start:
                base += size  # wholly before ``start``
                continue
            names.append(str(meta["path"]))
        data = b"".join(body for _, body in self._fetch(chunk, names))
        scan = scan_records(data, source=self._source(chunk), start=start - base)
        return ((base + offset, body) for offset, _, body in scan)

    def read_typed_records(
        self, chunk: int, *, repair: bool = False
    ) -> Iterator[tuple[int, int, bytes]]:
        """Yield ``(offset, rtype, body)`` of each intact record of ``chunk``, as of now."""
        if repair:
            self._require_writer("repairing a chunk")
        objects = self.chunk_objects(chunk) if chunk > 0 else []
        if not objects:
            raise StoreError(f"no chunk {chunk} in log {self.url}")
        return self._typed_records(chunk, objects, repair)

    def _typed_records(
        self, chunk: int, objects: list[tuple[str, bytes]], repair: bool
    ) -> Iterator[tuple[int, int, bytes]]:
        data = b"".join(body for _, body in objects)
        scan = scan_records(data, source=self._source(chunk))
        yield from scan
        if repair and scan.valid_length != scan.size:
            self._cut(objects, scan.valid_length)

    def _cut(self, objects: list[tuple[str, bytes]], length: int) -> None:
        """Cut what follows ``length`` by rewriting the objects holding it shorter (or empty):
        numbers are never freed, so no gap appears and no fence is undone."""
        start = 0
        for name, body in objects:
            end = start + len(body)
            if end > length:
                keep = body[: max(0, length - start)]
                self._client.put("cutting a torn tail of", name, keep)
            start = end

    # -- appending -----------------------------------------------------------------------------

    def start_chunk(self, chunk: int) -> None:
        self._require_writer("starting a chunk")
        assert self._end is not None
        if chunk <= 0 or self._has_objects(chunk):
            raise StoreError(
                f"chunk {self._source(chunk)} already exists; a new chunk must never "
                "overwrite logged records"
            )
        end_chunk, seq = self._end
        if not self._create(end_chunk, seq, b"", "seal", **{_NEXT: str(chunk)}):
            raise self._deposed(end_chunk, seq)
        self._end = (end_chunk, seq + 1)
        if not self._create(chunk, 0, b"", "start"):
            raise self._deposed(chunk, 0)
        self._end = (chunk, 1)
        self._chunk = chunk

    def resume_chunk(self, chunk: int) -> None:
        """Make existing ``chunk`` the append target, first cutting off any torn tail."""
        for _ in self.read_typed_records(chunk, repair=True):
            pass
        self._end = (chunk, len(self._objects(chunk)))
        self._chunk = chunk

    def append(self, record: BytesLike) -> None:
        chunk = self._chunk
        if chunk is None or self._end is None or not (self.lease.held or self.lease.lost):
            raise StoreError(f"log {self.url} has no chunk open for appending")
        self.lease.check()
        end_chunk, seq = self._end
        if not self._create(end_chunk, seq, record, "page"):
            raise self._deposed(end_chunk, seq)
        self._end = (end_chunk, seq + 1)

    # -- checkpoints ---------------------------------------------------------------------------

    def write_checkpoint(self, n: int, data: BytesLike) -> None:
        self._require_writer("writing a checkpoint")
        try:
            self._client.put(
                "writing checkpoint",
                _checkpoint_name(n),
                data,
                attributes=self._attributes("checkpoint"),
            )
        except StoreError as exc:
            raise CheckpointError(str(exc)) from exc

    def write_standby_checkpoint(self, n: int, data: BytesLike) -> bool:
        """Store checkpoint ``n`` from a standby, which does not hold the lease; False (and
        nothing stored) when chunk ``n`` is missing or the log is changing hands.

        Called after the standby has read the pages before chunk ``n``. It is stored only if
        the newest epoch in the lease is the one that created chunk ``n``'s first object, as
        on the shared mount; that check is all it takes here, with no epoch in the name and
        no second look after the put, because this tier's log cannot fork: every object of a
        chunk is created once, under the next number, and a successor fences the end of the
        log before it reads it, so every page a standby read is part of the log for good, and
        chunk ``n``'s first object exists only after a seal closed chunk ``n - 1``. A standby
        that loses a race to a successor therefore stores the same state the successor
        would: the pages before chunk ``n`` are the same for both. The object records that a
        standby wrote it (``ambrosiakind``), and the epoch it checked.
        """
        if n <= 0:
            return False
        lease, _ = self.lease._read()
        epoch = (lease or {}).get("epoch")
        start = self._client.head("checking", _object_name(n, 0))
        if not isinstance(epoch, int) or start is None or start.get(_EPOCH) != str(epoch):
            return False
        attributes = {_KIND: "standby checkpoint", _EPOCH: str(epoch)}
        try:
            self._client.put("writing checkpoint", _checkpoint_name(n), data, attributes=attributes)
        except StoreError as exc:
            raise CheckpointError(str(exc)) from exc
        return True

    def checkpoint_writer(self, n: int) -> str | None:
        """Who wrote checkpoint ``n``: "standby", "primary", or None if it does not exist."""
        attributes = self._client.head("checking", _checkpoint_name(n))
        if attributes is None:
            return None
        return "standby" if attributes.get(_KIND) == "standby checkpoint" else "primary"

    def read_checkpoint(self, n: int) -> bytes:
        name = _checkpoint_name(n)
        try:
            got = self._client.get("reading checkpoint", name)
        except StoreError as exc:
            raise CheckpointError(str(exc)) from exc
        if got is None:
            raise CheckpointError(
                f"checkpoint {n} not found: {self._client.where(name)} does not exist"
            )
        return got[0]

    # -- deleting ------------------------------------------------------------------------------

    def delete_chunk(self, chunk: int) -> None:
        """Delete ``chunk``'s objects, last first, so that an interrupted delete leaves a
        shorter chunk rather than one with a gap."""
        self._require_writer("deleting a chunk")
        if chunk == self._chunk:
            raise StoreError(
                f"chunk {self._source(chunk)} is being appended to and cannot be deleted"
            )
        if chunk <= 0:
            return
        for meta in reversed(self._objects(chunk)):
            self._client.delete("deleting", str(meta["path"]))

    def delete_checkpoint(self, n: int) -> None:
        self._require_writer("deleting a checkpoint")
        self._client.delete("deleting", _checkpoint_name(n))
