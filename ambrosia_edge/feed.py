"""Running impulse sources on the primary: the feed they send through, and their lifetime.

The contract is in sources.py; this is the runtime's side of it. A feed turns ``send`` into an
impulse on the immortal's link to itself, which the coordinator logs like any other input.
The coordinator reports the durable watermark of that link each time a page holding messages
to itself is logged, and the feed marks every receipt up to it done: one comparison per page,
nothing per message on the coordinator's side.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any, Protocol

import anyio
from anyio.abc import TaskStatus

from . import messages
from .errors import NotAnImpulseError, UnknownMethodError
from .immortal import Immortal, Role, handlers
from .sources import ImpulseFeed, ImpulseSource, Receipt, open_source

log = logging.getLogger("ambrosia_edge")


class SelfLink(Protocol):
    """What a feed needs from the coordinator: its link to the immortal itself."""

    #: told the link's durable total whenever a page holding messages on it is logged
    on_self_durable: Callable[[int], None] | None

    def send_impulse_to_self(self, message: bytes) -> int:
        """Send an impulse on the link; its number there (a total, see outputs.py)."""


class Feed:
    """The :class:`~ambrosia_edge.sources.ImpulseFeed` of one live immortal."""

    def __init__(self, name: str, roles: dict[str, Role], link: SelfLink) -> None:
        self._name = name
        self._roles = roles
        self._link = link
        self._loop_thread = threading.get_ident()
        #: receipts not durable yet, by increasing number (the link is in order)
        self._waiting: deque[Receipt] = deque()

    @property
    def immortal(self) -> str:
        return self._name

    def send(self, method: str, /, *args: Any, **kwargs: Any) -> Receipt:
        role = self._roles.get(method)
        if role != "impulse":
            if role is None:
                raise UnknownMethodError(f"{self._name} has no @impulse method {method!r}")
            raise NotAnImpulseError(
                f"{self._name}.{method} is not an @impulse, so a source cannot feed it"
            )
        if threading.get_ident() != self._loop_thread:
            raise RuntimeError(
                "feed.send was called from another thread; hand it over to the event loop "
                "with anyio.from_thread.run_sync(feed.send, ...)"
            )
        message = messages.call(method, args, kwargs, impulse=True)
        receipt = Receipt(self._link.send_impulse_to_self(message))
        self._waiting.append(receipt)
        return receipt

    def durable(self, total: int) -> None:
        """The link's messages up to ``total`` are in the log (``on_self_durable``)."""
        waiting = self._waiting
        while waiting and waiting[0].number <= total:
            waiting.popleft()._resolve()


async def feed_sources(
    obj: Immortal,
    link: SelfLink,
    given: Iterable[ImpulseSource | str] = (),
    *,
    task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Run the given sources and the immortal's own (``impulse_sources``) while it is live.

    Started once the immortal is live; returns at once when there is no source. Cancelled on
    shutdown, which stops every source. A source that fails is reported and the immortal keeps
    running without it, as with the tasks of ``becoming_primary``.
    """
    sources = [open_source(s) if isinstance(s, str) else s for s in given]
    sources += [open_source(s) if isinstance(s, str) else s for s in obj.impulse_sources()]
    if not sources:
        task_status.started()
        return
    name = obj.name
    feed = Feed(name, handlers(type(obj)), link)
    link.on_self_durable = feed.durable
    try:
        async with anyio.create_task_group() as tg:
            for source in sources:
                await tg.start(_run_source, name, source, feed)
            task_status.started()
    finally:
        link.on_self_durable = None


async def _run_source(
    name: str,
    source: ImpulseSource,
    feed: ImpulseFeed,
    *,
    task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    started = _Started(task_status)
    try:
        await source.run(feed, task_status=started)
    except Exception:
        log.exception("%s: impulse source %r failed (the immortal keeps running)", name, source)
    if not started.done:
        started.started()  # the caller waits for it; a source that ended early is done


class _Started:
    """Passes ``started`` on, remembering it was called."""

    def __init__(self, inner: TaskStatus[None]) -> None:
        self.inner = inner
        self.done = False

    def started(self, value: None = None) -> None:
        self.done = True
        self.inner.started(value)
