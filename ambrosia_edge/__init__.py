"""ambrosia-edge: exactly-once, failure-oblivious RPC between deterministic Python objects.

Write an :class:`Immortal`, mark its methods with :func:`rpc` or :func:`impulse`, and run it with
``ambrosia-edge run``. Every input is logged (fsync) before it runs, so a process killed at any
instruction resumes by replay as if it had never failed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .errors import (
    AmbrosiaError,
    NondeterminismError,
    NotAnImpulseError,
    RemoteError,
    StateEncodingError,
    UnknownMethodError,
)
from .immortal import Immortal, impulse, rpc
from .proxy import Proxy

if TYPE_CHECKING:
    from .recovery import Replayer
    from .store import LogStore

__version__ = "0.1.0"

__all__ = [
    "AmbrosiaError",
    "Immortal",
    "NondeterminismError",
    "NotAnImpulseError",
    "Proxy",
    "RemoteError",
    "StateEncodingError",
    "UnknownMethodError",
    "__version__",
    "impulse",
    "replay",
    "rpc",
]


def replay(
    log: str | LogStore,
    target: str | type[Immortal] | None = None,
    *,
    checkpoint: int | None = -1,
    until: int | None = None,
    until_message: int | None = None,
) -> Replayer:
    """Time travel: the immortal of ``log`` rebuilt read-only up to page ``until`` or message
    ``until_message`` (default: the end), to look at (``.obj``, ``.state``) or step on
    (``.step_message()``); see :func:`ambrosia_edge.timetravel.replay`. Imported on first
    use, so ``import ambrosia_edge`` stays light."""
    from .timetravel import replay as _replay

    return _replay(log, target, checkpoint=checkpoint, until=until, until_message=until_message)
