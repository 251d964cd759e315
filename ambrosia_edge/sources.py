"""The impulse-source contract, and the registry that finds a source by name.

An impulse source is a piece of the outside world that feeds an immortal (paper §4): lines
from a terminal, messages from a broker, requests to a web endpoint. Whatever it produces is
not replayable, so it reaches the immortal only as impulses, and only on the primary:

- the runtime starts each source once recovery is over and the immortal is live, and never
  during replay (``run`` is called with a feed, and reports it is ready through
  ``task_status``);
- the source sends impulses through its :class:`ImpulseFeed`, to ``@impulse`` methods of the
  immortal; each send returns a :class:`Receipt`;
- the receipt is done once the impulse is in the log: from then on it is an input like any
  other and survives a crash; until then a crash loses it, by design. A source that must not
  lose what it took (an MQTT message, a web request) acknowledges it to its own peer only then;
- the source is stopped by cancelling its ``run``, when the immortal shuts down or stops being
  the primary.

Sources are picked by name, like storage tiers by URL scheme (store.py): ``terminal:accept_input``
names the ``terminal`` source and tells it which method to feed. Third parties add sources
through the ``ambrosia_edge.sources`` entry-point group, whose entries name a class with a
``from_url`` class method (or any callable taking the URL).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any, Protocol, runtime_checkable
from urllib.parse import urlsplit

import anyio
from anyio.abc import TaskStatus

from .errors import ConfigError
from .registry import load

log = logging.getLogger("ambrosia_edge")


class Receipt:
    """One impulse sent through a feed: done once the impulse is durable in the log.

    Cheap to make (a source may send thousands a second): the event behind ``wait`` is only
    made for a receipt somebody waits on.
    """

    __slots__ = ("_callbacks", "_event", "durable", "number")

    def __init__(self, number: int) -> None:
        #: the impulse's number on the immortal's link to itself
        self.number = number
        #: the impulse is in the log (a crash no longer loses it)
        self.durable = False
        self._event: anyio.Event | None = None
        self._callbacks: list[Callable[[Receipt], object]] | None = None

    async def wait(self) -> None:
        """Return once the impulse is durable."""
        if self.durable:
            return
        if self._event is None:
            self._event = anyio.Event()
        await self._event.wait()

    def add_done_callback(self, callback: Callable[[Receipt], object]) -> None:
        """Call ``callback(receipt)`` once the impulse is durable (at once if it is already).

        It runs on the event loop as the log records the page, so it should be quick: set a
        flag, send an acknowledgement without waiting for it.
        """
        if self.durable:
            callback(self)
        elif self._callbacks is None:
            self._callbacks = [callback]
        else:
            self._callbacks.append(callback)

    def _resolve(self) -> None:
        self.durable = True
        if self._event is not None:
            self._event.set()
        for callback in self._callbacks or ():
            try:
                callback(self)
            except Exception:
                # the log goes on whatever a source's callback does
                log.exception("a callback of impulse %d failed", self.number)
        self._callbacks = None

    def __repr__(self) -> str:
        return f"<impulse {self.number} {'durable' if self.durable else 'not yet durable'}>"


class ImpulseFeed(Protocol):
    """What the runtime gives a source: the way into the immortal.

    Call it from the event loop the source runs in; a source that reads in a thread of its
    own hands each impulse over with ``anyio.from_thread.run_sync(feed.send, ...)``.
    """

    @property
    def immortal(self) -> str:
        """The name of the immortal fed."""

    def send(self, method: str, /, *args: Any, **kwargs: Any) -> Receipt:
        """Send the impulse ``method(*args, **kwargs)`` to the immortal.

        Raises NotAnImpulseError if ``method`` is not an ``@impulse`` of the immortal,
        UnknownMethodError if it has no such method, CodecError if the arguments cannot be
        encoded.
        """


@runtime_checkable
class ImpulseSource(Protocol):
    """Something of the outside world that feeds an immortal's ``@impulse`` methods."""

    async def run(
        self, feed: ImpulseFeed, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Feed the immortal until cancelled (or until the source has nothing more to give).

        Call ``task_status.started()`` once ready: the runtime waits for it before it counts
        the immortal as started. Cancellation means shutdown or deposition: stop taking input,
        and leave nothing running (a thread blocked on a read must not call the feed again).
        """


#: Source name -> "module:Class". Third parties add sources through the
#: ``ambrosia_edge.sources`` entry-point group.
REGISTRY: dict[str, str] = {
    "terminal": "ambrosia_edge.transports.terminal:TerminalSource",
    "cpu_temperature": "ambrosia_edge.devices.sensors:CpuTemperature",
    "load": "ambrosia_edge.devices.sensors:LoadSource",
    "memory": "ambrosia_edge.devices.sensors:MemorySource",
    "file": "ambrosia_edge.devices.sensors:FileSource",
    "command": "ambrosia_edge.devices.sensors:CommandSource",
    "gpio": "ambrosia_edge.devices.sensors:GpioSource",
    "mqtt": "ambrosia_edge.transports.mqtt:MqttSource",
    "mqtts": "ambrosia_edge.transports.mqtt:MqttSource",
    "ui": "ambrosia_edge.transports.web:WebSource",
}

#: Optional extras needed by a source, for the install hint when an import fails.
EXTRAS: dict[str, str] = {"gpio": "gpio", "mqtt": "mqtt", "mqtts": "mqtt", "ui": "ui"}

ENTRY_POINTS = "ambrosia_edge.sources"


def source_factory(name: str) -> Any:
    """The class (or callable) registered for source ``name``, imported now.

    A missing optional dependency becomes a ConfigError with the extra to install.
    """
    return _factory(name, "the settings")


def open_source(url: str) -> ImpulseSource:
    """Build the source that ``url`` names by its scheme (``terminal:accept_input``).

    A bare name (``terminal``) is a URL with nothing but the scheme.
    """
    name = urlsplit(url).scheme if ":" in url else url
    factory = _factory(name, repr(url))
    source = getattr(factory, "from_url", factory)(url)
    if not isinstance(source, ImpulseSource):
        raise ConfigError(f"impulse source {name!r} made {source!r}, which has no run()")
    return source


def open_declared(table: Mapping[str, Any]) -> ImpulseSource:
    """Build the source that a ``[[sources]]`` table of the config file declares.

    ``kind`` names it as a URL's scheme would; the class takes the table in ``from_config``.
    """
    name = str(table.get("kind"))
    factory = _factory(name, "[[sources]]")
    from_config = getattr(factory, "from_config", None)
    if from_config is None:
        raise ConfigError(
            f"impulse source {name!r} cannot be declared in [[sources]] (it has no "
            "from_config); give it to Runtime(sources=...) or impulse_sources() in code"
        )
    source = from_config(table)
    if not isinstance(source, ImpulseSource):
        raise ConfigError(f"impulse source {name!r} made {source!r}, which has no run()")
    return source


def _factory(name: str, where: str) -> Any:
    """The class (or factory) registered as source ``name``."""
    return load(
        name,
        builtin=REGISTRY,
        group=ENTRY_POINTS,
        extras=EXTRAS,
        what=f"impulse source {name!r}",
        unknown=lambda known: (
            f"no impulse source named {name!r} in {where} (known: {known}; others are "
            f"installed as packages that register in the {ENTRY_POINTS!r} entry-point group)"
        ),
    )
