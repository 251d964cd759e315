"""--no-fsync reaches the store: the price of durability is a deliberate, visible choice."""

from __future__ import annotations

from pathlib import Path

from apps.counting import Counter

from ambrosia_edge.config import Settings
from ambrosia_edge.runtime import Runtime
from ambrosia_edge.store import open_store


def test_the_fsync_setting_reaches_the_local_store(tmp_path: Path) -> None:
    for fsync in (True, False):
        settings = Settings(
            target="m:C", name="server", log=str(tmp_path / str(fsync)), fsync=fsync
        )
        runtime = Runtime(Counter, settings)
        assert runtime.store.fsync is fsync  # type: ignore[attr-defined]


def test_every_registered_tier_takes_the_fsync_keyword() -> None:
    assert open_store("memory://x", fsync=False) is not None
