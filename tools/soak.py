"""``python -m tools.soak``: SIGKILL the immortals of four scenarios, again and again, and check
that the results are exact.

    python -m tools.soak --kills 1000          # until 1,000 SIGKILLs, then finish and check
    python -m tools.soak --minutes 30
    python -m tools.soak --kills 40 --seed 3   # the suite's short run (tests/test_soak.py)

The scenarios run side by side, each in rounds: a round starts its immortals on fresh logs
through the real CLI (``ambrosia-edge run``), kills some of them again and again while the
work goes on, and once the work is done checks every count and every order exactly; then the
next round begins. The scenarios:

- ``chain``: a sender forks numbered messages to a relay, which forwards each to a sink;
- ``fan-in``: three senders fork numbered messages to one sink, which keeps each one's count
  and order;
- ``counter``: a client awaits ``inc()`` on a counter and must see 1, 2, 3... with no gap;
- ``impulses``: an impulse source ticks inside the sensor, which forks its running count to a
  sink; every tick whose receipt said durable must be in the state once, in order (a tick not
  yet logged when the process died is lost, by design: paper §4.2).

The kills: one process at a random moment; every process of the scenario at once; a process
soon after it was spawned (during start-up and recovery); and a process that kills itself at
a failpoint (``ambrosia_edge/failpoints.py``): while a checkpoint is being taken, just after
one is stored, or in the middle of writing a log page. The logs checkpoint every few KiB, so
the outside kills land during checkpoints too. Every process killed is restarted; a process
that exits in any other way than by SIGKILL fails the soak, as does a round that makes no
progress within the deadline. When the budget of kills or minutes is spent, the rounds under
way finish without kills and are checked, and the command prints what it did and exits 0 only
if every check held.
"""

from __future__ import annotations

import argparse
import random
import shutil
import socket
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from support import Child, wait_for  # noqa: E402

APPS = REPO / "tests" / "apps"
SOAKING = APPS / "soaking.py"
COUNTING = APPS / "counting.py"
#: the failpoints a process may be restarted with, and how many passes it may make first
FAILPOINTS = {"chunk-started": 2, "checkpoint-stored": 2, "page-write": 12}
#: how each strike is chosen, by weight: one process at a random moment, every process of the
#: scenario at once, a process soon after it was spawned, a process restarted with a failpoint
STRIKES = {"one": 4.0, "all": 2.0, "start-up": 2.0, "failpoint": 2.0}
#: a round that makes no progress for this long has failed (the machine may be busy)
STALL_S = 180.0
#: once the work is done, how long the state may take to come out exact (status files lag)
SETTLE_S = 60.0


_taken: set[int] = set()
_ports_lock = threading.Lock()


def listen_port() -> int:
    """A free port below the kernel's ephemeral range, one the soak has not used yet.

    A port the kernel handed out (``free_port``) can be given again as the source port of an
    outgoing connection while its immortal is down after a kill, and the restart then finds it
    taken; a thousand restarts make that likely. Ports below the range are never given so.
    """
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    with _ports_lock:
        while True:
            port = random.randrange(10_000, max(low, 10_001))
            if port in _taken:
                continue
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    continue
            _taken.add(port)
            return port


class SoakFailure(AssertionError):
    """A check did not hold: what, in which scenario and round."""


