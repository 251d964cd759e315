"""The kinds of value settings have: sizes, counts, names, addresses, peer tables, switches.

Each kind is a :class:`~ambrosia_edge.options.Kind`: how a value is read from a flag or a config
file, and how it is checked when given in code. Declarations name a kind rather than a parser, so
``--page-bytes 4MiB``, ``page_bytes = "4MiB"`` and ``CoordinatorOptions(page_bytes=-1)`` all go
through the same rules and the same messages. The parsers raise :class:`Problem`, which a kind
turns into a :class:`ConfigError` naming the flag, file key or field to fix.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path

from .errors import ConfigError
from .options import At, Kind

__all__ = [
    "COUNT",
    "DISCOVER",
    "FILE",
    "LISTEN",
    "LOCATION",
    "NAME",
    "NAME_RE",
    "NAME_RULE",
    "PEERS",
    "SECONDS",
    "SECRET",
    "SIZE",
    "SWITCH",
    "TEXT",
    "PeerAddress",
    "PeerAddresses",
    "Problem",
    "check_peer",
    "check_text",
    "each_address",
    "format_size",
    "parse_peer",
    "parse_size",
    "read_address",
    "read_addresses",
    "read_peer",
    "read_size",
]

# Names end up in directory names and on the wire; a leading letter or digit keeps "." and ".."
# and option-looking names ("-x") out.
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
NAME_RULE = "a name starts with a letter or digit and uses only letters, digits, '_', '.' and '-'"
_HOST_RE = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_.-]{0,251}[A-Za-z0-9_.])?")
_SIZE_RE = re.compile(r"(\d+(?:_\d+)*(?:\.\d+)?)\s*([A-Za-z]*)")

# GNU coreutils convention: a single letter or "xiB" is binary, "xB" is decimal.
_BINARY = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}
_DECIMAL = {"k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12, "p": 10**15}


class Problem(Exception):
    """What is wrong with a value, before we know whether it came from a flag or a file."""


# ---------------------------------------------------------------------------------------------
# Addresses, names and sizes: the value types several components share


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
            return read_address(text, allow_port_zero)
        except Problem as exc:
            raise ConfigError(
                f"{exc}, got {text!r}; for example 127.0.0.1:7001 or [::1]:7001"
            ) from None


@dataclass(frozen=True)
class PeerAddresses(PeerAddress):
    """One peer at several addresses (``--peer NAME=HOST:PORT,HOST:PORT``), tried in order:
    a primary and its standbys, or an immortal that moves between two devices. Where a single
    address is expected it stands for the first."""

    more: tuple[PeerAddress, ...] = ()

    def __str__(self) -> str:
        return ",".join(PeerAddress.__str__(a) for a in each_address(self))


def each_address(address: PeerAddress) -> list[PeerAddress]:
    """Every address of a peer, best first."""
    if isinstance(address, PeerAddresses):
        return [PeerAddress(address.host, address.port), *address.more]
    return [address]


def read_addresses(text: str) -> PeerAddress:
    """``HOST:PORT`` or several, comma-separated; raises :class:`Problem`."""
    parts = [read_address(part, False) for part in text.split(",")]
    if len(parts) == 1:
        return parts[0]
    return PeerAddresses(parts[0].host, parts[0].port, tuple(parts[1:]))


def read_address(text: str, allow_port_zero: bool) -> PeerAddress:
    """``HOST:PORT`` or ``[IPV6]:PORT``; raises :class:`Problem` for the caller to place."""
    text = text.strip()
    if text.startswith("["):
        end = text.find("]")
        if end < 0 or text[end + 1 : end + 2] != ":":
            raise Problem("expected [IPV6]:PORT")
        host, port_text = text[1:end], text[end + 2 :]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise Problem(f"{host!r} in brackets is not an IPv6 address") from None
    else:
        host, colon, port_text = text.rpartition(":")
        if not colon:
            raise Problem("expected HOST:PORT")
        if ":" in host:
            raise Problem("an IPv6 host needs brackets, as in [::1]:7001")
        if not host:
            raise Problem("missing host (0.0.0.0 listens on every interface)")
        if not _HOST_RE.fullmatch(host):
            raise Problem(f"{host!r} is not a host name or IPv4 address")
    if not port_text.isascii() or not port_text.isdigit():
        raise Problem(f"port {port_text!r} is not a number")
    port = int(port_text)
    low = 0 if allow_port_zero else 1
    if not low <= port <= 65535:
        raise Problem(f"port {port} is outside {low}..65535")
    return PeerAddress(host, port)


#: In a config file's ``[peers]`` table, the value that means "find its address by discovery".
DISCOVER = "discover"


def read_peer(text: str) -> tuple[str, PeerAddress | None]:
    """``NAME=HOST:PORT`` as given to ``--peer``, or a bare ``NAME`` whose address discovery
    finds (None); raises :class:`Problem`."""
    name, eq, address = text.partition("=")
    name = name.strip()
    if not NAME_RE.fullmatch(name):
        raise Problem(f"bad peer name {name!r}: {NAME_RULE}")
    if not eq:
        return name, None
    try:
        return name, read_addresses(address)
    except Problem as exc:
        raise Problem(f"peer {name!r}: {exc}") from None


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


def read_size(value: object) -> int:
    """The byte count :func:`parse_size` reads, or :class:`Problem`."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise Problem("expected a size (an integer or a string with a unit)")
    if isinstance(value, int):
        size = value
    else:
        match = _SIZE_RE.fullmatch(value.strip())
        unit = _size_unit(match.group(2)) if match else None
        if match is None or unit is None:
            raise Problem("expected a size such as 64MiB, 4MB or 1048576")
        try:
            exact = Decimal(match.group(1).replace("_", "")) * unit
        except InvalidOperation:
            raise Problem("expected a size such as 64MiB, 4MB or 1048576") from None
        if exact != exact.to_integral_value():
            raise Problem("size is not a whole number of bytes")
        size = int(exact)
    if size <= 0:
        raise Problem("size must be positive")
    return size


