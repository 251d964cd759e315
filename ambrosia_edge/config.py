"""Settings of one immortal process, from a TOML file, the command line and the environment.

Precedence, lowest to highest: built-in defaults, the device profile's defaults (a Raspberry
Pi, a laptop or a server, see :mod:`ambrosia_edge.devices.profiles`), the config file,
``AMBROSIA_EDGE_SECRET``, command-line flags. Peers merge by name instead of replacing the whole
table, so a shared deployment file can list every address and a flag can still move one peer.

Each component declares its own settings once, as fields of a small options class
(:class:`ProcessOptions`, :class:`StoreOptions`, :class:`CoordinatorOptions`); the flags of
``ambrosia-edge run``, the keys of the config file and the checks of values given in code are
generated from those declarations by :mod:`ambrosia_edge.options`. :class:`Settings` is all of
them in one, which is what the runtime is started with. A new setting is one new field, declared
with :func:`~ambrosia_edge.options.option` in the class of the component that reads it.

Every bad value becomes a :class:`ConfigError` that names where it came from (a flag, a key in a
named file, a field of Settings), repeats the value and shows a good one. Secrets are the one
exception: their values are never echoed.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

import platformdirs

from .coordinator_options import CoordinatorOptions
from .discovery_options import DiscoveryOptions, check_addresses
from .errors import ConfigError
from .kinds import (
    LOCATION,
    NAME,
    NAME_RE,
    NAME_RULE,
    PEERS,
    SECONDS,
    SWITCH,
    TEXT,
    PeerAddress,
    check_peer,
    check_text,
    parse_peer,
    parse_size,
)
from .loader import is_file_module, split_target
from .mqtt_options import MqttOptions
from .options import (
    At,
    Kind,
    Where,
    add_arguments,
    check_fields,
    declared,
    option,
    options,
    read_file,
    read_values,
)
from .ui_options import UiOptions

__all__ = [
    "RUN_OPTIONS",
    "SECRET_ENV",
    "CoordinatorOptions",
    "DeviceOptions",
    "PeerAddress",
    "ProcessOptions",
    "SecretSource",
    "Settings",
    "StoreOptions",
    "add_run_arguments",
    "default_log_url",
    "load_settings",
    "parse_peer",
    "parse_size",
    "settings_from_args",
]

#: Environment variable that carries the deployment secret, so it stays out of files and ``ps``.
SECRET_ENV = "AMBROSIA_EDGE_SECRET"

_APP = "ambrosia-edge"
_MiB = 1 << 20


def default_log_url(name: str) -> str:
    """Where a log lives when nobody says: per user, so two users of one machine never collide."""
    return str(Path(platformdirs.user_state_dir(_APP)) / "logs" / name)


# ---------------------------------------------------------------------------------------------
# Kinds of value: how each is read from a flag or a file and checked when given in code


def _target(value: object, at: At) -> str:
    text = check_text(value, at)
    try:
        split_target(text)
    except ConfigError as exc:
        # split_target already shows the value and an example.
        raise ConfigError(f"{at.label()}: {exc}") from None
    return text


def _target_in_file(target: str, base: Path) -> str:
    module, _, cls = target.rpartition(":")
    # os.path.expanduser: Path.expanduser raises for "~nosuchuser", this leaves it as it is
    if is_file_module(module) and not Path(os.path.expanduser(module)).is_absolute():
        return f"{base / module}:{cls}"
    return target


TARGET = Kind(_target, _target, in_file=_target_in_file)


def _profile(value: object, at: At) -> str:
    from ambrosia_edge.devices.profiles import PROFILES

    text = check_text(value, at)
    if text not in PROFILES:
        raise at.bad(f"expected one of {', '.join(PROFILES)}", value)
    return text


PROFILE = Kind(_profile, _profile, metavar="{auto,pi,laptop,server}")

#: Keys of a declared source that name files: relative to the config file, like ``log``.
_SOURCE_PATHS = ("path", "root")


def _sources(value: object, at: At) -> tuple[dict[str, Any], ...]:
    if not isinstance(value, list | tuple):
        raise at.bad("expected an array of tables ([[sources]])", value)
    out = []
    for number, table in enumerate(value, 1):
        if not isinstance(table, dict):
            raise at.bad(f"source {number} is not a table", table)
        kind = table.get("kind")
        impulse = table.get("impulse")
        if not isinstance(kind, str) or not kind:
            raise at.bad(f"source {number} has no kind", table)
        if not isinstance(impulse, str) or not impulse.isidentifier():
            raise at.bad(f"source {number} ({kind}) names no @impulse method to feed", table)
        out.append(dict(table))
    return tuple(out)


def _sources_in_file(sources: tuple[dict[str, Any], ...], base: Path) -> tuple[dict[str, Any], ...]:
    return tuple(
        {
            key: str(base / os.path.expanduser(value))
            if key in _SOURCE_PATHS and isinstance(value, str)
            else value
            for key, value in table.items()
        }
        for table in sources
    )


SOURCES = Kind(
    _sources,
    _sources,
    in_file=_sources_in_file,
    toml=lambda key, example: '[[sources]]\n  kind = "cpu_temperature"\n  impulse = "reading"',
)


# ---------------------------------------------------------------------------------------------
# The settings, one options class per component


@options
class ProcessOptions:
    """Which immortal this process hosts, under which name, and which peers it calls."""

    target: str = option(
        kind=TARGET,
        flag="TARGET",
        help="file.py:Class or module:Class",
        example="counter.py:Counter",
        cli_example="ambrosia-edge run counter.py:Counter",
    )
    name: str = option(
        kind=NAME,
        flag="--name",
        help="unique name of this immortal in the deployment (default: class name, lowercased)",
        example="server",
    )
    peers: dict[str, PeerAddress | None] = option(
        default_factory=dict,
        kind=PEERS,
        flag="--peer",
        help="another immortal this one calls or answers, with its address or by name alone "
        "(found by discovery); repeat for each peer; a name with standbys lists every "
        "address: NAME=HOST:PORT,HOST:PORT",
        example="client=127.0.0.1:7002",
    )

    def __post_init__(self) -> None:
        check_fields(self)
        at = At(Where("value", owner=type(self).__name__), declared(ProcessOptions)["peers"])
        for peer, address in self.peers.items():
            check_peer(peer, address, self.name, at)


@options
class StoreOptions:
    """Where the log lives and how it is written."""

    log: str = option(
        default="",
        kind=LOCATION,
        flag="--log",
        help="where its log lives: a directory or a storage URL "
        "(default: a per-user state directory named after --name)",
        example="/var/lib/ambrosia/server",
    )
    migrate_from: str | None = option(
        default=None,
        kind=TEXT,
        flag="--migrate-from",
        key=None,
        metavar="HOST:PORT|NAME",
        help="take the immortal over from its running instance at HOST:PORT (or found by "
        "its NAME through discovery): its log is copied into --log, which must hold none, "
        "and the old instance seals its own and stops (a live migration)",
        example="192.168.1.20:7001",
    )
    fsync: bool = option(
        default=True,
        kind=SWITCH,
        flag="--fsync",
        help="flush every log write to disk before running it; --no-fsync is faster but a "
        "power cut can lose the last inputs",
    )
    standby: bool = option(
        default=True,
        kind=SWITCH,
        flag="--standby",
        help="when another instance holds the log, follow it as a standby and take over when "
        "it stops; --no-standby fails instead",
    )
    lease_ttl: float | None = option(
        default=None,
        kind=SECONDS,
        flag="--lease-ttl",
        help="how long the log's lease outlives its holder's last renewal before a standby "
        "takes over, on tiers that fence by lease (nfs://: 1.5 s, s3:// gs:// az://: 2 s); "
        "the holder renews every quarter of it",
        example=1.5,
    )


@options
class DeviceOptions:
    """What kind of machine this is, and the sensors that feed the immortal on it."""

    profile: str = option(
        default="auto",
        kind=PROFILE,
        flag="--profile",
        help="device profile whose defaults (page, buffer and checkpoint sizes) apply under "
        "the config file and flags; auto detects a Raspberry Pi, a laptop or a server",
    )
    sources: tuple[dict[str, Any], ...] = option(
        default=(),
        kind=SOURCES,
        help="impulse sources to run on the primary, as [[sources]] tables "
        "(kind, impulse, every, ...)",
        example=({"kind": "cpu_temperature", "impulse": "reading", "every": "5s"},),
    )


@options
class SecretSource:
    """Where the secret comes from; read once by :func:`load_settings`, never kept."""

    secret_env: str | None = option(
        default=None,
        kind=TEXT,
        flag="--secret-env",
        metavar="VAR",
        help="read the deployment secret peers must share from environment variable VAR",
        example="MY_SECRET",
    )


@options
class Settings(
    UiOptions,
    DiscoveryOptions,
    MqttOptions,
    DeviceOptions,
    CoordinatorOptions,
    StoreOptions,
    ProcessOptions,
):
    """Everything the runtime needs to start one immortal: every component's options in one.

    Validated on construction, like each options class; an empty ``log`` means the per-user
    default location for ``name``.
    """

    def __post_init__(self) -> None:
        if self.log == "" and isinstance(self.name, str) and NAME_RE.fullmatch(self.name):
            object.__setattr__(self, "log", default_log_url(self.name))
        ProcessOptions.__post_init__(self)
        self.check_routes()
        check_addresses(self)


#: The options of ``ambrosia-edge run``, grouped as ``--help`` shows them.
RUN_OPTIONS: tuple[tuple[str, tuple[type, ...]], ...] = (
    ("immortal and peers", (ProcessOptions,)),
    ("discovery (see docs/discovery.md)", (DiscoveryOptions,)),
    ("log", (StoreOptions,)),
    ("device", (DeviceOptions,)),
    ("coordinator", (CoordinatorOptions, SecretSource)),
    ("MQTT (impulses from a broker; see docs/mqtt.md)", (MqttOptions,)),
    ("web page (see docs/ui.md)", (UiOptions,)),
)

_TABLE = declared(*(cls for _, classes in RUN_OPTIONS for cls in classes))
_FLAG = Where("flag")
_SECRETS = ("secret", "secret_env")
_TOML_EXAMPLE = (
    'target = "counter.py:Counter"\n  listen = "127.0.0.1:7001"\n'
    '  [peers]\n  client = "127.0.0.1:7002"'
)


# ---------------------------------------------------------------------------------------------
# Loading


def _secret_from_var(var: object, where: Where) -> str:
    at = At(where, _TABLE["secret_env"])
    name = check_text(var, at)
    value = os.environ.get(name)
    if not value:
        state = "is empty" if value is not None else "is not set"
        raise at.bad(f"environment variable {name} {state}", name, show=False)
    return value


def load_settings(config_file: Path | None, **cli_overrides: object) -> Settings:
    """Merge the config file, the environment and command-line values into one ``Settings``.

    ``cli_overrides`` use the ``Settings`` field names plus ``secret_env`` (the name of an
    environment variable that holds the secret); ``None`` means "flag not given". Values may be
    raw command-line strings or already parsed. When no name is given anywhere, the class name
    in the target, lowercased, is the name.
    """
    file_where = Where("file", config_file)
    from_file: dict[str, Any] = {}
    if config_file is not None:
        from_file = read_file(config_file, _TABLE, _TOML_EXAMPLE)
        if "secret" in from_file and "secret_env" in from_file:
            raise ConfigError(f"{config_file}: give either secret or secret_env, not both")
    given = {key: value for key, value in cli_overrides.items() if value is not None}
    unknown = sorted(set(given) - set(_TABLE))
    if unknown:
        raise TypeError(f"load_settings() got unexpected settings: {', '.join(unknown)}")
    from_flags = read_values(given, _FLAG, _TABLE)

    merged = {k: v for k, v in from_file.items() if k not in _SECRETS}
    for key, value in from_flags.items():
        if key in _SECRETS:
            continue
        merge = _TABLE[key].option.kind.merge
        merged[key] = merge(merged[key], value) if merge and key in merged else value

    # Resolve the secret from the highest-precedence source only, so a stale variable named in
    # the file does not matter when the command line or the environment supplies the secret.
    if "secret" in from_flags and "secret_env" in from_flags:
        raise ConfigError("give either a secret or --secret-env, not both")
    if "secret" in from_flags:
        merged["secret"] = from_flags["secret"]
    elif "secret_env" in from_flags:
        merged["secret"] = _secret_from_var(from_flags["secret_env"], _FLAG)
    elif os.environ.get(SECRET_ENV):
        merged["secret"] = os.environ[SECRET_ENV]
    elif "secret" in from_file:
        merged["secret"] = from_file["secret"]
    elif "secret_env" in from_file:
        merged["secret"] = _secret_from_var(from_file["secret_env"], file_where)

    target = merged.get("target")
    if target is None:
        where = f", or set target in {config_file}" if config_file is not None else ""
        raise ConfigError(
            "TARGET: no immortal class given; name it as path/file.py:Class or "
            f"package.module:Class{where}; for example: ambrosia-edge run counter.py:Counter"
        )
    if "name" not in merged:
        derived = split_target(target)[1].rpartition(".")[2].lower()
        if not NAME_RE.fullmatch(derived):
            raise ConfigError(
                f"--name: the class name in {target!r} does not make a valid immortal name "
                f"({derived!r}: {NAME_RULE}); for example: --name server"
            )
        merged["name"] = derived
    _apply_profile(merged)
    flag_peers: dict[str, PeerAddress | None] = from_flags.get("peers", {})
    for peer, address in merged.get("peers", {}).items():
        at = At(_FLAG if peer in flag_peers else file_where, _TABLE["peers"])
        check_peer(peer, address, merged["name"], at)
    return Settings(**merged)


def _apply_profile(merged: dict[str, Any]) -> None:
    """Fill in the profile's defaults for what neither the file nor a flag set."""
    from ambrosia_edge.devices.profiles import profile_named

    profile = profile_named(merged.get("profile", "auto"))
    for key, value in profile.defaults.items():
        merged.setdefault(key, value)


# ---------------------------------------------------------------------------------------------
# The command line of ``run``


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--config`` and a flag for every setting of ``RUN_OPTIONS`` to ``parser``."""
    parser.add_argument("--config", metavar="FILE", help="TOML file with the same settings")
    for title, classes in RUN_OPTIONS:
        add_arguments(parser.add_argument_group(title), *classes)


def settings_from_args(args: argparse.Namespace) -> Settings:
    """Turn arguments parsed by a parser given :func:`add_run_arguments` into Settings."""
    flags = {name: getattr(args, name) for name, item in _TABLE.items() if item.option.flag}
    return load_settings(Path(args.config) if args.config is not None else None, **flags)