class Tally:
    """The kills of every scenario, by kind; shared by the scenarios' threads."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.kinds: Counter[str] = Counter()
        self.rounds: Counter[str] = Counter()

    def kill(self, kind: str) -> None:
        with self.lock:
            self.kinds[kind] += 1

    @property
    def kills(self) -> int:
        with self.lock:
            return sum(self.kinds.values())


class Aborted(Exception):
    """Another scenario failed: this one stops at once."""


class Scenario:
    """One round: immortals on fresh logs, killed while they work, checked exactly at the end."""

    name = ""
    #: set when any scenario failed, so that the others stop waiting
    failed = threading.Event()

    def __init__(self, directory: Path, size: int, checkpoint_bytes: str) -> None:
        self.directory = directory
        self.status = directory / "status"
        self.status.mkdir(parents=True)
        self.size = size
        self.checkpoint_bytes = checkpoint_bytes
        self.children: dict[str, Child] = {}
        self.ports: dict[str, int] = {}

    def add(self, name: str, target: str, peers: list[str], **env: str) -> Child:
        port = self.ports.setdefault(name, listen_port())
        child = Child(
            target,
            name,
            self.directory / name,
            port,
            {p: self.ports.setdefault(p, listen_port()) for p in peers},
            self.status,
            env,
        )
        child.args += ["--checkpoint-bytes", self.checkpoint_bytes]
        self.children[name] = child
        return child

    def output(self) -> str:
        return "".join(f"--- {c.name}\n{c.output()[-3000:]}" for c in self.children.values())

    def progress(self) -> int:
        """A number that grows while the round's work goes on."""
        raise NotImplementedError

    def done(self) -> bool:
        raise NotImplementedError

    def check(self) -> None:
        """Once done: every count and order exact (raises SoakFailure)."""
        raise NotImplementedError

    def quiesce(self) -> None:
        """Stop the round's outside input, if it has any, before it is checked."""

    def expect(self, condition: Callable[[], Any], what: str) -> Any:
        def check() -> Any:
            if self.failed.is_set():
                raise Aborted
            return condition()

        try:
            return wait_for(check, STALL_S, f"{self.name}: {what}", self.output, poll=0.05)
        except AssertionError as e:
            raise SoakFailure(str(e)) from None

    @staticmethod
    def exact(got: Any, want: Any, what: str) -> None:
        if got != want:
            raise SoakFailure(f"{what}: got {str(got)[:400]}, want {str(want)[:400]}")


def senders(child: Child) -> dict[str, list[int]] | None:
    status = child.status()
    return None if status is None else dict(status["senders"])