def format_size(size: object) -> object:
    """A byte count as a user would write it: ``4194304`` is ``"4MiB"``; text stays as it is."""
    if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
        return size
    for unit, factor in reversed(_BINARY.items()):
        if size % factor == 0:
            return f"{size // factor}{unit.upper()}iB"
    return size


def parse_peer(text: str) -> tuple[str, PeerAddress | None]:
    """Parse ``NAME=HOST:PORT`` or ``NAME`` (found by discovery) as given to ``--peer``."""
    try:
        return read_peer(text)
    except Problem as exc:
        raise ConfigError(f"{exc}, got {text!r}; for example client=127.0.0.1:7002") from None


def parse_size(text: str | int) -> int:
    """Parse a byte count: ``1048576``, ``64MiB``, ``64MB``, ``64M``, ``1.5GiB``.

    Units follow GNU coreutils: ``KiB`` and ``K`` are 1024, ``KB`` is 1000 (likewise M, G, T,
    P); case does not matter. The result must be a positive whole number of bytes.
    """
    try:
        return read_size(text)
    except Problem as exc:
        raise ConfigError(f"{exc}, got {text!r}; for example 64MiB, 4MB or 1048576") from None


# ---------------------------------------------------------------------------------------------
# Kinds


def check_text(value: object, at: At) -> str:
    """A non-empty string, or an error naming ``at``."""
    if not isinstance(value, str) or not value.strip():
        raise at.bad("expected a non-empty string", value)
    return value


def _name(value: object, at: At) -> str:
    if not isinstance(value, str) or not NAME_RE.fullmatch(value):
        raise at.bad(NAME_RULE, value)
    return value


def _location(value: object, at: At) -> str:
    text = check_text(value, at)
    return text if "://" in text else os.path.expanduser(text)


def _location_in_file(log: str, base: Path) -> str:
    return log if "://" in log or Path(log).is_absolute() else str(base / log)


def _positive(value: object, at: At) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise at.bad("expected a positive integer", value)
    return value


def _size(value: object, at: At) -> int:
    try:
        return read_size(value)
    except Problem as exc:
        raise at.bad(str(exc), value) from None


def _count(value: object, at: At) -> int:
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    return _positive(value, at)


def _seconds_in_code(value: object, at: At) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < 1e9:
        raise at.bad("expected a positive number of seconds", value)
    return float(value)


def _seconds(value: object, at: At) -> float:
    """``2.5`` or ``"2.5"``, and ``"2.5s"`` or ``"500ms"`` as a user may write them."""
    if isinstance(value, str):
        text = value.strip().lower()
        scale = 1.0
        if text.endswith("ms"):
            text, scale = text[:-2], 0.001
        elif text.endswith("s"):
            text = text[:-1]
        try:
            value = float(text.strip()) * scale
        except ValueError:
            raise at.bad("expected seconds, such as 10, 2.5s or 500ms", value) from None
    return _seconds_in_code(value, at)


def _bool(value: object, at: At) -> bool:
    if not isinstance(value, bool):
        raise at.bad("expected true or false", value)
    return value


def _bool_in_code(value: object, at: At) -> bool:
    if not isinstance(value, bool):
        raise at.bad("expected True or False", value)
    return value


def _secret(value: object, at: At) -> str:
    if not isinstance(value, str) or not value:
        # Whatever is there was meant to be a secret: never print it.
        raise at.bad("the secret must be a non-empty string", value, show=False)
    return value


def _listen(value: object, at: At) -> PeerAddress:
    if isinstance(value, PeerAddress):
        return value
    if not isinstance(value, str):
        raise at.bad("expected HOST:PORT", value)
    try:
        return read_address(value, True)
    except Problem as exc:
        raise at.bad(str(exc), value) from None


