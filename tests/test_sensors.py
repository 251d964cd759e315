"""Sensor sources in a runtime: readings from fake /proc and /sys trees, commands, gpiozero's
mock pins, and their declaration in the config file."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest
from ambrosia_edge.devices.sensors import (
    CommandSource,
    CpuTemperature,
    FileSource,
    GpioSource,
    LoadSource,
    MemorySource,
    parse_duration,
)

from ambrosia_edge import Immortal, impulse
from ambrosia_edge.config import Settings, load_settings
from ambrosia_edge.errors import ConfigError
from ambrosia_edge.runtime import Runtime
from ambrosia_edge.sources import ImpulseSource, open_declared
from ambrosia_edge.testing import eventually

os.environ.setdefault("GPIOZERO_PIN_FACTORY", "mock")

pytestmark = pytest.mark.anyio


class Readings(Immortal):
    def __init__(self) -> None:
        self.readings: list[Any] = []

    @impulse
    def reading(self, value: Any) -> None:
        self.readings.append(value)


def tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def readings(runtime: Runtime) -> list[Any]:
    obj = runtime.immortal
    assert isinstance(obj, Readings)
    return obj.readings


async def run_with(tmp_path: Path, source: ImpulseSource, count: int) -> list[Any]:
    """Run a Readings immortal fed by ``source`` until it has ``count`` readings."""
    settings = Settings(target="tests:readings", name="readings", log=str(tmp_path / "log"))
    runtime = Runtime(Readings, settings, sources=[source])
    async with anyio.create_task_group() as tg:
        await tg.start(runtime.serve)
        await eventually(lambda: len(readings(runtime)) >= count, f"{count} readings")
        tg.cancel_scope.cancel()
    return readings(runtime)


async def test_cpu_temperature_is_read_from_the_thermal_zone_in_degrees(tmp_path: Path) -> None:
    root = tree(
        tmp_path / "sysfs",
        {
            "sys/class/thermal/thermal_zone0/type": "acpitz\n",
            "sys/class/thermal/thermal_zone0/temp": "27800\n",
            "sys/class/thermal/thermal_zone1/type": "x86_pkg_temp\n",
            "sys/class/thermal/thermal_zone1/temp": "48312\n",
        },
    )
    source = CpuTemperature("reading", every="10ms", root=root)
    assert source.path.parent.name == "thermal_zone1"  # the CPU's zone, not the first
    got = await run_with(tmp_path, source, 3)
    assert got[:3] == [48.312] * 3
    assert CpuTemperature("reading", zone=0, root=root).read() == 27.8
    with pytest.raises(ConfigError, match="no thermal zone 7"):
        CpuTemperature("reading", zone=7, root=root)
    with pytest.raises(ConfigError, match="reports no temperature"):
        CpuTemperature("reading", root=tmp_path / "empty")


async def test_load_memory_file_and_command(tmp_path: Path) -> None:
    root = tree(
        tmp_path / "proc",
        {
            "proc/loadavg": "0.52 0.58 0.59 1/389 12345\n",
            "proc/meminfo": "MemTotal: 444844 kB\nMemFree: 1 kB\nMemAvailable: 200000 kB\n",
            "value": " 21.5\n",
        },
    )
    assert LoadSource("reading", root=root).read() == [0.52, 0.58, 0.59]
    assert MemorySource("reading", root=root).read() == {
        "total": 444844 * 1024,
        "available": 200000 * 1024,
    }
    assert await run_with(tmp_path / "a", FileSource("reading", path=root / "value"), 1) == ["21.5"]
    command = CommandSource("reading", command=[sys.executable, "-c", "print('hi')"], every=60)
    assert await run_with(tmp_path / "b", command, 1) == ["hi"]


def test_durations() -> None:
    assert [parse_duration(v) for v in ("5s", "500ms", "2m", "1h", 3, "0.5")] == [
        5.0,
        0.5,
        120.0,
        3600.0,
        3.0,
        0.5,
    ]
    for bad in ("soon", "0s", -1, True, "5 days"):
        with pytest.raises(ConfigError, match="every: expected a duration"):
            parse_duration(bad)


async def test_each_gpio_edge_is_one_impulse(tmp_path: Path) -> None:
    from gpiozero import Device

    source = GpioSource("reading", pin=17)
    settings = Settings(target="tests:readings", name="readings", log=str(tmp_path / "log"))
    runtime = Runtime(Readings, settings, sources=[source])
    async with anyio.create_task_group() as tg:
        await tg.start(runtime.serve)
        pin = Device.pin_factory.pin(17)

        def press(times: int) -> None:
            for _ in range(times):
                pin.drive_high()
                pin.drive_low()

        await anyio.to_thread.run_sync(press, 50)  # gpiozero calls back in other threads
        await eventually(lambda: len(readings(runtime)) >= 100, "100 edges")
        press(1)  # and on the event loop's own thread
        await eventually(lambda: len(readings(runtime)) >= 102, "102 edges")
        tg.cancel_scope.cancel()
    assert readings(runtime) == [{"pin": 17, "active": True}, {"pin": 17, "active": False}] * 51
    Device.pin_factory.reset()


async def test_sources_declared_in_the_config_file(tmp_path: Path) -> None:
    root = tree(tmp_path / "fake", {"sys/class/thermal/thermal_zone0/temp": "51000\n"})
    config = tmp_path / "app.toml"
    config.write_text(
        'target = "m:C"\n'
        "[[sources]]\n"
        'kind = "cpu_temperature"\nimpulse = "reading"\nevery = "10ms"\nroot = "fake"\n'
        "[[sources]]\n"
        'kind = "gpio"\nimpulse = "reading"\npin = 4\nedges = "active"\n'
    )
    settings = load_settings(config)
    assert settings.sources[0]["root"] == str(root)  # relative to the file
    built = [open_declared(table) for table in settings.sources]
    assert isinstance(built[0], CpuTemperature) and built[0].every == 0.01
    assert isinstance(built[1], GpioSource) and (built[1].pin, built[1].edges) == (4, "active")

    def complaint(text: str) -> str:
        config.write_text('target = "m:C"\n' + text)
        with pytest.raises(ConfigError) as info:
            [open_declared(table) for table in load_settings(config).sources]
        return str(info.value)

    assert "no kind" in complaint('[[sources]]\nimpulse = "reading"\n')
    assert "names no @impulse method" in complaint('[[sources]]\nkind = "load"\n')
    assert "no impulse source named 'thermometer' in [[sources]] (known: " in complaint(
        '[[sources]]\nkind = "thermometer"\nimpulse = "reading"\n'
    )
    assert "unknown key 'evry' (known keys: kind, impulse, every, root)" in complaint(
        '[[sources]]\nkind = "load"\nimpulse = "reading"\nevry = "5s"\n'
    )
    assert "needs a pin" in complaint('[[sources]]\nkind = "gpio"\nimpulse = "reading"\n')
    assert "cannot be declared in [[sources]]" in complaint(
        '[[sources]]\nkind = "terminal"\nimpulse = "reading"\n'
    )
    assert "expected an array of tables" in complaint('sources = "cpu_temperature"\n')


def test_gpio_without_gpiozero_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "gpiozero", None)
    with pytest.raises(ConfigError, match=r"gpiozero is not installed; .*ambrosia-edge\[gpio\]"):
        open_declared({"kind": "gpio", "impulse": "button", "pin": 17})


def test_the_docs_config_declares_what_it_says(tmp_path: Path) -> None:
    text = (Path(__file__).parent.parent / "docs" / "devices.md").read_text()
    block = text.split("```toml\n", 1)[1].split("```", 1)[0]
    config = tmp_path / "hub.toml"
    config.write_text(block)
    settings = load_settings(config)
    (temperature, button) = settings.sources
    assert temperature == {"kind": "cpu_temperature", "impulse": "reading", "every": "5s"}
    gpio = open_declared(button)
    assert isinstance(gpio, GpioSource) and (gpio.pin, gpio.pull_up, gpio.bounce) == (
        17,
        True,
        0.02,
    )
