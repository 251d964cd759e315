"""Device profiles: detection from a fake /proc and /sys, and where their defaults sit."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from ambrosia_edge.devices.profiles import DEFAULTS, ROOT_ENV, detect, profile_named

from ambrosia_edge.config import load_settings
from ambrosia_edge.errors import ConfigError

MiB = 1 << 20


def tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


MEMINFO = "MemTotal:         444844 kB\nMemFree:          100000 kB\n"


def test_a_pi_is_known_by_its_device_tree_model(tmp_path: Path) -> None:
    root = tree(
        tmp_path,
        {
            "proc/device-tree/model": "Raspberry Pi Zero 2 W Rev 1.0\x00",
            "proc/meminfo": MEMINFO,
        },
    )
    profile = detect(root)
    assert (profile.name, profile.model) == ("pi", "Raspberry Pi Zero 2 W Rev 1.0")
    assert profile.reason == "/proc/device-tree/model"
    assert profile.memory == 444844 * 1024
    assert profile.defaults == DEFAULTS["pi"]
    # a 512 MB board: pages, output buffers and checkpoints far below a server's
    assert profile.defaults["page_bytes"] <= MiB and profile.defaults["buffer_bytes"] <= 8 * MiB


@pytest.mark.parametrize(
    "cpuinfo",
    [
        "processor\t: 0\nHardware\t: BCM2835\nRevision\t: a02082\n",
        "processor\t: 0\nModel\t\t: Raspberry Pi 3 Model B Rev 1.2\n",
    ],
)
def test_without_a_device_tree_cpuinfo_tells_a_pi(tmp_path: Path, cpuinfo: str) -> None:
    profile = detect(tree(tmp_path, {"proc/cpuinfo": cpuinfo}))
    assert (profile.name, profile.reason) == ("pi", "/proc/cpuinfo")
    assert "Raspberry Pi" in profile.model


def test_a_battery_makes_a_laptop_but_a_ups_does_not(tmp_path: Path) -> None:
    ups = {
        "sys/class/power_supply/AC/type": "Mains\n",
        "sys/class/power_supply/ups0/type": "Battery\n",
        "sys/class/power_supply/ups0/scope": "Device\n",
        "proc/cpuinfo": "model name\t: Intel(R) Core(TM) i7\n",
    }
    assert detect(tree(tmp_path / "server", ups)).name == "server"
    laptop = detect(
        tree(tmp_path / "laptop", {**ups, "sys/class/power_supply/BAT0/type": "Battery"})
    )
    assert (laptop.name, laptop.model) == ("laptop", "BAT0")
    assert laptop.reason == "/sys/class/power_supply/BAT0"
    assert detect(tmp_path / "empty").name == "server"  # nothing readable at all


def test_the_profile_is_below_the_file_and_the_flags(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pi = tree(tmp_path / "pi", {"proc/device-tree/model": "Raspberry Pi 4 Model B Rev 1.4"})
    monkeypatch.setenv(ROOT_ENV, str(pi))
    s = load_settings(None, target="m:C")
    assert (s.page_bytes, s.buffer_bytes) == (DEFAULTS["pi"]["page_bytes"], 8 * MiB)
    assert s.checkpoint_bytes == DEFAULTS["pi"]["checkpoint_bytes"]
    config = tmp_path / "c.toml"
    config.write_text('target = "m:C"\npage_bytes = "1MiB"\n')
    s = load_settings(config, buffer_bytes="2MiB")
    assert (s.page_bytes, s.buffer_bytes) == (MiB, 2 * MiB)  # the file, then a flag
    assert s.checkpoint_bytes == DEFAULTS["pi"]["checkpoint_bytes"]  # the profile's
    s = load_settings(config, profile="server")  # chosen, not detected
    assert (s.page_bytes, s.checkpoint_bytes) == (MiB, 64 * MiB)
    config.write_text('target = "m:C"\nprofile = "laptop"\n')
    assert load_settings(config).page_bytes == DEFAULTS["laptop"]["page_bytes"]
    with pytest.raises(ConfigError) as info:
        load_settings(None, target="m:C", profile="raspberry")
    assert str(info.value) == (
        "--profile: expected one of auto, pi, laptop, server, got 'raspberry'; "
        "for example: --profile auto"
    )
    with pytest.raises(ValueError, match="unknown device profile"):
        profile_named("toaster")


def test_the_device_command_prints_the_profile_and_its_defaults(tmp_path: Path) -> None:
    root = tree(
        tmp_path,
        {"proc/device-tree/model": "Raspberry Pi 3 Model B Plus Rev 1.3", "proc/meminfo": MEMINFO},
    )
    command = [sys.executable, "-m", "ambrosia_edge", "device", "--root", str(root)]
    text = subprocess.run(command, check=True, capture_output=True, text=True, cwd=tmp_path).stdout
    assert text.splitlines()[:3] == [
        "profile: pi (Raspberry Pi 3 Model B Plus Rev 1.3)",
        "why:     /proc/device-tree/model",
        "memory:  434 MiB",
    ]
    assert "  page_bytes = 256KiB" in text and "  checkpoint_bytes = 8MiB" in text
    shown = json.loads(
        subprocess.run(
            [*command, "--json", "--profile", "laptop"], check=True, capture_output=True, text=True
        ).stdout
    )
    assert shown["profile"] == "laptop" and shown["defaults"] == dict(DEFAULTS["laptop"])
