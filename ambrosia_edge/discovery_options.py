"""How peers are found: the discovery settings, declared apart from zeroconf itself.

``ambrosia-edge --help``, the config loader and a process whose peers all have addresses read
these declarations without importing python-zeroconf (a small board starts faster without it);
:mod:`ambrosia_edge.transports.zeroconf` is imported only when discovery is zeroconf.

``--discovery auto`` (the default) is static when every ``--peer`` has an address and zeroconf
as soon as one is given by name alone (``--peer server``): naming a peer without an address is
asking for it to be found. An immortal that only answers (it names no peer) says
``--discovery zeroconf`` to be found by the others.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from collections.abc import Mapping
from typing import Protocol
from urllib.parse import urlencode

from .errors import ConfigError
from .kinds import PeerAddress
from .options import At, Kind, check_fields, option, options

__all__ = [
    "DEFAULT_DEPLOYMENT",
    "DiscoveryOptions",
    "check_addresses",
    "deployment_id",
    "discovery_spec",
]

#: The deployment of immortals that share no secret and name none.
DEFAULT_DEPLOYMENT = "default"

_DISCOVERY_RE = re.compile(r"[a-z][a-z0-9_+.-]{0,31}(://.*)?")
_DEPLOYMENT_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,31}")


def _discovery(value: object, at: At) -> str:
    if not isinstance(value, str) or not _DISCOVERY_RE.fullmatch(value):
        raise at.bad("expected auto, static, zeroconf (or a registered discovery's name)", value)
    return value


def _deployment(value: object, at: At) -> str:
    if not isinstance(value, str) or not _DEPLOYMENT_RE.fullmatch(value):
        raise at.bad(
            "a deployment id is 1 to 32 letters, digits, '_' or '-', starting with a letter "
            "or digit",
            value,
        )
    return value


def _interfaces(value: object, at: At) -> str:
    if not isinstance(value, str) or not value.strip():
        raise at.bad("expected all, or addresses separated by commas", value)
    if value.strip() == "all":
        return "all"
    for part in value.split(","):
        try:
            ipaddress.ip_address(part.strip())
        except ValueError:
            raise at.bad(
                f"{part.strip()!r} is not an IP address of this machine's interfaces", value
            ) from None
    return ",".join(part.strip() for part in value.split(","))


DISCOVERY = Kind(_discovery, _discovery, metavar="{auto,static,zeroconf}")
DEPLOYMENT = Kind(_deployment, _deployment, metavar="ID")
INTERFACES = Kind(_interfaces, _interfaces, metavar="ADDRESSES")


@options
class DiscoveryOptions:
    """How this immortal is found by its peers and finds them (docs/discovery.md)."""

    discovery: str = option(
        default="auto",
        kind=DISCOVERY,
        flag="--discovery",
        help="how peers find each other: static (the --peer addresses), zeroconf (mDNS on the "
        "LAN), or auto: zeroconf when a --peer is given without an address",
        example="zeroconf",
    )
    deployment: str | None = option(
        default=None,
        kind=DEPLOYMENT,
        flag="--deployment",
        help="which deployment this immortal belongs to: immortals of other deployments on "
        "the same LAN are never found (default: derived from the deployment secret, or "
        f"{DEFAULT_DEPLOYMENT!r} without one)",
        example="workshop",
    )
    discovery_interfaces: str = option(
        default="all",
        kind=INTERFACES,
        flag="--discovery-interfaces",
        help="the addresses of the interfaces zeroconf multicasts on, separated by commas, or all",
        example="192.168.1.20",
    )

    def __post_init__(self) -> None:
        check_fields(self)


class _Discovering(Protocol):
    """What :func:`discovery_spec` reads of the settings."""

    @property
    def discovery(self) -> str: ...
    @property
    def deployment(self) -> str | None: ...
    @property
    def discovery_interfaces(self) -> str: ...
    @property
    def secret(self) -> str | None: ...
    @property
    def peers(self) -> Mapping[str, PeerAddress | None]: ...


def deployment_id(deployment: str | None, secret: str | None) -> str:
    """The deployment id a process publishes and looks for.

    Given, it is used as it is. Otherwise immortals that share a secret are one deployment (they
    could not talk to the others anyway), so the id is a short hash of the secret: 12 hex
    digits of SHA-256 over a fixed prefix and the secret. It says nothing useful about a strong
    secret; a guessable one is guessable from the handshake already. Without a secret, every
    immortal is in the deployment ``default``.
    """
    if deployment is not None:
        return deployment
    if secret:
        digest = hashlib.sha256(b"ambrosia-edge deployment\0" + secret.encode()).hexdigest()
        return f"s-{digest[:12]}"
    return DEFAULT_DEPLOYMENT


def discovery_spec(settings: _Discovering) -> str:
    """The ``spec`` given to :func:`~ambrosia_edge.discovery.open_discovery` for these settings.

    ``auto`` becomes ``zeroconf`` when some peer has no address, ``static`` otherwise; the
    zeroconf options travel in the spec's query (``zeroconf://?deployment=...``), as every
    discovery is built from ``(spec, *, peers)``.
    """
    kind = settings.discovery
    if kind == "auto":
        kind = "zeroconf" if any(a is None for a in settings.peers.values()) else "static"
    if kind != "zeroconf":
        return kind
    query = {
        "deployment": deployment_id(settings.deployment, settings.secret),
        "interfaces": settings.discovery_interfaces,
    }
    return f"zeroconf://?{urlencode(query)}"


def check_addresses(settings: _Discovering) -> None:
    """Peers named without an address need a discovery that finds addresses."""
    if settings.discovery != "static":
        return
    missing = [peer for peer, address in settings.peers.items() if address is None]
    if missing:
        raise ConfigError(
            f"--peer {missing[0]}: no address given, and --discovery is static; give "
            f"--peer {missing[0]}=HOST:PORT, or let zeroconf find it (--discovery zeroconf)"
        )
