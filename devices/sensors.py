"""Sensors as impulse sources: CPU temperature, load, memory, a file or a command, GPIO inputs.

A reading is taken from the outside world and cannot be taken again, so it reaches the immortal
as an impulse (sources.py): logged before it runs, replayed from the log after a crash. A reading
taken but not yet logged when the process dies is lost (paper §4.2); the next one is taken after
recovery. Each source sends one argument, the reading, to the ``@impulse`` method it is given.

They are declared in the config file of ``ambrosia-edge run``, one table each::

    [[sources]]
    kind = "cpu_temperature"    # degrees Celsius, a float
    impulse = "reading"         # the @impulse method fed
    every = "5s"                # how often (ms, s, m, h; a number is seconds)

and built here from such a table (``from_config``), or in code by an immortal's
``impulse_sources()``. Polled sources read Linux's /proc and /sys under a root that tests
replace with a fake tree. GPIO uses gpiozero (the ``gpio`` extra) and sends an impulse per edge.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import re
import shlex
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar

import anyio
import anyio.from_thread
import anyio.lowlevel
from anyio.abc import TaskStatus

from ambrosia_edge.errors import ConfigError
from ambrosia_edge.sources import ImpulseFeed

__all__ = [
    "CommandSource",
    "CpuTemperature",
    "FileSource",
    "GpioSource",
    "LoadSource",
    "MemorySource",
    "PolledSource",
    "parse_duration",
]

log = logging.getLogger("ambrosia_edge")

_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h)?")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def parse_duration(value: object, where: str = "every") -> float:
    """``"5s"``, ``"500ms"``, ``"2m"``, ``"1h"`` or a number of seconds, as seconds."""
    if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
        return float(value)
    match = _DURATION.fullmatch(value.strip()) if isinstance(value, str) else None
    if match is None or float(match.group(1)) <= 0:
        raise ConfigError(
            f'{where}: expected a duration such as "5s", "500ms" or "2m", got {value!r}'
        )
    return float(match.group(1)) * _UNITS[match.group(2)]


def _take(table: Mapping[str, Any], known: tuple[str, ...]) -> tuple[str, dict[str, Any]]:
    """The table's impulse and its other keys, refusing keys the source does not know."""
    kind = table.get("kind", "?")
    unknown = sorted(set(table) - {"kind", "impulse", *known})
    if unknown:
        allowed = ", ".join(("kind", "impulse", *known))
        raise ConfigError(
            f"[[sources]] of kind {kind!r}: unknown key {unknown[0]!r} (known keys: {allowed})"
        )
    impulse = table.get("impulse")
    if not isinstance(impulse, str) or not impulse.isidentifier():
        raise ConfigError(
            f"[[sources]] of kind {kind!r}: impulse must name an @impulse method, got {impulse!r}"
        )
    return impulse, {key: table[key] for key in known if key in table}


# ---------------------------------------------------------------------------------------------
# Polled sources


