"""The benchmark harness runs end to end and fills every table (speed is never asserted)."""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent


def benchmarks(*args: str) -> subprocess.CompletedProcess[str]:
    """``python -m benchmarks ARGS`` from the repository root, as people run it (the checkout
    must not shadow the package)."""
    return subprocess.run(
        [sys.executable, "-m", "benchmarks", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )


def goals_of(summary: dict[str, Any]) -> list[tuple[str, str]]:
    return [(t["target"], t["goal"]) for t in summary["targets"]]


@pytest.mark.timeout(120)
def test_smoke_run_reports_a_number_for_every_system(tmp_path: Path) -> None:
    out = tmp_path / "out"
    done = benchmarks("--smoke", "--quiet", "--out", str(out))
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
    # the typical app (async def handlers, short continuation steps) beside the tuned one
    assert "### The typical app" in table, table
    for steps in ("1,000", "100"):
        typical = summary["typical"]["systems"][f"ambrosia-edge typical app, {steps}-fork steps"]
        assert typical["messages_per_s"] > 0, typical
    typical_goals = [goal for target, goal in goals_of(summary) if target.startswith("typical")]
    assert typical_goals == [">= 0.8x", ">= 30x", ">= 0.5x"] or (
        typical_goals == [">= 0.8x", ">= 0.5x"] and "grpcio" not in systems
    ), typical_goals
    assert summary["disk"]["p50"] > 0 and summary["disk"]["sequential_mb_per_s"] > 0
    assert summary["replay"]["messages_per_s"] > 0
    # the durable ping is judged against its floor in the same run; gRPC's ratio is a figure
    floor = summary["ping_floor"]
    assert floor["floor_p50"] == floor["no_fsync_p50"] + 2 * floor["fdatasync_p50"], floor
    assert floor["ratio"] == floor["durable_p50"] / floor["floor_p50"], floor
    goals = {t["target"]: t["goal"] for t in summary["targets"]}
    ping_goals = [goal for target, goal in goals.items() if target.startswith("ping")]
    assert ping_goals == ["<= 1.15x"], goals
    assert "physical floor in this run" in table, table

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
    failover = summary["failover"]
    assert failover["exactly_once"] and failover["times_s"], failover
    assert 0 < failover["median_s"] <= failover["worst_s"], failover
    assert goals["failover after SIGKILL to a standby, median (s)"] == "< 2 s", goals
    assert "### Failover to a standby" in table, table


@pytest.mark.timeout(120)
def test_only_runs_the_workloads_named_and_refuses_others(tmp_path: Path) -> None:
    out = tmp_path / "out"
    command = ["--smoke", "--quiet", "--out", str(out)]
    done = benchmarks(*command, "--only", "typical,ping")
    assert done.returncode == 0, done.stderr[-4000:]
    results = json.loads((out / "results.json").read_text())
    summary = results["summary"]
    assert len(summary["typical"]["systems"]) == 2, summary["typical"]
    assert set(summary["throughput"]) == {"1024"}, summary["throughput"]  # the smallest size
    assert summary["ping"]["ambrosia-edge"]["p50"] > 0
    assert summary["ping_floor"]["ratio"] > 0  # the disk's floor is measured all the same
    assert not results["counter"] and not results["recovery"] and not results["failover"]
    assert "--only typical,ping" in (out / "results.md").read_text()

    wrong = benchmarks(*command, "--only", "typical,pong")
    assert wrong.returncode == 2
    assert "unknown workload pong; choose from throughput, typical, ping" in wrong.stderr


@pytest.mark.timeout(120)
@pytest.mark.parametrize("variant", ["each", "batched"])
def test_the_optional_restate_peer_applies_every_increment(tmp_path: Path, variant: str) -> None:
    sys.path.insert(0, str(REPO))
    try:
        from benchmarks import restate_peer, systems
        from benchmarks.measure import measure_pair
        from benchmarks.processes import Runner
    finally:
        sys.path.remove(str(REPO))
    if not restate_peer.available():
        pytest.skip("Restate is not installed (restate-server, restate-sdk, hypercorn)")
    system = systems.RESTATE_EACH if variant == "each" else systems.RESTATE_BATCHED
    runner = Runner(tmp_path, 100, lambda line: None)
    total = 150 if variant == "each" else 1050  # the last batch is a partial one
    r = measure_pair(runner, system, "counter", size=0, total=total, batch=total)
    assert r["client"]["done"] and r["client"]["applied"] == total


def _imports_within(package: Path) -> dict[str, set[str]]:
    """The modules of a flat package each module imports, at top level or inside a function."""
    names = {path.stem for path in package.glob("*.py")}
    graph: dict[str, set[str]] = {}
    for path in sorted(package.glob("*.py")):
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom):
                if node.level == 1 and node.module:  # from .x import y
                    found.add(node.module.split(".")[0])
                elif node.level == 1 or node.module == package.name:  # from . import x
                    found.update(alias.name for alias in node.names)
                elif node.module and node.module.startswith(package.name + "."):
                    found.add(node.module.split(".")[1])
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.startswith(package.name + "."):
                        found.add(alias.name.split(".")[1])
        graph[path.stem] = (found & names) - {path.stem}
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str]:
    """One import cycle of the graph, as the modules along it, or [] when it has none."""
    state: dict[str, str] = {}
    path: list[str] = []

    def visit(node: str) -> list[str]:
        state[node] = "open"
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        state[node] = "done"
        path.pop()
        return []

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return []


