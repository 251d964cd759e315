"""The programming model: ``Immortal``, ``@rpc``, ``@impulse`` (DESIGN §4, paper §3.1, §4.1).

An immortal's state is its attributes; its behaviour is its decorated methods. Everything the
runtime needs lives in one attribute, ``_ambrosia_host``, which is never part of the state. It
is a :class:`~ambrosia_edge.host.Host`, a protocol: this module knows nothing of the executor.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any, ClassVar, Literal, TypeVar

from .host import Host
from .proxy import Proxy

if TYPE_CHECKING:
    from .sources import ImpulseSource

F = TypeVar("F", bound=Callable[..., Any])

RPC_MARK = "__ambrosia_rpc__"
Role = Literal["rpc", "impulse"]


def rpc(func: F) -> F:
    """Mark a method as callable by other immortals (fork or awaited); replayed on recovery."""
    setattr(func, RPC_MARK, "rpc")
    return func


def impulse(func: F) -> F:
    """Mark a method as an impulse: callable from the non-replayable world (paper §4).

    An impulse is logged when it arrives and then behaves like any call; one that is never
    logged (the sender crashed first) is lost, by design.
    """
    setattr(func, RPC_MARK, "impulse")
    return func


class Immortal:
    """Base class of deterministic, failure-oblivious objects.

    Subclasses keep their state in plain attributes (checkpointed as CBOR) and must behave
    deterministically in their handlers: the same logged inputs must produce the same state and
    the same outgoing calls. Non-determinism belongs in ``becoming_primary`` and the tasks it
    spawns, which talk to the immortal through impulses.
    """

    #: Bump when the shape of the state or the behaviour of a logged call changes; see
    #: ``upgrade`` and docs/upgrades.md.
    version: ClassVar[int] = 1

    #: The class of the previous ``version``, kept importable beside the new one: recovery
    #: then replays what was logged under the old version with the code that ran it, and
    #: converts the state with ``upgrade`` only when this instance becomes the primary (paper
    #: §5.4). Without it the state is converted at the checkpoint and the new code replays
    #: the old messages, which is right only if it handles them exactly as the old code did.
    previous: ClassVar[type[Immortal] | None] = None

    _ambrosia_host: Host

    async def on_first_start(self) -> None:
        """Runs once, at the logical start of the immortal's life (replayed on recovery)."""

    async def becoming_primary(self) -> None:
        """Runs when recovery is over and this instance goes live; never replayed."""

    def impulse_sources(self) -> Iterable[ImpulseSource | str]:
        """The outside world that feeds this immortal's ``@impulse`` methods (sources.py).

        Asked once when this instance goes live, never during replay; the runtime runs each
        source while the instance is the primary and stops it on shutdown. A string names a
        registered source, as in ``"terminal:accept_input"``.
        """
        return ()

    @classmethod
    def upgrade(cls, old_state: dict[str, Any], old_version: int) -> dict[str, Any]:
        """Convert the state of an older ``version`` of this class; identity by default."""
        return old_state

    @property
    def name(self) -> str:
        return self._ambrosia_host.name

    @property
    def this(self) -> Proxy:
        """Proxy to this immortal itself (the paper's ``thisProxy``)."""
        host = self._ambrosia_host
        return Proxy(host, host.name, type(self))

    def proxy(self, name: str, cls: type | None = None) -> Proxy:
        """Handle to the immortal called ``name``; give ``cls`` to check method names locally."""
        return Proxy(self._ambrosia_host, name, cls)

    def capture(self, fn: Callable[[], Any]) -> Awaitable[Any]:
        """Run ``fn`` live, exactly once, and log its value; replay returns the logged value.

        Use it for clocks, random numbers, reads of the environment: anything a handler needs
        that would differ on replay (paper §3.2).
        """
        return self._ambrosia_host.capture(fn)

    def spawn(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> None:
        """Start a non-deterministic task (primary only); it feeds the immortal via impulses."""
        self._ambrosia_host.spawn(fn, *args)


def state_of(obj: Immortal) -> dict[str, Any]:
    return {k: v for k, v in vars(obj).items() if not k.startswith("_ambrosia_")}


def handlers(cls: type) -> dict[str, Role]:
    found: dict[str, Role] = {}
    for name, member in inspect.getmembers(cls):
        role = getattr(member, RPC_MARK, None)
        if role is not None:
            found[name] = role
    return found
