"""Time travel: an immortal rebuilt from its log to any page or message, without disturbing it.

The log holds every input in the order it ran and handlers are deterministic (paper §5.2), so
replaying it up to message K gives exactly the object the live run had after message K. This is
the engine of ``ambrosia-edge replay`` and of :func:`ambrosia_edge.replay`: a read-only
:class:`~ambrosia_edge.recovery.Replayer` (no writer lock, no repair of a torn tail, an offline
coordinator that cannot connect or listen, no impulse source, ``becoming_primary`` never run)
over a log that may be stopped or still being written.

The log records no time: pages carry numbers, epochs and messages, but not when they were
written, so a replay can stop at a page or a message, not at an instant.
"""

from __future__ import annotations

import inspect
import pdb
import sys
from collections.abc import Callable
from dataclasses import dataclass
from types import CodeType, FrameType
from typing import Any

from . import codec, messages
from .checkpoint import decode_checkpoint
from .errors import CheckpointError, CodecError, ConfigError
from .immortal import Immortal
from .page import decode_chunk_header
from .recovery import LoggedMessage, Replayer
from .store import LogStore, open_store

__all__ = [
    "NO_TIME",
    "Decoded",
    "decode_message",
    "describe",
    "drive",
    "handler_code",
    "open_replay",
    "replay",
    "step_into",
]

#: Why ``--until-time`` cannot be served.
NO_TIME = (
    "the log does not record when its inputs arrived (pages hold numbers, epochs and "
    "messages, no timestamps), so a replay cannot stop at an instant; stop at a page with "
    "--until PAGE or at a message with --until-message K ('ambrosia-edge inspect LOG' lists "
    "the pages, 'ambrosia-edge replay LOG --show calls' numbers the messages)"
)


def replay(
    log: str | LogStore,
    target: str | type[Immortal] | None = None,
    *,
    checkpoint: int | None = -1,
    until: int | None = None,
    until_message: int | None = None,
) -> Replayer:
    """Rebuild the immortal of ``log`` read-only, run to page ``until`` or message
    ``until_message`` (neither: the end of the log), and return the replay to look at
    (``.obj``, ``.state``) or step on (``.step_message()``, ``.step()``, ``.run()``).

    ``target`` is the class (or ``"module:Class"``) to replay through; by default the one the
    checkpoint names. ``checkpoint`` as in :class:`~ambrosia_edge.recovery.Replayer`: -1 the
    newest, ``n`` checkpoint ``n``, None the whole log from its start.
    """
    if until is not None and until_message is not None:
        raise ConfigError("stop at a page or at a message, not both")
    replayer = open_replay(
        log, target, checkpoint=checkpoint, until=until, until_message=until_message
    )
    drive(replayer, until_page=until, until_message=until_message)
    return replayer


def open_replay(
    log: str | LogStore,
    target: str | type[Immortal] | None = None,
    *,
    checkpoint: int | None = -1,
    until: int | None = None,
    until_message: int | None = None,
    convert_at_start: bool = False,
) -> Replayer:
    """A read-only replay of ``log`` positioned at its checkpoint, nothing run yet.

    ``convert_at_start`` as in :class:`~ambrosia_edge.recovery.Replayer`: run every page with
    ``target`` (converting an older checkpoint's state first) rather than replay old pages
    with the ``previous`` classes that ran them.

    With ``checkpoint=-1`` and a stopping point (page ``until`` or message ``until_message``),
    the newest checkpoint before that point; a checkpoint named explicitly must be before it.
    """
    store = open_store(log) if isinstance(log, str) else log
    if checkpoint == -1 and (until is not None or until_message is not None):
        checkpoint = _newest_before(store, until, until_message)
    name, class_path = _identity(store, checkpoint)
    if target is None:
        if class_path is None:
            raise ConfigError(
                f"{store.url} has no checkpoint to say which class it was written by; "
                "name it with --target module:Class"
            )
        target = class_path
    cls = _load(target) if isinstance(target, str) else target
    replayer = Replayer(
        cls,
        store,
        name=name,
        checkpoint=checkpoint,
        read_only=True,
        convert_at_start=convert_at_start,
    )
    past = None
    if until is not None and replayer.coordinator.next_page > until + 1:
        past = f"page {until}"
    if until_message is not None and replayer.messages > until_message:
        past = f"message {until_message}"
    if past is not None:
        raise CheckpointError(
            f"checkpoint {replayer.checkpoint_number} of {store.url} is past {past} (it "
            f"starts after page {replayer.coordinator.next_page - 1}, message "
            f"{replayer.messages}); start from an earlier one, or leave --checkpoint out to "
            "start from the newest before it"
        )
    return replayer


