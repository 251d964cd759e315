"""``python -m benchmarks --mqtt``: MQTT in, an immortal against the same paho client alone.

A local mosquitto holds a backlog of QoS 1 messages (16 bytes, each with a publisher id) for a
persistent session; then either a plain paho client (auto-acknowledging each message as it
arrives) or an ``ambrosia-edge run`` immortal (which logs each as an impulse, fsync on, and
acknowledges it only then) connects on that session and drains it. Both are timed from the
first message to the last, with the same MQTT 5 Receive Maximum, in turns, so a slow minute
of the machine hits both. The ratio is the cost of durability; the target is at least 0.5.
``AMBROSIA_BENCH_MQTT_INFLIGHT`` sets the Receive Maximum of both (default 100, the default of
``--mqtt-inflight``).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .stats import median

APP = Path(__file__).resolve().parent / "mqtt_app.py"
INFLIGHT = int(os.environ.get("AMBROSIA_BENCH_MQTT_INFLIGHT", "100"))  # given to both
PAYLOAD = b"x" * 16


def _mosquitto() -> str:
    found = shutil.which("mosquitto") or (
        "/usr/sbin/mosquitto" if os.path.exists("/usr/sbin/mosquitto") else None
    )
    if found is None:
        raise SystemExit("the MQTT benchmark needs mosquitto (apt-get install mosquitto)")
    return found


def _mosquitto_version() -> str:
    """The broker's version: whether it keeps to the Receive Maximum changes the result
    (mosquitto before 2.0.13 does not; see docs/mqtt.md)."""
    out = subprocess.run([_mosquitto(), "-h"], capture_output=True, text=True, check=False)
    first = (out.stdout or out.stderr).splitlines()[:1]
    return first[0].removeprefix("mosquitto version ").strip() if first else "unknown"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(condition: Callable[[], Any], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"MQTT benchmark: timed out waiting for {what}")
        time.sleep(0.01)


class _Broker:
    def __init__(self, workdir: Path) -> None:
        self.port = _free_port()
        conf = workdir / "mosquitto.conf"
        lines = [f"listener {self.port} 127.0.0.1", "allow_anonymous true"]
        lines += ["max_queued_messages 0", "persistence false"]
        if os.geteuid() == 0:
            lines.append("user root")
        conf.write_text("\n".join(lines) + "\n")
        self.proc = subprocess.Popen(
            [_mosquitto(), "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )

        def listening() -> bool:
            with socket.socket() as s:
                return s.connect_ex(("127.0.0.1", self.port)) == 0

        _wait(listening, 10, "mosquitto to listen")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=30)


def _client(port: int, client_id: str, *, session: bool = True, inflight: int = 20) -> Any:
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    c = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv5)
    c.max_inflight_messages_set(inflight)
    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    props.SessionExpiryInterval = 3600 if session else 0
    props.ReceiveMaximum = INFLIGHT
    c.connect_async("127.0.0.1", port, clean_start=False, properties=props)
    return c


def _backlog(port: int, client_id: str, messages: int) -> None:
    """Open ``client_id``'s session, subscribed to bench/#, then queue ``messages`` for it."""
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    session = _client(port, client_id)
    subscribed = threading.Event()
    session.on_connect = lambda c, *_: c.subscribe("bench/#", 1)
    session.on_subscribe = lambda *_: subscribed.set()
    session.loop_start()
    _wait(subscribed.is_set, 10, "the subscription")
    session.disconnect()
    session.loop_stop()
    publisher = _client(port, f"{client_id}-publisher", session=False, inflight=1000)
    publisher.loop_start()
    _wait(publisher.is_connected, 10, "the publisher")
    infos = []
    for n in range(messages):
        props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        props.UserProperty = ("message-id", f"{client_id}-{n}")
        infos.append(publisher.publish(f"bench/{n % 4}", PAYLOAD, 1, False, props))
    _wait(lambda: all(i.is_published() for i in infos), 120, "the backlog to be queued")
    publisher.disconnect()
    publisher.loop_stop()


