"""The benchmark harness runs end to end and fills every table (speed is never asserted)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.timeout(120)
def test_smoke_run_reports_a_number_for_every_system(tmp_path: Path) -> None:
    out = tmp_path / "out"
    # from the repository root, as people run it: the checkout must not shadow the package
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--smoke", "--quiet", "--out", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    table = (out / "results.md").read_text()
    assert "### Throughput" in table and "### Latency" in table, table
    summary = json.loads((out / "results.json").read_text())["summary"]

    systems = ["ambrosia-edge", "ambrosia-edge --no-fsync"]
    if importlib.util.find_spec("grpc") is not None:
        systems.append("grpcio")
    for system in systems:
        assert system in table
        for size, row in summary["throughput"].items():
            assert row[system]["messages_per_s"] > 0, (system, size)
            assert row[system]["server_peak_rss_mib"] > 0, (system, size)
        ping = summary["ping"][system]
        assert 0 < ping["p50"] <= ping["p99"] <= ping["p99.9"], (system, ping)
        assert summary["idle_rss_mib"][system]["server"] > 0
    assert summary["counter"]["ambrosia-edge"]["increments_per_s"] > 0
    assert summary["disk"]["p50"] > 0 and summary["disk"]["sequential_mb_per_s"] > 0
    assert summary["replay"]["messages_per_s"] > 0

    assert "### Recovery" in table, table
    recovery = summary["recovery"]
    assert recovery["exactly_once"] and recovery["received"] == recovery["total"], recovery
    assert recovery["checkpoint"] >= 1 and recovery["messages_replayed"] > 0, recovery
    # recover() is timed by the runtime's log line, to 10 ms
    assert 0 <= recovery["recover_s"] <= recovery["ready_s"] + 0.01 and recovery["ready_s"] > 0
    assert recovery["interpreter_s"] > 0 and recovery["fresh_start_s"] > 0, recovery
    for cache, whole in summary["log_replay"].items():
        assert whole["log_bytes"] >= whole["messages"] * whole["size"] > 0, (cache, whole)
        assert whole["seconds"] > 0 and whole["messages_per_s"] > 0, (cache, whole)
    assert "warm" in summary["log_replay"], summary["log_replay"]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("variant", ["each", "batched"])
def test_the_optional_restate_peer_applies_every_increment(tmp_path: Path, variant: str) -> None:
    sys.path.insert(0, str(REPO))
    try:
        from benchmarks import harness, restate_peer
    finally:
        sys.path.remove(str(REPO))
    if not restate_peer.available():
        pytest.skip("Restate is not installed (restate-server, restate-sdk, hypercorn)")
    system = harness.RESTATE_EACH if variant == "each" else harness.RESTATE_BATCHED
    runner = harness.Runner(tmp_path, 100, lambda line: None)
    total = 150 if variant == "each" else 1050  # the last batch is a partial one
    r = harness.measure_pair(runner, system, "counter", size=0, total=total, batch=total)
    assert r["client"]["done"] and r["client"]["applied"] == total
