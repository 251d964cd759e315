"""A real mosquitto for the MQTT tests, and the immortals they run through the real CLI.

The broker is started on a free 127.0.0.1 port with the settings DESIGN §13 found necessary
(``max_queued_messages 0``: the default drops messages silently past 1,000), with persistence
on, and stopped by its PID. Without mosquitto the tests skip, except in CI, where they fail.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support import Child, free_port, wait_for

from ambrosia_edge.testing.progress import STATUS_ENV

paho = pytest.importorskip("paho.mqtt.client")
from paho.mqtt.enums import CallbackAPIVersion  # noqa: E402
from paho.mqtt.packettypes import PacketTypes  # noqa: E402
from paho.mqtt.properties import Properties  # noqa: E402

SINK = Path(__file__).resolve().parent / "apps" / "mqtt_sink.py"
MOSQUITTO = shutil.which("mosquitto") or (
    "/usr/sbin/mosquitto" if os.path.exists("/usr/sbin/mosquitto") else None
)


class Broker:
    """One mosquitto on 127.0.0.1, restartable with its persistence kept."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        directory.mkdir(exist_ok=True)
        self.port = free_port()
        self.conf = directory / "mosquitto.conf"
        lines = [
            f"listener {self.port} 127.0.0.1",
            "allow_anonymous true",
            "max_queued_messages 0",
            "queue_qos0_messages true",  # for a persistent subscriber, as for QoS 1 and 2
            "persistence true",
            f"persistence_location {directory}/",
            "autosave_interval 1",
            f"log_dest file {directory}/mosquitto.log",
        ]
        if os.geteuid() == 0:
            lines.append("user root")
        self.conf.write_text("\n".join(lines) + "\n")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> None:
        assert MOSQUITTO is not None
        self.proc = subprocess.Popen(
            [MOSQUITTO, "-c", str(self.conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        wait_for(self._listening, 10, "mosquitto to listen", self._log)

    def _listening(self) -> bool:
        import socket

        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"mosquitto exited: {self.proc.stderr.read()!r}{self._log()}")  # type: ignore[union-attr]
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", self.port)) == 0

    def _log(self) -> str:
        path = self.dir / "mosquitto.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        """SIGTERM: mosquitto saves its persistence file (sessions, queued messages) on exit."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=30)
        if self.proc is not None and self.proc.stderr is not None:
            self.proc.stderr.close()
        self.proc = None


def running_broker(tmp_path: Path) -> Iterator[Broker]:
    """The body of each test module's ``broker`` fixture: a started mosquitto, stopped after."""
    if MOSQUITTO is None:
        if os.environ.get("CI"):
            pytest.fail("mosquitto is not installed (.ci/run installs the Debian package)")
        pytest.skip("mosquitto is not installed (apt-get install mosquitto)")
    b = Broker(tmp_path / "broker")
    b.start()
    try:
        yield b
    finally:
        b.stop()


class MqttChild(Child):
    """An immortal of tests/apps/mqtt_sink.py through the real CLI, with MQTT flags."""

    def __init__(
        self,
        tmp_path: Path,
        broker: Broker,
        extra: list[str],
        *,
        cls: str = "Sink",
        name: str = "sink",
        env: dict[str, str] | None = None,
    ) -> None:
        status = tmp_path / "status"
        status.mkdir(exist_ok=True)
        log = tmp_path / ("log" if name == "sink" else f"{name}-log")
        super().__init__(f"{SINK}:{cls}", name, log, free_port(), {}, status, env)
        self.extra = ["--mqtt", broker.url, *extra]

    def start(self) -> None:
        args = [sys.executable, "-m", "ambrosia_edge", "run", self.target, "--name", self.name]
        args += ["--log", str(self.log), *self.extra]
        env = dict(os.environ, **{STATUS_ENV: str(self.status_dir)}, **self.env)
        (self.status_dir / f"{self.name}.json").unlink(missing_ok=True)
        with open(self.status_dir / f"{self.name}.{self.starts}.log", "wb") as out:
            self.proc = subprocess.Popen(
                args, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=self.status_dir
            )
        self.starts += 1


def client(broker: Broker, client_id: str = "") -> Any:
    c = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv5)
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 3600
    c.connect("127.0.0.1", broker.port, clean_start=False, properties=props)
    c.loop_start()
    return c


def make_session(broker: Broker, filters: list[str], client_id: str = "ambrosia-edge-sink") -> None:
    """Open the immortal's persistent session before anything is published, as a deployment
    whose immortal has run once has: messages published from then on are queued for it."""
    c = client(broker, client_id)
    info = c.subscribe([(f, 1) for f in filters])
    wait_for(lambda: c.is_connected() and info, 10, "the subscription")
    c.disconnect()
    c.loop_stop()


def publish_all(c: Any, items: list[tuple[str, bytes, str | None]]) -> None:
    """Publish at QoS 1 and wait until the broker has acknowledged every message."""
    infos = []
    for topic, payload, message_id in items:
        props = None
        if message_id is not None:
            props = Properties(PacketTypes.PUBLISH)
            props.UserProperty = ("message-id", message_id)
        infos.append(c.publish(topic, payload, qos=1, properties=props))
    wait_for(lambda: all(i.is_published() for i in infos), 60, "the broker to take every message")
