"""Sensor readings and GPIO edges reach a real ``ambrosia-edge run`` child exactly once, however
often it is SIGKILLed; and ``[[sources]]`` in the config file feed it.

A reading taken but not yet logged when the process dies is lost (paper §4.2). So the source
numbers its readings and notes each whose receipt said durable; after the kills, the state must
hold every durable number, no number twice, and each run's numbers in order with no gap but a
lost tail.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from support import APPS, Child, free_port, read_status, wait_for

SENSING = f"{APPS.parent / 'sensing.py'}:Sensing"
KILLS = 4


def durable(journal: Path) -> set[tuple[int, int]]:
    if not journal.exists():
        return set()
    found = set()
    for line in journal.read_text().splitlines():
        pid, n = line.split()
        found.add((int(pid), int(n)))
    return found


def set_temperature(root: Path, millidegrees: int) -> None:
    zone = root / "sys/class/thermal/thermal_zone0"
    zone.mkdir(parents=True, exist_ok=True)
    (zone / "type").write_text("cpu-thermal\n")
    (zone / "temp.tmp").write_text(f"{millidegrees}\n")
    os.replace(zone / "temp.tmp", zone / "temp")


@pytest.mark.parametrize("sensor", ["cpu", "gpio"])
def test_each_reading_is_one_impulse_while_the_immortal_is_killed(
    tmp_path: Path, sensor: str
) -> None:
    root, journal, status = tmp_path / "fake", tmp_path / "journal", tmp_path / "status"
    status.mkdir()
    env = {
        "AMBROSIA_TEST_SENSOR": sensor,
        "AMBROSIA_TEST_SENSOR_ROOT": str(root),
        "AMBROSIA_TEST_JOURNAL": str(journal),
        "GPIOZERO_PIN_FACTORY": "mock",
    }
    child = Child(SENSING, "sensing", tmp_path / "log", free_port(), {}, status, env)
    pids = []
    for run in range(KILLS):
        set_temperature(root, 40_000 + 1000 * run)
        before = len(durable(journal))
        child.start()
        assert child.proc is not None
        pids.append(child.proc.pid)
        wait_for(
            lambda before=before: len(durable(journal)) >= before + 40,
            60,
            "40 more durable readings",
            child.output,
        )
        child.kill()

    child.env["AMBROSIA_TEST_SENSOR"] = ""  # the last run only recovers
    child.start()
    state = wait_for(child.status, 60, "the recovered state", child.output)
    assert child.stop() == 0
    readings: list[Any] = state["readings"]
    numbers = [(pid, n) for (pid, n), _ in readings]
    assert len(numbers) == len(set(numbers)), "a reading was logged twice"
    missing = durable(journal) - set(numbers)
    assert not missing, f"durable readings lost: {sorted(missing)[:5]}"
    assert [pid for pid, n in numbers if n == 0] == pids  # each run's readings, run after run
    for run, pid in enumerate(pids):
        values = [value for (p, _), value in readings if p == pid]
        ns = [n for p, n in numbers if p == pid]
        assert ns == list(range(len(ns)))  # in order; only the tail after the kill is lost
        if sensor == "cpu":
            assert set(values) == {40.0 + run}
        else:
            assert [v["active"] for v in values] == [True, False] * (len(values) // 2) + [True] * (
                len(values) % 2
            )
    print(f"{sensor}: {len(numbers)} readings over {KILLS} kills, {len(durable(journal))} durable")


def test_sources_declared_in_the_config_file_feed_the_immortal(tmp_path: Path) -> None:
    set_temperature(tmp_path / "fake", 55_500)
    status = tmp_path / "status"
    status.mkdir()
    config = tmp_path / "counter.toml"
    config.write_text(
        f'target = "{APPS}:Counter"\nname = "sensed"\nlog = "log"\n'
        "[[sources]]\n"
        'kind = "cpu_temperature"\nimpulse = "reading"\nevery = "10ms"\nroot = "fake"\n'
    )
    env = dict(os.environ, AMBROSIA_TEST_STATUS=str(status))
    command = [sys.executable, "-m", "ambrosia_edge", "run", "--config", str(config)]
    proc = subprocess.Popen(
        command, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        state = wait_for(
            lambda: (s := read_status(status, "sensed")) and len(s["readings"]) >= 3 and s,
            60,
            "three temperature readings",
        )
        assert set(state["readings"]) == {55.5}
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out.decode()