def _newest_before(store: LogStore, until: int | None, until_message: int | None) -> int | None:
    """The newest checkpoint at or before page ``until`` / message ``until_message``; None
    (the log's start) when every checkpoint is past it."""
    for n in reversed(store.list_checkpoints()):
        cp = decode_checkpoint(store.read_checkpoint(n), f"checkpoint {n} of {store.url}")
        if until is not None and cp.next_page > until + 1:
            continue
        if until_message is not None and sum(t for t, _ in cp.inputs.values()) > until_message:
            continue
        return n
    chunks = store.list_chunks()
    if chunks and chunks[0] != 1:
        point = f"page {until}" if until is not None else f"message {until_message}"
        raise CheckpointError(
            f"{store.url} no longer holds {point}: the chunks before its oldest checkpoint were "
            "deleted once later checkpoints covered them, so a replay can start no earlier "
            "(run the immortal with a larger --keep-checkpoints to keep more history)"
        )
    return None


def _load(target: str) -> type[Immortal]:
    from .loader import load_class

    cls = load_class(target)
    if not (isinstance(cls, type) and issubclass(cls, Immortal)):
        raise ConfigError(f"{target} is not an Immortal subclass")
    return cls


def _identity(store: LogStore, checkpoint: int | None) -> tuple[str, str | None]:
    """The immortal's name and (from its checkpoint, if any) its class path."""
    checkpoints = store.list_checkpoints()
    if checkpoint is not None and checkpoints:
        n = checkpoints[-1] if checkpoint == -1 else checkpoint
        if n not in checkpoints:
            raise CheckpointError(f"{store.url} has no checkpoint {n} (it has {checkpoints})")
        cp = decode_checkpoint(store.read_checkpoint(n), f"checkpoint {n} of {store.url}")
        return cp.immortal, cp.class_path
    chunks = store.list_chunks()
    if not chunks:
        raise ConfigError(f"{store.url} holds no log (no chunk and no checkpoint); check the URL")
    for offset, body in store.read_records(chunks[0]):
        header = decode_chunk_header(body, f"{store.url} chunk {chunks[0]} offset {offset}")
        class_path = None
        if checkpoints:  # a whole-log replay: the newest checkpoint still names the class
            last = checkpoints[-1]
            cp = decode_checkpoint(store.read_checkpoint(last), f"checkpoint {last}")
            class_path = cp.class_path
        return str(header["immortal"]), class_path
    raise ConfigError(f"{store.url} chunk {chunks[0]} is empty: nothing to replay")


@dataclass(frozen=True, slots=True)
class Decoded:
    """A logged message decoded for people: what kind, which method, with what."""

    kind: messages.Kind
    impulse: bool
    call_id: int | None = None
    method: str | None = None
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] | None = None
    value: Any = None  # of a reply or capture
    error: tuple[str, str] | None = None  # (type, message) of a failure
    undecodable: str | None = None

    def call_text(self) -> str:
        """``method(arg, key=value)``, or what the message carries when it is not a call."""
        if self.undecodable is not None:
            return f"<undecodable: {self.undecodable}>"
        kind = self.kind
        if kind in (messages.Kind.CALL, messages.Kind.REQUEST):
            parts = [_short(a) for a in self.args]
            parts += [f"{k}={_short(v)}" for k, v in (self.kwargs or {}).items()]
            return f"{self.method}({', '.join(parts)})"
        if kind is messages.Kind.START:
            return "on_first_start()"
        if kind in (messages.Kind.REPLY, messages.Kind.CAPTURE):
            return f"{kind.name.lower()} to call {self.call_id}: {_short(self.value)}"
        assert self.error is not None
        return f"{kind.name.lower()} of call {self.call_id}: {self.error[0]}: {self.error[1]}"


