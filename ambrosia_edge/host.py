"""``Host``: what an immortal and its proxies need from whatever runs them.

Immortals and proxies are the programming model; the executor is one way to run it. They meet
only through this protocol, so the model does not import the executor (which imports the model
to dispatch to it), and another host (a test double, a standby that replays without going
live) can stand in without subclassing anything.

The executor satisfies it structurally; proxies keep a reference to their host and call it
directly, so a call costs what it did before the protocol existed.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol


class Host(Protocol):
    """The runtime as seen from an immortal (``_ambrosia_host``) and from its proxies."""

    @property
    def name(self) -> str:
        """The hosted immortal's name."""

    def request(
        self,
        target: str,
        cls: type | None,
        method: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Awaitable[Any]:
        """An awaited call from a handler: ``await proxy.method(...)``."""

    def forker(self, target: str, cls: type | None, method: str) -> Callable[..., None]:
        """The callable behind ``proxy.fork.method``; made once per proxy and method."""

    def capture(self, fn: Callable[[], Any]) -> Awaitable[Any]:
        """Run ``fn`` live once and log its value (``Immortal.capture``)."""

    def publish(self, topic: str, payload: Any, qos: int, retain: bool) -> None:
        """Publish to MQTT once the input being handled is durable (``Immortal.publish``)."""

    def spawn(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> None:
        """Start a non-deterministic task on the primary (``Immortal.spawn``)."""
