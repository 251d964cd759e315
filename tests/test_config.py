"""Settings parsing and class loading: every bad value must say where it came from and what fits."""

from __future__ import annotations

import argparse
import re
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest

from ambrosia_edge.config import (
    RUN_OPTIONS,
    SECRET_ENV,
    CoordinatorOptions,
    PeerAddress,
    ProcessOptions,
    Settings,
    StoreOptions,
    add_run_arguments,
    default_log_url,
    load_settings,
    parse_peer,
    parse_size,
)
from ambrosia_edge.errors import ConfigError
from ambrosia_edge.kinds import COUNT
from ambrosia_edge.loader import load_class, split_target
from ambrosia_edge.options import (
    Where,
    add_arguments,
    declared,
    option,
    options,
    pick,
    read_file,
    read_values,
)

MiB = 1024 * 1024


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(SECRET_ENV, raising=False)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))


@pytest.fixture
def isolated_imports(tmp_path: Path) -> Iterator[None]:
    """load_class edits sys.path and sys.modules; undo that so tests cannot see each other.

    Only modules loaded from this test's files are dropped: a standard module imported for the
    first time here must stay, or other tests would hold classes from an orphaned copy.
    """
    path, modules = list(sys.path), set(sys.modules)
    yield
    sys.path[:] = path
    for name in set(sys.modules) - modules:
        file = getattr(sys.modules[name], "__file__", None)
        if file is not None and Path(file).resolve().is_relative_to(tmp_path.resolve()):
            del sys.modules[name]


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


# ---------------------------------------------------------------------------------------------
# Addresses


@pytest.mark.parametrize(
    ("text", "host", "port", "shown"),
    [
        ("127.0.0.1:7001", "127.0.0.1", 7001, "127.0.0.1:7001"),
        ("pi.local:80", "pi.local", 80, "pi.local:80"),
        ("localhost:65535", "localhost", 65535, "localhost:65535"),
        ("[::1]:7001", "::1", 7001, "[::1]:7001"),
        ("[fe80::1%eth0]:9", "fe80::1%eth0", 9, "[fe80::1%eth0]:9"),
        (" 10.0.0.5:1 ", "10.0.0.5", 1, "10.0.0.5:1"),
    ],
)
def test_peer_address_parses(text: str, host: str, port: int, shown: str) -> None:
    address = PeerAddress.parse(text)
    assert address == PeerAddress(host, port)
    assert str(address) == shown
    assert PeerAddress.parse(str(address)) == address


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("7001", "expected HOST:PORT"),
        ("::1:7001", "brackets"),
        ("[::1]7001", "[IPV6]:PORT"),
        ("[nothost]:1", "not an IPv6 address"),
        (":7001", "missing host"),
        ("a b:1", "not a host name"),
        ("host:http", "not a number"),
        ("host:70000", "outside 1..65535"),
        ("host:0", "outside 1..65535"),
    ],
)
def test_peer_address_errors_say_what_and_show_example(text: str, complaint: str) -> None:
    with pytest.raises(ConfigError) as info:
        PeerAddress.parse(text)
    message = str(info.value)
    assert complaint in message
    assert repr(text) in message
    assert "127.0.0.1:7001" in message


def test_port_zero_only_for_listeners() -> None:
    assert PeerAddress.parse("0.0.0.0:0", allow_port_zero=True).port == 0


def test_peer_address_checks_fields_built_in_code() -> None:
    with pytest.raises(ConfigError, match="port"):
        PeerAddress("h", 70000)
    with pytest.raises(ConfigError, match="host"):
        PeerAddress("", 1)


