"""The coordinator's own options: what it needs from the settings, and nothing else."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .config import PeerAddress

if TYPE_CHECKING:
    from .config import Settings


@dataclass(frozen=True, slots=True)
class CoordinatorOptions:
    """Sizes, retention, the deployment secret and the address to listen on.

    The defaults are those of :class:`~ambrosia_edge.config.Settings`; the peers' addresses
    are not here: the coordinator asks its :class:`~ambrosia_edge.discovery.Discovery`.
    """

    #: a page is sealed once this much input waits (and is then written as one record)
    page_bytes: int = 4 * 1024 * 1024
    #: log this much since the last checkpoint, then take the next one
    checkpoint_bytes: int = 64 * 1024 * 1024
    #: dispatch waits while an output buffer holds more than this (a slow or absent peer)
    buffer_bytes: int = 64 * 1024 * 1024
    #: checkpoints kept (with the chunks they need); older ones are deleted
    keep_checkpoints: int = 2
    #: the deployment secret that links authenticate with; None: no authentication (out of
    #: repr: options get logged and printed, the secret must not be)
    secret: str | None = field(default=None, repr=False)
    #: where to accept links; None: accept none (send only)
    listen: PeerAddress | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> CoordinatorOptions:
        return cls(
            page_bytes=settings.page_bytes,
            checkpoint_bytes=settings.checkpoint_bytes,
            buffer_bytes=settings.buffer_bytes,
            keep_checkpoints=settings.keep_checkpoints,
            secret=settings.secret,
            listen=settings.listen,
        )
