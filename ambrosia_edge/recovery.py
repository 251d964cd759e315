"""Where replay happens: rebuild an immortal from a checkpoint and the pages logged after it.

Recovery (DESIGN §8, paper §3.3) loads the newest checkpoint, replays every later page through
the executor with outputs regenerated into the send buffers, then becomes primary in a new
epoch and lets the links realign sequence numbers with the peers. :class:`Replayer` is that
engine without the hosting around it: ``Runtime.recover`` runs it to the end of the log and
takes over; the replay benchmark times it; a replay to a given page (or a standby following
a growing log) steps it.

Live upgrades (paper §5.4) happen here too. A class of a newer ``version`` than the one that
wrote the log replays what the old version logged with the old code (its ``previous`` class),
switching where a chunk header records that the version changed, and converts the state with
its ``upgrade`` when it becomes the primary (:func:`complete_upgrade`): the first thing the new
primary's committer then does is open a chunk whose header records the new version, with a
checkpoint of the converted state. A crash before that header is durable recovers the old
version and upgrades again; one after it replays the old pages with the old code and converts
at the header, exactly as the live run did.
"""

from __future__ import annotations

import inspect
import logging
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any

from . import codec, failpoints, incarnation, messages, wire
from .checkpoint import Checkpoint, decode_checkpoint
from .coordinator import Coordinator
from .errors import CheckpointError, ConfigError, CorruptLogError
from .executor import Executor
from .immortal import Immortal, state_of
from .page import Page, chunk_header, decode_chunk_header, decode_page
from .records import RecordType, encode_record
from .seal import Seal, decode_seal, find_seal, is_seal, sealed_error
from .store import LogStore
from .transport import Link

log = logging.getLogger("ambrosia_edge")

#: Builds the coordinator to replay into, given the executor factory it must be built with
#: (``Coordinator(..., executor=executor)``): a runtime's gets its transport and options.
CoordinatorFactory = Callable[[Callable[[Coordinator], Executor]], Coordinator]


@dataclass(frozen=True, slots=True)
class LoggedMessage:
    """One input as the log holds it, where it is: what a replay message by message yields."""

    #: its number in the log, from 1, all sources together, in the order it ran
    index: int
    page: int
    source: str
    #: its sequence number from ``source`` (the link's total count, impulses included)
    sequence: int
    head: int  # the message's first byte: kind and IMPULSE bit
    body: bytes

    @property
    def message(self) -> bytes:
        return bytes([self.head]) + self.body