@pytest.mark.timeout(120)
def test_the_mqtt_benchmark_reports_both_rates(tmp_path: Path) -> None:
    """``--mqtt``: a paho client alone and an immortal drain the same backlog (mosquitto)."""
    if not (shutil.which("mosquitto") or Path("/usr/sbin/mosquitto").exists()):
        if os.environ.get("CI"):
            pytest.fail("mosquitto is not installed (.ci/run installs the Debian package)")
        pytest.skip("mosquitto is not installed (apt-get install mosquitto)")
    pytest.importorskip("paho.mqtt.client")
    out = tmp_path / "out"
    args = ["--mqtt", "--mqtt-messages", "300", "--reps", "1", "--quiet", "--out", str(out)]
    done = benchmarks(*args)
    assert done.returncode == 0, done.stderr[-4000:]
    result = json.loads((out / "mqtt.json").read_text())
    assert result["paho_per_s"] > 0 and result["immortal_per_s"] > 0
    assert "| ratio (target ≥ 0.5) |" in (out / "mqtt.md").read_text()


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) == []


def test_benchmarks_has_no_import_circle() -> None:
    # deferred imports inside functions count too: they are how a circle hides
    graph = _imports_within(REPO / "benchmarks")
    assert "harness" in graph and graph["report"], graph
    assert _cycle(graph) == [], " -> ".join(_cycle(graph))


def test_deployments_are_reported_against_the_plain_one_of_the_same_run() -> None:
    from benchmarks import deployments as tiers
    from benchmarks.results import Results

    results = Results(mode="quick", command="", started="")

    def run(system: str, size: int, rate: float) -> dict[str, object]:
        return {"system": system, "size": size, "messages_per_s": rate, "rep": 0}

    results.throughput = [run("ambrosia-edge", 16, 100_000.0), run("grpcio", 16, 5_000.0)]
    results.ping = [{"system": "ambrosia-edge", "samples_ns": [400_000] * 3, "rep": 0}]
    results.deployments = [
        {"tier": tiers.S3, "workload": "throughput", "size": 16, "messages_per_s": 40_000.0},
        {"tier": tiers.S3, "workload": "ping", "samples_ns": [3_000_000] * 3},
    ]
    summary = tiers.summarise(results)
    assert summary[tiers.LOCAL] == {"16": 100_000.0, "ping_p50_us": 400.0}
    assert summary[tiers.S3] == {"16": 40_000.0, "ping_p50_us": 3000.0}
    [target] = tiers.targets(summary)
    assert target["value"] == 0.4 and target["met"] is False
    table = "\n".join(tiers.markdown(summary))
    assert "| S3 (s3://, SeaweedFS), TCP | 40,000 (0.40x) | - | 3,000 (7.50x) |" in table