def decode_message(message: bytes) -> Decoded:
    """Decode one message as a tool sees it: proxies stay names (codec.ProxyRef)."""
    try:
        kind, impulse, fields = messages.decode(message)
    except CodecError as exc:
        return Decoded(messages.Kind.CALL, False, undecodable=str(exc))
    if kind is messages.Kind.CALL:
        return Decoded(kind, impulse, None, fields[0], tuple(fields[1]), fields[2])
    if kind is messages.Kind.REQUEST:
        return Decoded(kind, impulse, fields[0], fields[1], tuple(fields[2]), fields[3])
    if kind in (messages.Kind.REPLY, messages.Kind.CAPTURE):
        return Decoded(kind, impulse, fields[0], value=fields[1])
    if kind in (messages.Kind.FAILURE, messages.Kind.CAPTURE_FAILED):
        return Decoded(kind, impulse, fields[0], error=(fields[1], fields[2]))
    return Decoded(kind, impulse)


def describe(message: LoggedMessage) -> str:
    """One line naming a logged message: number, page, source and sequence number, content."""
    decoded = decode_message(message.message)
    what = decoded.call_text()
    tags = []
    if decoded.impulse:
        tags.append("impulse")
    if decoded.kind is messages.Kind.REQUEST:
        tags.append(f"awaited, call {decoded.call_id}")
    tag = f" [{', '.join(tags)}]" if tags else ""
    return (
        f"message {message.index} (page {message.page}, from {message.source} "
        f"#{message.sequence}): {what}{tag}"
    )


def _short(value: Any, limit: int = 80) -> str:
    if isinstance(value, codec.ProxyRef):
        return f"proxy({value.name!r})"
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def drive(
    replayer: Replayer,
    *,
    until_page: int | None = None,
    until_message: int | None = None,
    on_message: Callable[[LoggedMessage], None] | None = None,
    on_page: Callable[[Replayer], None] | None = None,
) -> None:
    """Run ``replayer`` to page ``until_page`` or message ``until_message`` (inclusive; neither:
    the end of the log). ``on_message`` is called before each message runs, which then runs
    one at a time; without it whole pages run, as fast as recovery, until the page that holds
    ``until_message``. ``on_page`` is called after each page (a progress bar)."""
    while until_message is None or replayer.messages < until_message:
        if replayer.peek_is_page_boundary:
            page = replayer.peek()
            if page is None or (until_page is not None and page.number > until_page):
                return
            count = sum(entry.count for entry in page.entries)
            if on_message is None and (
                until_message is None or replayer.messages + count <= until_message
            ):
                replayer.step()
                if on_page is not None:
                    on_page(replayer)
                continue
        message = replayer.peek_message()
        if message is None:
            return
        if on_message is not None:
            on_message(message)
        replayer.step_message()
        if on_page is not None and replayer.peek_is_page_boundary:
            on_page(replayer)


def handler_code(replayer: Replayer, message: LoggedMessage) -> CodeType | None:
    """The code a message runs first: its method's, on_first_start's, or, for a reply, that
    of the handler it resumes; None when it runs no handler (an unknown method, say)."""
    decoded = decode_message(message.message)
    obj = replayer.executor.obj
    function: Any = None
    if decoded.kind in (messages.Kind.CALL, messages.Kind.REQUEST) and decoded.method:
        function = getattr(type(obj), decoded.method, None)
    elif decoded.kind is messages.Kind.START:
        function = type(obj).on_first_start
    elif decoded.call_id is not None:
        waiting = replayer.executor._pending.get(decoded.call_id)
        if waiting is not None:
            return getattr(waiting[0], "cr_code", None)
    function = inspect.unwrap(function) if function is not None else None
    return getattr(function, "__code__", None)


def step_into(replayer: Replayer, debugger: pdb.Pdb | None = None) -> LoggedMessage | None:
    """Run the next message with the debugger stopped at the first line of its handler."""
    message = replayer.peek_message()
    if message is None:
        return None
    code = handler_code(replayer, message)
    debugger = debugger if debugger is not None else pdb.Pdb()
    if code is None:
        debugger.message(f"{describe(message)} runs no handler of the class")
        debugger.set_trace(sys._getframe())
        return replayer.step_message()
    debugger.message(f"stopping before the handler of {describe(message)}")

    def tracer(frame: FrameType, event: str, arg: Any) -> Any:
        if event == "call" and frame.f_code is code:
            sys.settrace(None)
            debugger.set_trace(frame)
            return debugger.trace_dispatch
        return None

    previous = sys.gettrace()
    sys.settrace(tracer)
    try:
        return replayer.step_message()
    finally:
        if sys.gettrace() is tracer:
            sys.settrace(previous)