class Replayer:
    """One immortal rebuilt from ``store``: its checkpoint loaded at construction, then pages
    applied by :meth:`step` or :meth:`run`, in log order, each exactly once.

    ``checkpoint`` picks where to start: -1 the newest checkpoint, ``n`` checkpoint ``n``,
    None none at all (the whole log, from the logical start). ``read_only`` reads without
    taking the writer lock or repairing a torn tail (to look at a log another process may be
    writing). Without ``coordinator`` the replay is offline: a coordinator that cannot
    connect anywhere, enough to replay and look at the state.

    Nothing is sent or logged while replaying (outputs only fill the send buffers), so a
    replay may stop anywhere; :meth:`finish` is what makes the result a primary.

    Pages go through the executor whole (the fast path of recovery); :meth:`step_message`
    runs the next page one message at a time instead, for a debugger to stop between two
    messages. :attr:`messages` counts the messages run, from the log's start.
    """

    def __init__(
        self,
        cls: type[Immortal],
        store: LogStore,
        *,
        name: str,
        checkpoint: int | None = -1,
        read_only: bool = False,
        coordinator: CoordinatorFactory | None = None,
        convert_at_start: bool = False,
    ) -> None:
        self.cls = cls
        #: convert an older version's state at the checkpoint and replay everything with
        #: ``cls`` (retrotest's new side), rather than replay with ``previous`` classes
        self.store = store
        self.name = name
        self.read_only = read_only
        #: pages applied so far
        self.pages = 0
        if not read_only:
            store.open()
        self._chunks = chunks = store.list_chunks()
        #: the seal that ends the log, once a read-only replay reached it (seal.py)
        self.seal: Seal | None = None
        if not read_only:
            seal = find_seal(store, chunks)
            if seal is not None:  # handed over: refuse before anything is replayed or written
                store.close()
                raise sealed_error(seal, store.url)
        #: the number of the checkpoint started from, None for the log's start
        self.checkpoint_number: int | None = None
        self.checkpoint: Checkpoint | None = self._load_checkpoint(checkpoint)
        if self.checkpoint is None and chunks and chunks[0] != 1:
            raise CheckpointError(
                f"log {store.url} starts at chunk {chunks[0]} but has no checkpoint to start "
                "from; restore the missing checkpoint files"
            )
        self.convert_at_start = convert_at_start
        self._first_header: dict[str, Any] | None = None
        start = self._starting_class()
        obj = start.__new__(start) if self.checkpoint is not None else self._construct(start)
        #: the version of the code running the pages now (the log's, until an upgrade)
        self.version = start.version
        built: list[Executor] = []

        def executor(outbox: Coordinator) -> Executor:
            built.append(Executor(name, obj, outbox))
            return built[0]

        make = coordinator if coordinator is not None else partial(_offline, name, store)
        self.coordinator = make(executor)
        (self.executor,) = built
        self.coordinator.class_version = start.version
        if not chunks and self.checkpoint is None:
            self.coordinator.incarnation = incarnation.new()  # a log being created
        elif self._first_header is not None:
            found = self._first_header.get("incarnation")
            self.coordinator.incarnation = found if isinstance(found, str) else None
        if self.checkpoint is not None:
            self._restore(self.checkpoint)
            self._replay = [c for c in chunks if c >= self.checkpoint.chunk]
        else:
            # the logical start is a message to ourselves, so on_first_start runs from the log
            self.coordinator.send(name, messages.start(), impulse=False)
            self._replay = chunks
        self.executor.replaying = True
        self._have_header = False  # of the chunk being read
        #: of the chunks to replay (``chunks_to_read``), how many have been read whole
        self.chunks_read = 0
        self.chunks_to_read = len(self._replay)
        #: the last record read (chunk, offset, body), where :meth:`follow` reads on from
        self._last: tuple[int, int, bytes] | None = None
        #: called with a chunk's number when its header has been read and every page before
        #: it applied: the replay then stands where a checkpoint of that chunk would
        self.on_chunk: Callable[[int], None] | None = None
        self._pages = self._read_pages()
        self._next: Page | None = None
        #: the number of the last message run, counted from the log's start (the checkpoint
        #: knows how many each source had sent)
        self.messages = sum(total for total, _ in self.coordinator.dispatched.values())
        self._current: Page | None = None  # a page being run message by message
        self._queue: deque[LoggedMessage] = deque()

    # --- loading -------------------------------------------------------------------------------

    def _load_checkpoint(self, which: int | None) -> Checkpoint | None:
        store = self.store
        checkpoints = store.list_checkpoints()
        if which is None:
            return None
        if which != -1:
            if which not in checkpoints:
                raise CheckpointError(
                    f"{store.url} has no checkpoint {which} (it has {checkpoints or 'none'})"
                )
            checkpoints = checkpoints[: checkpoints.index(which) + 1]
        if not checkpoints:
            return None
        n = self.checkpoint_number = checkpoints[-1]
        return decode_checkpoint(store.read_checkpoint(n), f"checkpoint {n} of {store.url}")

    def _construct(self, cls: type[Immortal]) -> Immortal:
        try:
            return cls()
        except TypeError as exc:
            raise ConfigError(
                f"{cls.__name__}() must be constructible without arguments: {exc}"
            ) from None

    def _starting_class(self) -> type[Immortal]:
        """The class to replay the first pages with: the one of the version that wrote them
        when it is at hand (``previous``), else ``cls`` (converting a checkpoint's state)."""
        cls, checkpoint = self.cls, self.checkpoint
        if checkpoint is not None:
            check_version(cls, checkpoint, self.store.url)
            old: int | None = checkpoint.class_version
        else:
            header = self._first_header = self._read_first_header()
            version = header.get("class_version") if header is not None else None
            old = version if isinstance(version, int) else None
            if old is not None:
                _check_not_backwards(self.cls, old, f"{self.store.url} chunk {self._chunks[0]}")
        if old is None or old == cls.version or self.convert_at_start:
            return cls
        return code_for(cls, old) or cls

    def _read_first_header(self) -> dict[str, Any] | None:
        """The first chunk's header (for a replay from the log's start)."""
        if not self._chunks:
            return None
        chunk = self._chunks[0]
        for offset, body in self.store.read_records(chunk, repair=False):
            return decode_chunk_header(body, f"{self.store.url} chunk {chunk} offset {offset}")
        return None

    def _restore(self, checkpoint: Checkpoint) -> None:
        if checkpoint.immortal != self.name:
            raise CheckpointError(
                f"the checkpoint in {self.store.url} belongs to immortal {checkpoint.immortal!r}, "
                f"not {self.name!r}; check --name and --log"
            )
        executor = self.executor
        state = codec.decode(checkpoint.state, proxy_factory=executor.proxy)
        if checkpoint.class_version != self.version:
            state = _upgraded(self.cls, state, checkpoint.class_version)
        _set_attributes(executor.obj, state)
        executor.next_call_id = checkpoint.next_call_id
        self.coordinator.restore(checkpoint.coordinator)

    # --- replaying -----------------------------------------------------------------------------

    def _read_pages(self, after: tuple[int, int, bytes] | None = None) -> Iterator[Page]:
        store = self.store
        checkpoint = self.checkpoint
        coordinator = self.coordinator
        chunks = self._chunks
        for number, chunk in enumerate(self._replay):
            self.chunks_read = number  # chunks read whole, for a progress bar
            last = chunk == chunks[-1]
            resumed = after is not None and after[0] == chunk
            self._have_header = resumed
            for offset, body in store.read_records(chunk, repair=last and not self.read_only):
                if resumed:
                    assert after is not None
                    if offset < after[1]:
                        continue
                    if offset == after[1]:
                        if body != after[2]:
                            raise LogChangedError(f"{store.url} chunk {chunk} offset {offset}")
                        resumed = False
                        continue
                    raise LogChangedError(f"{store.url} chunk {chunk} offset {after[1]}")
                self._last = (chunk, offset, body)
                where = f"{store.url} chunk {chunk} offset {offset}"
                if not self._have_header:
                    header = decode_chunk_header(body, where)
                    self._have_header = True
                    version = header.get("class_version")
                    if isinstance(version, int) and version != self.version:
                        self._version_changed(version, where)
                    self._check_incarnation(header.get("incarnation"), where)
                    first = header.get("first_page")
                    if self.on_chunk is not None and first == coordinator.next_page:
                        self.on_chunk(chunk)
                    continue
                if is_seal(body):  # the log's last record: the immortal moved on from here
                    self.seal = decode_seal(body, where)
                    return
                page = decode_page(body, where)
                if checkpoint is not None and page.number < checkpoint.next_page:
                    continue
                if page.number != coordinator.next_page:
                    raise CorruptLogError(
                        f"{where}: page {page.number} follows page {coordinator.next_page - 1}; "
                        "pages are missing, so replay would not be faithful"
                    )
                yield page
            if resumed:
                # the record read last is gone: the log was cut back under us (a seal of the
                # shared-mount tier after a deposed writer's late appends)
                assert after is not None
                raise LogChangedError(f"{store.url} chunk {chunk} offset {after[1]}")

    def follow(self) -> None:
        """Look again for what was appended since the end was reached, as a standby does:
        list the chunks afresh and read on after the last record read (each file reopened,
        so a shared mount shows other clients' appends).

        Raises :class:`LogChangedError` if the record read last is no longer there as it was
        read: what was replayed is then not a prefix of the log, and the replay must start
        over.
        """
        if self._next is not None or self._current is not None:
            return  # a page is read but not applied: the end has not been reached yet
        self._chunks = chunks = self.store.list_chunks()
        last = self._last
        if last is None:
            start = self.checkpoint.chunk if self.checkpoint is not None else 0
            self._replay = [c for c in chunks if c >= start]
        else:
            self._replay = [c for c in chunks if c >= last[0]]
            if not self._replay or self._replay[0] != last[0]:
                raise LogChangedError(f"{self.store.url} chunk {last[0]} is gone")
        self.chunks_to_read = len(self._replay)
        self._pages = self._read_pages(last)

    def _version_changed(self, version: int, where: str) -> None:
        """A chunk header records another class version: a live upgrade happened here (the
        pages before it ran under the old version, those after it under ``version``)."""
        _check_not_backwards(self.cls, version, where)
        if version < self.version:
            return  # the state was converted ahead, at the checkpoint: nothing to do here
        target = code_for(self.cls, version) or self.cls
        upgrade_object(self.executor, target, where)
        self.version = self.coordinator.class_version = target.version

    def _check_incarnation(self, found: object, where: str) -> None:
        if not isinstance(found, str):
            return
        ours = self.coordinator.incarnation
        if ours is None:
            self.coordinator.incarnation = found
        elif found != ours:
            raise CorruptLogError(
                f"{where}: this chunk belongs to incarnation {found} of {self.name}, and the "
                f"log's checkpoint or first chunk to incarnation {ours}: files of two different "
                "logs are mixed in one directory; keep only those of one log"
            )

    @property
    def upgrade_pending(self) -> bool:
        """The code running is an older version than :attr:`cls`: :func:`complete_upgrade`
        converts it when this replay becomes the primary."""
        return self.version != self.cls.version

    def peek(self) -> Page | None:
        """The next page to apply, read but not applied; None at the end of the log."""
        if self._next is None:
            self._next = next(self._pages, None)
        return self._next

    def step(self) -> Page | None:
        """Apply the next page (or the rest of one begun by :meth:`step_message`); None (and
        nothing applied) at the end of the log."""
        current = self._current
        if current is not None:
            while self._current is current:
                self.step_message()
            return current
        page = self.peek()
        if page is not None:
            self._next = None
            self.coordinator.apply_page(page)
            self.pages += 1
            self.messages += sum(entry.count for entry in page.entries)
        return page

    @property
    def peek_is_page_boundary(self) -> bool:
        """No page is half run (by :meth:`step_message`)."""
        return self._current is None

    def peek_message(self) -> LoggedMessage | None:
        """The next message to run, not run yet; None at the end of the log.

        The page holding it is begun (its trims applied), so the replay is then between two
        messages of that page.
        """
        while not self._queue:
            page = self.peek()
            if page is None:
                return None
            self._next = None
            self.coordinator.begin_page(page)
            self._current = page
            self._queue.extend(self._split(page))
            if not self._queue:
                self._end_page()
        return self._queue[0]

    def step_message(self) -> LoggedMessage | None:
        """Run the next message alone; None (and nothing run) at the end of the log."""
        message = self.peek_message()
        if message is None:
            return None
        self._queue.popleft()
        self.executor.dispatch_all(message.source, ((message.head, message.body),))
        self.messages = message.index
        if not self._queue:
            self._end_page()
        return message

    def run_to_message(self, index: int) -> None:
        """Run messages up to and including the one numbered ``index`` (whole pages while
        they end before it, as fast as recovery); stop early at the end of the log."""
        while self._current is None and self.messages < index:
            page = self.peek()
            if page is None or self.messages + sum(e.count for e in page.entries) > index:
                break
            self.step()
        while self.messages < index and self.step_message() is not None:
            pass

    def _split(self, page: Page) -> Iterator[LoggedMessage]:
        index = self.messages
        for entry in page.entries:
            sequence = entry.first_total
            for head, body in wire.message_parts(entry.batch, entry.count):
                index += 1
                yield LoggedMessage(index, page.number, entry.source, sequence, head, body)
                sequence += 1

    def _end_page(self) -> None:
        assert self._current is not None
        self.coordinator.end_page(self._current)
        self._current = None
        self.pages += 1

    def run(self, *, until_page: int | None = None) -> int:
        """Apply pages up to and including ``until_page`` (all of them by default); return how
        many were applied by this call."""
        applied = 0
        while True:
            page = self._current or self.peek()
            if page is None or (until_page is not None and page.number > until_page):
                return applied
            self.step()
            applied += 1

    @property
    def state(self) -> dict[str, Any]:
        """The immortal's state now: its attributes, as a checkpoint would hold them."""
        return state_of(self.executor.obj)

    @property
    def obj(self) -> Immortal:
        """The immortal object itself, as replayed so far."""
        return self.executor.obj

    # --- ending --------------------------------------------------------------------------------

    def finish(self) -> None:
        """End the replay as a recovery does, at the end of the log: number the next chunk
        and, unless read-only, make this process the log's writer (append to the last chunk,
        or open the next with a checkpoint); then a new epoch. Every new primary passes here
        (a recovery, a standby taking over), so this is where a live upgrade converts."""
        if self._current is not None or self.peek() is not None:
            raise RuntimeError(f"{self.name}: replay stopped before the end of the log")
        store = self.store
        coordinator = self.coordinator
        chunks = self._chunks
        if coordinator.incarnation is None:
            # a log from before incarnations: its id, recorded by the checkpoint asked for here
            coordinator.incarnation = incarnation.legacy(self.name, self.checkpoint)
            coordinator.checkpoint_requested = True
        # never reuse a number: a checkpoint may outlive the chunks of its own number
        coordinator.chunk = max(chunks[-1:] + store.list_checkpoints()[-1:] + [0])
        if self.read_only:
            pass
        elif chunks and chunks[-1] >= coordinator.chunk:
            store.resume_chunk(chunks[-1])
            coordinator.chunk = chunks[-1]
            if not self._have_header:
                store.append(
                    encode_record(
                        chunk_header(
                            self.name,
                            chunks[-1],
                            coordinator.next_page,
                            class_version=coordinator.class_version,
                            incarnation=coordinator.incarnation,
                        ),
                        RecordType.CHUNK_HEADER,
                    )
                )
        else:
            coordinator.checkpoint_requested = True  # the next chunk opens with a checkpoint
        checkpoint = self.checkpoint
        if self.upgrade_pending or (checkpoint and checkpoint.class_version != self.version):
            # the new version's first chunk, with a checkpoint, before anything else (or, if
            # that chunk exists but its checkpoint was never written, a checkpoint now: until
            # then every recovery replays with the old code)
            coordinator.checkpoint_requested = True
        coordinator.new_epoch()
        if not self.read_only:
            # a live upgrade: the new version takes over now if nothing waits (else at the
            # first checkpoint that finds nothing waiting), before anything is logged; the
            # checkpoint asked for above makes the conversion durable
            complete_upgrade(self.executor, coordinator, self.cls)