def test_parse_peer() -> None:
    assert parse_peer("client=127.0.0.1:7002") == ("client", PeerAddress("127.0.0.1", 7002))
    assert parse_peer("b-2=[::1]:9") == ("b-2", PeerAddress("::1", 9))
    assert parse_peer("server") == ("server", None)  # found by discovery


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("=1.2.3.4:5", "bad peer name"),
        ("-x", "bad peer name"),
        ("-x=1.2.3.4:5", "bad peer name"),
        ("client=1.2.3.4", "peer 'client'"),
    ],
)
def test_parse_peer_errors(text: str, complaint: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_peer(text)
    assert complaint in str(info.value)
    assert repr(text) in str(info.value)
    assert "client=127.0.0.1:7002" in str(info.value)


# ---------------------------------------------------------------------------------------------
# Sizes


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("1048576", 1048576),
        (1048576, 1048576),
        ("64MiB", 64 * MiB),
        ("64mib", 64 * MiB),
        ("64M", 64 * MiB),
        ("64MB", 64_000_000),
        ("4 KiB", 4096),
        ("4k", 4096),
        ("4KB", 4000),
        ("1.5GiB", 3 * 512 * MiB),
        ("1_000", 1000),
        ("10B", 10),
        ("1TiB", 1 << 40),
    ],
)
def test_parse_size(text: str | int, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["lots", "", "0", "-1", "1.5B", "64XB", "MiB", "0.1"])
def test_parse_size_errors(text: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_size(text)
    assert repr(text) in str(info.value)
    assert "64MiB" in str(info.value)


def test_parse_size_refuses_bool_and_zero() -> None:
    with pytest.raises(ConfigError):
        parse_size(True)
    with pytest.raises(ConfigError, match="positive"):
        parse_size(0)


# ---------------------------------------------------------------------------------------------
# Settings built in code


def test_default_log_url_is_per_user_state(tmp_path: Path) -> None:
    assert default_log_url("server") == str(
        tmp_path / "state" / "ambrosia-edge" / "logs" / "server"
    )


def test_settings_defaults(tmp_path: Path) -> None:
    s = Settings("counter.py:Counter", "counter")
    assert s.log == default_log_url("counter")
    assert (s.listen, s.peers, s.secret) == (None, {}, None)
    assert (s.checkpoint_bytes, s.keep_checkpoints, s.fsync) == (64 * MiB, 2, True)
    assert (s.page_bytes, s.buffer_bytes) == (4 * MiB, 64 * MiB)


@pytest.mark.parametrize(
    ("kwargs", "complaint"),
    [
        ({"name": "../x"}, "Settings.name"),
        ({"target": "counter.py"}, "Settings.target"),
        ({"keep_checkpoints": 0}, "Settings.keep_checkpoints"),
        ({"page_bytes": -1}, "Settings.page_bytes"),
        ({"fsync": "yes"}, "Settings.fsync"),
        ({"secret": ""}, "Settings.secret"),
        ({"peers": {"s": PeerAddress("h", 1)}}, "own name"),
        ({"peers": {"c": "h:1"}}, "PeerAddress"),
        ({"listen": "h:1"}, "Settings.listen"),
    ],
)
def test_settings_validate_on_construction(kwargs: dict[str, object], complaint: str) -> None:
    base: dict[str, object] = {"target": "m:C", "name": "s"}
    with pytest.raises(ConfigError, match=complaint):
        Settings(**{**base, **kwargs})  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# load_settings: file, environment, command line


FULL = """\
    target = "app/counter.py:Counter"
    name = "srv"
    log = "logs/srv"
    listen = "0.0.0.0:7001"
    checkpoint_bytes = "1MiB"
    keep_checkpoints = 3
    fsync = false
    secret = "s3cret"
    page_bytes = 65536
    buffer_bytes = "2MB"

    [peers]
    client = "127.0.0.1:7002"
    billing = "[::1]:7003"
"""


def test_every_toml_key(tmp_path: Path) -> None:
    config = write(tmp_path / "conf" / "srv.toml", FULL)
    s = load_settings(config)
    base = config.resolve().parent
    assert s == Settings(
        target=f"{base / 'app/counter.py'}:Counter",
        name="srv",
        log=str(base / "logs/srv"),
        listen=PeerAddress("0.0.0.0", 7001),
        peers={"client": PeerAddress("127.0.0.1", 7002), "billing": PeerAddress("::1", 7003)},
        checkpoint_bytes=MiB,
        keep_checkpoints=3,
        fsync=False,
        secret="s3cret",
        page_bytes=65536,
        buffer_bytes=2_000_000,
    )


def test_absolute_paths_and_urls_in_file_are_kept(tmp_path: Path) -> None:
    config = write(
        tmp_path / "a.toml",
        """\
        target = "shop.orders:Orders"
        log = "memory://orders"
        """,
    )
    s = load_settings(config)
    assert (s.target, s.log, s.name) == ("shop.orders:Orders", "memory://orders", "orders")


def test_flags_override_file_and_peers_merge_by_name(tmp_path: Path) -> None:
    config = write(tmp_path / "srv.toml", FULL)
    s = load_settings(
        config,
        target="other.py:Other",
        name="srv2",
        log="/tmp/x",
        listen="127.0.0.1:9000",
        peers=["client=10.0.0.2:7002", "extra=10.0.0.3:1"],
        checkpoint_bytes="2MiB",
        keep_checkpoints="5",
        fsync=True,
        page_bytes="8KiB",
        buffer_bytes=4096,
    )
    assert s.target == "other.py:Other"  # relative to the shell, not the file
    assert (s.name, s.log, s.listen) == ("srv2", "/tmp/x", PeerAddress("127.0.0.1", 9000))
    assert s.peers == {
        "client": PeerAddress("10.0.0.2", 7002),
        "billing": PeerAddress("::1", 7003),
        "extra": PeerAddress("10.0.0.3", 1),
    }
    assert (s.checkpoint_bytes, s.keep_checkpoints, s.fsync) == (2 * MiB, 5, True)
    assert (s.page_bytes, s.buffer_bytes) == (8192, 4096)


def test_none_means_flag_not_given(tmp_path: Path) -> None:
    config = write(tmp_path / "srv.toml", FULL)
    assert load_settings(config, name=None, fsync=None, peers=None) == load_settings(config)


def test_without_file_name_comes_from_class(tmp_path: Path) -> None:
    s = load_settings(None, target="pkg.mod:Outer.Counter")
    assert s.name == "counter"
    assert s.log == default_log_url("counter")


def test_missing_target_explains(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"TARGET: no immortal class.*counter\.py:Counter"):
        load_settings(None)
    config = write(tmp_path / "n.toml", 'name = "x"\n')
    with pytest.raises(ConfigError, match=r"set target in .*n\.toml"):
        load_settings(config)


def test_unknown_override_is_a_programming_error() -> None:
    with pytest.raises(TypeError, match="colour"):
        load_settings(None, target="m:C", colour="red")


@pytest.mark.parametrize(
    ("overrides", "flag", "value", "example"),
    [
        ({"listen": "7001"}, "--listen", "'7001'", "--listen 127.0.0.1:7001"),
        ({"peers": ["client="]}, "--peer", "'client='", "--peer client=127.0.0.1:7002"),
        ({"checkpoint_bytes": "lots"}, "--checkpoint-bytes", "'lots'", "--checkpoint-bytes 64MiB"),
        ({"keep_checkpoints": "zero"}, "--keep-checkpoints", "'zero'", "--keep-checkpoints 2"),
        ({"page_bytes": "0"}, "--page-bytes", "'0'", "--page-bytes 4MiB"),
        ({"buffer_bytes": "1.5B"}, "--buffer-bytes", "'1.5B'", "--buffer-bytes 64MiB"),
        ({"name": "a/b"}, "--name", "'a/b'", "--name server"),
        ({"log": ""}, "--log", "''", "--log /var/lib/ambrosia/server"),
        ({"target": "counter.py"}, "TARGET", "'counter.py'", "counter.py:Counter"),
        ({"peers": ["m=1.2.3.4:5"]}, "--peer", "m=1.2.3.4:5", "--peer client"),
    ],
)
def test_flag_errors_name_flag_value_and_example(
    overrides: dict[str, object], flag: str, value: str, example: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(None, **{"target": "m:M", **overrides})
    message = str(info.value)
    assert message.startswith(flag)
    assert value in message
    assert example in message


def test_same_peer_twice_with_different_addresses() -> None:
    with pytest.raises(ConfigError, match=r"--peer: peer 'c' given twice"):
        load_settings(None, target="m:M", peers=["c=h:1", "c=h:2"])
    s = load_settings(None, target="m:M", peers=["c=h:1", "c=h:1"])
    assert s.peers == {"c": PeerAddress("h", 1)}


@pytest.mark.parametrize(
    ("line", "key", "shown", "example"),
    [
        ('listen = "7001"', "listen", "'7001'", 'listen = "127.0.0.1:7001"'),
        ("listen = 7001", "listen", "7001", 'listen = "127.0.0.1:7001"'),
        ('checkpoint_bytes = "lots"', "checkpoint_bytes", "'lots'", 'checkpoint_bytes = "64MiB"'),
        ("checkpoint_bytes = 1.5", "checkpoint_bytes", "1.5", 'checkpoint_bytes = "64MiB"'),
        ("page_bytes = true", "page_bytes", "True", 'page_bytes = "4MiB"'),
        ("keep_checkpoints = 0", "keep_checkpoints", "0", "keep_checkpoints = 2"),
        ('fsync = "no"', "fsync", "'no'", "fsync = false"),
        ('name = "a b"', "name", "'a b'", 'name = "server"'),
        ("peers = 3", "peers", "3", '[peers] client = "127.0.0.1:7002"'),
        ('[peers]\nc = "h"', "peers", "'h'", '[peers] client = "127.0.0.1:7002"'),
        ("[peers]\nc = 7002", "peers", "7002", '[peers] client = "127.0.0.1:7002"'),
        ('[peers]\n"a b" = "h:1"', "peers", "'a b'", '[peers] client = "127.0.0.1:7002"'),
    ],
)
def test_file_errors_name_key_file_value_and_example(
    tmp_path: Path, line: str, key: str, shown: str, example: str
) -> None:
    config = write(tmp_path / "bad.toml", f'target = "m:M"\n{line}\n')
    with pytest.raises(ConfigError) as info:
        load_settings(config)
    message = str(info.value)
    assert message.startswith(f"{key} in {config}")
    assert f"got {shown}" in message
    assert example in message


def test_unknown_file_key_suggests_the_right_one(tmp_path: Path) -> None:
    config = write(tmp_path / "bad.toml", "chekpoint_bytes = 5\n")
    with pytest.raises(ConfigError, match=r"unknown key 'chekpoint_bytes'.*'checkpoint_bytes'"):
        load_settings(config)


def test_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"--config: file .*nope\.toml does not exist"):
        load_settings(tmp_path / "nope.toml")
    with pytest.raises(ConfigError, match="is a directory"):
        load_settings(tmp_path)
    broken = write(tmp_path / "broken.toml", "x = \n")
    with pytest.raises(ConfigError, match=r"not valid TOML \(.*line 1.*\); for example"):
        load_settings(broken)


# ---------------------------------------------------------------------------------------------
# Secrets


def test_secret_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = write(tmp_path / "s.toml", 'target = "m:M"\nsecret = "from-file"\n')
    assert load_settings(config).secret == "from-file"
    monkeypatch.setenv(SECRET_ENV, "from-env")
    assert load_settings(config).secret == "from-env"
    monkeypatch.setenv("MY_SECRET", "from-flag")
    assert load_settings(config, secret_env="MY_SECRET").secret == "from-flag"
    assert load_settings(config, secret="direct").secret == "direct"


def test_secret_is_not_in_repr() -> None:
    s = load_settings(None, target="m:M", secret="hunter2")
    assert s.secret == "hunter2"
    assert "hunter2" not in repr(s)


def test_empty_secret_env_counts_as_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SECRET_ENV, "")
    assert load_settings(None, target="m:M").secret is None


