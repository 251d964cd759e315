"""ambrosia-edge: exactly-once, failure-oblivious RPC between deterministic Python objects.

Write an :class:`Immortal`, mark its methods with :func:`rpc` or :func:`impulse`, and run it with
``ambrosia-edge run``. Every input is logged (fsync) before it runs, so a process killed at any
instruction resumes by replay as if it had never failed.
"""

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
    "rpc",
]
