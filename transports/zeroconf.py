"""Finding immortals on the LAN by name, over mDNS / DNS-SD (python-zeroconf; docs/discovery.md).

Each immortal announces one service of type ``_ambrosia-edge._tcp.local.``: its instance name
is the immortal's name and the deployment id (``server@workshop``), its TXT record says which
immortal and deployment it is, the wire protocol version, and the epoch (and log incarnation)
it runs in. Every immortal browses that type and keeps, per immortal name of its own
deployment, the addresses of the newest announcement; announcements of other deployments are
ignored, so two deployments on one LAN never mix even when they use the same names.

mDNS caches are slow to forget: a receiver keeps the records of an immortal that died without
a goodbye for up to ~19 min. So nothing here waits for a record to expire. A sender resolves
on every connection attempt and each resolve asks the network again for that immortal (rate
limited), so a failed connection is what triggers a fresh query; an immortal that starts
elsewhere announces itself at once, without probing (the log's lease, not mDNS, decides who
owns a name, and a new primary must be able to take the name over from an old instance that
still answers); its higher epoch puts its address first and wakes the senders waiting for it;
a goodbye removes the name at once (and asks again, in case the goodbye came from the old
instance after the new one announced itself).

python-zeroconf runs on the asyncio loop of the process (the runtime's), so this discovery
needs anyio's asyncio backend.
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import logging
import re
import secrets
import socket
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

import anyio
import ifaddr
import sniffio
from zeroconf import (
    BadTypeInNameException,
    InterfaceChoice,
    NonUniqueNameException,
    ServiceStateChange,
    Zeroconf,
)
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

from ambrosia_edge.discovery import ChangeLog
from ambrosia_edge.discovery_options import DEFAULT_DEPLOYMENT
from ambrosia_edge.errors import ConfigError
from ambrosia_edge.kinds import NAME_RE, PeerAddress
from ambrosia_edge.wire import PROTOCOL_VERSION

__all__ = ["SERVICE_TYPE", "TXT_VERSION", "ZeroconfDiscovery", "instance_name"]

log = logging.getLogger("ambrosia_edge")

SERVICE_TYPE = "_ambrosia-edge._tcp.local."
#: Version of the TXT record's layout (RFC 6763 ``txtvers``).
TXT_VERSION = "1"
#: How long one look-up of an immortal waits for answers (milliseconds).
LOOKUP_MS = 3000
#: How long a resolve of a name not heard of yet waits for a first answer (seconds): on a LAN
#: one comes in milliseconds, and a one-shot caller should not fail for asking too early.
FIRST_ANSWER = 1.0
#: Look-ups of one name that nobody answers are spaced from this, doubling up to the maximum.
QUERY_SPACING = (0.5, 30.0)
#: Announcements kept per immortal name (the newest first).
KEPT = 3
#: A goodbye leaves the records in caches this long (RFC 6762 §10.1: 1 s); what they still
#: say meanwhile is not taken for an answer.
GOODBYE_GRACE = 1.5

_LABEL_MAX = 63  # bytes of a DNS label
_HOST_RE = re.compile(r"[^a-z0-9-]+")


def instance_name(name: str, deployment: str) -> str:
    """The DNS-SD instance name of immortal ``name`` in ``deployment`` (full, with the type).

    ``name@deployment`` when it fits one DNS label and has no dot; otherwise a shortened form
    with a hash, still unique. Receivers read the name and deployment from the TXT record,
    never from this label.
    """
    label = f"{name}@{deployment}"
    if "." in label or len(label.encode()) > _LABEL_MAX:
        digest = hashlib.sha256(label.encode()).hexdigest()[:10]
        label = f"{label.replace('.', '_')[: _LABEL_MAX - 11]}-{digest}"
    return f"{label}.{SERVICE_TYPE}"


@dataclass(frozen=True)
class _Announcement:
    """What one instance of an immortal announced: where it listens, and how new it is."""

    epoch: int
    incarnation: int
    addresses: tuple[PeerAddress, ...]

    @property
    def age(self) -> tuple[int, int]:
        return (self.incarnation, self.epoch)


class ZeroconfDiscovery:
    """The ``zeroconf`` discovery: ``zeroconf://?deployment=ID&interfaces=all|ADDR,ADDR``.

    Peers given an address in ``peers`` are resolved to it, as by the static table; the others
    (None) and every immortal of the deployment that announces itself are resolved by mDNS.
    """

    def __init__(
        self, spec: str = "zeroconf", *, peers: Mapping[str, PeerAddress | None] = {}
    ) -> None:
        query = parse_qs(urlsplit(spec).query) if "://" in spec else {}
        self.deployment = query.get("deployment", [DEFAULT_DEPLOYMENT])[0]
        where = query.get("interfaces", ["all"])[0]
        self.interfaces: list[str] | None = (
            None if where == "all" else [part.strip() for part in where.split(",")]
        )
        self._static = dict(peers)
        self._found: dict[str, list[_Announcement]] = {}
        self._instances: dict[str, str] = {}  # instance name -> immortal name
        self._changes = ChangeLog()
        self._zc: AsyncZeroconf | None = None
        self._browser: AsyncServiceBrowser | None = None
        self._published: AsyncServiceInfo | None = None
        self._tasks: set[asyncio.Future[Any]] = set()
        self._looking: set[str] = set()  # instance names being looked up now
        self._next_query: dict[str, tuple[float, float]] = {}  # name -> (when, spacing)
        self._other_deployments: set[str] = set()  # said once each, at debug level
        self._gone: dict[str, tuple[tuple[_Announcement, ...], float]] = {}  # said goodbye

    # --- the Discovery contract -------------------------------------------------------------

    async def publish(
        self, name: str, address: PeerAddress, *, epoch: int = 0, incarnation: int | None = None
    ) -> None:
        zc = self._start()
        hosts = await self._published_hosts(address.host)
        info = AsyncServiceInfo(
            SERVICE_TYPE,
            instance_name(name, self.deployment),
            port=address.port,
            properties={
                "txtvers": TXT_VERSION,
                "proto": str(PROTOCOL_VERSION),
                "name": name,
                "dep": self.deployment,
                "epoch": str(epoch),
                # the log's incarnation; empty where the log has none
                "inc": "" if incarnation is None else str(incarnation),
            },
            # a host name of this process's own: the goodbye of an old instance of the same
            # immortal (same host, other port) cannot take this one's address records with it
            server=f"{_host_label(name)}-{epoch}-{secrets.token_hex(3)}.local.",
            parsed_addresses=hosts,
        )
        try:
            if self._published is None:
                done = await zc.async_register_service(info, cooperating_responders=True)
            else:
                info.server = self._published.server  # the same host, announced anew
                done = await zc.async_update_service(info)
        except (BadTypeInNameException, NonUniqueNameException, OSError) as exc:
            raise ConfigError(f"zeroconf cannot announce {name!r}: {exc}") from exc
        self._keep(asyncio.ensure_future(done))
        self._published = info
        self._learn(name, _Announcement(epoch, incarnation or 0, _addresses(hosts, address.port)))
        where = ", ".join(hosts)
        if all(ipaddress.ip_address(h.partition("%")[0]).is_loopback for h in hosts) and any(
            not ipaddress.ip_address(i).is_loopback for i in self.interfaces or ["0.0.0.0"]
        ):
            log.warning(
                "%s: announced on the network at %s, an address only this machine reaches; "
                "listen on the LAN address (or 0.0.0.0) for other devices to connect",
                name,
                where,
            )
        log.info(
            "%s: announced on mDNS as %r at %s port %d (deployment %s)",
            name,
            info.name,
            where,
            address.port,
            self.deployment,
        )

    async def resolve(self, name: str) -> list[PeerAddress]:
        static = self._static.get(name)
        if static is not None:
            return [static]
        self._start()
        self._ask_again(name)
        found = self._found.get(name)
        if not found:
            found = await self._first_answer(name)
        if not found:
            on = "all interfaces" if self.interfaces is None else ", ".join(self.interfaces)
            raise ConnectionError(
                f"nobody answers for {name!r} in deployment {self.deployment!r} on mDNS "
                f"({on}); is it running, with --discovery zeroconf and the same deployment?"
            )
        addresses: list[PeerAddress] = []
        for announcement in found:
            addresses += [a for a in announcement.addresses if a not in addresses]
        return addresses

    def names(self) -> list[str]:
        return list(dict.fromkeys([*self._static, *self._found]))

    async def _first_answer(self, name: str) -> list[_Announcement]:
        changes = self._changes.follow()
        try:
            with anyio.move_on_after(FIRST_ANSWER):
                async for changed in changes:
                    if changed == name and self._found.get(name):
                        break
        finally:
            await changes.aclose()
        return self._found.get(name, [])

    def changes(self) -> AsyncIterator[str]:
        return self._follow(self._changes.follow())

    async def aclose(self) -> None:
        zc, self._zc = self._zc, None
        if zc is None:
            return
        for task in list(self._tasks):
            task.cancel()
        if self._browser is not None:
            await self._browser.async_cancel()
        await zc.async_close()  # unregisters what we published: a goodbye to every peer

    # --- the mDNS side ----------------------------------------------------------------------

    def _start(self) -> AsyncZeroconf:
        """python-zeroconf, on this loop, browsing our service type (started on first use)."""
        if self._zc is not None:
            return self._zc
        if sniffio.current_async_library() != "asyncio":
            raise ConfigError(
                "zeroconf discovery runs on the asyncio event loop; this one is "
                f"{sniffio.current_async_library()}"
            )
        try:
            zc = AsyncZeroconf(
                interfaces=InterfaceChoice.All if self.interfaces is None else self.interfaces
            )
        except (OSError, ValueError) as exc:
            on = "all interfaces" if self.interfaces is None else ", ".join(self.interfaces)
            raise ConfigError(
                f"zeroconf cannot use mDNS on {on}: {exc}; name this machine's addresses "
                "with --discovery-interfaces"
            ) from exc
        self._zc = zc
        self._browser = AsyncServiceBrowser(zc.zeroconf, [SERVICE_TYPE], handlers=[self._seen])
        return zc

    def _seen(
        self,
        zeroconf: Zeroconf,
        service_type: str,
        name: str,
        state_change: ServiceStateChange,
    ) -> None:
        """The browser's news about one instance (called on the loop)."""
        if state_change is not ServiceStateChange.Removed:
            self._look_up(name)
            return
        # Gone: its senders resolve again, and their resolve asks who answers for the name
        # now (the goodbye may have been an old instance's, after the new one announced).
        immortal = self._instances.pop(name, None)
        gone = self._found.pop(immortal, None) if immortal is not None else None
        if immortal is not None and gone is not None:
            self._gone[name] = (tuple(gone), anyio.current_time() + GOODBYE_GRACE)
            log.info("zeroconf: %s said goodbye (%s)", immortal, name)
            self._changes.tell(immortal)

    def _ask_again(self, name: str) -> None:
        """Query the network for ``name`` now, unless it was asked very recently."""
        now = anyio.current_time()
        when, spacing = self._next_query.get(name, (0.0, QUERY_SPACING[0]))
        if now < when:
            return
        self._next_query[name] = (now + spacing, min(spacing * 2, QUERY_SPACING[1]))
        self._look_up(instance_name(name, self.deployment))

    def _look_up(self, instance: str) -> None:
        if instance in self._looking or self._zc is None:
            return
        self._looking.add(instance)
        self._keep(asyncio.ensure_future(self._read(instance)))

    async def _read(self, instance: str) -> None:
        """Read one instance's records (from the cache, or by asking) into the table."""
        try:
            zc = self._zc
            if zc is None:
                return
            info = AsyncServiceInfo(SERVICE_TYPE, instance)
            if not await info.async_request(zc.zeroconf, LOOKUP_MS):
                # not even in the cache any more (its records expired): forget it
                immortal = self._instances.pop(instance, None)
                if immortal is not None and self._found.pop(immortal, None) is not None:
                    self._changes.tell(immortal)
                return
            announcement = self._parse(instance, info)
            gone, until = self._gone.get(instance, ((), 0.0))
            if announcement is not None and announcement[1] in gone:
                if anyio.current_time() < until:
                    return  # the records of the goodbye itself, not yet expired
                del self._gone[instance]
            if announcement is not None:
                name, found = announcement
                self._instances[instance] = name
                self._learn(name, found)
        except (OSError, BadTypeInNameException) as exc:
            log.debug("zeroconf: reading %s failed: %s", instance, exc)
        finally:
            self._looking.discard(instance)

    def _parse(self, instance: str, info: AsyncServiceInfo) -> tuple[str, _Announcement] | None:
        txt = info.decoded_properties
        deployment = txt.get("dep")
        if deployment != self.deployment:
            if instance not in self._other_deployments:
                self._other_deployments.add(instance)
                log.debug("zeroconf: %s is of deployment %r, not ours", instance, deployment)
            return None
        name = txt.get("name") or ""
        if not NAME_RE.fullmatch(name) or not info.port:
            log.debug("zeroconf: ignoring %s: no valid name or port in %r", instance, txt)
            return None
        try:
            epoch = int(txt.get("epoch") or 0)
            incarnation = int(txt.get("inc") or 0)
        except ValueError:
            log.debug("zeroconf: ignoring %s: epoch or incarnation is not a number", instance)
            return None
        hosts = info.parsed_scoped_addresses()
        if not hosts:
            return None
        return name, _Announcement(epoch, incarnation, _addresses(hosts, info.port))

    def _learn(self, name: str, new: _Announcement) -> None:
        """Put an announcement in the table; tell the senders if that changed what they get.

        A newer one (higher incarnation, then epoch) replaces the older ones: the immortal
        moved or restarted. An older one is kept behind the newest, for the rare case of a
        name whose log was started afresh (its epochs begin again at 1).
        """
        old = self._found.get(name, [])
        others = [a for a in old if a.age != new.age]
        if all(a.age < new.age for a in others):
            table = [new]
        else:
            table = sorted([new, *others], key=lambda a: a.age, reverse=True)[:KEPT]
        if table != old:
            self._found[name] = table
            self._next_query.pop(name, None)
            self._changes.tell(name)

    async def _published_hosts(self, host: str) -> list[str]:
        """The addresses to announce for a listener on ``host``."""
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:  # a host name: what it stands for
            infos = await anyio.getaddrinfo(host, None, type=socket.SOCK_STREAM)
            return list(dict.fromkeys(str(info[4][0]) for info in infos))
        if not ip.is_unspecified:
            return [host]
        if self.interfaces is not None:
            return list(self.interfaces)
        every = [
            ip.ip
            for adapter in ifaddr.get_adapters()
            for ip in adapter.ips
            if isinstance(ip.ip, str) and not ipaddress.ip_address(ip.ip).is_loopback
        ]
        return list(dict.fromkeys(every)) or ["127.0.0.1"]

    def _keep(self, task: asyncio.Future[Any]) -> None:
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _follow(self, changes: AsyncIterator[str]) -> AsyncIterator[str]:
        self._start()
        async for name in changes:
            yield name


def _addresses(hosts: list[str], port: int) -> tuple[PeerAddress, ...]:
    return tuple(PeerAddress(host, port) for host in hosts)


def _host_label(name: str) -> str:
    return _HOST_RE.sub("-", name.lower()).strip("-")[:40] or "immortal"
