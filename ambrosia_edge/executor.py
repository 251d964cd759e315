"""The deterministic executor: runs logged messages one at a time, in log order (DESIGN §6).

Handlers are coroutines, but they never run on the event loop: the executor steps them itself
with ``coro.send``. A handler suspended on an awaited call is parked under the call's id and
resumed, synchronously, when the reply is dispatched from the log, so the interleaving of
handlers is a pure function of the log. Anything else a handler awaits (a sleep, a socket, a
future) would make that interleaving depend on timing, so it is refused with
``NondeterminismError``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Awaitable, Callable, Coroutine, Generator, Iterable
from dataclasses import dataclass
from types import CoroutineType
from typing import TYPE_CHECKING, Any, Protocol

from . import codec, messages, wire
from .errors import (
    CodecError,
    NondeterminismError,
    NotAnImpulseError,
    RemoteError,
    StateEncodingError,
    UnknownMethodError,
)
from .host import Host
from .immortal import RPC_MARK, Immortal, handlers
from .messages import Kind
from .once import ONCE, first_time
from .outputs import Thunk
from .proxy import Proxy
from .publishing import MQTT_OUT, encode_publish

log = logging.getLogger("ambrosia_edge")
_get_ident = threading.get_ident


class Outbox(Protocol):
    """What the executor needs from the coordinator."""

    def send(self, destination: str, message: bytes, *, impulse: bool) -> None: ...

    def send_thunk_to_self(self, thunk: Thunk) -> None: ...


class _Wait:
    """The only thing a handler may await: the logged reply to call ``call_id``."""

    __slots__ = ("call_id", "what")

    def __init__(self, call_id: int, what: str) -> None:
        self.call_id = call_id
        self.what = what

    def __await__(self) -> Generator[_Wait, Any, Any]:
        return (yield self)


@dataclass(slots=True)
class _Context:
    source: str
    call_id: int | None  # the caller's id when it awaits a reply
    handler: str


class Executor:
    """Hosts one immortal object: dispatches its inputs and turns its calls into messages."""

    def __init__(self, name: str, obj: Immortal, outbox: Outbox) -> None:
        self.name = name
        self.obj = obj
        self.cls = type(obj)
        self.outbox = outbox
        self.next_call_id = 1
        self.replaying = False
        self._roles = handlers(self.cls)
        self._pending: dict[int, tuple[Coroutine[Any, Any, Any], _Context]] = {}
        self._forkers: dict[tuple[str, type | None, str], Callable[..., None]] = {}
        #: the thread running handlers right now, 0 when none is: the code that called us
        #: is a handler only if it runs in that thread (another thread may call in meanwhile)
        self._dispatching = 0
        self._loop_thread = threading.get_ident()
        self._spawner: Callable[..., None] | None = None
        self._call_from_thread: Callable[[Callable[[], None]], None] | None = None
        obj._ambrosia_host = self
        self._decoder = codec.make_decoder(self.proxy)
        self._load = codec.make_loader(self.proxy)

    def adopt(self, obj: Immortal) -> None:
        """Host ``obj`` from now on instead of the current object: a live upgrade's new
        version, built from the old one's converted state. Only while quiescent (no
        suspended handler still belongs to the old object)."""
        assert self.quiescent, "an upgrade needs a quiescent immortal"
        self.obj = obj
        self.cls = type(obj)
        self._roles = handlers(self.cls)
        obj._ambrosia_host = self

    # --- wiring by the runtime -------------------------------------------------------------

    def go_live(
        self,
        spawner: Callable[..., None],
        call_from_thread: Callable[[Callable[[], None]], None],
    ) -> None:
        self.replaying = False
        self._loop_thread = threading.get_ident()
        self._spawner = spawner
        self._call_from_thread = call_from_thread

    @property
    def quiescent(self) -> bool:
        """No handler is suspended, so the state alone describes the immortal (checkpointable)."""
        return not self._pending

    @property
    def suspended_handlers(self) -> list[str]:
        return [ctx.handler for _, ctx in self._pending.values()]

    # --- the binding side: calls made by the immortal ---------------------------------------

    def proxy(self, name: str, cls: type | None = None) -> Proxy:
        return Proxy(self, name, cls)

    def _check(self, target: str, cls: type | None, method: str) -> None:
        if cls is None and target == self.name:
            cls = self.cls
        if cls is not None and not hasattr(cls, method):
            raise UnknownMethodError(
                f"{cls.__name__} (immortal {target!r}) has no method {method!r}"
            )

    def request(
        self,
        target: str,
        cls: type | None,
        method: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Awaitable[Any]:
        if self._dispatching != _get_ident():
            raise NotAnImpulseError(
                f"awaited call {target}.{method}() made outside a handler; code that is not "
                "replayed (becoming_primary, spawned tasks, threads) may only fork calls to "
                f"@impulse methods: proxy.fork.{method}(...)"
            )
        self._check(target, cls, method)
        call_id = self.next_call_id
        self.next_call_id += 1
        self.outbox.send(target, messages.request(call_id, method, args, kwargs), impulse=False)
        return _Wait(call_id, f"{target}.{method}()")

    def forker(self, target: str, cls: type | None, method: str) -> Callable[..., None]:
        """The callable behind ``proxy.fork.method``: checks once, then costs one send a call.

        Producers fork in tight loops, so what can be settled when the proxy first meets the
        method name (does the method exist?) is not settled again on every call. A handler
        that makes its proxies afresh each time (``self.proxy("server")`` in every step of a
        continuation) gets the callable made the first time.
        """
        key = (target, cls, method)
        made = self._forkers.get(key)
        if made is not None:
            return made
        self._check(target, cls, method)
        call, fork = messages.call, self.fork

        def forked(*args: Any, **kwargs: Any) -> None:
            if self._dispatching == _get_ident():
                self.outbox.send(target, call(method, args, kwargs, impulse=False), impulse=False)
            else:
                fork(target, cls, method, args, kwargs)  # an impulse, with its own checks

        if len(self._forkers) < _FORKERS:
            self._forkers[key] = forked
        return forked

    def fork(
        self,
        target: str,
        cls: type | None,
        method: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> None:
        self._check(target, cls, method)
        if self._dispatching == _get_ident():
            self.outbox.send(
                target, messages.call(method, args, kwargs, impulse=False), impulse=False
            )
            return
        if cls is None and target == self.name:
            cls = self.cls
        if cls is not None and getattr(getattr(cls, method, None), RPC_MARK, None) != "impulse":
            raise NotAnImpulseError(
                f"{cls.__name__}.{method} is not an @impulse, so it cannot be called from code "
                "that is not replayed (becoming_primary, spawned tasks, threads); mark it @impulse"
            )
        if self.replaying:
            raise NotAnImpulseError(
                f"impulse {target}.{method}() sent during recovery; send "
                "impulses from becoming_primary or the tasks it spawns"
            )
        message = messages.call(method, args, kwargs, impulse=True)
        if threading.get_ident() == self._loop_thread or self._call_from_thread is None:
            self.outbox.send(target, message, impulse=True)
        else:
            outbox = self.outbox
            self._call_from_thread(lambda: outbox.send(target, message, impulse=True))

    def capture(self, fn: Callable[[], Any]) -> Awaitable[Any]:
        if self._dispatching != _get_ident():
            raise NotAnImpulseError(
                "capture() is for handlers; outside them just call the function"
            )
        call_id = self.next_call_id
        self.next_call_id += 1

        def produce() -> bytes:
            try:
                return messages.capture(call_id, fn())
            except StateEncodingError:
                raise
            except Exception as exc:
                return messages.failure(call_id, exc, kind=Kind.CAPTURE_FAILED)

        self.outbox.send_thunk_to_self(produce)
        return _Wait(call_id, f"capture({getattr(fn, '__name__', 'fn')})")

    def publish(self, topic: str, payload: Any, qos: int, retain: bool) -> None:
        if self._dispatching != _get_ident():
            raise NotAnImpulseError(
                "publish() is an output of deterministic code (handlers, on_first_start); "
                "code that is not replayed (becoming_primary, spawned tasks, threads) sends "
                "an impulse whose handler publishes"
            )
        self.outbox.send(MQTT_OUT, encode_publish(topic, payload, qos, retain), impulse=False)

    def spawn(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> None:
        if self._dispatching == _get_ident() or self._spawner is None:
            raise NondeterminismError(
                "spawn() starts non-deterministic work, so it is only allowed in "
                "becoming_primary and the tasks it spawned, not in handlers"
            )
        self._spawner(fn, *args)

    # --- dispatch of logged messages --------------------------------------------------------

    def dispatch(self, source: str, message: bytes) -> None:
        """Run one logged message: a call starts a handler, a reply resumes one."""
        self.dispatch_all(source, ((message[0], message[1:]),) if message else ((0, b""),))

    def dispatch_batch(self, source: str, batch: bytes, count: int) -> None:
        """Run the ``count`` framed messages of ``batch`` (one page entry), in order.

        Producers send long runs of forks, and replay runs through here too, so three ways
        are tried in turn: forks that differ only in their one bytes argument have it cut out
        by position, with no decoder at all (messages.fork_run); other plain forks are decoded
        a window at a time (messages.decode_plain_forks); from the first window that is not
        all plain forks on, messages go one by one. A window keeps few decoded messages alive
        at once, which keeps the garbage collector's young generation small.
        """
        offset = 0
        load, roles, obj = self._load, self._roles, self.obj
        while count >= _MANY:
            run = messages.fork_run(batch, offset, count, load, least=_RUN)
            if run is not None and run.method in roles:
                self._dispatch_run(source, batch, run)
                offset += run.forks * run.stride
                count -= run.forks
                continue
            decoded = messages.decode_plain_forks(batch, offset, min(count, _WINDOW), load)
            if decoded is None:
                break
            forks, offset = decoded
            count -= len(forks)
            self._dispatching = _get_ident()
            try:
                for method, args in forks:
                    if method not in roles:
                        self._invoke(source, None, method, args, {}, False)  # says what's wrong
                        continue
                    try:
                        result = getattr(obj, method)(*args)
                    except Exception as exc:
                        self._finish(_Context(source, None, self._handler(method)), error=exc)
                        continue
                    if type(result) is CoroutineType:
                        try:
                            yielded = result.send(None)
                        except StopIteration:
                            continue  # the common case: it ran to the end without suspending
                        except Exception as exc:
                            self._finish(_Context(source, None, self._handler(method)), error=exc)
                            continue
                        self._suspended(
                            result, _Context(source, None, self._handler(method)), yielded
                        )
            finally:
                self._dispatching = 0
        if count or offset != len(batch):
            rest = batch[offset:] if offset else batch
            self.dispatch_all(source, wire.message_parts(rest, count))

    def _dispatch_run(self, source: str, batch: bytes, run: messages.ForkRun) -> None:
        """Run forks whose one argument is cut straight out of the batch (messages.fork_run).

        The loop repeats dispatch_batch's on purpose: feeding it (method, args) pairs instead
        makes replay of such runs 1.7 times slower (~160 ns a message against ~270). An
        ``async def`` handler is stepped right here: one that returns without suspending, as
        most do, costs a ``send`` more than a plain one, and no context (``_Context``) at all.
        """
        obj, method, size = self.obj, run.method, run.size
        self._dispatching = _get_ident()
        try:
            for at in range(run.first, run.first + run.forks * run.stride, run.stride):
                try:
                    result = getattr(obj, method)(batch[at : at + size])
                except Exception as exc:
                    self._finish(_Context(source, None, self._handler(method)), error=exc)
                    continue
                if type(result) is CoroutineType:
                    try:
                        yielded = result.send(None)
                    except StopIteration:
                        continue
                    except Exception as exc:
                        self._finish(_Context(source, None, self._handler(method)), error=exc)
                        continue
                    self._suspended(result, _Context(source, None, self._handler(method)), yielded)
        finally:
            self._dispatching = 0

    def dispatch_all(self, source: str, messages_: Iterable[tuple[int, bytes]]) -> None:
        """Run logged messages from one source, in order, one by one, each given as its first
        byte and the rest (wire.message_parts)."""
        self._dispatching = _get_ident()
        try:
            for head, body in messages_:
                try:
                    self._dispatch(source, head, body)
                except CodecError as exc:
                    # Deterministic: replay drops it the same way. Not raised: one bad message
                    # (a peer on another version, an unregistered class) must not stop us.
                    if not self.replaying:
                        log.error(
                            "%s: dropped a message from %s that cannot be decoded or is "
                            "malformed: %s",
                            self.name,
                            source,
                            exc,
                        )
        finally:
            self._dispatching = 0

    def _dispatch(self, source: str, head: int, body: bytes) -> None:
        kind, impulse, fields = messages.decode_parts(head, body, self._decoder)
        if kind is Kind.CALL:
            method, args, kwargs = fields
            self._invoke(source, None, method, args, kwargs, impulse)
        elif kind is Kind.REQUEST:
            call_id, method, args, kwargs = fields
            self._invoke(source, call_id, method, args, kwargs, False)
        elif kind in (Kind.REPLY, Kind.CAPTURE):
            self._resume(fields[0], value=fields[1])
        elif kind in (Kind.FAILURE, Kind.CAPTURE_FAILED):
            call_id, type_name, text = fields
            waiting = self._pending.get(call_id)
            what = waiting[1].handler if waiting else ""
            self._resume(call_id, error=RemoteError(type_name, text, immortal=source, method=what))
        elif kind is Kind.START:
            self._start(_Context(source, None, "on_first_start"), self.obj.on_first_start())

    def _invoke(
        self,
        source: str,
        call_id: int | None,
        method: str,
        args: list[Any],
        kwargs: dict[str, Any],
        impulse: bool,
    ) -> None:
        role = self._roles.get(method)
        if impulse and kwargs and ONCE in kwargs and role == "impulse":
            kwargs = dict(kwargs)
            if not first_time(self.obj, kwargs.pop(ONCE)):
                return  # the sender sent it again after it was logged: drop it (once.py)
        if role is not None and (role == "impulse" or not impulse):
            # the common case, kept lean: a fork to a plain handler needs no context at all
            try:
                result = getattr(self.obj, method)(*args, **kwargs)
            except Exception as exc:
                self._finish(_Context(source, call_id, self._handler(method)), error=exc)
                return
            if type(result) is CoroutineType:  # exact type: an ABC isinstance is slow here
                try:
                    yielded = result.send(None)
                except StopIteration as stop:
                    # it ran to the end without suspending: a context only for a reply
                    if call_id is not None:
                        ctx = _Context(source, call_id, self._handler(method))
                        self._finish(ctx, result=stop.value)
                    return
                except Exception as exc:
                    self._finish(_Context(source, call_id, self._handler(method)), error=exc)
                    return
                self._suspended(result, _Context(source, call_id, self._handler(method)), yielded)
            elif call_id is not None:
                self._finish(_Context(source, call_id, self._handler(method)), result=result)
            return
        handler = self._handler(method)
        ctx = _Context(source, call_id, handler)
        if role is None:
            self._finish(
                ctx,
                error=UnknownMethodError(
                    f"{self.name} ({self.cls.__name__}) has no @rpc or @impulse method {method!r}"
                ),
            )
            return
        self._finish(
            ctx,
            error=NotAnImpulseError(f"{handler} received an impulse but is not marked @impulse"),
        )

    def _handler(self, method: str) -> str:
        return f"{self.cls.__name__}.{method}"

    def _start(self, ctx: _Context, coro: Coroutine[Any, Any, Any]) -> None:
        self._step(coro, ctx, None, None)

    def _resume(
        self, call_id: int, *, value: Any = None, error: BaseException | None = None
    ) -> None:
        waiting = self._pending.pop(call_id, None)
        if waiting is None:
            return  # a reply to a call nobody awaits (the caller dropped the awaitable)
        coro, ctx = waiting
        self._step(coro, ctx, value, error)

    def _step(
        self, coro: Coroutine[Any, Any, Any], ctx: _Context, value: Any, error: BaseException | None
    ) -> None:
        try:
            yielded = coro.throw(error) if error is not None else coro.send(value)
        except StopIteration as stop:
            self._finish(ctx, result=stop.value)
            return
        except Exception as exc:
            self._finish(ctx, error=exc)
            return
        self._suspended(coro, ctx, yielded)

    def _suspended(self, coro: Coroutine[Any, Any, Any], ctx: _Context, yielded: Any) -> None:
        """A handler's coroutine stopped at an ``await``: park it until the reply to the call
        it awaits is dispatched, or refuse what it awaits (anything that is not logged)."""
        while not isinstance(yielded, _Wait):
            error = NondeterminismError(
                f"handler {ctx.handler} awaited {yielded!r}, which the runtime does not log; "
                "a handler may only await calls to immortals and self.capture(...). Move "
                "sleeps and I/O into a task started with self.spawn() in becoming_primary "
                "and feed its results back through an @impulse"
            )
            try:
                yielded = coro.throw(error)
            except StopIteration as stop:
                self._finish(ctx, result=stop.value)
                return
            except Exception as exc:
                self._finish(ctx, error=exc)
                return
        self._pending[yielded.call_id] = (coro, ctx)

    def _finish(
        self, ctx: _Context, *, result: Any = None, error: BaseException | None = None
    ) -> None:
        if ctx.call_id is None:
            if error is not None and not self.replaying:
                log.error(
                    "%s: %s raised %s: %s (the call is done and will not be retried)",
                    self.name,
                    ctx.handler,
                    type(error).__name__,
                    error,
                    exc_info=not isinstance(error, NondeterminismError | UnknownMethodError),
                )
            return
        if error is None:
            try:
                message = messages.reply(
                    ctx.call_id, result, where=f"return value of {ctx.handler}"
                )
                self.outbox.send(ctx.source, message, impulse=False)
                return
            except CodecError as exc:  # unencodable, or too large to send
                error = exc
        self.outbox.send(ctx.source, messages.failure(ctx.call_id, error), impulse=False)


#: From how many messages on a batch is worth decoding in one go.
_MANY = 4
#: How many messages are decoded together at most.
_WINDOW = 128
#: How many forks of the same shape in a row are worth cutting out by position.
_RUN = 16
#: How many fork callables are kept for proxies made afresh (targets named from data could
#: otherwise grow the cache without end).
_FORKERS = 256


if TYPE_CHECKING:

    def _hosts(executor: Executor) -> Host:
        """The type checker's proof that the executor is what immortals and proxies need."""
        return executor
