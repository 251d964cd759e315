"""The kill soak's short run: the same code as ``python -m tools.soak``, a few dozen SIGKILLs.

The long run (``python -m tools.soak --kills 1000``, docs/soak.md) is a command, not a test;
this one keeps the soak itself working and catches what a few dozen kills already find.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from tools import soak


def test_a_few_dozen_kills_across_the_four_scenarios_leave_every_result_exact(
    tmp_path: Path,
) -> None:
    lines: list[str] = []
    tally = soak.soak(kills=30, seed=5, size=100, pause=0.1, directory=tmp_path, say=lines.append)
    assert tally.kills >= 30, tally.kinds
    # each scenario finished at least one round, and every round was checked exact
    assert set(tally.rounds) == set(soak.SCENARIOS), tally.rounds
    # killed from outside, at start-up, all at once, and by their own failpoints
    assert set(tally.kinds) == {"random moment", "start-up", "all at once", "failpoint"}, (
        tally.kinds
    )
    assert not [t for t in threading.enumerate() if t.name.startswith("soak-")]


def test_a_round_that_comes_out_wrong_fails_the_soak(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The checks are live: a sink that wants one message more than was sent is a failure."""
    monkeypatch.setattr(soak, "SETTLE_S", 2.0)
    real = soak.stream

    def off_by_one(sink: object, sender: str, count: int, what: str) -> None:
        real(sink, sender, count + 1, what)  # type: ignore[arg-type]

    monkeypatch.setattr(soak, "stream", off_by_one)
    with pytest.raises(soak.SoakFailure, match="the sink's stream"):
        soak.soak(kills=1, scenarios=["fan-in"], seed=1, size=50, directory=tmp_path, say=print)