def stream(sink: Child, sender: str, count: int, what: str) -> None:
    """``sink`` got 1..count from ``sender``, once each and in order."""
    got = senders(sink)
    entry = (got or {}).get(sender)
    Scenario.exact(entry, [count, count, count * (count + 1) // 2, 0], what)


class Chain(Scenario):
    """sender -> relay -> sink, forks all the way."""

    name = "chain"

    def __init__(self, directory: Path, size: int, checkpoint_bytes: str) -> None:
        super().__init__(directory, size, checkpoint_bytes)
        env = {"AMBROSIA_SOAK_COUNT": str(size)}
        self.add("sender", f"{SOAKING}:Sender", ["relay"], AMBROSIA_SOAK_TO="relay", **env)
        self.add("relay", f"{SOAKING}:Relay", ["sender", "sink"], AMBROSIA_SOAK_TO="sink")
        self.add("sink", f"{SOAKING}:Sink", ["relay"])

    def progress(self) -> int:
        return ((senders(self.children["sink"]) or {}).get("relay") or [0])[0]

    def done(self) -> bool:
        return self.progress() >= self.size

    def check(self) -> None:
        stream(self.children["relay"], "sender", self.size, "the relay's stream from the sender")
        stream(self.children["sink"], "relay", self.size, "the sink's stream from the relay")


class FanIn(Scenario):
    """Three senders fork to one sink."""

    name = "fan-in"
    SENDERS = ("s1", "s2", "s3")

    def __init__(self, directory: Path, size: int, checkpoint_bytes: str) -> None:
        super().__init__(directory, size, checkpoint_bytes)
        for s in self.SENDERS:
            self.add(
                s,
                f"{SOAKING}:Sender",
                ["sink"],
                AMBROSIA_SOAK_TO="sink",
                AMBROSIA_SOAK_COUNT=str(size),
            )
        self.add("sink", f"{SOAKING}:Sink", list(self.SENDERS))

    def progress(self) -> int:
        got = senders(self.children["sink"]) or {}
        return sum((got.get(s) or [0])[0] for s in self.SENDERS)

    def done(self) -> bool:
        return self.progress() >= self.size * len(self.SENDERS)

    def check(self) -> None:
        for s in self.SENDERS:
            stream(self.children["sink"], s, self.size, f"the sink's stream from {s}")


class Counting(Scenario):
    """A client awaits inc() on a counter, ``size`` times."""

    name = "counter"

    def __init__(self, directory: Path, size: int, checkpoint_bytes: str) -> None:
        super().__init__(directory, size, checkpoint_bytes)
        env = {"AMBROSIA_TEST_CALLS": str(size)}
        self.add("server", f"{COUNTING}:Counter", ["client"], **env)
        self.add("client", f"{COUNTING}:Client", ["server"], **env)

    def progress(self) -> int:
        status = self.children["client"].status()
        return 0 if status is None else len(status["seen"])

    def done(self) -> bool:
        status = self.children["client"].status()
        return bool(status and status["done"])

    def check(self) -> None:
        status = self.children["client"].status()
        self.exact(status and status["seen"], list(range(1, self.size + 1)), "the client's replies")
        server = self.expect(self.children["server"].status, "the counter's state")
        self.exact(server["count"], self.size, "the counter's count")


class Impulses(Scenario):
    """A sensor ticks (an impulse source inside it) and forks its count to a sink."""

    name = "impulses"

    def __init__(self, directory: Path, size: int, checkpoint_bytes: str) -> None:
        super().__init__(directory, size, checkpoint_bytes)
        self.journal = directory / "journal"
        self.add(
            "sensor",
            f"{SOAKING}:Sensor",
            ["sink"],
            AMBROSIA_SOAK_TO="sink",
            AMBROSIA_SOAK_TICKS="1",
            AMBROSIA_SOAK_JOURNAL=str(self.journal),
        )
        self.add("sink", f"{SOAKING}:Sink", ["sensor"])

    def progress(self) -> int:
        return ((senders(self.children["sink"]) or {}).get("sensor") or [0])[0]

    def done(self) -> bool:
        return self.progress() >= self.size

    def quiesce(self) -> None:
        # the sensor's next start has no source: nothing comes in while the round is checked
        sensor = self.children["sensor"]
        del sensor.env["AMBROSIA_SOAK_TICKS"]
        sensor.kill()
        sensor.start()

    def check(self) -> None:
        status = self.expect(self.children["sensor"].status, "the sensor's state")
        ticks = [tuple(t) for t in status["ticks"]]
        if len(ticks) != len(set(ticks)):
            raise SoakFailure("impulses: a tick was logged twice")
        durable = set()
        if self.journal.exists():
            for line in self.journal.read_text().splitlines():
                token, n = line.split()
                durable.add((token, int(n)))
        missing = durable - set(ticks)
        if missing:
            raise SoakFailure(f"impulses: durable ticks lost: {sorted(missing)[:5]}")
        runs: dict[str, list[int]] = {}
        for token, n in ticks:
            runs.setdefault(token, []).append(n)
        for token, ns in runs.items():
            # each run's ticks in order from 0; only the tail not yet logged may be lost
            self.exact(ns, list(range(len(ns))), f"impulses: the ticks of run {token}")
        stream(self.children["sink"], "sensor", len(ticks), "the sink's stream from the sensor")


SCENARIOS: dict[str, type[Scenario]] = {s.name: s for s in (Chain, FanIn, Counting, Impulses)}


class Runner:
    """Runs one scenario's rounds in a thread until told to stop killing."""

    def __init__(
        self,
        kind: type[Scenario],
        root: Path,
        rng: random.Random,
        tally: Tally,
        enough: threading.Event,
        size: int,
        checkpoint_bytes: str,
        pause: float,
        strikes: dict[str, float],
        keep: bool,
    ) -> None:
        self.kind = kind
        self.keep = keep
        self.strikes = strikes
        self.root = root
        self.rng = rng
        self.tally = tally
        self.enough = enough
        self.size = size
        self.checkpoint_bytes = checkpoint_bytes
        self.pause = pause
        self.error: BaseException | None = None
        #: the children whose running process carries a failpoint
        self.armed: set[str] = set()

    def run(self) -> None:
        try:
            number = 0
            while not self.enough.is_set():
                number += 1
                scenario = self.kind(
                    self.root / f"{self.kind.name}-{number}", self.size, self.checkpoint_bytes
                )
                try:
                    self.round(scenario)
                finally:
                    for child in scenario.children.values():
                        child.kill()
                with self.tally.lock:
                    self.tally.rounds[self.kind.name] += 1
                if not self.keep:
                    shutil.rmtree(scenario.directory, ignore_errors=True)
        except Aborted:
            pass
        except BaseException as e:  # reported by the main thread
            self.error = e
            Scenario.failed.set()
            self.enough.set()

    def round(self, scenario: Scenario) -> None:
        self.armed.clear()
        children = list(scenario.children.values())
        for child in self.rng.sample(children, len(children)):
            child.start()
        while not scenario.done():
            self.reap(scenario)
            if self.enough.is_set():
                break
            before = scenario.progress()
            self.strike(scenario)
            if self.rng.random() < 0.5:
                # let the work move on: a round that only recovers proves little
                def moved(before: int = before) -> bool:
                    return scenario.progress() > before

                scenario.expect(self.reaping(scenario, moved), f"progress past {before}")
            time.sleep(self.rng.uniform(0, self.pause))
        self.wait_done(scenario)
        # a failpoint not yet reached must not fire while the round is checked and stopped
        for child in children:
            if child.name in self.armed:
                self.restart(child, "random moment")
        scenario.quiesce()
        self.wait_done(scenario)
        # the state is published every 20 ms: the checks are retried until it is exact
        deadline = time.monotonic() + SETTLE_S
        while True:
            try:
                scenario.check()
                break
            except SoakFailure:
                if time.monotonic() > deadline or Scenario.failed.is_set():
                    raise
                self.reap(scenario)
                time.sleep(0.1)
        for child in children:
            scenario.expect(child.status, f"{child.name} to be up before it stops")
            code = child.stop()
            if code != 0:
                raise SoakFailure(f"{scenario.name}: {child.name} stopped with exit code {code}")

    def wait_done(self, scenario: Scenario) -> None:
        scenario.expect(self.reaping(scenario, scenario.done), "the round's work")

    def reaping(self, scenario: Scenario, condition: Callable[[], bool]) -> Callable[[], bool]:
        """``condition``, restarting whatever died before each look."""

        def check() -> bool:
            self.reap(scenario)
            return condition()

        return check

    def reap(self, scenario: Scenario) -> None:
        """Restart whatever died; only a SIGKILL (a failpoint's) is an acceptable death."""
        for child in scenario.children.values():
            if child.proc is not None and child.proc.poll() is not None:
                self.restart(child, "")

    def restart(self, child: Child, kind: str, failpoint: str = "") -> None:
        """Kill ``child`` (counted as ``kind``) if it runs, and start it again."""
        if child.proc is not None and child.proc.poll() is None:
            child.kill()
            self.tally.kill(kind)
        elif child.proc is not None:
            code = child.proc.returncode
            if code != -9 or child.name not in self.armed:
                raise SoakFailure(
                    f"{child.status_dir.parent.name}: {child.name} exited with {code} on its"
                    f" own\n{child.output()[-4000:]}"
                )
            self.tally.kill("failpoint")
            child.proc = None
        self.armed.discard(child.name)
        if failpoint:
            child.env["AMBROSIA_EDGE_FAILPOINTS"] = failpoint
            self.armed.add(child.name)
        try:
            child.start()
        finally:
            child.env.pop("AMBROSIA_EDGE_FAILPOINTS", None)

    def strike(self, scenario: Scenario) -> None:
        children = list(scenario.children.values())
        how = self.rng.choices(list(self.strikes), list(self.strikes.values()))[0]
        if how == "one":
            self.restart(self.rng.choice(children), "random moment")
        elif how == "all":
            for child in children:
                if child.proc is not None and child.proc.poll() is None:
                    child.kill()
                    self.tally.kill("all at once")
            for child in self.rng.sample(children, len(children)):
                self.restart(child, "all at once")
        elif how == "start-up":
            victim = self.rng.choice(children)
            self.restart(victim, "random moment")
            time.sleep(self.rng.uniform(0.05, 1.0))
            self.restart(victim, "start-up")
        else:
            point = self.rng.choice(list(FAILPOINTS))
            failpoint = f"{point}:{self.rng.randint(1, FAILPOINTS[point])}"
            victim = self.rng.choice(children)
            self.restart(victim, "random moment", failpoint)
            # give it the time to get there while the work goes on; it may not, if the work ends
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and not scenario.done():
                if victim.proc is None or victim.proc.poll() is not None:
                    break
                time.sleep(0.05)


def soak(
    *,
    kills: int | None = None,
    minutes: float | None = None,
    scenarios: list[str] | None = None,
    seed: int | None = None,
    size: int = 2000,
    checkpoint_bytes: str = "4KiB",
    pause: float = 1.0,
    kinds: dict[str, float] | None = None,
    directory: Path | None = None,
    say: Callable[[str], None] | None = None,
) -> Tally:
    """Soak until ``kills`` SIGKILLs or ``minutes`` have passed (whichever first); raises
    SoakFailure naming the first check that failed.

    ``kinds`` weighs the strikes (the keys of ``STRIKES``); ``directory`` keeps the logs there
    (a temporary directory, removed after a success, otherwise)."""
    if kills is None and minutes is None:
        raise ValueError("give kills, minutes or both")
    say = say or (lambda line: print(line, flush=True))
    seed = random.randrange(1 << 32) if seed is None else seed
    names = scenarios or list(SCENARIOS)
    tally = Tally()
    Scenario.failed.clear()
    enough = threading.Event()
    root = Path(directory or tempfile.mkdtemp(prefix="ambrosia-soak-"))
    say(f"soak: seed {seed}, scenarios {', '.join(names)}, logs under {root}")
    sizes = {"counter": max(size // 10, 20)}  # an awaited call is a round trip
    runners = [
        Runner(
            SCENARIOS[name],
            root,
            random.Random(f"{seed}-{name}"),
            tally,
            enough,
            sizes.get(name, size),
            checkpoint_bytes,
            pause,
            kinds or STRIKES,
            keep=directory is not None,
        )
        for name in names
    ]
    threads = [threading.Thread(target=r.run, name=f"soak-{r.kind.name}") for r in runners]
    start = time.monotonic()
    for t in threads:
        t.start()
    last = start
    try:
        while any(t.is_alive() for t in threads):
            elapsed = time.monotonic() - start
            if (kills is not None and tally.kills >= kills) or (
                minutes is not None and elapsed >= minutes * 60
            ):
                enough.set()
            if time.monotonic() - last >= 30:
                last = time.monotonic()
                rounds = dict(tally.rounds)
                say(f"soak: {elapsed / 60:.1f} min, {tally.kills} kills, rounds {rounds}")
            for t in threads:
                t.join(timeout=0.2)
    finally:
        enough.set()
        for t in threads:
            t.join()
    errors = [r.error for r in runners if r.error is not None]
    if errors:
        raise errors[0]
    if directory is None:
        shutil.rmtree(root, ignore_errors=True)
    return tally


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.soak",
        description="SIGKILL the immortals of the chain, fan-in, counter and impulse scenarios "
        "until a number of kills or minutes, then check every result exactly.",
    )
    parser.add_argument("--kills", type=int, help="stop killing after this many SIGKILLs")
    parser.add_argument("--minutes", type=float, help="stop killing after this many minutes")
    parser.add_argument(
        "--scenario",
        action="append",
        choices=list(SCENARIOS),
        help="run only this scenario (repeatable); default: all four",
    )
    parser.add_argument("--seed", type=int, help="the random seed (printed; default: random)")
    parser.add_argument(
        "--size", type=int, default=2000, help="messages per round (a tenth for the counter)"
    )
    parser.add_argument(
        "--checkpoint-bytes", default="4KiB", help="the immortals' --checkpoint-bytes"
    )
    parser.add_argument(
        "--pause", type=float, default=1.0, help="at most this many seconds between kills"
    )
    parser.add_argument("--keep", type=Path, help="keep the logs in this directory")
    args = parser.parse_args(argv)
    if args.kills is None and args.minutes is None:
        parser.error("give --kills N, --minutes M, or both")
    began = time.monotonic()
    try:
        tally = soak(
            kills=args.kills,
            minutes=args.minutes,
            scenarios=args.scenario,
            seed=args.seed,
            size=args.size,
            checkpoint_bytes=args.checkpoint_bytes,
            pause=args.pause,
            directory=args.keep,
        )
    except SoakFailure as e:
        print(f"soak: FAILED after {(time.monotonic() - began) / 60:.1f} min: {e}")
        return 1
    minutes = (time.monotonic() - began) / 60
    kinds = ", ".join(f"{n} {k}" for k, n in sorted(tally.kinds.items()))
    rounds = ", ".join(f"{n} {k}" for k, n in sorted(tally.rounds.items()))
    print(f"soak: {tally.kills} SIGKILLs in {minutes:.1f} min ({kinds})")
    print(f"soak: rounds checked exact: {rounds}")
    print("soak: OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
