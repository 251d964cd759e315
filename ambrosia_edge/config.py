"""Settings of one immortal process, from a TOML file, the command line and the environment.

Precedence, lowest to highest: built-in defaults, the config file, ``AMBROSIA_EDGE_SECRET``,
command-line flags. Peers merge by name instead of replacing the whole table, so a shared
deployment file can list every address and a flag can still move one peer.

Every bad value becomes a :class:`ConfigError` that names where it came from (a flag, a key in a
named file, a field of Settings), repeats the value and shows a good one, because these
messages are read by someone at a terminal who has to fix the line they just typed. Secrets are
the one exception: their values are never echoed.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Literal

import platformdirs

from .errors import ConfigError
from .loader import is_file_module, split_target

__all__ = [
    "SECRET_ENV",
    "PeerAddress",
    "Settings",
    "default_log_url",
    "load_settings",
    "parse_peer",
    "parse_size",
]

#: Environment variable that carries the deployment secret, so it stays out of files and ``ps``.
SECRET_ENV = "AMBROSIA_EDGE_SECRET"

_APP = "ambrosia-edge"

# Names end up in directory names and on the wire; a leading letter or digit keeps "." and ".."
# and option-looking names ("-x") out.
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
_NAME_RULE = "a name starts with a letter or digit and uses only letters, digits, '_', '.' and '-'"
_HOST_RE = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_.-]{0,251}[A-Za-z0-9_.])?")
_SIZE_RE = re.compile(r"(\d+(?:_\d+)*(?:\.\d+)?)\s*([A-Za-z]*)")

# GNU coreutils convention: a single letter or "xiB" is binary, "xB" is decimal.
_BINARY = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}
_DECIMAL = {"k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12, "p": 10**15}

_SIZE_KEYS = ("checkpoint_bytes", "page_bytes", "buffer_bytes")


class _Problem(Exception):
    """What is wrong with a value, before we know whether it came from a flag or a file."""


# ---------------------------------------------------------------------------------------------
# Where a value came from, so an error can point at the exact thing to edit.

_FLAGS: dict[str, str] = {
    "target": "TARGET",
    "name": "--name",
    "log": "--log",
    "listen": "--listen",
    "peers": "--peer",
    "checkpoint_bytes": "--checkpoint-bytes",
    "keep_checkpoints": "--keep-checkpoints",
    "fsync": "--no-fsync",
    "secret": "--secret-env",
    "secret_env": "--secret-env",
    "page_bytes": "--page-bytes",
    "buffer_bytes": "--buffer-bytes",
}

# key -> (example on the command line, example line in a TOML file)
_EXAMPLES: dict[str, tuple[str, str]] = {
    "target": ("ambrosia-edge run counter.py:Counter", 'target = "counter.py:Counter"'),
    "name": ("--name server", 'name = "server"'),
    "log": ("--log /var/lib/ambrosia/server", 'log = "/var/lib/ambrosia/server"'),
    "listen": ("--listen 127.0.0.1:7001", 'listen = "127.0.0.1:7001"'),
    "peers": ("--peer client=127.0.0.1:7002", '[peers] client = "127.0.0.1:7002"'),
    "checkpoint_bytes": ("--checkpoint-bytes 64MiB", 'checkpoint_bytes = "64MiB"'),
    "keep_checkpoints": ("--keep-checkpoints 2", "keep_checkpoints = 2"),
    "fsync": ("--no-fsync", "fsync = false"),
    "secret": ("--secret-env MY_SECRET", 'secret_env = "MY_SECRET"'),
    "secret_env": ("--secret-env MY_SECRET", 'secret_env = "MY_SECRET"'),
    "page_bytes": ("--page-bytes 4MiB", 'page_bytes = "4MiB"'),
    "buffer_bytes": ("--buffer-bytes 64MiB", 'buffer_bytes = "64MiB"'),
}


@dataclass(frozen=True)
class _Origin:
    kind: Literal["flag", "file", "value"]
    path: Path | None = None

    def label(self, key: str) -> str:
        if self.kind == "flag":
            return _FLAGS.get(key, "--" + key.replace("_", "-"))
        if self.kind == "file":
            return f"{key} in {self.path}"
        return f"Settings.{key}"

    def example(self, key: str) -> str:
        cli, toml = _EXAMPLES.get(key, ("", ""))
        return cli if self.kind == "flag" else toml


_FLAG = _Origin("flag")
_VALUE = _Origin("value")


def _bad(
    origin: _Origin, key: str, problem: str, value: object, *, show: bool = True
) -> ConfigError:
    shown = f", got {value!r}" if show else ""
    example = origin.example(key)
    hint = f"; for example: {example}" if example else ""
    return ConfigError(f"{origin.label(key)}: {problem}{shown}{hint}")


# ---------------------------------------------------------------------------------------------
# Addresses and sizes


@dataclass(frozen=True)
class PeerAddress:
    """A TCP endpoint; IPv6 hosts are stored bare and bracketed again only when printed."""

    host: str
    port: int

    def __post_init__(self) -> None:
        if not isinstance(self.host, str) or not self.host:
            raise ConfigError(f"PeerAddress: host must be a non-empty string, got {self.host!r}")
        if isinstance(self.port, bool) or not isinstance(self.port, int):
            raise ConfigError(f"PeerAddress: port must be an int, got {self.port!r}")
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"PeerAddress: port must be in 0..65535, got {self.port}")

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @classmethod
    def parse(cls, text: str, *, allow_port_zero: bool = False) -> PeerAddress:
        """Parse ``HOST:PORT`` or ``[IPV6]:PORT``.

        Port 0 ("any free port") only makes sense for a listener, so it is refused unless the
        caller opts in.
        """
        try:
            return _parse_address(text, allow_port_zero)
        except _Problem as exc:
            raise ConfigError(
                f"{exc}, got {text!r}; for example 127.0.0.1:7001 or [::1]:7001"
            ) from None


def _parse_address(text: str, allow_port_zero: bool) -> PeerAddress:
    text = text.strip()
    if text.startswith("["):
        end = text.find("]")
        if end < 0 or text[end + 1 : end + 2] != ":":
            raise _Problem("expected [IPV6]:PORT")
        host, port_text = text[1:end], text[end + 2 :]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise _Problem(f"{host!r} in brackets is not an IPv6 address") from None
    else:
        host, colon, port_text = text.rpartition(":")
        if not colon:
            raise _Problem("expected HOST:PORT")
        if ":" in host:
            raise _Problem("an IPv6 host needs brackets, as in [::1]:7001")
        if not host:
            raise _Problem("missing host (0.0.0.0 listens on every interface)")
        if not _HOST_RE.fullmatch(host):
            raise _Problem(f"{host!r} is not a host name or IPv4 address")
    if not port_text.isascii() or not port_text.isdigit():
        raise _Problem(f"port {port_text!r} is not a number")
    port = int(port_text)
    low = 0 if allow_port_zero else 1
    if not low <= port <= 65535:
        raise _Problem(f"port {port} is outside {low}..65535")
    return PeerAddress(host, port)


def _parse_peer(text: str) -> tuple[str, PeerAddress]:
    name, eq, address = text.partition("=")
    name = name.strip()
    if not eq:
        raise _Problem("expected NAME=HOST:PORT")
    if not _NAME_RE.fullmatch(name):
        raise _Problem(f"bad peer name {name!r}: {_NAME_RULE}")
    try:
        return name, _parse_address(address, False)
    except _Problem as exc:
        raise _Problem(f"peer {name!r}: {exc}") from None


def parse_peer(text: str) -> tuple[str, PeerAddress]:
    """Parse ``NAME=HOST:PORT`` as given to ``--peer``."""
    try:
        return _parse_peer(text)
    except _Problem as exc:
        raise ConfigError(f"{exc}, got {text!r}; for example client=127.0.0.1:7002") from None


def _size_unit(unit: str) -> int | None:
    u = unit.lower()
    if u in ("", "b"):
        return 1
    if len(u) == 1:
        return _BINARY.get(u)
    if len(u) == 2 and u[1] == "b":
        return _DECIMAL.get(u[0])
    if len(u) == 3 and u[1:] == "ib":
        return _BINARY.get(u[0])
    return None


def _parse_size(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise _Problem("expected a size (an integer or a string with a unit)")
    if isinstance(value, int):
        size = value
    else:
        match = _SIZE_RE.fullmatch(value.strip())
        unit = _size_unit(match.group(2)) if match else None
        if match is None or unit is None:
            raise _Problem("expected a size such as 64MiB, 4MB or 1048576")
        try:
            exact = Decimal(match.group(1).replace("_", "")) * unit
        except InvalidOperation:
            raise _Problem("expected a size such as 64MiB, 4MB or 1048576") from None
        if exact != exact.to_integral_value():
            raise _Problem("size is not a whole number of bytes")
        size = int(exact)
    if size <= 0:
        raise _Problem("size must be positive")
    return size


def parse_size(text: str | int) -> int:
    """Parse a byte count: ``1048576``, ``64MiB``, ``64MB``, ``64M``, ``1.5GiB``.

    Units follow GNU coreutils: ``KiB`` and ``K`` are 1024, ``KB`` is 1000 (likewise M, G, T,
    P); case does not matter. The result must be a positive whole number of bytes.
    """
    try:
        return _parse_size(text)
    except _Problem as exc:
        raise ConfigError(f"{exc}, got {text!r}; for example 64MiB, 4MB or 1048576") from None


def default_log_url(name: str) -> str:
    """Where a log lives when nobody says: per user, so two users of one machine never collide."""
    return str(Path(platformdirs.user_state_dir(_APP)) / "logs" / name)


# ---------------------------------------------------------------------------------------------
# Settings


@dataclass
class Settings:
    """Everything the runtime needs to start one immortal; validated on construction."""

    target: str
    name: str
    log: str = ""
    listen: PeerAddress | None = None
    peers: dict[str, PeerAddress] = field(default_factory=dict)
    checkpoint_bytes: int = 64 * 1024 * 1024
    keep_checkpoints: int = 2
    fsync: bool = True
    # Out of repr: settings get logged and printed, the secret must not be.
    secret: str | None = field(default=None, repr=False)
    page_bytes: int = 4 * 1024 * 1024
    buffer_bytes: int = 64 * 1024 * 1024

    def __post_init__(self) -> None:
        # Settings built in code skip load_settings; check them here too so a typo in a test or
        # an embedding program fails at construction rather than deep inside the runtime.
        _check_target(self.target, _VALUE)
        _check_name(self.name, _VALUE, "name")
        if not self.log:
            self.log = default_log_url(self.name)
        _check_str(self.log, _VALUE, "log")
        if self.listen is not None and not isinstance(self.listen, PeerAddress):
            raise _bad(_VALUE, "listen", "expected a PeerAddress or None", self.listen)
        if not isinstance(self.peers, dict):
            raise _bad(_VALUE, "peers", "expected a dict of name -> PeerAddress", self.peers)
        for peer, address in self.peers.items():
            _check_peer(peer, address, self.name, _VALUE)
        for key in _SIZE_KEYS:
            _check_positive(getattr(self, key), _VALUE, key)
        _check_positive(self.keep_checkpoints, _VALUE, "keep_checkpoints")
        if not isinstance(self.fsync, bool):
            raise _bad(_VALUE, "fsync", "expected True or False", self.fsync)
        if self.secret is not None:
            _check_secret(self.secret, _VALUE, "secret")


# ---------------------------------------------------------------------------------------------
# Checks and conversions shared by the file, the flags and Settings itself


def _check_str(value: object, origin: _Origin, key: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _bad(origin, key, "expected a non-empty string", value)
    return value


def _check_target(value: object, origin: _Origin) -> str:
    text = _check_str(value, origin, "target")
    try:
        split_target(text)
    except ConfigError as exc:
        # split_target already shows the value and an example.
        raise ConfigError(f"{origin.label('target')}: {exc}") from None
    return text


def _check_name(value: object, origin: _Origin, key: str) -> str:
    if not isinstance(value, str) or not _NAME_RE.fullmatch(value):
        raise _bad(origin, key, _NAME_RULE, value)
    return value


def _check_positive(value: object, origin: _Origin, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise _bad(origin, key, "expected a positive integer", value)
    return value


def _check_secret(value: object, origin: _Origin, key: str) -> str:
    if not isinstance(value, str) or not value:
        # Whatever is there was meant to be a secret: never print it.
        raise _bad(origin, key, "the secret must be a non-empty string", value, show=False)
    return value


def _check_peer(peer: object, address: object, own_name: str, origin: _Origin) -> None:
    if not isinstance(peer, str) or not _NAME_RE.fullmatch(peer):
        raise _bad(origin, "peers", f"bad peer name: {_NAME_RULE}", peer)
    if not isinstance(address, PeerAddress):
        raise _bad(origin, "peers", f"peer {peer!r} needs a PeerAddress", address)
    if address.port == 0:
        raise _bad(origin, "peers", f"peer {peer!r} needs a real port, not 0", str(address))
    if peer == own_name:
        raise _bad(
            origin,
            "peers",
            f"peer {peer!r} has this immortal's own name (calls to self need no peer entry)",
            f"{peer}={address}",
        )


def _as_size(value: object, origin: _Origin, key: str) -> int:
    try:
        return _parse_size(value)
    except _Problem as exc:
        raise _bad(origin, key, str(exc), value) from None


def _as_count(value: object, origin: _Origin, key: str) -> int:
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    return _check_positive(value, origin, key)


def _as_bool(value: object, origin: _Origin, key: str) -> bool:
    if not isinstance(value, bool):
        raise _bad(origin, key, "expected true or false", value)
    return value


def _as_listen(value: object, origin: _Origin) -> PeerAddress:
    if isinstance(value, PeerAddress):
        return value
    if not isinstance(value, str):
        raise _bad(origin, "listen", "expected HOST:PORT", value)
    try:
        return _parse_address(value, True)
    except _Problem as exc:
        raise _bad(origin, "listen", str(exc), value) from None


def _as_peer_table(value: object, origin: _Origin) -> dict[str, PeerAddress]:
    if not isinstance(value, Mapping):
        raise _bad(origin, "peers", 'expected a table of name = "HOST:PORT"', value)
    peers: dict[str, PeerAddress] = {}
    for peer, address in value.items():
        if isinstance(address, str):
            try:
                address = _parse_address(address, False)
            except _Problem as exc:
                raise _bad(origin, "peers", f"peer {peer!r}: {exc}", value[peer]) from None
        if not isinstance(address, PeerAddress):
            raise _bad(origin, "peers", f'peer {peer!r}: expected "HOST:PORT"', address)
        if not isinstance(peer, str) or not _NAME_RE.fullmatch(peer):
            raise _bad(origin, "peers", f"bad peer name: {_NAME_RULE}", peer)
        peers[peer] = address
    return peers


def _as_peer_list(value: object, origin: _Origin) -> dict[str, PeerAddress]:
    """``--peer`` repeats; giving one name two addresses is a typo, not an override."""
    if isinstance(value, Mapping):
        return _as_peer_table(value, origin)
    if isinstance(value, str | tuple):
        items: list[object] = [value]
    elif isinstance(value, list):
        items = list(value)
    else:
        raise _bad(origin, "peers", "expected NAME=HOST:PORT", value)
    peers: dict[str, PeerAddress] = {}
    for item in items:
        if isinstance(item, str):
            try:
                peer, address = _parse_peer(item)
            except _Problem as exc:
                raise _bad(origin, "peers", str(exc), item) from None
        elif isinstance(item, tuple) and len(item) == 2 and isinstance(item[1], PeerAddress):
            peer, address = _check_name(item[0], origin, "peers"), item[1]
        else:
            raise _bad(origin, "peers", "expected NAME=HOST:PORT", item)
        if peers.get(peer, address) != address:
            raise _bad(
                origin,
                "peers",
                f"peer {peer!r} given twice with different addresses ({peers[peer]}, {address})",
                item,
            )
        peers[peer] = address
    return peers


def _secret_from_var(var: object, origin: _Origin) -> str:
    name = _check_str(var, origin, "secret_env")
    value = os.environ.get(name)
    if not value:
        state = "is empty" if value is not None else "is not set"
        raise _bad(origin, "secret_env", f"environment variable {name} {state}", name, show=False)
    return value


def _convert(key: str, value: object, origin: _Origin) -> Any:
    if key == "target":
        return _check_target(value, origin)
    if key == "name":
        return _check_name(value, origin, key)
    if key == "log":
        text = _check_str(value, origin, key)
        return text if "://" in text else os.path.expanduser(text)
    if key == "listen":
        return _as_listen(value, origin)
    if key == "peers":
        return (
            _as_peer_list(value, origin) if origin.kind == "flag" else _as_peer_table(value, origin)
        )
    if key in _SIZE_KEYS:
        return _as_size(value, origin, key)
    if key == "keep_checkpoints":
        return _as_count(value, origin, key)
    if key == "fsync":
        return _as_bool(value, origin, key)
    if key == "secret":
        return _check_secret(value, origin, key)
    if key == "secret_env":
        return _check_str(value, origin, key)
    raise TypeError(f"load_settings() got an unexpected setting {key!r}")


# ---------------------------------------------------------------------------------------------
# The config file

_KEYS = frozenset({f.name for f in fields(Settings)} | {"secret_env"})

_TOML_EXAMPLE = (
    'target = "counter.py:Counter"\n  listen = "127.0.0.1:7001"\n'
    '  [peers]\n  client = "127.0.0.1:7002"'
)


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"--config: file {path} does not exist") from None
    except IsADirectoryError:
        raise ConfigError(f"--config: {path} is a directory, not a TOML file") from None
    except OSError as exc:
        raise ConfigError(f"--config: cannot read {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(
            f"--config: {path} is not valid TOML ({exc}); for example:\n  {_TOML_EXAMPLE}"
        ) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"--config: {path} is not UTF-8 text ({exc.reason})") from None


def _from_file(path: Path) -> dict[str, Any]:
    """Read and convert the file; relative paths in it are relative to the file itself."""
    origin = _Origin("file", path)
    base = path.expanduser().resolve().parent
    out: dict[str, Any] = {}
    for key, value in _read_toml(path).items():
        if key not in _KEYS:
            close = difflib.get_close_matches(key, sorted(_KEYS), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(
                f"unknown key {key!r} in {path}{hint} (known keys: {', '.join(sorted(_KEYS))})"
            )
        converted = _convert(key, value, origin)
        if key == "target":
            module, _, cls = converted.rpartition(":")
            if is_file_module(module) and not Path(module).expanduser().is_absolute():
                converted = f"{base / module}:{cls}"
        elif key == "log" and "://" not in converted and not Path(converted).is_absolute():
            converted = str(base / converted)
        out[key] = converted
    if "secret" in out and "secret_env" in out:
        raise ConfigError(f"{path}: give either secret or secret_env, not both")
    return out


def load_settings(config_file: Path | None, **cli_overrides: object) -> Settings:
    """Merge the config file, the environment and command-line values into one ``Settings``.

    ``cli_overrides`` use the ``Settings`` field names plus ``secret_env`` (the name of an
    environment variable that holds the secret); ``None`` means "flag not given". Values may be
    raw command-line strings or already parsed. When no name is given anywhere, the class name
    in the target, lowercased, is the name.
    """
    file_origin = _Origin("file", config_file)
    from_file: dict[str, Any] = _from_file(config_file) if config_file is not None else {}
    given = {key: value for key, value in cli_overrides.items() if value is not None}
    unknown = sorted(set(given) - _KEYS)
    if unknown:
        raise TypeError(f"load_settings() got unexpected settings: {', '.join(unknown)}")
    from_flags: dict[str, Any] = {key: _convert(key, value, _FLAG) for key, value in given.items()}

    merged = {k: v for k, v in from_file.items() if k not in ("secret", "secret_env")}
    for key, value in from_flags.items():
        if key not in ("peers", "secret", "secret_env"):
            merged[key] = value
    flag_peers: dict[str, PeerAddress] = from_flags.get("peers", {})
    if flag_peers:
        merged["peers"] = {**from_file.get("peers", {}), **flag_peers}

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
        merged["secret"] = _secret_from_var(from_file["secret_env"], file_origin)

    target = merged.get("target")
    if target is None:
        where = f", or set target in {config_file}" if config_file is not None else ""
        raise ConfigError(
            "TARGET: no immortal class given; name it as path/file.py:Class or "
            f"package.module:Class{where}; for example: ambrosia-edge run counter.py:Counter"
        )
    if "name" not in merged:
        derived = split_target(target)[1].rpartition(".")[2].lower()
        if not _NAME_RE.fullmatch(derived):
            raise ConfigError(
                f"--name: the class name in {target!r} does not make a valid immortal name "
                f"({derived!r}: {_NAME_RULE}); for example: --name server"
            )
        merged["name"] = derived
    for peer, address in merged.get("peers", {}).items():
        _check_peer(peer, address, merged["name"], _FLAG if peer in flag_peers else file_origin)
    return Settings(**merged)
