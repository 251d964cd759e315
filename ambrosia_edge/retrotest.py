"""Retroactive testing: new code run on real history, beside the code that made it (paper §5.3).

Two read-only replays of the same log go message by message in lockstep, one through the old
class (the one the checkpoint names, or another given) and one through the new. After each
message, what each sent is compared: the calls it made (destination, method, arguments), what
it returned to its caller or raised, the values it captured; and, if asked, the states. The
first message where they differ is the report: a change of behaviour on yesterday's traffic,
found before the new code is deployed. Nothing is sent, logged or locked, as with any replay.

When the two classes declare different versions, the new one's ``upgrade`` converts the
checkpoint's state on the way in, as a live upgrade would.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from . import codec, messages
from .errors import ConfigError
from .executor import Executor
from .immortal import Immortal
from .outputs import Thunk
from .recovery import LoggedMessage, Replayer
from .store import LogStore, open_store
from .timetravel import decode_message, describe, open_replay

__all__ = ["Divergence", "Tap", "decoded", "render", "retrotest", "state_diff"]

#: One thing a message made the immortal do, in comparable form (see Tap.behaviour).
Event = tuple[Any, ...]


class Tap:
    """Stands between an executor and its coordinator and notes what each message makes the
    immortal do; the coordinator still gets every send, so the replay stays exact."""

    def __init__(self, executor: Executor) -> None:
        self.events: list[Event] = []
        self._out = executor.outbox
        executor.outbox = self
        finish = executor._finish
        events = self.events

        def noting_finish(
            ctx: Any, *, result: Any = None, error: BaseException | None = None
        ) -> None:
            if ctx.call_id is None and error is not None:  # a fork raised: nobody is told
                method = ctx.handler.rpartition(".")[2]
                events.append(("raised", method, type(error).__name__, str(error)))
            finish(ctx, result=result, error=error)

        executor._finish = noting_finish  # type: ignore[method-assign]

    def send(self, destination: str, message: bytes, *, impulse: bool) -> None:
        # kept as bytes: equal messages are equal bytes (call ids included, which both
        # replays number alike up to the first divergence), and decoding is for the report
        self.events.append(("send", destination, message))
        self._out.send(destination, message, impulse=impulse)

    def send_thunk_to_self(self, thunk: Thunk) -> None:
        self.events.append(("capture",))
        self._out.send_thunk_to_self(thunk)

    def take(self) -> list[Event]:
        """The events since the last call, as recorded (see :func:`decoded`)."""
        taken = self.events[:]
        self.events.clear()
        return taken


def decoded(event: Event) -> Event:
    """A recorded event in comparable, readable form: a sent message decoded."""
    return _event(event[1], event[2]) if event[0] == "send" else event


def _event(destination: str, message: bytes) -> Event:
    d = decode_message(message)
    kind = messages.Kind
    if d.undecodable is not None:
        return ("undecodable", destination, d.undecodable)
    if d.kind is kind.REQUEST:
        return ("call", destination, d.method, d.args, d.kwargs, "awaited")
    if d.kind is kind.CALL:
        return ("call", destination, d.method, d.args, d.kwargs, "impulse" if d.impulse else "fork")
    if d.kind is kind.REPLY:
        return ("return", destination, d.call_id, d.value)
    if d.kind is kind.FAILURE:
        assert d.error is not None
        return ("raise", destination, d.call_id, *d.error)
    return ("message", destination, d.call_text())


def render(event: Event) -> str:
    """An event in words, for the report."""
    what = event[0]
    if what == "call":
        _, destination, method, args, kwargs, how = event
        parts = [_short(a) for a in args] + [f"{k}={_short(v)}" for k, v in kwargs.items()]
        return f"calls {destination}.{method}({', '.join(parts)}) [{how}]"
    if what == "return":
        return f"returns {_short(event[3])} to {event[1]} (call {event[2]})"
    if what == "raise":
        return f"raises {event[3]}: {event[4]} to {event[1]} (call {event[2]})"
    if what == "raised":
        return f"raises {event[2]}: {event[3]} in {event[1]} (a fork: logged, nobody told)"
    if what == "capture":
        return "captures a value (self.capture)"
    return " ".join(str(part) for part in event)


def _short(value: Any, limit: int = 80) -> str:
    if isinstance(value, codec.ProxyRef):
        return f"proxy({value.name!r})"
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclass
class Divergence:
    """The first message on which the new code did not do what the old one did."""

    message: LoggedMessage
    old: list[Event]
    new: list[Event]
    #: (path, old value, new value) of the states after the message, with compare_state
    state: list[tuple[str, Any, Any]] = field(default_factory=list)

    def report(self, old_name: str, new_name: str) -> str:
        lines = [f"first divergence at {describe(self.message)}"]
        if self.old != self.new:
            at = next(
                (i for i, (a, b) in enumerate(zip(self.old, self.new, strict=False)) if a != b),
                min(len(self.old), len(self.new)),
            )
            for name, events in ((old_name, self.old), (new_name, self.new)):
                lines.append(f"  {name}:")
                if not events:
                    lines.append("    (nothing sent)")
                for i, event in enumerate(events):
                    mark = "->" if i == at else "  "
                    lines.append(f"  {mark}{render(event)}")
                if at >= len(events):
                    lines.append("  ->(nothing more, where the other sends more)")
        if self.state:
            lines.append(f"  the states after it differ ({old_name} / {new_name}):")
            for path, a, b in self.state[:20]:
                lines.append(f"    {path}: {_short(a)} / {_short(b)}")
            if len(self.state) > 20:
                lines.append(f"    ... and {len(self.state) - 20} more")
        return "\n".join(lines)


_MISSING = object()


def state_diff(old: Any, new: Any, path: str = "") -> list[tuple[str, Any, Any]]:
    """Where two states differ, path by path (``field``, ``field.attr``, ``field['key']``,
    ``field[3]``); a value missing on one side shows as ``<missing>``. Two states are
    ``vars()`` of the objects: their keys are attribute names."""
    if not path and isinstance(old, dict) and isinstance(new, dict):
        return _mapping(old, new, lambda key: str(key))
    if old is new or (type(old) is type(new) and _equal(old, new)):
        return []
    if isinstance(old, dict) and isinstance(new, dict):
        return _mapping(old, new, lambda key: f"{path}[{key!r}]")
    if isinstance(old, list | tuple) and isinstance(new, list | tuple) and type(old) is type(new):
        diffs: list[tuple[str, Any, Any]] = []
        for i in range(max(len(old), len(new))):
            a = old[i] if i < len(old) else _MISSING
            b = new[i] if i < len(new) else _MISSING
            if a is _MISSING or b is _MISSING:
                diffs.append((f"{path}[{i}]", _shown(a), _shown(b)))
            else:
                diffs += state_diff(a, b, f"{path}[{i}]")
        return diffs
    if type(old) is type(new) and hasattr(old, "__dict__") and not isinstance(old, type):
        return _mapping(vars(old), vars(new), lambda key: f"{path}.{key}")
    return [(path, old, new)]


def _mapping(
    old: dict[Any, Any], new: dict[Any, Any], name: Callable[[Any], str]
) -> list[tuple[str, Any, Any]]:
    diffs: list[tuple[str, Any, Any]] = []
    for key in list(old) + [k for k in new if k not in old]:
        a, b = old.get(key, _MISSING), new.get(key, _MISSING)
        if a is _MISSING or b is _MISSING:
            diffs.append((name(key), _shown(a), _shown(b)))
        else:
            diffs += state_diff(a, b, name(key))
    return diffs


def _equal(a: Any, b: Any) -> bool:
    try:
        return bool(a == b)
    except Exception:
        return False


class _Shown:
    def __repr__(self) -> str:
        return "<missing>"


def _shown(value: Any) -> Any:
    return _Shown() if value is _MISSING else value


def retrotest(
    log: str | LogStore,
    new: str | type[Immortal],
    *,
    old: str | type[Immortal] | None = None,
    checkpoint: int | None = -1,
    compare_state: bool = False,
    on_message: Callable[[LoggedMessage], None] | None = None,
) -> tuple[Divergence | None, Replayer, Replayer]:
    """Replay ``log`` through ``old`` (default: the checkpoint's class) and ``new`` side by
    side; return the first divergence (None if there was none) and the two replays, stopped
    just after it (or at the end of the log)."""
    url = log if isinstance(log, str) else log.url
    before = open_replay(
        open_store(url) if isinstance(log, str) else log, old, checkpoint=checkpoint
    )
    # the new code on every message, even where a live upgrade would replay old ones with
    # the old code: that is the question asked
    after = open_replay(open_store(url), new, checkpoint=checkpoint, convert_at_start=True)
    old_cls, new_cls = type(before.obj), type(after.obj)

    def old_state() -> dict[str, Any]:
        """The old replay's state, upgraded to the new class's version if it has another (a
        copy: an upgrade may change what it is given)."""
        if old_cls.version == new_cls.version:
            return before.state
        return new_cls.upgrade(copy.deepcopy(before.state), old_cls.version)

    if compare_state:
        diffs = state_diff(old_state(), after.state)
        if diffs:
            raise ConfigError(
                "the two classes start from different states (after the new class's upgrade(), "
                "if their versions differ), so --compare-state would report every message: "
                f"{diffs[0][0]} differs first"
            )
    old_tap, new_tap = Tap(before.executor), Tap(after.executor)
    for message in _lockstep(before, after):
        if on_message is not None:
            on_message(message)
        a, b = old_tap.take(), new_tap.take()
        diffs = state_diff(old_state(), after.state) if compare_state else []
        if a != b or diffs:
            old_events, new_events = list(map(decoded, a)), list(map(decoded, b))
            return Divergence(message, old_events, new_events, diffs), before, after
    return None, before, after


def _lockstep(before: Replayer, after: Replayer) -> Iterator[LoggedMessage]:
    while True:
        message = before.peek_message()
        if message is None:
            return
        other = after.peek_message()
        if other != message:  # the same log read twice: only a log rewritten meanwhile
            raise ConfigError(f"the log changed while it was read ({describe(message)})")
        before.step_message()
        after.step_message()
        yield message
