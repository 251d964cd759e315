"""A running immortal seen from outside: its role, log position, peers, rates and state.

The web page (transports/web.py) shows these pictures; they are plain JSON-able dicts, built
on the event loop from what the coordinator and executor keep anyway, so looking costs the
immortal nothing while nobody looks. Nothing here changes the immortal: its state is copied
into a tree of JSON values (with ``repr`` for what JSON cannot hold), bounded in size.
"""

from __future__ import annotations

import dataclasses
import datetime
import itertools
import logging
import time
import uuid
from collections import deque
from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any, Protocol

from .immortal import Immortal, state_of
from .proxy import Proxy

__all__ = ["Observed", "Recent", "Watch", "state_tree"]

#: Items shown of one list, dict or set in the state tree; the rest is counted.
MAX_ITEMS = 200
#: Depth of the state tree; deeper values are shown by their repr.
MAX_DEPTH = 12
#: Characters shown of one string or repr.
MAX_TEXT = 2000
#: Rates are averaged over this many seconds.
RATE_WINDOW = 2.0


class Observed(Protocol):
    """What a picture needs of the process hosting the immortal (a Runtime)."""

    @property
    def name(self) -> str: ...

    @property
    def immortal(self) -> Immortal: ...

    @property
    def coordinator(self) -> Any: ...

    def status(self) -> dict[str, Any]: ...


class Watch:
    """Pictures of one immortal, and the rates between two of them."""

    def __init__(self, observed: Observed, *, clock: Any = time.monotonic) -> None:
        self.observed = observed
        self._clock = clock
        #: (time, calls, impulses) samples, oldest first, over RATE_WINDOW
        self._samples: deque[tuple[float, int, int]] = deque()
        #: checkpoint chunks stored, refreshed when the coordinator's chunk changes
        self.checkpoints: list[int] = []

    def counts(self) -> tuple[int, int]:
        """Calls and impulses executed so far, over every source (the executed watermarks:
        the total counts every message, the replayable one all but impulses)."""
        calls = impulses = 0
        for total, replayable in self.observed.coordinator.dispatched.values():
            calls += replayable
            impulses += total - replayable
        return calls, impulses

    def overview(self) -> dict[str, Any]:
        """Everything but the state: cheap enough to build a few times a second."""
        observed = self.observed
        coordinator = observed.coordinator
        status = observed.status()
        calls, impulses = self.counts()
        now = self._clock()
        samples = self._samples
        samples.append((now, calls, impulses))
        while len(samples) > 2 and now - samples[1][0] >= RATE_WINDOW:
            samples.popleft()
        then, calls0, impulses0 = samples[0]
        elapsed = now - then
        rates = {
            "calls": (calls - calls0) / elapsed if elapsed > 0 else 0.0,
            "impulses": (impulses - impulses0) / elapsed if elapsed > 0 else 0.0,
        }
        return {
            "name": status.get("name", observed.name),
            # the runtime says which role it plays, when it knows more than "live or not"
            "role": status.get("role") or ("primary" if coordinator.live else "recovering"),
            "epoch": status.get("epoch"),
            "pid": status.get("pid"),
            "log": status.get("log"),
            "listen": status.get("listen"),
            "pages": coordinator.next_page - 1,
            "chunk": coordinator.chunk,
            "log_bytes": getattr(coordinator, "log_bytes", None),
            "checkpoints": list(self.checkpoints),
            "calls": calls,
            "impulses": impulses,
            "rates": rates,
            "peers": self.peers(),
            "class": f"{type(observed.immortal).__module__}.{type(observed.immortal).__qualname__}",
        }

    def peers(self) -> list[dict[str, Any]]:
        """Each peer: whether a link is up each way, and the watermarks of both directions."""
        observed = self.observed
        coordinator = observed.coordinator
        me = observed.name
        configured: Mapping[str, Any] = observed.status().get("peers") or {}
        links_out: Mapping[str, Any] = getattr(coordinator, "links_out", {})
        links_in: Iterable[str] = getattr(coordinator, "links_in", list)()
        names = set(configured) | set(coordinator.outputs) | set(coordinator.durable)
        names.discard(me)
        rows = []
        for peer in sorted(names):
            out = coordinator.outputs.get(peer)
            received = coordinator.durable.get(peer, (0, 0))
            sent = out.next_total - 1 if out is not None else 0
            acked = out.acked_total if out is not None else 0
            rows.append(
                {
                    "name": peer,
                    "address": str(links_out.get(peer) or configured.get(peer) or ""),
                    "out": peer in links_out,
                    "in": peer in set(links_in),
                    "sent": sent,
                    "acknowledged": acked,
                    "waiting": max(sent - acked, 0),
                    "received": received[0],
                    "received_replayable": received[1],
                }
            )
        return rows

    def state(self) -> Any:
        """The immortal's state as a tree of JSON values."""
        return state_tree(state_of(self.observed.immortal))


def state_tree(value: Any, depth: int = 0) -> Any:
    """``value`` as JSON: containers bounded by MAX_ITEMS, the rest as text.

    A container cut short ends with the string ``"… N more"``, so the page can say so.
    """
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        return value if value == value and abs(value) != float("inf") else repr(value)
    if isinstance(value, str):
        return value if len(value) <= MAX_TEXT else value[:MAX_TEXT] + "…"
    if depth >= MAX_DEPTH:
        return _text(value)
    if isinstance(value, Mapping):
        out = {}
        for i, (key, item) in enumerate(value.items()):
            if i == MAX_ITEMS:
                out["…"] = f"{len(value) - MAX_ITEMS} more"
                break
            out[key if isinstance(key, str) else _text(key)] = state_tree(item, depth + 1)
        return out
    if isinstance(value, list | tuple | set | frozenset | deque):
        items = sorted(value, key=repr) if isinstance(value, set | frozenset) else value
        shown = [state_tree(item, depth + 1) for item in itertools.islice(items, MAX_ITEMS)]
        if len(value) > MAX_ITEMS:
            shown.append(f"… {len(value) - MAX_ITEMS} more")
        return shown
    if isinstance(value, bytes | bytearray):
        return _text(bytes(value[:MAX_TEXT]))
    if isinstance(value, datetime.datetime | datetime.date | datetime.time):
        return value.isoformat()
    if isinstance(value, Decimal | uuid.UUID):
        return str(value)
    if isinstance(value, Proxy):
        return f"proxy to {getattr(value, '__ambrosia_proxy_name__', '?')}"
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
        return {"": type(value).__name__, **state_tree(fields, depth)}
    return _text(value)


def _text(value: object) -> str:
    text = repr(value)
    return text if len(text) <= MAX_TEXT else text[:MAX_TEXT] + "…"


class Recent(logging.Handler):
    """The last warnings and errors of the ``ambrosia_edge`` logger, for the page to show
    (a rejected MQTT message, a handler that failed, a refused form)."""

    def __init__(self, size: int = 50) -> None:
        super().__init__(logging.WARNING)
        self.records: deque[dict[str, Any]] = deque(maxlen=size)
        #: how many were ever recorded, so a reader sees when new ones arrived
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
        except Exception:
            message = str(record.msg)
        self.count += 1  # (under the handler's lock: records may come from other threads)
        self.records.append(
            {"time": record.created, "level": record.levelname.lower(), "message": message}
        )

    def items(self) -> list[dict[str, Any]]:
        """The records kept, oldest first."""
        self.acquire()
        try:
            return list(self.records)
        finally:
            self.release()
