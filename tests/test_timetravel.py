"""Time travel and retroactive testing on a log recorded by real immortals.

The forwarder's log (tests/apps/forwarding.py) holds its start, then 13,000 forwards from the
client with an awaited sum() after every 1,000: message 1 is the start, sum() j is message
1 + 1001 j, every other message is a forward, and forward(12_331) is message 12,345. The
forwarder's running totals as they ran live are kept by a probe outside its state.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from ambrosia_edge.storage.local import LocalStore
from apps import forwarding
from apps.forwarding import Client, Forwarder, MillionClient, Sink

import ambrosia_edge
from ambrosia_edge.checkpoint import Checkpoint
from ambrosia_edge.cli import main
from ambrosia_edge.errors import CheckpointError, ConfigError
from ambrosia_edge.recovery import check_version
from ambrosia_edge.retrotest import retrotest, state_diff
from ambrosia_edge.testing import Cluster, eventually

TESTS = Path(__file__).parent
K = 12_345  # forward(ODD_ONE)


def forwards_up_to(k: int) -> int:
    """How many of messages 1..k are forwards."""
    return k - 1 - (k - 1) // 1001


class Recorded:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.log = root / "fwd"
        self.live: dict[int, int] = {}


async def record(
    root: Path, client: type[Client] = Client, checkpoint_bytes: int = 64 * 1024
) -> Recorded:
    recorded = Recorded(root)
    forwarding.PROBE.clear()
    settings = {"checkpoint_bytes": checkpoint_bytes, "keep_checkpoints": 100, "fsync": False}
    async with Cluster(root, **settings) as c:
        for name in ("client", "fwd", "sink"):
            c.port(name)  # all known ahead: nobody is restarted to learn of another
        await c.start(Sink, "sink")
        await c.start(Forwarder, "fwd")
        await c.start(client, "client")

        def done() -> bool:
            obj = c["client"].obj
            return obj.result is not None and c["sink"].obj.got == client.FORWARDS

        await eventually(done, "every forward delivered and summed", timeout=600)
        for name in ("client", "fwd", "sink"):
            await c.crash(name)
    recorded.live = dict(forwarding.PROBE)
    assert len(recorded.live) == client.FORWARDS
    return recorded


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Recorded:
    return anyio.run(record, tmp_path_factory.mktemp("timetravel"))


@pytest.fixture
def log(recorded: Recorded, tmp_path: Path) -> Path:
    """A copy of the recorded log, for a test that might disturb it."""
    copy = tmp_path / "fwd"
    shutil.copytree(recorded.log, copy)
    return copy


def digest(directory: Path) -> dict[str, str]:
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.iterdir())
        if p.is_file()
    }


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS), env.get("PYTHONPATH", "")])
    env.pop("PYTHONBREAKPOINT", None)
    return env


# --- time travel: the Python API -----------------------------------------------------------


@pytest.mark.parametrize("checkpoint", [None, 1, 2, -1])
@pytest.mark.parametrize("k", [2, 1001, 1002, 7_777, K, 13_014])
def test_replay_to_a_message_gives_the_state_the_live_run_had(
    recorded: Recorded, checkpoint: int | None, k: int
) -> None:
    if checkpoint == 2 and k < 4_006:
        with pytest.raises(CheckpointError, match="is past message"):
            ambrosia_edge.replay(str(recorded.log), checkpoint=checkpoint, until_message=k)
        return
    replayer = ambrosia_edge.replay(str(recorded.log), checkpoint=checkpoint, until_message=k)
    assert replayer.messages == k
    count = forwards_up_to(k)
    assert replayer.state["count"] == count
    assert replayer.state["total"] == recorded.live[count]


@pytest.mark.skipif(
    not os.environ.get("AMBROSIA_TEST_MILLION"),
    reason="records a 1-million-message log (about a minute): set AMBROSIA_TEST_MILLION=1",
)
def test_a_million_message_log_replayed_to_exact_messages(tmp_path: Path) -> None:
    recorded = anyio.run(record, tmp_path, MillionClient, 4 * 1024 * 1024)
    last = 1 + MillionClient.FORWARDS + MillionClient.FORWARDS // 1000
    for k in (2, 123_457, 999_999, last - 1):
        replayer = ambrosia_edge.replay(str(recorded.log), until_message=k)
        count = forwards_up_to(k)
        assert replayer.messages == k and replayer.state["count"] == count
        assert replayer.state["total"] == recorded.live[count]
    assert ambrosia_edge.replay(str(recorded.log)).messages == last + 1


def test_stepping_message_by_message(recorded: Recorded) -> None:
    replayer = ambrosia_edge.replay(str(recorded.log), checkpoint=None, until_message=1000)
    nxt = replayer.peek_message()
    assert nxt is not None and nxt.index == 1001 and nxt.source == "client"
    assert replayer.state["count"] == 999  # peeking runs nothing
    for expected in (1001, 1002, 1003):
        message = replayer.step_message()
        assert message is not None and message.index == expected
        assert replayer.state["count"] == forwards_up_to(expected)
    # then whole pages again, up to the end: the same as a replay straight to the end
    replayer.run()
    assert replayer.state == ambrosia_edge.replay(str(recorded.log)).state
    assert replayer.step_message() is None


def test_replay_to_a_page_is_the_replay_to_its_last_message(recorded: Recorded) -> None:
    by_page = ambrosia_edge.replay(str(recorded.log), checkpoint=None, until=3)
    assert by_page.coordinator.next_page == 4
    by_message = ambrosia_edge.replay(
        str(recorded.log), checkpoint=None, until_message=by_page.messages
    )
    assert by_message.state == by_page.state
    assert by_message.coordinator.next_page == 4


def test_a_replay_opens_no_socket(recorded: Recorded, monkeypatch: pytest.MonkeyPatch) -> None:
    def refused(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a replay opened a socket")

    monkeypatch.setattr(socket, "socket", refused)
    monkeypatch.setattr(socket, "create_connection", refused)
    replayer = ambrosia_edge.replay(str(recorded.log), checkpoint=None)
    assert replayer.state["count"] == Client.FORWARDS


def test_the_class_defaults_to_the_checkpoints_and_can_be_overridden(recorded: Recorded) -> None:
    assert type(ambrosia_edge.replay(str(recorded.log)).obj) is Forwarder
    other = ambrosia_edge.replay(str(recorded.log), "apps.forwarding:SameCode", until_message=5)
    assert type(other.obj).__name__ == "SameCode" and other.state["count"] == 4


# --- time travel: the command ------------------------------------------------------------


def test_show_calls_prints_each_message_decoded(
    recorded: Recorded, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["replay", str(recorded.log), "--checkpoint", "none", "--show", "calls,state"]
    assert main([*argv, "--until-message", "3"]) == 0
    out, err = capsys.readouterr()
    assert out.splitlines()[:3] == [
        "message 1 (page 1, from fwd #1): on_first_start()",
        "message 2 (page 2, from client #1): forward(0)",
        "message 3 (page 2, from client #2): forward(1)",
    ]
    assert "  count = 2\n  total = 1\n" in out
    assert "messages 1 to 3 from the log's start; stopped where asked" in err
    assert main([*argv, "--until-message", "1002"]) == 0
    out, _ = capsys.readouterr()
    assert out.splitlines()[1001] == (
        "message 1002 (page 2, from client #1001): sum() [awaited, call 1]"
    )


def test_show_sends_prints_what_each_message_sent(
    recorded: Recorded, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["replay", str(recorded.log), "--checkpoint", "none", "--until-message", "1002"]
    assert main([*argv, "--show", "sends"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[:3] == [
        "message 1 (page 1, from fwd #1): on_first_start()",
        "message 2 (page 2, from client #1): forward(0)",
        "    calls sink.put(0) [fork]",
    ]
    assert lines[-2:] == [
        "message 1002 (page 2, from client #1001): sum() [awaited, call 1]",
        "    returns 499500 to client (call 1)",
    ]


def test_show_state_after_a_page(recorded: Recorded, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["replay", str(recorded.log), "--checkpoint", "1", "--until", "3"]) == 0
    out, err = capsys.readouterr()
    assert out == "" and "from checkpoint 1; stopped where asked" in err
    assert main(["replay", str(recorded.log), "--show", "state"]) == 0
    out, err = capsys.readouterr()
    assert f"  count = {Client.FORWARDS}\n" in out and "at the end of the log" in err


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["--until-time", "2026-01-01T00:00:00Z"], "the log does not record when"),
        (["--pdb"], "name it with --until-message K"),
        (["--checkpoint", "9"], "has no checkpoint 9"),
        (["--checkpoint", "none", "--until-message", "99999", "--pdb"], "there is no message"),
    ],
)
def test_what_replay_cannot_do_is_said(
    recorded: Recorded, capsys: pytest.CaptureFixture[str], flags: list[str], expected: str
) -> None:
    assert main(["replay", str(recorded.log), *flags]) == 1
    assert expected in capsys.readouterr().err


def test_a_log_without_checkpoint_needs_a_target(log: Path) -> None:
    for checkpoint in log.glob("checkpoint-*"):
        checkpoint.unlink()
    with pytest.raises(ConfigError, match="--target module:Class"):
        ambrosia_edge.replay(str(log))
    replayer = ambrosia_edge.replay(str(log), Forwarder, checkpoint=None)
    assert replayer.state["count"] == Client.FORWARDS


def test_history_deleted_after_checkpoints_is_named(log: Path) -> None:
    (log / "chunk-00000001.log").unlink()
    (log / "checkpoint-00000001.cbor").unlink()
    with pytest.raises(CheckpointError, match="no longer holds message 2: the chunks before"):
        ambrosia_edge.replay(str(log), until_message=2)
    assert ambrosia_edge.replay(str(log), until_message=4_006).state["count"] == forwards_up_to(
        4_006
    )


def test_replay_and_retrotest_leave_a_log_in_use_untouched(log: Path) -> None:
    """The writer's lock is held by another process (here, this one) the whole time."""
    writer = LocalStore(str(log))
    writer.open()
    try:
        before = digest(log)
        env = child_env()
        commands = [
            ["replay", str(log), "--checkpoint", "none", "--show", "calls,state"],
            ["retrotest", str(log), "apps.forwarding:SameCode", "--checkpoint", "1"],
        ]
        for command in commands:
            done = subprocess.run(
                [sys.executable, "-m", "ambrosia_edge", *command],
                env=env,
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert done.returncode == 0, done.stderr
        assert digest(log) == before
        holder = writer.lease.info().holder
        assert holder is not None and holder.pid == os.getpid()
    finally:
        writer.close()


# --- the debugger ------------------------------------------------------------------------


@contextlib.contextmanager
def spawn(args: list[str]) -> Iterator[Any]:
    if os.environ.get("CI"):
        import pexpect  # the test extra installs it: in CI its absence is a failure
    else:
        pexpect = pytest.importorskip("pexpect")
    child = pexpect.spawn(
        sys.executable,
        ["-m", "ambrosia_edge", *args],
        env=child_env(),
        encoding="utf-8",
        timeout=60,
    )
    try:
        yield child
    finally:
        child.close(force=True)


def test_pdb_stops_before_the_handler_of_the_chosen_message(recorded: Recorded) -> None:
    args = ["replay", str(recorded.log), "--checkpoint", "none", "--until-message", str(K)]
    with spawn([*args, "--pdb", "--show", "state"]) as child:
        child.expect(r"stopping before the handler of message 12345 .*forward\(12331\)")
        child.expect(r"\(Pdb\) ")
        child.sendline("p i, self.count")
        child.expect(r"\(12331, 12331\)")  # in forward(12331), before its first line ran
        child.sendline("c")
        child.expect(r"count = 12332")
        child.expect(pexpect_eof())
        child.close()
        assert child.exitstatus == 0


def test_breakpoint_in_application_code_stops_at_its_message(recorded: Recorded) -> None:
    args = ["replay", str(recorded.log), "--checkpoint", "2"]
    with spawn([*args, "--target", "apps.forwarding:Stopping", "--show", "state"]) as child:
        child.expect(r"\(Pdb\) ")
        child.sendline("p i, self.count, self.total")
        child.expect(rf"\(12331, 12332, {recorded.live[12332]}\)")
        child.sendline("c")
        child.expect(r"count = 13000")
        child.expect(pexpect_eof())
        child.close()
        assert child.exitstatus == 0


def pexpect_eof() -> Any:
    import pexpect

    return pexpect.EOF


# --- retroactive testing -------------------------------------------------------------------


def retro(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = main(["retrotest", *args])
    out, err = capsys.readouterr()
    return code, out + err


def test_the_same_code_does_not_diverge(
    recorded: Recorded, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = retro(capsys, str(recorded.log), "apps.forwarding:SameCode", "--checkpoint", "1")
    assert code == 0, out
    assert out.startswith("no divergence: 13015 messages (15 pages) from checkpoint 1")


def test_a_changed_branch_is_found_at_its_message(
    recorded: Recorded, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = retro(
        capsys, str(recorded.log), "apps.forwarding:ChangedBranch", "--checkpoint", "none"
    )
    assert code == 1
    assert out.splitlines() == [
        "first divergence at message 12345 (page 14, from client #12344): forward(12331)",
        "  old (apps.forwarding:Forwarder):",
        "  ->calls sink.put(24662) [fork]",
        "  new (apps.forwarding:ChangedBranch):",
        "  ->calls sink.put(-1) [fork]",
    ]


def test_a_different_return_value_or_exception_is_reported(
    recorded: Recorded, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = retro(
        capsys, str(recorded.log), "apps.forwarding:ChangedReply", "--checkpoint", "1"
    )
    assert code == 1
    assert out.splitlines() == [
        "first divergence at message 1002 (page 2, from client #1001): sum() [awaited, call 1]",
        "  old (apps.forwarding:Forwarder):",
        "  ->returns 499500 to client (call 1)",
        "  new (apps.forwarding:ChangedReply):",
        "  ->returns 499501 to client (call 1)",
    ]
    code, out = retro(capsys, str(recorded.log), "apps.forwarding:Raising", "--checkpoint", "3")
    assert code == 1
    assert out.splitlines()[1:] == [
        "  old (apps.forwarding:Forwarder):",
        "  ->calls sink.put(24662) [fork]",
        "  new (apps.forwarding:Raising):",
        "  ->raises ValueError: cannot forward 12331 in forward (a fork: logged, nobody told)",
    ]


def test_a_change_in_state_only_needs_compare_state(
    recorded: Recorded, capsys: pytest.CaptureFixture[str]
) -> None:
    args = [str(recorded.log), "apps.forwarding:ChangedState", "--checkpoint", "2"]
    code, out = retro(capsys, *args)
    assert code == 0, out
    code, out = retro(capsys, *args, "--compare-state")
    assert code == 1
    assert out.splitlines() == [
        "first divergence at message 12345 (page 14, from client #12344): forward(12331)",
        "  the states after it differ (old (apps.forwarding:Forwarder) / "
        "new (apps.forwarding:ChangedState)):",
        "    seen['4']: 12331 / 0",
    ]


def test_a_new_version_is_upgraded_from_the_checkpoint_then_compared(
    recorded: Recorded, capsys: pytest.CaptureFixture[str]
) -> None:
    """A renamed field: upgrade() converts the checkpoint's state, and behaviour is the same."""
    divergence, old, new = retrotest(str(recorded.log), "apps.forwarding:Renamed", checkpoint=2)
    assert divergence is None
    assert new.state["running_total"] == old.state["total"] == recorded.live[Client.FORWARDS]
    assert "total" not in new.state
    args = [str(recorded.log), "apps.forwarding:Renamed", "--checkpoint", "2"]
    code, out = retro(capsys, *args, "--compare-state")  # the old state upgraded, then compared
    assert code == 0 and "states included" in out, out


def test_retrotest_says_what_stops_it_with_exit_status_2(
    recorded: Recorded, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = retro(capsys, str(recorded.log), "apps.forwarding:Nope")
    assert code == 2 and "has no attribute 'Nope'" in out
    code, out = retro(capsys, str(recorded.log / "missing"), "apps.forwarding:SameCode")
    assert code == 2 and "holds no log" in out


def test_the_python_api_returns_the_divergence_and_both_replays(recorded: Recorded) -> None:
    divergence, old, new = retrotest(str(recorded.log), "apps.forwarding:ChangedBranch")
    assert divergence is not None and divergence.message.index == K
    assert divergence.old == [("call", "sink", "put", (24662,), {}, "fork")]
    assert old.messages == new.messages == K  # both stopped just after it


def test_state_diff_names_paths() -> None:
    class Box:
        def __init__(self, v: int) -> None:
            self.v = v

    old = {"a": 1, "b": {"x": [1, 2, 3]}, "c": Box(1), "gone": 0}
    new = {"a": 1, "b": {"x": [1, 5]}, "c": Box(2), "added": 0}
    assert [(p, repr(a), repr(b)) for p, a, b in state_diff(old, new)] == [
        ("b['x'][1]", "2", "5"),
        ("b['x'][2]", "3", "<missing>"),
        ("c.v", "1", "2"),
        ("gone", "0", "<missing>"),
        ("added", "<missing>", "0"),
    ]


# --- version checks before anything runs ---------------------------------------------------


def checkpoint_of_version(version: int) -> Checkpoint:
    return Checkpoint("fwd", "apps.forwarding:Forwarder", version, 1, 1, 1, b"", 1)


def test_a_version_going_backwards_or_without_upgrade_is_refused() -> None:
    check_version(Forwarder, checkpoint_of_version(1), "log")
    check_version(forwarding.Renamed, checkpoint_of_version(1), "log")
    with pytest.raises(CheckpointError, match="a version cannot go backwards"):
        check_version(Forwarder, checkpoint_of_version(2), "log")
    with pytest.raises(CheckpointError, match="defines no upgrade"):
        check_version(forwarding.NoUpgrade, checkpoint_of_version(1), "log")


def test_starting_new_code_without_upgrade_on_an_old_log_writes_nothing(log: Path) -> None:
    before = digest(log)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "ambrosia_edge",
            "run",
            "apps.forwarding:NoUpgrade",
            "--name",
            "fwd",
            "--log",
            str(log),
            "--listen",
            "127.0.0.1:0",
        ],
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert "defines no upgrade() to convert that state" in done.stderr
    after = digest(log)
    after.pop("LOCK"), before.pop("LOCK")  # who last held the lock: not the log
    assert after == before