def _listen_in_code(value: object, at: At) -> PeerAddress:
    if not isinstance(value, PeerAddress):
        raise at.bad("expected a PeerAddress or None", value)
    return value


def check_peer(peer: object, address: object, own_name: str | None, at: At) -> None:
    """One peer entry; ``own_name`` refuses an entry for the immortal itself, a sure mistake."""
    if not isinstance(peer, str) or not NAME_RE.fullmatch(peer):
        raise at.bad(f"bad peer name: {NAME_RULE}", peer)
    if address is not None and not isinstance(address, PeerAddress):
        raise at.bad(f"peer {peer!r} needs a PeerAddress (or None: found by discovery)", address)
    if address is not None and any(a.port == 0 for a in each_address(address)):
        raise at.bad(f"peer {peer!r} needs a real port, not 0", str(address))
    if peer == own_name:
        raise at.bad(
            f"peer {peer!r} has this immortal's own name (calls to self need no peer entry)",
            peer if address is None else f"{peer}={address}",
        )


def _peers_in_code(value: object, at: At) -> dict[str, PeerAddress | None]:
    if not isinstance(value, dict):
        raise at.bad("expected a dict of name -> PeerAddress (None: found by discovery)", value)
    for peer, address in value.items():
        check_peer(peer, address, None, at)
    return value


def _peer_table(value: object, at: At) -> dict[str, PeerAddress | None]:
    if not isinstance(value, Mapping):
        raise at.bad(f'expected a table of name = "HOST:PORT" (or "{DISCOVER}")', value)
    peers: dict[str, PeerAddress | None] = {}
    for peer, address in value.items():
        if address == DISCOVER or address is None:
            address = None
        elif isinstance(address, list) and address and all(isinstance(a, str) for a in address):
            address = ",".join(address)
        if isinstance(address, str):
            try:
                address = read_addresses(address)
            except Problem as exc:
                raise at.bad(f"peer {peer!r}: {exc}", value[peer]) from None
        if address is not None and not isinstance(address, PeerAddress):
            raise at.bad(f'peer {peer!r}: expected "HOST:PORT" or "{DISCOVER}"', address)
        if not isinstance(peer, str) or not NAME_RE.fullmatch(peer):
            raise at.bad(f"bad peer name: {NAME_RULE}", peer)
        peers[peer] = address
    return peers


def _peers(value: object, at: At) -> dict[str, PeerAddress | None]:
    """A table in a file; ``--peer`` repeats, and one name with two addresses is a typo there."""
    if not at.from_flag or isinstance(value, Mapping):
        return _peer_table(value, at)
    if isinstance(value, str | tuple):
        items: list[object] = [value]
    elif isinstance(value, list):
        items = list(value)
    else:
        raise at.bad("expected NAME=HOST:PORT or NAME", value)
    peers: dict[str, PeerAddress | None] = {}
    for item in items:
        if isinstance(item, str):
            try:
                peer, address = read_peer(item)
            except Problem as exc:
                raise at.bad(str(exc), item) from None
        elif (
            isinstance(item, tuple)
            and len(item) == 2
            and (item[1] is None or isinstance(item[1], PeerAddress))
        ):
            peer, address = _name(item[0], at), item[1]
        else:
            raise at.bad("expected NAME=HOST:PORT or NAME", item)
        if peers.get(peer, address) != address:
            raise at.bad(
                f"peer {peer!r} given twice with different addresses ({peers[peer]}, {address})",
                item,
            )
        peers[peer] = address
    return peers


def _peers_toml(key: str, example: object) -> str:
    peer, _, address = str(example).partition("=")
    return f'[{key}] {peer} = "{address}"'


# Each kind: first how a flag or file value is read, then how a value given in code is checked.
# Code gets no parsing of strings (page_bytes="4MiB" is refused) so that a typed program stays
# typed and a wrong type fails where it was written.
NAME = Kind(_name, _name)
LOCATION = Kind(_location, check_text, metavar="URL", in_file=_location_in_file)
LISTEN = Kind(_listen, _listen_in_code, metavar="HOST:PORT")
PEERS = Kind(
    _peers,
    _peers_in_code,
    metavar="NAME[=HOST:PORT]",
    toml=_peers_toml,
    merge=lambda old, new: {**old, **new},
    repeat=True,
)
SIZE = Kind(_size, _positive, metavar="SIZE", show=format_size)
COUNT = Kind(_count, _positive, metavar="N")
SECONDS = Kind(_seconds, _seconds_in_code, metavar="SECONDS")
#: a path; in a config file, relative to the file
FILE = Kind(_location, check_text, metavar="FILE", in_file=_location_in_file)
SWITCH = Kind(_bool, _bool_in_code, switch=True)
SECRET = Kind(_secret, _secret)
TEXT = Kind(check_text, check_text)