class LogChangedError(CorruptLogError):
    """What a follower had read of a log is no longer in it (see :meth:`Replayer.follow`)."""

    def __init__(self, where: str) -> None:
        super().__init__(f"{where}: the record read there is no longer in the log")


def check_version(cls: type[Immortal], checkpoint: Checkpoint, url: str) -> None:
    """Refuse, before anything runs or is written, a class that cannot take over the state of
    ``checkpoint``: a version older than the one that wrote it, or a newer one without an
    ``upgrade`` of its own (the identity inherited from Immortal would pass an old state off
    as a new one)."""
    version, old = cls.version, checkpoint.class_version
    where = f"{cls.__module__}:{cls.__qualname__}"
    if type(version) is not int or version < 1:
        raise ConfigError(f"{where}.version must be a whole number from 1, not {version!r}")
    if version < old:
        raise CheckpointError(
            f"{url} was checkpointed by version {old} of {checkpoint.class_path}, and {where} is "
            f"version {version}: a version cannot go backwards (its upgrade() only converts "
            f"older states); run version {old} or later"
        )
    if version > old and getattr(cls.upgrade, "__func__", None) is _INHERITED_UPGRADE:
        raise CheckpointError(
            f"{url} was checkpointed by version {old} of {checkpoint.class_path}; {where} is "
            f"version {version} but defines no upgrade() to convert that state: add "
            "@classmethod def upgrade(cls, old_state, old_version) -> dict (return old_state "
            "unchanged if the state's shape did not change)"
        )


