"""In-process immortals that tests can crash (cancel without any clean-up) and restart."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ambrosia_edge.config import PeerAddress, Settings
from ambrosia_edge.testing import Hosted as Instance
from ambrosia_edge.testing import eventually

__all__ = ["Instance", "eventually", "settings"]


def settings(name: str, log: Path, port: int, peers: dict[str, int], **extra: Any) -> Settings:
    return Settings(
        target="tests:inprocess",
        name=name,
        log=str(log),
        listen=PeerAddress("127.0.0.1", port),
        peers={peer: PeerAddress("127.0.0.1", p) for peer, p in peers.items()},
        **extra,
    )