class PolledSource:
    """Takes a reading every ``every`` seconds and sends it to ``impulse``.

    ``read`` is quick (a file of /proc or /sys); one that fails is logged and skipped, since a
    sensor that is briefly unreadable should not stop the immortal's other inputs. The first
    reading is taken before the source reports itself started, so a wrong path fails at once.
    """

    #: the name in ``[[sources]] kind = ...``
    kind: ClassVar[str] = ""
    #: keys its table may have besides kind and impulse
    keys: ClassVar[tuple[str, ...]] = ("every",)

    def __init__(self, impulse: str, *, every: float | str = 5.0) -> None:
        self.impulse = impulse
        self.every = parse_duration(every)

    @classmethod
    def from_config(cls, table: Mapping[str, Any]) -> PolledSource:
        impulse, options = _take(table, cls.keys)
        return cls(impulse, **options)

    def read(self) -> object:
        raise NotImplementedError

    async def take(self) -> object:
        """One reading; a source that has to wait for it (a command) overrides this."""
        return self.read()

    async def run(
        self, feed: ImpulseFeed, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        first = await self.take()  # raises: a sensor that cannot be read at all is reported
        feed.send(self.impulse, first)
        task_status.started()
        failing = False
        due = anyio.current_time()
        while True:
            due += self.every
            await anyio.sleep(max(0.0, due - anyio.current_time()))
            try:
                value = await self.take()
            except (OSError, ValueError) as exc:
                if not failing:
                    log.warning(
                        "%s: %r cannot read its sensor (%s); retrying", feed.immortal, self, exc
                    )
                failing = True
                continue
            if failing:
                log.info("%s: %r reads its sensor again", feed.immortal, self)
                failing = False
            feed.send(self.impulse, value)

    def __repr__(self) -> str:
        return f"<{self.kind} source feeding {self.impulse} every {self.every:g} s>"


class CpuTemperature(PolledSource):
    """The CPU's temperature in degrees Celsius, from ``/sys/class/thermal/thermal_zone*/temp``.

    The kernel reports millidegrees. ``zone`` picks a zone by number; by default the first zone
    whose ``type`` names the CPU (``cpu-thermal`` on a Raspberry Pi, ``x86_pkg_temp`` on a PC),
    else zone 0.
    """

    kind = "cpu_temperature"
    keys = ("every", "zone", "root")

    def __init__(
        self,
        impulse: str,
        *,
        every: float | str = 5.0,
        zone: int | None = None,
        root: str | Path = "/",
    ) -> None:
        super().__init__(impulse, every=every)
        self.path = _thermal_zone(Path(root) / "sys/class/thermal", zone)

    def read(self) -> float:
        return int(self.path.read_text().strip()) / 1000.0


def _thermal_zone(thermal: Path, zone: int | None) -> Path:
    if zone is not None:
        path = thermal / f"thermal_zone{zone}" / "temp"
        if not path.exists():
            raise ConfigError(f"cpu_temperature: no thermal zone {zone} ({path} does not exist)")
        return path
    zones = sorted(thermal.glob("thermal_zone*/temp"), key=lambda p: _zone_number(p.parent))
    if not zones:
        raise ConfigError(
            f"cpu_temperature: this machine reports no temperature ({thermal}/thermal_zone*/temp "
            "does not exist; in a container or VM there is often none)"
        )
    for path in zones:
        kind = (
            (path.parent / "type").read_text().strip().lower()
            if (path.parent / "type").exists()
            else ""
        )
        if "cpu" in kind or "x86_pkg" in kind or "soc" in kind:
            return path
    return zones[0]


def _zone_number(path: Path) -> int:
    digits = path.name.removeprefix("thermal_zone")
    return int(digits) if digits.isdigit() else 1 << 30


class LoadSource(PolledSource):
    """The load average over 1, 5 and 15 minutes, from ``/proc/loadavg``, as a list of floats."""

    kind = "load"
    keys = ("every", "root")

    def __init__(self, impulse: str, *, every: float | str = 5.0, root: str | Path = "/") -> None:
        super().__init__(impulse, every=every)
        self.path = Path(root) / "proc/loadavg"

    def read(self) -> list[float]:
        return [float(part) for part in self.path.read_text().split()[:3]]


class MemorySource(PolledSource):
    """Memory in bytes from ``/proc/meminfo``: ``{"total": ..., "available": ...}``."""

    kind = "memory"
    keys = ("every", "root")

    def __init__(self, impulse: str, *, every: float | str = 5.0, root: str | Path = "/") -> None:
        super().__init__(impulse, every=every)
        self.path = Path(root) / "proc/meminfo"

    def read(self) -> dict[str, int]:
        found: dict[str, int] = {}
        for line in self.path.read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in ("MemTotal", "MemAvailable"):
                found["total" if key == "MemTotal" else "available"] = int(rest.split()[0]) * 1024
        if "total" not in found:
            raise ValueError(f"{self.path} has no MemTotal line")
        return found


class FileSource(PolledSource):
    """The text of a file (a 1-wire sensor, a value another program writes), stripped."""

    kind = "file"
    keys = ("every", "path")

    def __init__(self, impulse: str, *, path: str | Path, every: float | str = 5.0) -> None:
        super().__init__(impulse, every=every)
        self.path = Path(path)

    def read(self) -> str:
        return self.path.read_text(errors="replace").strip()


class CommandSource(PolledSource):
    """What a command prints (stripped), run every ``every``; a failing run is skipped."""

    kind = "command"
    keys = ("every", "command", "timeout")

    def __init__(
        self,
        impulse: str,
        *,
        command: str | list[str],
        every: float | str = 5.0,
        timeout: float | str = 10.0,
    ) -> None:
        super().__init__(impulse, every=every)
        self.command = shlex.split(command) if isinstance(command, str) else list(command)
        if not self.command:
            raise ConfigError("command source: command is empty")
        self.timeout = parse_duration(timeout, "timeout")

    async def take(self) -> str:
        with anyio.fail_after(self.timeout):
            done = await anyio.run_process(self.command, check=False)
        if done.returncode != 0:
            raise ValueError(f"{self.command[0]} exited with {done.returncode}")
        return bytes(done.stdout).decode(errors="replace").strip()


# ---------------------------------------------------------------------------------------------
# GPIO


class GpioSource:
    """A digital input (a button, a motion sensor) through gpiozero: one impulse per edge.

    The reading is ``{"pin": PIN, "active": True}`` when the input becomes active (a button
    pressed) and ``False`` when it becomes inactive; ``edges`` keeps only ``"active"`` or
    ``"inactive"`` ones. gpiozero calls back in a thread of its own; each edge is handed over to
    the event loop in order. With ``GPIOZERO_PIN_FACTORY=mock`` it runs without hardware.
    """

    kind: ClassVar[str] = "gpio"
    keys: ClassVar[tuple[str, ...]] = ("pin", "pull_up", "bounce", "edges")

    def __init__(
        self,
        impulse: str,
        *,
        pin: int | str,
        pull_up: bool = False,
        bounce: float | str | None = None,
        edges: str = "both",
    ) -> None:
        if importlib.util.find_spec("gpiozero") is None:
            raise ConfigError(
                f"gpio source on pin {pin}: gpiozero is not installed; install it with: "
                "pip install 'ambrosia-edge[gpio]' (or, on Raspberry Pi OS: apt install "
                "python3-gpiozero, in a venv made with --system-site-packages)"
            )
        if edges not in ("both", "active", "inactive"):
            raise ConfigError(f"gpio source: edges must be both, active or inactive, got {edges!r}")
        self.impulse = impulse
        self.pin = pin
        self.pull_up = pull_up
        self.bounce = None if bounce is None else parse_duration(bounce, "bounce")
        self.edges = edges

    @classmethod
    def from_config(cls, table: Mapping[str, Any]) -> GpioSource:
        impulse, options = _take(table, cls.keys)
        if "pin" not in options:
            raise ConfigError('[[sources]] of kind "gpio" needs a pin, for example: pin = 17')
        return cls(impulse, **options)

    async def run(
        self, feed: ImpulseFeed, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        try:
            from gpiozero import DigitalInputDevice  # type: ignore[import-untyped,import-not-found,unused-ignore]
        except ImportError as exc:
            raise ConfigError(
                f"gpio source: gpiozero is not installed ({exc}); install it with: "
                "pip install 'ambrosia-edge[gpio]'"
            ) from exc
        token = anyio.lowlevel.current_token()
        loop_thread = threading.get_ident()
        stopped = False
        pin, impulse = self.pin, self.impulse

        def deliver(active: bool) -> None:
            if not stopped:  # an edge after we stopped is not taken
                feed.send(impulse, {"pin": pin, "active": active})

        def edge(active: bool) -> Callable[[], None]:
            def callback() -> None:
                if threading.get_ident() == loop_thread:
                    deliver(active)
                    return
                # RuntimeError: the event loop is gone, and nobody wants more edges
                with contextlib.suppress(RuntimeError):
                    anyio.from_thread.run_sync(deliver, active, token=token)

            return callback

        device = DigitalInputDevice(pin, pull_up=self.pull_up, bounce_time=self.bounce)
        try:
            if self.edges in ("both", "active"):
                device.when_activated = edge(True)
            if self.edges in ("both", "inactive"):
                device.when_deactivated = edge(False)
            task_status.started()
            await anyio.sleep_forever()
        finally:
            stopped = True
            device.close()

    def __repr__(self) -> str:
        return f"<gpio source on pin {self.pin} feeding {self.impulse}>"