def test_secret_env_in_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = write(tmp_path / "s.toml", 'target = "m:M"\nsecret_env = "APP_SECRET"\n')
    with pytest.raises(
        ConfigError, match=r"secret_env in .*s\.toml: environment variable APP_SECRET is not set"
    ):
        load_settings(config)
    # A higher source makes the file's variable irrelevant, set or not.
    monkeypatch.setenv(SECRET_ENV, "env")
    assert load_settings(config).secret == "env"
    monkeypatch.setenv("APP_SECRET", "app")
    monkeypatch.delenv(SECRET_ENV)
    assert load_settings(config).secret == "app"


def test_secret_errors_never_echo_the_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EMPTY", "")
    with pytest.raises(ConfigError, match="--secret-env: environment variable EMPTY is empty"):
        load_settings(None, target="m:M", secret_env="EMPTY")
    both = write(tmp_path / "b.toml", 'target = "m:M"\nsecret = "hunter2"\nsecret_env = "X"\n')
    with pytest.raises(ConfigError, match="either secret or secret_env") as info:
        load_settings(both)
    assert "hunter2" not in str(info.value)
    bad = write(tmp_path / "e.toml", 'target = "m:M"\nsecret = ""\n')
    with pytest.raises(ConfigError, match="secret in") as info:
        load_settings(bad)
    assert "got" not in str(info.value)


