"""Incarnations: which life of a log a peer talks to (docs/protocol.md 4.6, 5.3, 6.1).

A log wiped and started again under the same name is a new immortal with an old name: its
sequence numbers start again from 1, so a peer that took it for the old one would rebase on
them (4.10) and silently drop what the new one sends, or resend what the old one had logged.
So each log gets an id when it is created, random, kept in every chunk header and checkpoint
and sent in the handshake (the receiver's in CHALLENGE, the sender's in HELLO). A peer keeps
the id of each immortal it has talked to (in memory, and in its checkpoints) and stops the
link, at both ends, when the id changes: :func:`changed` says what happened and what to do.

A peer that sends no id (a release before incarnations) is not checked. A log written before
incarnations has none recorded: :func:`legacy` derives one from its checkpoint, the same at
every recovery until the first checkpoint records it.
"""

from __future__ import annotations

import hashlib
import os

from .checkpoint import Checkpoint
from .errors import IncarnationError

#: random bytes in an id (shown as hex)
ID_BYTES = 8


def new() -> str:
    """The id of a log being created."""
    return os.urandom(ID_BYTES).hex()


def legacy(name: str, checkpoint: Checkpoint | None) -> str:
    """The id of a log that predates incarnations: derived from what stays the same until the
    next checkpoint (which then records it), so every recovery before it says the same."""
    seed = f"ambrosia-edge/legacy\0{name}"
    if checkpoint is not None:
        seed += f"\0{checkpoint.chunk}\0{checkpoint.next_page}\0{checkpoint.epoch}"
    return hashlib.sha256(seed.encode()).hexdigest()[: 2 * ID_BYTES]


def changed(us: str, peer: str, known: str, seen: str) -> IncarnationError:
    """The error of a link stopped because ``peer``'s log is not the one ``us`` talked to."""
    return IncarnationError(
        f"{peer} is a new incarnation: {us} talked to incarnation {known} of {peer}, and "
        f"{peer} now runs incarnation {seen}. Its log was replaced (wiped and started again, or "
        f"a copy of another log), so the two no longer agree on what was sent and received: "
        f"{us} stops this link rather than lose or repeat messages. To resolve it, restore "
        f"{peer}'s log if it was lost by mistake, then restart {peer}; if {peer} was started "
        f"afresh on purpose, start {us} afresh too (on a new log), since its calls to the old "
        f"{peer} cannot be completed exactly once"
    )
