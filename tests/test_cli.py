"""The command line: parsing, exit codes, error output, and the checkpoint request."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import types
from collections.abc import Iterator
from pathlib import Path

import cbor2
import pytest

from ambrosia_edge import cli
from ambrosia_edge.cli import build_parser, build_run_settings, local_log_dir, main, read_lock_pid
from ambrosia_edge.config import SECRET_ENV, PeerAddress, Settings, default_log_url
from ambrosia_edge.errors import ConfigError

MiB = 1024 * 1024


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(SECRET_ENV, raising=False)
    monkeypatch.delenv(cli.DEBUG_ENV, raising=False)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))


def run_settings(*argv: str) -> Settings:
    return build_run_settings(build_parser().parse_args(["run", *argv]))


def fake_module(monkeypatch: pytest.MonkeyPatch, name: str, **functions: object) -> None:
    module = types.ModuleType(name)
    for attr, value in functions.items():
        setattr(module, attr, value)
    monkeypatch.setitem(sys.modules, name, module)


def ae(*argv: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ambrosia_edge", *argv],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        check=False,
    )


# ---------------------------------------------------------------------------------------------
# run


def test_run_every_flag(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEPLOY_SECRET", "s")
    s = run_settings(
        "counter.py:Counter",
        "--name", "server",
        "--log", "/tmp/logs/server",
        "--listen", "127.0.0.1:7001",
        "--peer", "client=127.0.0.1:7002",
        "--peer", "pi=[::1]:7003",
        "--checkpoint-bytes", "8MiB",
        "--keep-checkpoints", "4",
        "--no-fsync",
        "--secret-env", "DEPLOY_SECRET",
        "--page-bytes", "64KiB",
        "--buffer-bytes", "1MB",
    )  # fmt: skip
    assert s == Settings(
        target="counter.py:Counter",
        name="server",
        log="/tmp/logs/server",
        listen=PeerAddress("127.0.0.1", 7001),
        peers={"client": PeerAddress("127.0.0.1", 7002), "pi": PeerAddress("::1", 7003)},
        checkpoint_bytes=8 * MiB,
        keep_checkpoints=4,
        fsync=False,
        secret="s",
        page_bytes=64 * 1024,
        buffer_bytes=1_000_000,
    )


def test_run_defaults() -> None:
    s = run_settings("shop/orders.py:OrderBook")
    assert s == Settings(target="shop/orders.py:OrderBook", name="orderbook")
    assert s.log == default_log_url("orderbook")


def test_run_config_file_and_flag_precedence(tmp_path: Path) -> None:
    config = tmp_path / "srv.toml"
    config.write_text(
        'target = "server.py:Server"\nfsync = false\nkeep_checkpoints = 3\n'
        '[peers]\nclient = "127.0.0.1:7002"\n'
    )
    s = run_settings("--config", str(config), "--fsync", "--peer", "client=10.0.0.9:7002")
    assert s.target == f"{tmp_path.resolve()}/server.py:Server"
    assert (s.name, s.fsync, s.keep_checkpoints) == ("server", True, 3)
    assert s.peers == {"client": PeerAddress("10.0.0.9", 7002)}
    assert run_settings("other.py:Other", "--config", str(config)).name == "other"


def test_run_calls_the_runtime_lazily(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[Settings] = []

    def run_immortal(settings: Settings) -> int:
        seen.append(settings)
        return 7

    fake_module(monkeypatch, "ambrosia_edge.runtime", run_immortal=run_immortal)
    assert main(["run", "m:Thing", "--listen", "0.0.0.0:0"]) == 7
    assert seen == [Settings("m:Thing", "thing", listen=PeerAddress("0.0.0.0", 0))]


@pytest.mark.parametrize(
    ("argv", "flag", "value"),
    [
        (["--listen", "7001"], "--listen", "'7001'"),
        (["--listen", "::1:7001"], "--listen", "'::1:7001'"),
        (["--peer", "client"], "--peer", "'client'"),
        (["--peer", "client=h:99999"], "--peer", "'client=h:99999'"),
        (["--checkpoint-bytes", "lots"], "--checkpoint-bytes", "'lots'"),
        (["--keep-checkpoints", "-1"], "--keep-checkpoints", "'-1'"),
        (["--page-bytes", "1.5B"], "--page-bytes", "'1.5B'"),
        (["--buffer-bytes", "0"], "--buffer-bytes", "'0'"),
        (["--name=-x"], "--name", "'-x'"),
        (["--secret-env", "NOT_SET_AE"], "--secret-env", "NOT_SET_AE is not set"),
    ],
)
def test_run_bad_flag_reports_flag_and_value(
    argv: list[str], flag: str, value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["run", "m:M", *argv]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"ambrosia-edge: error: {flag}: ")
    assert value in err
    assert "for example" in err
    assert "Traceback" not in err


def test_run_bad_target_and_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "counter.py"]) == 1
    assert "TARGET: target 'counter.py' has no ':Class' part" in capsys.readouterr().err
    assert main(["run"]) == 1
    assert "ambrosia-edge run counter.py:Counter" in capsys.readouterr().err
    assert main(["run", "m:M", "--config", str(tmp_path / "no.toml")]) == 1
    assert "no.toml does not exist" in capsys.readouterr().err


def test_missing_part_of_installation_is_an_error_not_a_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "ambrosia_edge.runtime", None)
    assert main(["run", "m:M"]) == 1
    assert "ambrosia_edge.runtime is missing" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# Other commands


def test_demo_arguments(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    calls: list[tuple[object, ...]] = []
    fake_module(monkeypatch, "ambrosia_edge.demo", main=lambda *a: calls.append(a))
    assert main(["demo"]) == 0
    assert main(["demo", "--dir", str(tmp_path), "--calls", "5", "--kills", "0"]) == 0
    assert calls == [(None, 200, 6), (tmp_path, 5, 0)]


@pytest.mark.parametrize("argv", [["--calls", "0"], ["--kills", "-1"], ["--calls", "x"]])
def test_demo_bad_numbers_are_usage_errors(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["demo", *argv]) == 2
    assert repr(argv[1]) in capsys.readouterr().err


def test_inspect_resolves_names_and_paths(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, bool]] = []

    def inspect_log(url: str, as_json: bool) -> int:
        calls.append((url, as_json))
        return 0

    fake_module(monkeypatch, "ambrosia_edge.inspection", inspect_log=inspect_log)
    assert main(["inspect", "server"]) == 0
    assert main(["inspect", "./logs/server", "--json"]) == 0
    assert main(["inspect", "memory://x"]) == 0
    assert main(["inspect", "~/logs/s"]) == 0
    assert calls == [
        (default_log_url("server"), False),
        ("./logs/server", True),
        ("memory://x", False),
        (os.path.expanduser("~/logs/s"), False),
    ]


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["version"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("ambrosia-edge ") and out.strip() != "ambrosia-edge"
    assert main(["--version"]) == 0
    assert capsys.readouterr().out == out


# ---------------------------------------------------------------------------------------------
# Exit codes and error output


def test_no_command_prints_help_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "common command lines" in capsys.readouterr().err


def test_unknown_command_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bogus"]) == 2
    assert "invalid choice: 'bogus'" in capsys.readouterr().err


def test_help_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--help"]) == 0
    out = capsys.readouterr().out
    assert "--checkpoint-bytes SIZE" in out
    assert '[peers]\n  client = "127.0.0.1:7002"' in out


def test_debug_shows_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["run", "m:M", "--listen", "x"]) == 1
    assert "Traceback" not in capsys.readouterr().err
    for argv in (
        ["--debug", "run", "m:M", "--listen", "x"],
        ["run", "m:M", "--listen", "x", "--debug"],
    ):
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert "Traceback" in err and "ConfigError" in err
        assert err.rstrip().endswith("for example: --listen 127.0.0.1:7001")
    monkeypatch.setenv(cli.DEBUG_ENV, "1")
    assert main(["run", "m:M", "--listen", "x"]) == 1
    assert "Traceback" in capsys.readouterr().err


def test_ctrl_c_exits_130_quietly(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def interrupted(settings: Settings) -> int:
        raise KeyboardInterrupt

    fake_module(monkeypatch, "ambrosia_edge.runtime", run_immortal=interrupted)
    assert main(["run", "m:M"]) == 130
    assert capsys.readouterr().err == ""


def test_python_dash_m_help_in_a_real_process(tmp_path: Path) -> None:
    result = ae("--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: ambrosia-edge ")
    for example in (
        "ambrosia-edge run server.py:Server --listen 127.0.0.1:7001 --peer client=127.0.0.1:7002",
        "ambrosia-edge run client.py:Client --listen 127.0.0.1:7002 --peer server=127.0.0.1:7001",
        "ambrosia-edge demo",
    ):
        assert example in result.stdout


def test_unknown_subcommand_in_a_real_process(tmp_path: Path) -> None:
    result = ae("frobnicate", cwd=tmp_path)
    assert result.returncode == 2
    assert "invalid choice: 'frobnicate'" in result.stderr


def test_error_in_a_real_process_has_no_traceback(tmp_path: Path) -> None:
    result = ae("run", "m:M", "--checkpoint-bytes", "huge", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.startswith("ambrosia-edge: error: --checkpoint-bytes: ")
    assert "'huge'" in result.stderr and "Traceback" not in result.stderr


# ---------------------------------------------------------------------------------------------
# LOCK files and checkpoint requests


@pytest.mark.parametrize(
    ("content", "pid"),
    [
        (b"123", 123),
        (b"123\n", 123),
        (b"pid 123\n", 123),
        (b"pid=123", 123),
        (b"PID: 123", 123),
        (b"host=pi\npid=123\n", 123),
        (b'{"pid": 123, "host": "pi", "since": "2024-01-01T00:00:00Z"}', 123),
        (b'{"pid": "123"}', 123),
        (cbor2.dumps({"pid": 123, "host": "pi"}), 123),
        (cbor2.dumps(123), 123),
        (b"", None),
        (b"garbage", None),
        (b'{"host": "pi"}', None),
        (b'{"pid": true}', None),
        (b"pid=0", None),
        (b"1", None),
        (b"-5", None),
        (b'{"pid": -1}', None),
        (b"\xff\xfe\x00", None),
    ],
)
def test_read_lock_pid(tmp_path: Path, content: bytes, pid: int | None) -> None:
    lock = tmp_path / "LOCK"
    lock.write_bytes(content)
    assert read_lock_pid(lock) == pid


def test_read_lock_pid_missing(tmp_path: Path) -> None:
    assert read_lock_pid(tmp_path / "LOCK") is None
    assert read_lock_pid(tmp_path) is None


def test_local_log_dir() -> None:
    assert local_log_dir("/var/x") == Path("/var/x")
    assert local_log_dir("file:///var/my%20log") == Path("/var/my log")
    assert local_log_dir("file://localhost/var/x") == Path("/var/x")
    with pytest.raises(ConfigError, match="not on local disk"):
        local_log_dir("memory://x")
    with pytest.raises(ConfigError, match="names host 'other'"):
        local_log_dir("file://other/var/x")


WAITER = """\
import signal, sys, time
signal.signal(signal.SIGUSR1, lambda *a: (print("checkpoint", flush=True), sys.exit(0)))
print("ready", flush=True)
time.sleep(60)
"""


@pytest.fixture
def waiter() -> Iterator[subprocess.Popen[str]]:
    """A process that prints and exits on SIGUSR1, standing in for a running immortal."""
    proc = subprocess.Popen([sys.executable, "-c", WAITER], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline() == "ready\n"
    yield proc
    if proc.poll() is None:
        proc.kill()
    proc.wait()
    proc.stdout.close()


def write_lock(directory: Path, pid: int, host: str | None = None) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    lock = directory / "LOCK"
    record = {"pid": pid, "host": host or socket.gethostname(), "since": "2024-01-01T00:00:00Z"}
    lock.write_text(json.dumps(record))
    return lock


@pytest.mark.skipif(not hasattr(signal, "SIGUSR1"), reason="needs SIGUSR1")
def test_checkpoint_signals_the_lock_holder(
    tmp_path: Path, waiter: subprocess.Popen[str], capsys: pytest.CaptureFixture[str]
) -> None:
    write_lock(tmp_path / "logs" / "server", waiter.pid)
    assert main(["checkpoint", "server", "--log", str(tmp_path / "logs" / "server")]) == 0
    assert capsys.readouterr().out == f"asked server (pid {waiter.pid}) to checkpoint\n"
    assert waiter.wait(timeout=30) == 0
    assert waiter.stdout is not None and waiter.stdout.read() == "checkpoint\n"


@pytest.mark.skipif(not hasattr(signal, "SIGUSR1"), reason="needs SIGUSR1")
def test_checkpoint_by_name_and_by_path(
    tmp_path: Path, waiter: subprocess.Popen[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    write_lock(Path(default_log_url("server")), waiter.pid)
    assert main(["checkpoint", "server"]) == 0
    assert waiter.wait(timeout=30) == 0
    monkeypatch.chdir(Path(default_log_url("server")).parent)
    assert main(["checkpoint", "./server"]) == 1  # that process is gone now


def test_checkpoint_without_running_instance(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = tmp_path / "srv"
    assert main(["checkpoint", "srv", "--log", str(log)]) == 1
    assert "no running instance of 'srv'" in capsys.readouterr().err

    log.mkdir()
    (log / "LOCK").write_bytes(b"")
    assert main(["checkpoint", "srv", "--log", str(log)]) == 1
    assert "stopped cleanly" in capsys.readouterr().err

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    write_lock(log, gone.pid)
    assert main(["checkpoint", "srv", "--log", f"file://{log}"]) == 1
    err = capsys.readouterr().err
    assert f"process {gone.pid}" in err and "Traceback" not in err


def test_checkpoint_refuses_other_hosts(
    tmp_path: Path, waiter: subprocess.Popen[str], capsys: pytest.CaptureFixture[str]
) -> None:
    write_lock(tmp_path, waiter.pid, host="some-other-host")
    assert main(["checkpoint", str(tmp_path)]) == 1
    assert "runs on host 'some-other-host'" in capsys.readouterr().err
    assert waiter.poll() is None


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
def test_checkpoint_refuses_a_reused_pid(
    tmp_path: Path, waiter: subprocess.Popen[str], capsys: pytest.CaptureFixture[str]
) -> None:
    lock = write_lock(tmp_path, waiter.pid)
    an_hour_ago = time.time() - 3600
    os.utime(lock, (an_hour_ago, an_hour_ago))
    assert main(["checkpoint", str(tmp_path)]) == 1
    assert "reusing the pid" in capsys.readouterr().err
    assert waiter.poll() is None  # not signalled


def test_checkpoint_needs_a_local_log(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["checkpoint", "srv", "--log", "memory://srv"]) == 1
    assert "not on local disk" in capsys.readouterr().err