def _paho_alone(port: int, client_id: str, messages: int) -> float:
    """Messages per second of a paho client draining the backlog, acknowledging on receipt."""
    stamps: list[float] = []
    c = _client(port, client_id)

    def on_message(*_: Any) -> None:
        stamps.append(time.monotonic())

    c.on_message = on_message
    c.loop_start()
    try:
        _wait(lambda: len(stamps) >= messages, 120, "paho to drain the backlog")
    finally:
        c.disconnect()
        c.loop_stop()
    return (messages - 1) / (stamps[messages - 1] - stamps[0])


def _immortal(port: int, name: str, messages: int, workdir: Path) -> float:
    """Impulses per second of an immortal draining the backlog (fsync on)."""
    out = workdir / f"{name}.out"
    args = [sys.executable, "-m", "ambrosia_edge", "run", f"{APP}:MqttSink", "--name", name]
    args += ["--log", str(workdir / name), "--mqtt", f"mqtt://127.0.0.1:{port}"]
    args += ["--subscribe", "bench/#=reading", "--mqtt-inflight", str(INFLIGHT)]
    env = dict(os.environ, AMBROSIA_BENCH_MQTT_MESSAGES=str(messages))
    with open(out, "wb") as f:
        proc = subprocess.Popen(args, cwd=workdir, env=env, stdout=f, stderr=subprocess.STDOUT)
    try:

        def stamp(word: str) -> float | None:
            for line in out.read_text(errors="replace").splitlines():
                if line.startswith(f"{word} "):
                    return float(line.split()[1])
            if proc.poll() is not None:
                raise SystemExit(f"the immortal exited:\n{out.read_text(errors='replace')}")
            return None

        _wait(lambda: stamp("last") is not None, 180, "the immortal to drain the backlog")
        first, last = stamp("first"), stamp("last")
        assert first is not None and last is not None
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    return (messages - 1) / (last - first)


def run(messages: int, reps: int, workdir: Path, log: Callable[[str], None]) -> dict[str, Any]:
    """Both sides ``reps`` times, in turns; every sample and the medians."""
    broker = _Broker(workdir)
    samples: dict[str, list[float]] = {"paho": [], "immortal": []}
    try:
        for rep in range(reps):
            order = ["paho", "immortal"] if rep % 2 == 0 else ["immortal", "paho"]
            for side in order:
                client_id = f"bench-{side}-{rep}"
                if side == "immortal":
                    client_id = f"ambrosia-edge-{client_id}"
                _backlog(broker.port, client_id, messages)
                if side == "paho":
                    rate = _paho_alone(broker.port, client_id, messages)
                else:
                    rate = _immortal(broker.port, f"bench-{side}-{rep}", messages, workdir)
                samples[side].append(rate)
                log(f"  MQTT in, {side:<8} {rate:>10,.0f} messages/s ({messages} QoS 1)")
    finally:
        broker.stop()
    paho_rate, immortal_rate = median(samples["paho"]), median(samples["immortal"])
    return {
        "messages": messages,
        "reps": reps,
        "mosquitto": _mosquitto_version(),
        "inflight": INFLIGHT,
        "samples": samples,
        "paho_per_s": paho_rate,
        "immortal_per_s": immortal_rate,
        "ratio": immortal_rate / paho_rate,
    }


def markdown(r: dict[str, Any]) -> str:
    return (
        "## MQTT in: the cost of durability\n\n"
        f"Draining {r['messages']:,} queued QoS 1 messages (16 B, with publisher ids) from a "
        f"local mosquitto {r.get('mosquitto', '')}, Receive Maximum {r['inflight']}, "
        f"median of {r['reps']}:\n\n"
        "| receiver | messages/s |\n|---|---:|\n"
        f"| paho-mqtt client alone (acknowledges on receipt) | {r['paho_per_s']:,.0f} |\n"
        f"| immortal (logged, fsync, then acknowledged) | {r['immortal_per_s']:,.0f} |\n"
        f"| ratio (target ≥ 0.5) | {r['ratio']:.2f} |\n"
    )