_INHERITED_UPGRADE = Immortal.upgrade.__func__  # type: ignore[attr-defined]


def _check_not_backwards(cls: type[Immortal], version: int, where: str) -> None:
    if version > cls.version:
        raise CheckpointError(
            f"{where} was written by version {version} of the immortal's class, and "
            f"{cls.__module__}:{cls.__qualname__} is version {cls.version}: a version cannot go "
            f"backwards; run version {version} or later"
        )


def code_for(cls: type[Immortal], version: int) -> type[Immortal] | None:
    """The class of ``version`` among ``cls`` and its ``previous`` classes; None if none is."""
    here: type[Immortal] = cls
    while True:
        if here.version == version:
            return here
        older = here.previous
        if older is None:
            return None
        if not (isinstance(older, type) and issubclass(older, Immortal)):
            raise ConfigError(
                f"{here.__module__}:{here.__qualname__}.previous must be the Immortal class of "
                f"the previous version, not {older!r}"
            )
        if older.version >= here.version:
            raise ConfigError(
                f"{here.__module__}:{here.__qualname__} is version {here.version} but its "
                f"previous class {older.__qualname__} is version {older.version}: previous "
                "must be an older version"
            )
        here = older


def _upgraded(cls: type[Immortal], state: dict[str, Any], old_version: int) -> dict[str, Any]:
    """``cls.upgrade`` applied, checked to give a state (a dict of attribute names)."""
    where = f"{cls.__module__}:{cls.__qualname__}"
    if cls.version > old_version and getattr(cls.upgrade, "__func__", None) is _INHERITED_UPGRADE:
        raise CheckpointError(
            f"{where} is version {cls.version} but defines no upgrade() to convert the state of "
            f"version {old_version}: add @classmethod def upgrade(cls, old_state, old_version) "
            "-> dict"
        )
    new = cls.upgrade(state, old_version)
    if not isinstance(new, dict) or not all(isinstance(k, str) for k in new):
        raise ConfigError(
            f"{where}.upgrade() must return the new state as a dict of attribute names, not "
            f"{type(new).__name__}"
        )
    return new


