"""The examples in examples/, run the way their README says, each with one process SIGKILLed.

Every immortal runs in a child process through ``python -m ambrosia_edge run``, from a
temporary directory: started from the repository root, the checkout's ambrosia_edge/ would
shadow the installed package, whose storage/ and transports/ subpackages live elsewhere in the
source tree. Progress is read from the children's output, with deadlines, never with sleeps.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import pytest
from support import REPO, free_port, wait_for

from ambrosia_edge.config import Settings
from ambrosia_edge.loader import load_class
from ambrosia_edge.runtime import Runtime

EXAMPLES = REPO / "examples"
DEADLINE = 90.0


class Proc:
    """One immortal of an example, with every run's output kept in its own file."""

    def __init__(
        self,
        work: Path,
        target: str,
        name: str,
        *,
        port: int | None = None,
        peers: dict[str, int] | None = None,
        env: dict[str, str] | None = None,
        extra: tuple[str, ...] = (),
        stdin: bool = False,
    ) -> None:
        self.work = work
        self.name = name
        self.args = [sys.executable, "-m", "ambrosia_edge", "run", str(EXAMPLES / target)]
        self.args += ["--name", name, "--log", f"./logs/{name}"]
        if port is not None:
            self.args += ["--listen", f"127.0.0.1:{port}"]
        for peer, peer_port in (peers or {}).items():
            self.args += ["--peer", f"{peer}=127.0.0.1:{peer_port}"]
        self.args += list(extra)
        self.env = dict(os.environ, **(env or {}))
        self.stdin = stdin
        self.proc: subprocess.Popen[bytes] | None = None
        self.runs = 0

    @property
    def log(self) -> Path:
        return self.work / "logs" / self.name

    def start(self) -> None:
        with open(self.work / f"{self.name}.{self.runs}.out", "wb") as out:
            self.proc = subprocess.Popen(
                self.args,
                cwd=self.work,
                env=self.env,
                stdin=subprocess.PIPE if self.stdin else subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.runs += 1

    def run_output(self, run: int = -1) -> str:
        index = self.runs + run if run < 0 else run
        return (self.work / f"{self.name}.{index}.out").read_text(errors="replace")

    def output(self) -> str:
        return "".join(self.run_output(i) for i in range(self.runs))

    def lines(self, prefix: str, run: int | None = None) -> list[str]:
        text = self.output() if run is None else self.run_output(run)
        return [line for line in text.splitlines() if line.startswith(prefix)]

    def write(self, text: str) -> None:
        assert self.proc is not None
        pipe: IO[bytes] | None = self.proc.stdin
        assert pipe is not None
        pipe.write(text.encode())
        pipe.flush()

    def close_stdin(self) -> None:
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.close()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
        self._close()

    def stop(self) -> int:
        """SIGTERM, as Ctrl-C would; the exit code once it is gone."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=30)
        self._close()
        return code

    def _close(self) -> None:
        if self.proc is not None and self.proc.stdin is not None:
            self.proc.stdin.close()
        self.proc = None


def wait_output(
    procs: list[Proc], proc: Proc, condition: Callable[[str], object], what: str
) -> None:
    """Wait until ``condition(output of proc's current run)``; fail early if a child died."""

    def check() -> object:
        for p in procs:
            if p.proc is not None and p.proc.poll() is not None:
                raise AssertionError(f"{p.name} exited with {p.proc.returncode}:\n{p.output()}")
        return condition(proc.run_output())

    wait_for(check, DEADLINE, what, lambda: "\n".join(p.output() for p in procs))


def shows(text: str) -> Callable[[str], bool]:
    return lambda out: text in out


@pytest.fixture
def work(tmp_path: Path) -> Path:
    assert not (tmp_path / "ambrosia_edge").exists()
    return tmp_path


def recovered(target: str, name: str, log: Path) -> Any:
    """An immortal rebuilt from its log alone, read-only (its process has stopped)."""
    cls = load_class(f"{EXAMPLES / target}")
    runtime = Runtime(cls, Settings(target=target, name=name, log=str(log)))
    runtime.recover(read_only=True)
    return runtime.immortal


def test_counter_client_killed_mid_run(work: Path) -> None:
    calls = 2000
    ps, pc = free_port(), free_port()
    env = {"COUNTER_CALLS": str(calls)}
    server = Proc(work, "counter.py:Counter", "server", port=ps, peers={"client": pc})
    client = Proc(work, "counter.py:Client", "client", port=pc, peers={"server": ps}, env=env)
    procs = [server, client]
    progress = [f"client: {k} calls, last reply {k}" for k in range(100, calls + 1, 100)]
    done = f"client: done, the replies were exactly 1..{calls}"
    try:
        server.start()
        client.start()
        wait_output(procs, client, shows(progress[2]), "300 calls")
        client.kill()
        first = client.lines("client:", run=0)
        assert first == progress[: len(first)] and done not in first
        assert len(first) < len(progress), "the client finished before it could be killed"
        client.start()
        wait_output(procs, client, shows(done), "the client to finish")
        # the replay prints what the first run printed, then the live calls carry on
        assert client.lines("client:", run=1) == [*progress, done]
        assert server.stop() == 0
        assert client.stop() == 0
    finally:
        for p in procs:
            p.kill()
    assert recovered("counter.py:Counter", "server", server.log).count == calls


def test_forwarder_killed_mid_run_replays_the_same_stamps(work: Path) -> None:
    messages = 400
    ps, pf = free_port(), free_port()
    env = {"FORWARDER_MESSAGES": str(messages)}
    sink = Proc(work, "forwarder.py:Sink", "sink", port=ps, peers={"forwarder": pf})
    forwarder = Proc(
        work, "forwarder.py:Forwarder", "forwarder", port=pf, peers={"sink": ps}, env=env
    )
    procs = [sink, forwarder]
    verdict = (
        f"sink: {messages} messages, each received once and in order: True; the forwarder's "
        "stamps are the ones received: True"
    )
    try:
        sink.start()
        forwarder.start()
        wait_output(procs, sink, shows("sink: message 60 "), "60 messages")
        forwarder.kill()
        forwarder.start()
        wait_output(procs, sink, shows(verdict), "the sink's verdict")
        assert sink.stop() == 0
        assert forwarder.stop() == 0
    finally:
        for p in procs:
            p.kill()
    line = re.compile(r"^(sink|forwarder): message (\d+) stamped (\d+\.\d+)$")
    received = [line.match(text) for text in sink.lines("sink: message")]
    assert all(received)
    # the sink never restarted, so each line is one execution of put: each message came once
    assert [int(m[2]) for m in received if m] == list(range(1, messages + 1))
    assert sink.lines("sink:")[-1] == verdict
    stamps = {int(m[2]): m[3] for m in received if m}
    runs = []
    for run in range(forwarder.runs):
        matches = [line.match(text) for text in forwarder.lines("forwarder: message", run=run)]
        runs.append({int(m[2]): m[3] for m in matches if m})
        assert all(m is not None for m in matches)
    before, after = runs
    # it printed message 59 before it forked the step that sent message 60
    assert 59 <= len(before) < messages, "the forwarder finished before it could be killed"
    # the restarted forwarder replayed every message it had forwarded, with the logged stamps
    assert set(after) == set(range(1, messages + 1))
    assert all(after[n] == stamps[n] for n in after)
    assert all(before[n] == stamps[n] for n in before)


def test_recorder_killed_keeps_every_logged_line(work: Path) -> None:
    recorder = Proc(work, "recorder.py:Recorder", "recorder", stdin=True)
    procs = [recorder]
    words = ["alpha", "beta", "gamma"]

    def recorded(lines: list[str]) -> str:
        return f"recorder: {len(lines)} lines: {lines}"

    try:
        recorder.start()
        wait_output(procs, recorder, shows("ready with 0 lines"), "the recorder")
        for i, word in enumerate(words, 1):
            recorder.write(f"{word}\n")
            expected = recorded(words[:i])
            wait_output(procs, recorder, shows(expected), f"line {i}")
        recorder.kill()
        recorder.start()
        wait_output(procs, recorder, shows("ready with 3 lines"), "the recovery")
        recorder.write("delta\n")
        everything = [*words, "delta"]
        wait_output(procs, recorder, shows(recorded(everything)), "the 4th line")
        recorder.close_stdin()
        wait_output(procs, recorder, shows("end of input"), "the end of input")
        assert recorder.lines("recorder:", run=1) == [
            recorded(words[:1]),
            recorded(words[:2]),
            recorded(words),
            "recorder: ready with 3 lines; type a line",
            recorded(everything),
            "recorder: end of input; still running (Ctrl-C stops it)",
        ]
        assert recorder.stop() == 0
    finally:
        recorder.kill()


def test_recorder_stops_on_sigterm_while_waiting_for_input(work: Path) -> None:
    """The stdin reader must not keep the process alive once the immortal has stopped."""
    recorder = Proc(work, "recorder.py:Recorder", "recorder", stdin=True)
    try:
        recorder.start()
        # "ready" is printed a moment before the runtime installs its SIGTERM handler; once a
        # line has gone through the log, the handler is in place
        recorder.write("one\n")
        wait_output([recorder], recorder, shows("1 lines: ['one']"), "the line")
        assert recorder.stop() == 0
    finally:
        recorder.kill()


def test_producer_killed_mid_run_resumes_from_a_checkpoint(work: Path) -> None:
    numbers = 300_000
    pc, pp = free_port(), free_port()
    env = {"PRODUCER_NUMBERS": str(numbers)}
    small = ("--checkpoint-bytes", "4KiB")
    consumer = Proc(work, "producer.py:Consumer", "consumer", port=pc, peers={"producer": pp})
    producer = Proc(
        work,
        "producer.py:Producer",
        "producer",
        port=pp,
        peers={"consumer": pc},
        env=env,
        extra=small,
    )
    procs = [consumer, producer]
    progress = [
        f"consumer: {k} numbers, sum {k * (k + 1) // 2}" for k in range(10_000, numbers + 1, 10_000)
    ]
    done = "consumer: done; each number once and in order: True"
    try:
        consumer.start()
        producer.start()
        wait_output(procs, consumer, shows(progress[9]), "100,000 numbers")
        # steps run back to back now, so a slow disk may still be storing the second checkpoint
        wait_output(procs, producer, shows("checkpoint 2 written"), "a second checkpoint")
        producer.kill()
        assert done not in consumer.output()
        producer.start()
        wait_output(procs, consumer, shows(done), "the consumer to finish")
        assert consumer.lines("consumer:") == [*progress, done]
        # thanks to the continuation, the restart did not replay from the first step
        resumed = re.search(r"recovered from checkpoint (\d+) \+ (\d+) pages", producer.output())
        assert resumed is not None, producer.output()
        assert int(resumed[1]) >= 2
        assert consumer.stop() == 0
        assert producer.stop() == 0
    finally:
        for p in procs:
            p.kill()
    state = recovered("producer.py:Consumer", "consumer", consumer.log)
    assert (state.count, state.total, state.in_order) == (
        numbers,
        numbers * (numbers + 1) // 2,
        True,
    )


def test_readme_commands_name_real_classes() -> None:
    readme = (EXAMPLES / "README.md").read_text()
    targets = re.findall(r"ambrosia-edge run (\w+\.py):(\w+)", readme)
    assert {f for f, _ in targets} == {"counter.py", "forwarder.py", "recorder.py", "producer.py"}
    for file, cls in targets:
        assert f"\nclass {cls}(Immortal):" in (EXAMPLES / file).read_text(), (file, cls)


def test_raspberry_pi_sensor_hub_counts_each_reading_once_across_a_kill(work: Path) -> None:
    """examples/raspberry_pi: the hub as its hub.toml declares it (sensors from a fake sysfs
    and gpiozero's mock pins, read every 50 ms instead of 5 s), the dashboard as the README
    starts it; the hub is SIGKILLed between two summaries."""
    zone = work / "fake/sys/class/thermal/thermal_zone0"
    zone.mkdir(parents=True)
    (zone / "type").write_text("cpu-thermal\n")
    (zone / "temp").write_text("48500\n")
    config = (EXAMPLES / "raspberry_pi/hub.toml").read_text()
    config = config.replace('every = "5s"', f'every = "50ms"\nroot = "{work / "fake"}"')
    config = config.replace('log = "/var/lib/ambrosia-edge/hub"\n', "")
    assert 'every = "50ms"' in config
    (work / "hub.toml").write_text(config)
    ph, pd = free_port(), free_port()
    dashboard = Proc(
        work, "raspberry_pi/sensor_hub.py:Dashboard", "dashboard", port=pd, peers={"hub": ph}
    )
    hub = Proc(
        work,
        "raspberry_pi/sensor_hub.py:Hub",
        "hub",
        port=ph,
        peers={"dashboard": pd},
        env={"GPIOZERO_PIN_FACTORY": "mock"},
        extra=("--config", str(work / "hub.toml")),
    )
    procs = [dashboard, hub]
    summary = "hub: {} readings, 48.5-48.5 °C, mean 48.5 °C, 0 presses"
    try:
        dashboard.start()
        hub.start()
        wait_output(procs, dashboard, shows(summary.format(12)), "the first summary")
        hub.kill()
        hub.start()
        wait_output(procs, dashboard, shows(summary.format(36)), "the third summary")
    finally:
        for p in procs:
            p.kill()
    # the dashboard never restarted: each line is one execution, and the hub's count went on
    # from its log, with no summary lost or repeated across the kill
    counts = [int(line.split()[1]) for line in dashboard.lines("hub: ") if "readings" in line]
    assert counts[:3] == [12, 24, 36]
    assert recovered("raspberry_pi/sensor_hub.py:Hub", "hub", hub.log).readings >= 36


def test_mqtt_bridge_counts_each_reading_once_and_each_summary_is_seen_once(work: Path) -> None:
    """examples/mqtt_bridge as its README runs it, with a real mosquitto: the immortal is
    SIGKILLed while the sensors publish; the dashboard (watch.py, which drops repeats by id)
    sees each room's count go 1, 2, ... 220 exactly, and the log holds 220 readings a room."""
    pytest.importorskip("paho.mqtt.client")
    from mqttbroker import running_broker

    brokers = running_broker(work)
    broker = next(brokers)
    here = EXAMPLES / "mqtt_bridge"
    rooms = Proc(
        work,
        "mqtt_bridge/rooms.py:Rooms",
        "rooms",
        extra=("--mqtt", broker.url, "--subscribe", "home/+/temperature=reading:json"),
    )
    watch_out = work / "watch.out"
    with open(watch_out, "wb") as out:
        watch = subprocess.Popen(
            [sys.executable, str(here / "watch.py"), broker.url],
            cwd=work,
            stdout=out,
            stderr=subprocess.STDOUT,
        )

    def sensors(first: int, count: int) -> subprocess.Popen[bytes]:
        args = [sys.executable, str(here / "sensors.py"), broker.url, "--rooms", "kitchen,bedroom"]
        args += ["--first", str(first), "--count", str(count)]
        return subprocess.Popen(args, cwd=work, stdout=subprocess.DEVNULL)

    def watched(text: str) -> Callable[[], bool]:
        return lambda: text in watch_out.read_text()

    try:
        rooms.start()
        wait_output([rooms], rooms, shows("connected to MQTT broker"), "the subscription")
        wait_for(watched("subscribed"), DEADLINE, "the dashboard", watch_out.read_text)
        assert sensors(1, 20).wait(timeout=60) == 0
        wait_for(watched("bedroom: 20 readings, mean 21.0"), DEADLINE, "20", watch_out.read_text)
        more = sensors(21, 200)
        wait_for(watched("kitchen: 60 readings"), DEADLINE, "60", watch_out.read_text)
        rooms.kill()
        rooms.start()
        assert more.wait(timeout=60) == 0
        for room in ("kitchen", "bedroom"):
            wait_for(
                watched(f"{room}: 220 readings, mean 21.0, min 20.0, max 22.0"),
                DEADLINE,
                f"the {room}'s last summary",
                lambda: watch_out.read_text() + rooms.output(),
            )
    finally:
        rooms.kill()
        watch.kill()
        watch.wait()
        next(brokers, None)
    lines = watch_out.read_text().splitlines()
    for room in ("kitchen", "bedroom"):
        counts = [int(line.split()[1]) for line in lines if line.startswith(f"{room}: ")]
        assert counts == list(range(1, 221)), counts
    state = recovered("mqtt_bridge/rooms.py:Rooms", "rooms", rooms.log).rooms
    assert {room: s["count"] for room, s in state.items()} == {"kitchen": 220, "bedroom": 220}