# ---------------------------------------------------------------------------------------------
# Declarations: one field per setting, everything else generated from it

RUN_CLASSES = [cls for _, classes in RUN_OPTIONS for cls in classes]


@options
class SensorOptions:
    """A component that is not part of the project: one new setting, declared once."""

    sample_every: int = option(
        default=5, kind=COUNT, flag="--sample-every", help="take a sample every N seconds"
    )


def test_one_declaration_makes_a_flag_a_file_key_and_its_errors(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser(prog="ambrosia-edge run")
    add_arguments(parser, *RUN_CLASSES, SensorOptions)
    assert re.search(
        r"--sample-every N +take a sample every N seconds \(default: 5\)", parser.format_help()
    )
    assert parser.parse_args(["--sample-every", "7"]).sample_every == "7"
    assert parser.parse_args([]).sample_every is None  # not given: the file may set it

    table = declared(*RUN_CLASSES, SensorOptions)
    assert read_values({"sample_every": "7"}, Where("flag"), table) == {"sample_every": 7}
    with pytest.raises(ConfigError) as info:
        read_values({"sample_every": "often"}, Where("flag"), table)
    assert str(info.value) == (
        "--sample-every: expected a positive integer, got 'often'; for example: --sample-every 5"
    )

    good = write(tmp_path / "good.toml", "sample_every = 9\npage_bytes = '8KiB'\n")
    assert read_file(good, table, "") == {"sample_every": 9, "page_bytes": 8192}
    typo = write(tmp_path / "typo.toml", "sample_evry = 9\n")
    with pytest.raises(
        ConfigError, match=r"did you mean 'sample_every'\?.*known keys:.*sample_every"
    ):
        read_file(typo, table, "")
    bad = write(tmp_path / "bad.toml", "sample_every = 0\n")
    with pytest.raises(ConfigError) as info:
        read_file(bad, table, "")
    assert str(info.value) == (
        f"sample_every in {bad}: expected a positive integer, got 0; for example: sample_every = 5"
    )

    assert SensorOptions().sample_every == 5
    with pytest.raises(ConfigError, match=r"^SensorOptions\.sample_every: .*got 0"):
        SensorOptions(sample_every=0)


def test_run_flags_and_file_keys_are_the_declared_settings() -> None:
    parser = argparse.ArgumentParser()
    add_run_arguments(parser)
    dests = {action.dest for action in parser._actions} - {"help", "config"}
    table = declared(*RUN_CLASSES)
    assert dests == {name for name, item in table.items() if item.option.flag is not None}
    # no flag for secrets (a command line is visible to every user of the machine); sources are
    # tables of the file only
    no_flag = {"secret", "mqtt_password", "ui_token", "sources"}
    assert dests == {f.name for f in fields(Settings)} - no_flag | {"secret_env"}
    # no file key for a one-off act: a config file read at every start would repeat it
    no_key = {"migrate_from"}
    assert {item.key for item in table.values()} - {None} == {
        f.name for f in fields(Settings)
    } - no_key | {"secret_env"}


def test_settings_is_every_component_in_one() -> None:
    s = Settings("m:C", "s", page_bytes=8192, fsync=False, peers={"c": PeerAddress("h", 1)})
    for component in (ProcessOptions, StoreOptions, CoordinatorOptions):
        assert isinstance(s, component)
        for f in fields(component):
            assert f in fields(Settings)
    assert pick(CoordinatorOptions, s) == CoordinatorOptions(page_bytes=8192)
    assert pick(StoreOptions, s) == StoreOptions(log=s.log, fsync=False)
    assert CoordinatorOptions() == pick(CoordinatorOptions, Settings("m:C", "s"))


@pytest.mark.parametrize(
    ("make", "complaint"),
    [
        (lambda: CoordinatorOptions(page_bytes=0), "CoordinatorOptions.page_bytes"),
        (lambda: CoordinatorOptions(listen="h:1"), "CoordinatorOptions.listen"),  # type: ignore[arg-type]
        (lambda: StoreOptions(log="x", fsync="no"), "StoreOptions.fsync"),  # type: ignore[arg-type]
        (lambda: StoreOptions(), "StoreOptions.log"),
        (lambda: ProcessOptions("m:C", "s", {"s": PeerAddress("h", 1)}), "own name"),
    ],
)
def test_each_component_checks_its_own_options(make: Any, complaint: str) -> None:
    with pytest.raises(ConfigError, match=complaint):
        make()


def test_options_are_frozen() -> None:
    s = Settings("m:C", "s")
    with pytest.raises(AttributeError):
        s.page_bytes = 1  # type: ignore[misc]


# ---------------------------------------------------------------------------------------------
# load_class


def test_split_target() -> None:
    assert split_target("pkg.mod:Cls") == ("pkg.mod", "Cls")
    assert split_target("a/b.py:Outer.Inner") == ("a/b.py", "Outer.Inner")
    assert split_target(r"C:\app\counter.py:Counter") == (r"C:\app\counter.py", "Counter")


@pytest.mark.parametrize(
    ("target", "complaint"),
    [
        ("counter.py", "no ':Class' part"),
        (r"C:\app\counter.py", "no ':Class' part"),
        (":Counter", "no module or file"),
        ("counter.py:", "not a class name"),
        ("counter.py:1x", "not a class name"),
        ("my-app:App", "neither a dotted module name nor a .py file"),
        ("", "empty target"),
    ],
)
def test_split_target_errors(target: str, complaint: str) -> None:
    with pytest.raises(ConfigError, match=complaint) as info:
        split_target(target)
    assert "counter.py:Counter" in str(info.value)


@pytest.mark.usefixtures("isolated_imports")
def test_load_class_from_file_with_sibling_import(tmp_path: Path) -> None:
    write(tmp_path / "helpers_ae1.py", "TOTAL = 41\n")
    write(
        tmp_path / "counter_ae1.py",
        """\
        from dataclasses import dataclass

        import helpers_ae1

        @dataclass
        class Counter:
            value: int = helpers_ae1.TOTAL + 1

            class Inner:
                pass
        """,
    )
    cls = load_class(f"{tmp_path}/counter_ae1.py:Counter")
    assert cls.__name__ == "Counter"
    assert cls.__module__ == "counter_ae1"
    assert cls().value == 42
    assert sys.modules["counter_ae1"].Counter is cls
    assert str(tmp_path) in sys.path
    # Loading again (or importing it as a sibling would) gives the same class, not a copy.
    assert load_class(f"{tmp_path}/counter_ae1.py:Counter") is cls
    assert load_class("counter_ae1:Counter") is cls
    assert load_class(f"{tmp_path}/counter_ae1.py:Counter.Inner") is vars(cls)["Inner"]


@pytest.mark.usefixtures("isolated_imports")
def test_load_class_relative_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path / "sub" / "rel_ae2.py", "class Rel:\n    pass\n")
    monkeypatch.chdir(tmp_path)
    cls = load_class("sub/rel_ae2.py:Rel")
    assert sys.modules["rel_ae2"].__file__ == str(tmp_path / "sub" / "rel_ae2.py")
    assert cls.__name__ == "Rel"