def upgrade_object(executor: Executor, cls: type[Immortal], where: str) -> None:
    """Replace the executor's immortal by one of ``cls`` holding its state converted by
    ``cls.upgrade``. Only between pages, with no handler suspended (as at a checkpoint)."""
    obj = executor.obj
    old = type(obj).version
    if not executor.quiescent:
        raise CheckpointError(
            f"{where}: the state cannot be converted to version {cls.version} while handlers "
            f"of version {old} wait for replies ({', '.join(executor.suspended_handlers[:3])})"
        )
    state = _upgraded(cls, state_of(obj), old)
    new = cls.__new__(cls)
    _set_attributes(new, state)
    executor.adopt(new)


def complete_upgrade(executor: Executor, coordinator: Coordinator, cls: type[Immortal]) -> bool:
    """The upgrade step of a new primary: if the immortal still runs an older version than
    ``cls`` and no handler is suspended, convert it now; True when it runs ``cls`` after.

    Called where every new primary passes after recovery (:meth:`Replayer.finish`, and each
    checkpoint's builder in the runtime), so a standby taking over upgrades the same way.
    The converted state is made durable by the checkpoint that :meth:`Replayer.finish`
    requested: its chunk header records the new version, so a crash before it recovers the
    old version and upgrades again, and a crash after it replays up to it with the old
    code."""
    obj = executor.obj
    if type(obj) is cls:
        return True
    if not executor.quiescent:
        return False
    old = type(obj).version
    upgrade_object(executor, cls, coordinator.name)
    coordinator.class_version = cls.version
    if failpoints.armed and failpoints.reached("upgraded"):
        failpoints.crash()  # converted in memory, nothing of it written
    log.info(
        "%s: upgraded from version %d to %d (%s); a checkpoint of the new state follows",
        coordinator.name,
        old,
        cls.version,
        f"{cls.__module__}:{cls.__qualname__}",
    )
    return True


