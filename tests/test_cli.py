"""The command line: parsing, exit codes, error output, commands from other packages, and
the checkpoint request through a running immortal's control socket."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import types
from collections.abc import Iterator
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest
from support import APPS, Child, free_port, wait_for

from ambrosia_edge import cli, commands, control
from ambrosia_edge.cli import build_parser, main
from ambrosia_edge.commands.run import build_run_settings
from ambrosia_edge.config import SECRET_ENV, PeerAddress, Settings, default_log_url
from ambrosia_edge.store import open_store

MiB = 1024 * 1024


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(SECRET_ENV, raising=False)
    monkeypatch.delenv(cli.DEBUG_ENV, raising=False)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)


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
        (["--peer", "client="], "--peer", "'client='"),
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
# Commands from other packages


def hello_main(args: argparse.Namespace) -> int:
    print(f"hello {args.who}")
    return 0


def hello_add_parser(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    common: argparse.ArgumentParser,
) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(name, parents=[common], help="say hello")
    parser.add_argument("who")
    return parser


def test_commands_from_the_entry_point_group(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    fake_module(monkeypatch, "third_party_hello", add_parser=hello_add_parser, main=hello_main)
    found = [
        EntryPoint("hello", "third_party_hello", commands.ENTRY_POINT_GROUP),
        EntryPoint("broken", "no_such_module_ae:thing", commands.ENTRY_POINT_GROUP),
        EntryPoint("run", "third_party_hello", commands.ENTRY_POINT_GROUP),  # cannot replace
    ]
    monkeypatch.setattr(commands, "entry_points", lambda group: found)
    assert main(["--help"]) == 0
    listing = capsys.readouterr().out
    assert "hello     say hello" in listing and "broken    (unavailable:" in listing
    assert main(["hello", "you"]) == 0
    assert capsys.readouterr().out == "hello you\n"
    assert main(["broken"]) == 1
    assert "command 'broken' (no_such_module_ae:thing) cannot be loaded" in capsys.readouterr().err
    assert main(["run", "--help"]) == 0
    assert "--checkpoint-bytes" in capsys.readouterr().out


def test_help_imports_no_command_body() -> None:
    code = (
        "import sys; from ambrosia_edge.cli import main; main(['--help']); "
        "heavy = ['anyio'] + ['ambrosia_edge.' + m for m in "
        "('runtime', 'coordinator', 'inspection', 'demo', 'control')]; "
        "print(sorted(m for m in sys.modules if m in heavy))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.splitlines()[-1] == "[]"


# ---------------------------------------------------------------------------------------------
# Checkpoint requests through the control socket


def server(tmp_path: Path, name: str, log: Path) -> Child:
    status = tmp_path / f"status-{name}"
    status.mkdir(exist_ok=True)
    return Child(f"{APPS}:Counter", name, log, free_port(), {}, status)


def socket_of(log: Path) -> list[Path]:
    return control.find_sockets(control.log_identity(open_store(str(log))))


def serving(child: Child) -> dict[str, object]:
    """Wait until ``child`` answers on its control socket; its status."""

    def answer() -> dict[str, object] | None:
        assert child.proc is not None and child.proc.poll() is None, child.output()
        for path in socket_of(child.log):
            try:
                return control.request(path, {"op": "status"})
            except OSError:
                pass
        return None

    status: dict[str, object] = wait_for(answer, 60, f"{child.name} to serve", child.output)
    return status


@pytest.fixture
def children() -> Iterator[list[Child]]:
    started: list[Child] = []
    yield started
    for child in started:
        child.kill()


def test_checkpoint_through_the_control_socket(
    tmp_path: Path, children: list[Child], capsys: pytest.CaptureFixture[str]
) -> None:
    log = tmp_path / "logs" / "server"
    child = server(tmp_path, "server", log)
    children.append(child)
    child.start()
    assert child.proc is not None
    status = serving(child)
    assert status["ok"] is True
    assert (status["name"], status["pid"], status["log"]) == ("server", child.proc.pid, str(log))
    assert isinstance(status["epoch"], int) and status["epoch"] >= 1
    (path,) = socket_of(log)
    assert path.name.startswith("server-") and path.stat().st_mode & 0o777 == 0o600
    assert path.parent.stat().st_mode & 0o777 == 0o700

    assert main(["checkpoint", "server", "--log", str(log)]) == 0
    assert capsys.readouterr().out == f"asked server (pid {child.proc.pid}) to checkpoint\n"
    assert main(["checkpoint", str(log), "--wait"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{log} (pid {child.proc.pid}) stored checkpoint ")
    number = int(out.split()[-1])
    assert (log / f"checkpoint-{number:08d}.cbor").exists()
    assert number > int(str(status["chunk"]))

    assert child.stop() == 0
    assert not path.exists()  # removed on a clean stop


def test_two_immortals_of_different_names(
    tmp_path: Path, children: list[Child], capsys: pytest.CaptureFixture[str]
) -> None:
    pair = [server(tmp_path, name, Path(default_log_url(name))) for name in ("alpha", "beta")]
    children.extend(pair)
    for child in pair:
        child.start()
    for child in pair:
        serving(child)
    for child in pair:
        assert child.proc is not None
        assert main(["checkpoint", child.name]) == 0
        assert capsys.readouterr().out == (
            f"asked {child.name} (pid {child.proc.pid}) to checkpoint\n"
        )


def test_stale_socket_of_a_killed_process_is_replaced(
    tmp_path: Path, children: list[Child], capsys: pytest.CaptureFixture[str]
) -> None:
    log = tmp_path / "server"
    child = server(tmp_path, "server", log)
    children.append(child)
    child.start()
    assert child.proc is not None
    killed = child.proc.pid
    serving(child)
    (path,) = socket_of(log)
    child.kill()
    assert path.exists()  # left behind

    assert main(["checkpoint", "server", "--log", str(log)]) == 1
    err = capsys.readouterr().err
    assert f"no running immortal server (no control socket at {path})" in err
    assert f"its log names pid {killed} as its writer" in err

    child.start()
    assert child.proc is not None
    assert serving(child)["pid"] == child.proc.pid
    assert socket_of(log) == [path]
    assert main(["checkpoint", "server", "--log", str(log)]) == 0
    assert capsys.readouterr().out == f"asked server (pid {child.proc.pid}) to checkpoint\n"


def test_checkpoint_with_nothing_running(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = tmp_path / "srv"
    expected = control.socket_path("srv", log.as_uri())
    assert main(["checkpoint", "srv", "--log", str(log)]) == 1
    err = capsys.readouterr().err
    assert (
        err == f"ambrosia-edge: error: no running immortal srv (no control socket at {expected})\n"
    )

    # a clean stop empties the lease record: nothing more to say
    log.mkdir()
    (log / "LOCK").write_bytes(b"")
    assert main(["checkpoint", "srv", "--log", f"file://{log}"]) == 1
    assert f"(no control socket at {expected})\n" in capsys.readouterr().err

    # any tier: the log's URL is its identity when its tier has no lease
    assert main(["checkpoint", "srv", "--log", "memory://srv"]) == 1
    expected = control.socket_path("srv", "memory://srv")
    assert f"no running immortal srv (no control socket at {expected})" in capsys.readouterr().err


def test_checkpoint_names_the_host_a_lease_names(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    record = {"pid": 4242, "host": "some-other-host", "since": "2024-01-01T00:00:00Z"}
    (tmp_path / "LOCK").write_text(json.dumps(record))
    assert main(["checkpoint", str(tmp_path)]) == 1
    assert "runs on host 'some-other-host' (per its log's lease)" in capsys.readouterr().err
