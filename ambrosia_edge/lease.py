"""The writer lease: who may write a log, and in which epoch of holding it.

A log has one writer at a time; two would interleave pages and break exactly-once. How a tier
enforces that depends on the storage: the local disk takes an ``flock`` that the kernel drops
when the process dies (:mod:`ambrosia_edge.storage.locking`), while a shared file system or an
object store needs a lease with an expiry and a *fencing* epoch that grows with every holder,
so that a writer which lost its lease (paused, partitioned) has its late writes refused.

A tier that has a lease exposes it as ``store.lease``; :meth:`LogStore.open` acquires it and
:meth:`LogStore.close` releases it, so callers of the store need not know it exists. Tools that
only look (``inspect``, ``checkpoint``, ``status``) read :meth:`Lease.info` without acquiring
anything. A lease may also offer ``announce(address)``, which records the holder's listen
address so that ``status`` (and peers looking for the primary) can name it; it is optional, so
callers look it up with ``getattr``. So are ``record_standby(address)``, ``drop_standby()`` and
``standbys()``, with which a standby records itself beside the lease (:mod:`.standby`): the
primary then leaves checkpoints to it, and ``status`` lists it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

__all__ = ["Lease", "LeaseHolder", "LeaseInfo", "LeaseState", "lease_of"]

#: ``none``: never taken; ``free``: released cleanly; ``held``: a holder is recorded (it may
#: have died without releasing: see :class:`LeaseHolder`); ``unknown``: the record is unreadable.
LeaseState = Literal["none", "free", "held", "unknown"]


@dataclass(frozen=True, slots=True)
class LeaseHolder:
    """The writer a lease records. A tier fills what it knows; a pid means something only on
    ``host``, and a holder that crashed stays recorded until the next one takes over."""

    pid: int | None
    host: str | None
    since: str | None
    #: the fencing epoch of this holding, for tiers that fence; None for one that excludes
    epoch: int | None = None
    #: the holder's listen address (``host:port``), for tiers that record it
    address: str | None = None
    #: when the holder last renewed the lease (seconds since the Unix epoch), if it renews
    renewed: float | None = None


@dataclass(frozen=True, slots=True)
class LeaseInfo:
    """What a lease says about its holder, as read by someone who does not hold it."""

    state: LeaseState
    #: why, in the tier's words ("the last writer stopped cleanly")
    detail: str = ""
    holder: LeaseHolder | None = None


@runtime_checkable
class Lease(Protocol):
    """The exclusive right to write one log."""

    #: a stable name of what the lease guards, the same however the log's URL was spelled
    #: (the local tier: the directory's ``file://`` URI); used as the log's identity
    resource: str

    def acquire(self) -> None:
        """Take the lease, or raise LogLockedError naming the holder. A no-op if held."""

    def release(self) -> None:
        """Give the lease up so the next writer may take it at once. Idempotent."""

    @property
    def held(self) -> bool:
        """Whether this object holds the lease now."""

    @property
    def epoch(self) -> int | None:
        """The fencing epoch of the current holding; None if this lease does not fence
        (``flock``: the kernel drops a dead holder's lock, so no stale writer can write)."""

    def info(self) -> LeaseInfo:
        """The recorded holder, readable without holding the lease (and while another does)."""


def lease_of(store: object) -> Lease | None:
    """The lease of a store, for tiers that have one; ``None`` for tiers without."""
    lease = getattr(store, "lease", None)
    return lease if isinstance(lease, Lease) else None


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` of this host still exists: a lease recorded by a process that is
    gone can be taken over (or reported stale) at once, without waiting for it to lapse."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, under another user
    return True