@pytest.mark.usefixtures("isolated_imports")
def test_load_class_from_module() -> None:
    from fractions import Fraction

    assert load_class("fractions:Fraction") is Fraction
    assert load_class("ambrosia_edge.config:Settings") is Settings


@pytest.mark.usefixtures("isolated_imports")
def test_load_class_module_from_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path / "cwd_mod_ae3.py", "class Here:\n    pass\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    assert load_class("cwd_mod_ae3:Here").__name__ == "Here"


@pytest.mark.usefixtures("isolated_imports")
@pytest.mark.parametrize(
    ("files", "target", "complaints"),
    [
        ({}, "{d}/missing.py:C", ["file not found", "missing.py", "{d}/missing.py:C"]),
        ({"sub/x.txt": ""}, "{d}/sub:C", ["is a directory", "package.module:Class"]),
        (
            {"boom_ae4.py": "import no_such_module_ae4\n"},
            "{d}/boom_ae4.py:C",
            ["ModuleNotFoundError", "No module named 'no_such_module_ae4'", "boom_ae4.py:"],
        ),
        (
            {"raise_ae5.py": "x = 1\nraise RuntimeError('bad config value')\n"},
            "{d}/raise_ae5.py:C",
            ["RuntimeError: bad config value", "raise_ae5.py:2"],
        ),
        (
            {"syntax_ae6.py": "def f(:\n"},
            "{d}/syntax_ae6.py:C",
            ["SyntaxError", "line 1"],
        ),
        (
            {"exit_ae7.py": "import sys\nsys.exit(3)\n"},
            "{d}/exit_ae7.py:C",
            ["SystemExit: 3"],
        ),
        (
            {"attr_ae8.py": "class Counter:\n    pass\nclass Other:\n    pass\n"},
            "{d}/attr_ae8.py:Countr",
            ["no attribute 'Countr'", "did you mean 'Counter'?", "classes there: Counter, Other"],
        ),
        (
            {"func_ae9.py": "def make():\n    pass\n"},
            "{d}/func_ae9.py:make",
            ["names a function, not a class"],
        ),
        (
            {"json.py": "class C:\n    pass\n"},
            "{d}/json.py:C",
            ["module 'json'", "another module", "rename the file"],
        ),
    ],
)
def test_load_class_errors(
    tmp_path: Path, files: dict[str, str], target: str, complaints: list[str]
) -> None:
    for name, text in files.items():
        write(tmp_path / name, text)
    target = target.format(d=tmp_path)
    with pytest.raises(ConfigError) as info:
        load_class(target)
    for complaint in complaints:
        assert complaint.format(d=tmp_path) in str(info.value)


@pytest.mark.usefixtures("isolated_imports")
def test_failed_import_leaves_no_half_module(tmp_path: Path) -> None:
    write(tmp_path / "half_ae10.py", "class C:\n    pass\nraise ValueError('x')\n")
    with pytest.raises(ConfigError):
        load_class(f"{tmp_path}/half_ae10.py:C")
    assert "half_ae10" not in sys.modules


@pytest.mark.usefixtures("isolated_imports")
def test_load_class_module_errors() -> None:
    with pytest.raises(ConfigError, match=r"no module named 'no_pkg_ae11'.*'no_pkg_ae11\.x:C'"):
        load_class("no_pkg_ae11.x:C")
    with pytest.raises(ConfigError, match=r"'json' has no attribute 'Nope'"):
        load_class("json:Nope")
    with pytest.raises(ConfigError, match="names a function, not a class"):
        load_class("json:dumps")