def _set_attributes(obj: object, state: dict[str, Any]) -> None:
    """Give a restored object its attributes as its constructor would have: one by one.

    ``vars(obj).update(state)`` gave the same attributes in a dictionary of another kind (a
    materialized one, no longer sharing its keys with the class), where every attribute access
    of a handler is slower: replay from a checkpoint ran at 3.5-4.0M messages/s against 5.7M
    from an object built by its constructor. A name the class defines as a data descriptor
    (a property, say) goes straight into the dictionary, as before, bypassing the descriptor.
    """
    cls = type(obj)
    for name, value in state.items():
        descriptor = inspect.getattr_static(cls, name, None)
        if descriptor is not None and hasattr(type(descriptor), "__set__"):
            vars(obj)[name] = value
        else:
            object.__setattr__(obj, name, value)


class _Offline:
    """The transport of an offline replay: replay neither connects nor listens."""

    async def connect(self, host: str, port: int, *, name: str | None = None) -> Link:
        raise ConfigError("an offline replay does not connect to other immortals")

    async def serve(self, host: str, port: int, handler: Any, *, task_status: Any = None) -> None:
        raise ConfigError("an offline replay does not accept connections")


def _offline(
    name: str, store: LogStore, executor: Callable[[Coordinator], Executor]
) -> Coordinator:
    return Coordinator(name, store, _Offline(), executor=executor)
