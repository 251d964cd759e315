"""Which kind of machine this is, and the defaults that suit it.

A Raspberry Pi with 512 MB and an SD card, a laptop on battery and a server are run with the same
settings unless someone says otherwise, and the built-in defaults (64 MiB checkpoints and output
buffers, 4 MiB pages) are a server's. A profile is the layer of defaults just above the built-in
ones: the config file, the environment and flags still win, so a profile never hides a value a
user chose.

Detection reads only files, and from a root that tests replace with a fake tree:

- a Raspberry Pi says so in ``/proc/device-tree/model`` (``Raspberry Pi 4 Model B Rev 1.4``), or,
  on older kernels and some 32-bit images without a device tree there, in the ``Model`` or
  ``Hardware`` line of ``/proc/cpuinfo`` (``BCM2835``);
- a laptop has a battery under ``/sys/class/power_supply`` (a directory whose ``type`` is
  ``Battery``); a UPS is a battery too but reports ``scope = Device``, so it does not count;
- anything else is a server.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["DEFAULTS", "PROFILES", "ROOT_ENV", "Profile", "detect", "profile_named"]

#: Where detection looks instead of ``/`` (a copy of another machine's /proc and /sys, a test's
#: fake tree).
ROOT_ENV = "AMBROSIA_EDGE_DEVICE_ROOT"

_MiB = 1 << 20

#: The names ``--profile`` takes; ``auto`` detects.
PROFILES = ("auto", "pi", "laptop", "server")

#: Settings (by field name) each profile sets below the config file and flags.
DEFAULTS: Mapping[str, Mapping[str, int]] = {
    # 512 MB boards: small pages and buffers keep an idle immortal well under 100 MB, and a
    # checkpoint every 8 MiB keeps recovery (on a slow SD card) to a few seconds; one checkpoint
    # kept besides the newest spares the card.
    "pi": {
        "page_bytes": 256 * 1024,
        "buffer_bytes": 8 * _MiB,
        "checkpoint_bytes": 8 * _MiB,
        "keep_checkpoints": 2,
    },
    # Plenty of memory, but a battery: medium pages, and checkpoints rare enough that the disk
    # can sleep between them.
    "laptop": {
        "page_bytes": 1 * _MiB,
        "buffer_bytes": 32 * _MiB,
        "checkpoint_bytes": 32 * _MiB,
        "keep_checkpoints": 2,
    },
    # The built-in defaults: large batches for throughput.
    "server": {
        "page_bytes": 4 * _MiB,
        "buffer_bytes": 64 * _MiB,
        "checkpoint_bytes": 64 * _MiB,
        "keep_checkpoints": 2,
    },
}


@dataclass(frozen=True)
class Profile:
    """A kind of machine, why we think this is one, and the defaults it implies."""

    name: str
    #: what the machine says it is (the Pi's model line, the battery's name), or ""
    model: str
    #: how it was chosen: the file that said so, or "--profile"
    reason: str
    defaults: Mapping[str, int] = field(default_factory=dict)
    #: physical memory in bytes, when /proc/meminfo says
    memory: int | None = None


def profile_named(name: str, root: str | os.PathLike[str] | None = None) -> Profile:
    """The profile ``name`` (one of :data:`PROFILES`); ``auto`` detects it under ``root``."""
    root = _root(root)
    if name == "auto":
        return detect(root)
    if name not in DEFAULTS:
        raise ValueError(f"unknown device profile {name!r}; pick one of {', '.join(PROFILES)}")
    return Profile(name, "", "chosen with --profile", DEFAULTS[name], _memory(Path(root)))


def detect(root: str | os.PathLike[str] | None = None) -> Profile:
    """Detect the kind of machine from ``root``/proc and ``root``/sys (by default ``/``, or
    :data:`ROOT_ENV`)."""
    base = Path(_root(root))
    memory = _memory(base)
    model = _read(base / "proc/device-tree/model").rstrip("\x00").strip()
    if "raspberry pi" in model.lower():
        return Profile("pi", model, "/proc/device-tree/model", DEFAULTS["pi"], memory)
    pi = _pi_from_cpuinfo(_read(base / "proc/cpuinfo"))
    if pi:
        return Profile("pi", pi, "/proc/cpuinfo", DEFAULTS["pi"], memory)
    battery = _battery(base / "sys/class/power_supply")
    if battery:
        reason = f"/sys/class/power_supply/{battery}"
        return Profile("laptop", battery, reason, DEFAULTS["laptop"], memory)
    return Profile("server", model, "no Raspberry Pi model, no battery", DEFAULTS["server"], memory)


def _root(root: str | os.PathLike[str] | None) -> str | os.PathLike[str]:
    return root if root is not None else os.environ.get(ROOT_ENV) or "/"


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def _pi_from_cpuinfo(text: str) -> str:
    hardware = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key, value = key.strip().lower(), value.strip()
        if key == "model" and "raspberry pi" in value.lower():
            return value
        if key == "hardware" and value.upper().startswith(("BCM2835", "BCM2836", "BCM2837")):
            hardware = f"Raspberry Pi ({value})"
        if key == "hardware" and value.upper().startswith(("BCM2711", "BCM2712")):
            hardware = f"Raspberry Pi ({value})"
    return hardware


def _battery(power_supply: Path) -> str:
    try:
        entries = sorted(power_supply.iterdir())
    except OSError:
        return ""
    for entry in entries:
        if _read(entry / "type").strip() != "Battery":
            continue
        if _read(entry / "scope").strip().lower() == "device":
            continue  # a mouse's or a UPS's battery, not the machine's
        return entry.name
    return ""


def _memory(base: Path) -> int | None:
    for line in _read(base / "proc/meminfo").splitlines():
        if line.startswith("MemTotal:"):
            parts = line.split()
            if len(parts) >= 2 and parts[1].isdigit():
                return int(parts[1]) * 1024
    return None
