"""zeroconf discovery: immortals found by name over real mDNS (issue 13, item 1).

Every test pins python-zeroconf to 127.0.0.1 or to interfaces of network namespaces it creates
and deletes: nothing is multicast on this machine's outward interface. Deployment ids are
unique per test, so tests running side by side on 127.0.0.1 never see each other's immortals.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from ambrosia_edge.transports.tcp import TcpTransport
from ambrosia_edge.transports.zeroconf import SERVICE_TYPE, ZeroconfDiscovery, instance_name
from apps.counting import Client, Counter
from support import APPS, wait_for
from zeroconf.asyncio import AsyncServiceInfo

from ambrosia_edge import peers as peers_module
from ambrosia_edge.config import PeerAddress, Settings, load_settings
from ambrosia_edge.coordinator import Coordinator
from ambrosia_edge.discovery import Discovery, open_discovery
from ambrosia_edge.discovery_options import deployment_id, discovery_spec
from ambrosia_edge.errors import ConfigError
from ambrosia_edge.runtime import Runtime
from ambrosia_edge.testing import eventually

LOOPBACK = "127.0.0.1"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # python-zeroconf runs on the asyncio loop


@pytest.fixture
def deployment() -> str:
    return f"t{secrets.token_hex(6)}"


def spec(deployment: str, interfaces: str = LOOPBACK) -> str:
    return f"zeroconf://?deployment={deployment}&interfaces={interfaces}"


async def found(discovery: Discovery, name: str, port: int | None = None) -> list[PeerAddress]:
    """What ``name`` resolves to once discovery has heard of it (at ``port``, if given)."""
    changes = discovery.changes()
    with anyio.fail_after(5):
        while True:
            try:
                addresses = await discovery.resolve(name)
                if port is None or addresses[0].port == port:
                    return addresses
            except ConnectionError:
                pass
            await anext(changes)


# ---------------------------------------------------------------------------------------------
# The discovery in one process, over mDNS on 127.0.0.1


@pytest.mark.anyio
async def test_a_published_immortal_is_resolved_by_name_with_its_txt(deployment: str) -> None:
    server = open_discovery(spec(deployment))
    client = open_discovery(spec(deployment), peers={"server": None})
    assert isinstance(server, ZeroconfDiscovery) and isinstance(client, ZeroconfDiscovery)
    try:
        changes = client.changes()
        await server.publish("server", PeerAddress(LOOPBACK, 7001), epoch=3, incarnation=None)
        with anyio.fail_after(5):
            assert await anext(changes) == "server"
        assert await client.resolve("server") == [PeerAddress(LOOPBACK, 7001)]
        assert client.names() == ["server"]
        # what any mDNS browser sees
        info = AsyncServiceInfo(SERVICE_TYPE, instance_name("server", deployment))
        assert client._zc is not None
        assert await info.async_request(client._zc.zeroconf, 3000)
        assert info.name == f"server@{deployment}.{SERVICE_TYPE}"
        assert info.decoded_properties == {
            "txtvers": "1",
            "proto": "1",
            "name": "server",
            "dep": deployment,
            "epoch": "3",
            "inc": "",
        }
    finally:
        await server.aclose()
        await client.aclose()


@pytest.mark.anyio
async def test_a_newer_epoch_elsewhere_comes_first_and_a_goodbye_removes_it(
    deployment: str,
) -> None:
    old, new = open_discovery(spec(deployment)), open_discovery(spec(deployment))
    client = open_discovery(spec(deployment), peers={"server": None})
    try:
        changes = client.changes()
        await old.publish("server", PeerAddress(LOOPBACK, 7001), epoch=1)
        assert await found(client, "server") == [PeerAddress(LOOPBACK, 7001)]
        # a second instance (the moved immortal, in a new epoch) while the first still answers
        await new.publish("server", PeerAddress(LOOPBACK, 7002), epoch=2)
        started = time.monotonic()
        assert await found(client, "server", 7002) == [PeerAddress(LOOPBACK, 7002)]
        print(f"newer epoch seen after {time.monotonic() - started:.3f} s")
        await new.aclose()  # a goodbye for the name: whoever still answers for it is found
        assert await found(client, "server") == [PeerAddress(LOOPBACK, 7001)]
        await old.aclose()  # and when nobody does, nothing is found
        with anyio.fail_after(5):
            while client._found.get("server"):
                await anext(changes)
        with pytest.raises(ConnectionError, match="nobody answers for 'server' in deployment"):
            await client.resolve("server")
    finally:
        for discovery in (old, new, client):
            await discovery.aclose()


@pytest.mark.anyio
async def test_a_first_resolve_waits_for_the_answer_to_its_question(deployment: str) -> None:
    """A one-shot caller (``--migrate-from server``) asks once: the answer to the query that
    its resolve sends is waited for, not reported missing because it takes a few ms."""
    server = open_discovery(spec(deployment))
    try:
        await server.publish("server", PeerAddress(LOOPBACK, 7001), epoch=1)
        for _ in range(3):  # a fresh process each time: nothing heard before the question
            asking = open_discovery(spec(deployment))
            try:
                assert await asking.resolve("server") == [PeerAddress(LOOPBACK, 7001)]
            finally:
                await asking.aclose()
    finally:
        await server.aclose()


@pytest.mark.anyio
async def test_two_deployments_on_one_lan_never_mix(deployment: str) -> None:
    other = f"{deployment}x"
    ours, theirs = open_discovery(spec(deployment)), open_discovery(spec(other))
    client = open_discovery(spec(deployment), peers={"server": None})
    try:
        await theirs.publish("server", PeerAddress(LOOPBACK, 9999), epoch=7)
        await theirs.publish("billing", PeerAddress(LOOPBACK, 9998), epoch=7)
        await ours.publish("server", PeerAddress(LOOPBACK, 7001), epoch=1)
        # the other deployment's server was announced first and in a higher epoch: still ignored
        assert await found(client, "server") == [PeerAddress(LOOPBACK, 7001)]
        assert "billing" not in client.names()
        with pytest.raises(ConnectionError, match="nobody answers for 'billing'"):
            await client.resolve("billing")
    finally:
        for discovery in (ours, theirs, client):
            await discovery.aclose()


@pytest.mark.anyio
async def test_an_address_given_on_the_command_line_wins(deployment: str) -> None:
    client = open_discovery(spec(deployment), peers={"server": PeerAddress("10.0.0.7", 7001)})
    try:
        assert await client.resolve("server") == [PeerAddress("10.0.0.7", 7001)]
    finally:
        await client.aclose()


@pytest.mark.anyio
async def test_a_name_nobody_answers_waits_with_a_line_now_and_then(
    deployment: str, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sender keeps the calls, says it waits (again every WAITING_REPEAT seconds), and
    nothing reaches the immortal: no error, no exception."""
    monkeypatch.setattr(peers_module, "WAITING_REPEAT", 0.5)
    discovery = open_discovery(spec(deployment), peers={"ghost": None})
    caplog.set_level(logging.INFO, logger="ambrosia_edge")
    try:
        async with anyio.create_task_group() as tg:
            client = Coordinator("client", None, TcpTransport(), discovery=discovery)  # type: ignore[arg-type]
            tg.start_soon(client._sender, "ghost")

            def waiting() -> list[str]:
                return [r.getMessage() for r in caplog.records if "waiting for ghost" in r.message]

            await eventually(lambda: len(waiting()) >= 2, "the second waiting line", 10)
            first, second = waiting()[:2]
            assert f"nobody answers for 'ghost' in deployment '{deployment}'" in first
            assert "calls to it are kept" in first
            assert "still (for " in second
            assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
            tg.cancel_scope.cancel()
    finally:
        await discovery.aclose()


# ---------------------------------------------------------------------------------------------
# Settings


def test_the_deployment_id_comes_from_the_flag_the_secret_or_is_default() -> None:
    assert deployment_id("workshop", "s3cret") == "workshop"
    derived = deployment_id(None, "s3cret")
    assert derived.startswith("s-") and len(derived) == 14 and "s3cret" not in derived
    assert derived == deployment_id(None, "s3cret") != deployment_id(None, "other")
    assert deployment_id(None, None) == "default"


def test_auto_discovery_is_zeroconf_when_a_peer_has_no_address() -> None:
    fixed = load_settings(None, target="m:C", peers=["server=127.0.0.1:7001"])
    assert discovery_spec(fixed) == "static"
    named = load_settings(None, target="m:C", peers=["server"], deployment="home")
    assert named.peers == {"server": None}
    assert discovery_spec(named) == "zeroconf://?deployment=home&interfaces=all"
    answering = load_settings(
        None, target="m:C", discovery="zeroconf", discovery_interfaces="127.0.0.1"
    )
    assert discovery_spec(answering) == "zeroconf://?deployment=default&interfaces=127.0.0.1"


def test_a_peer_without_an_address_under_static_discovery_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"--peer server: no address given.*--discovery zeroconf"):
        load_settings(None, target="m:C", peers=["server"], discovery="static")


def test_the_config_file_names_peers_to_discover(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text(
        'target = "m:C"\ndeployment = "home"\n[peers]\nserver = "discover"\n'
        'billing = "10.0.0.2:7001"\n'
    )
    s = load_settings(config)
    assert s.peers == {"server": None, "billing": PeerAddress("10.0.0.2", 7001)}
    assert s.deployment == "home"


@pytest.mark.parametrize(
    ("flags", "complaint"),
    [
        ({"deployment": "a b"}, "--deployment"),
        ({"deployment": "x" * 33}, "--deployment"),
        ({"discovery_interfaces": "eth0"}, "'eth0' is not an IP address"),
        ({"discovery": "Bonjour!"}, "--discovery"),
    ],
)
def test_bad_discovery_settings_are_named(flags: dict[str, str], complaint: str) -> None:
    with pytest.raises(ConfigError, match=complaint):
        load_settings(None, target="m:C", **flags)


def test_an_unknown_discovery_name_is_refused_when_the_process_starts() -> None:
    with pytest.raises(ConfigError, match="no discovery called 'bonjour'"):
        open_discovery(discovery_spec(load_settings(None, target="m:C", discovery="bonjour")))


# ---------------------------------------------------------------------------------------------
# Immortals in processes, addressed only by name


class Node:
    """One immortal in a child process (``ip netns exec`` first when ``netns`` is given),
    listening on ``host`` on a free port, announced and found by zeroconf on ``host`` only."""

    def __init__(
        self,
        work: Path,
        target: str,
        name: str,
        deployment: str,
        *,
        peers: tuple[str, ...] = (),
        calls: int = 0,
    ) -> None:
        self.work, self.target, self.name, self.deployment = work, target, name, deployment
        self.peers, self.calls = peers, calls
        self.log = work / name
        self.proc: subprocess.Popen[bytes] | None = None
        self.runs: list[Path] = []

    def start(self, host: str = LOOPBACK, netns: str | None = None) -> None:
        args = [
            *(["ip", "netns", "exec", netns] if netns else []),
            sys.executable,
            "-m",
            "ambrosia_edge",
            "run",
            self.target,
            "--name",
            self.name,
            "--log",
            str(self.log),
            "--listen",
            f"{host}:0",
            "--discovery",
            "zeroconf",
            "--discovery-interfaces",
            host,
            "--deployment",
            self.deployment,
        ]
        for peer in self.peers:
            args += ["--peer", peer]
        env = dict(
            os.environ,
            AMBROSIA_TEST_STATUS=str(self.work),
            AMBROSIA_TEST_CALLS=str(self.calls),
        )
        out = self.work / f"{self.name}.{len(self.runs)}.out"
        self.runs.append(out)
        (self.work / f"{self.name}.json").unlink(missing_ok=True)
        with open(out, "wb") as sink:
            self.proc = subprocess.Popen(
                args, env=env, stdout=sink, stderr=subprocess.STDOUT, cwd=self.work
            )

    def output(self, run: int = -1) -> str:
        return self.runs[run].read_text(errors="replace") if self.runs else ""

    def status(self) -> dict[str, Any] | None:
        try:
            data: dict[str, Any] = json.loads((self.work / f"{self.name}.json").read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None
        return data if self.proc is not None and data.get("pid") == self.proc.pid else None

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
        self.proc = None

    def stop(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=30)
        self.proc = None
        return code


def everything(nodes: list[Node]) -> str:
    return "\n".join(
        f"--- {n.name} run {i}\n{n.output(i)}" for n in nodes for i in range(len(n.runs))
    )


def recovered(cls: type, name: str, log: Path) -> Any:
    runtime = Runtime(cls, Settings(target="tests:inprocess", name=name, log=str(log)))
    runtime.recover()
    runtime.store.close()
    return runtime.immortal


def client_done(node: Node) -> bool:
    status = node.status()
    return bool(status and status["done"])


def test_two_deployments_with_the_same_names_each_count_their_own(
    tmp_path: Path, deployment: str
) -> None:
    """Two deployments on one LAN, each a ``server`` and a ``client`` addressed only by name;
    each client starts before its server, so first nobody answers its name (it waits)."""
    nodes: list[Node] = []
    try:
        for dep, calls in ((deployment, 40), (f"{deployment}x", 70)):
            work = tmp_path / dep
            work.mkdir()
            client = Node(work, f"{APPS}:Client", "client", dep, peers=("server",), calls=calls)
            server = Node(work, f"{APPS}:Counter", "server", dep)
            nodes += [client, server]
            client.start()
        for client in nodes[::2]:
            wait_for(
                lambda c=client: "waiting for server (nobody answers for 'server'" in c.output(),
                30,
                f"{client.deployment}'s client to say it waits",
                lambda: everything(nodes),
            )
        for server in nodes[1::2]:
            server.start()
        for client in nodes[::2]:
            wait_for(lambda c=client: client_done(c), 60, "the clients", lambda: everything(nodes))
        for node in nodes:
            assert node.stop() == 0
            assert "Traceback" not in node.output()
    finally:
        for node in nodes:
            node.kill()
    for (client, server), calls in zip(
        zip(nodes[::2], nodes[1::2], strict=True), (40, 70), strict=True
    ):
        assert recovered(Client, "client", client.log).seen == list(range(1, calls + 1))
        assert recovered(Counter, "server", server.log).count == calls


# ---------------------------------------------------------------------------------------------
# Two devices: network namespaces joined by a veth pair (real multicast between them)


class Namespaces:
    """Two network namespaces ("devices") joined by a veth pair, deleted afterwards."""

    def __init__(self) -> None:
        tag = f"{os.getpid() % 100000}{secrets.token_hex(2)}"
        self.names = (f"aezc-a{tag}", f"aezc-b{tag}")
        self.links = (f"aza{tag}", f"azb{tag}")
        third = 16 + secrets.randbelow(200)
        self.hosts = (f"10.231.{third}.1", f"10.231.{third}.2")

    def create(self) -> None:
        a, b = self.names
        va, vb = self.links
        steps = [
            ["ip", "netns", "add", a],
            ["ip", "netns", "add", b],
            ["ip", "link", "add", va, "type", "veth", "peer", "name", vb],
            ["ip", "link", "set", va, "netns", a],
            ["ip", "link", "set", vb, "netns", b],
        ]
        for ns, link, host in zip(self.names, self.links, self.hosts, strict=True):
            steps += [
                ["ip", "-n", ns, "addr", "add", f"{host}/24", "dev", link],
                ["ip", "-n", ns, "link", "set", link, "up"],
                ["ip", "-n", ns, "link", "set", "lo", "up"],
            ]
        for step in steps:
            subprocess.run(step, check=True, capture_output=True, text=True)

    def delete(self) -> None:
        for ns in self.names:
            subprocess.run(["ip", "netns", "delete", ns], capture_output=True)


@pytest.fixture
def devices() -> Iterator[Namespaces]:
    why = None
    if shutil.which("ip") is None:
        why = "the ip command (iproute2) is not installed"
    elif os.geteuid() != 0:
        why = "creating network namespaces needs root"
    if why is not None and not os.environ.get("CI"):
        pytest.skip(why)
    spaces = Namespaces()
    try:
        spaces.create()
    except subprocess.CalledProcessError as exc:
        spaces.delete()
        if os.environ.get("CI"):
            raise
        pytest.skip(f"cannot create network namespaces: {exc.stderr.strip()}")
    try:
        yield spaces
    finally:
        spaces.delete()


def test_a_server_killed_and_restarted_on_another_device_is_followed_by_name(
    tmp_path: Path, deployment: str, devices: Namespaces
) -> None:
    """The acceptance test of issue 13, item 1: three immortals addressed only by name, on two
    "devices"; the server is SIGKILLed on device A and started on device B with another
    address, and both clients, one on each device, reconnect by themselves within 3 s."""
    calls = 300  # the apps' default: recovering a client here replays its loop with it
    (a, b), (host_a, host_b) = devices.names, devices.hosts
    server = Node(tmp_path, f"{APPS}:Counter", "server", deployment)
    near = Node(tmp_path, f"{APPS}:Client", "client-a", deployment, peers=("server",), calls=calls)
    far = Node(tmp_path, f"{APPS}:Client", "client-b", deployment, peers=("server",), calls=calls)
    nodes = [server, near, far]

    def progress() -> int:
        return sum(len((c.status() or {"seen": []})["seen"]) for c in (near, far))

    def connected_to(client: Node, host: str) -> bool:
        return f"connected to server at {host}:" in client.output()

    try:
        server.start(host_a, a)
        near.start(host_a, a)
        far.start(host_b, b)
        wait_for(lambda: progress() >= 100, 60, "100 calls", lambda: everything(nodes))
        server.kill()
        killed_at = progress()
        started = time.monotonic()
        server.start(host_b, b)
        announced = wait_for(
            lambda: "announced on mDNS" in server.output() and time.monotonic(),
            30,
            "the server to start on device B",
            lambda: everything(nodes),
            poll=0.002,
        )
        times = {}
        for client in (near, far):
            wait_for(
                lambda c=client: connected_to(c, host_b),
                10,
                f"{client.name} to reconnect to the server on device B",
                lambda: everything(nodes),
                poll=0.002,
            )
            times[client.name] = time.monotonic()
        print(
            f"\nserver killed after {killed_at} calls; started on device B: announced "
            f"{announced - started:.2f} s after the start; reconnected "
            + ", ".join(f"{n} {t - announced:.3f} s" for n, t in times.items())
            + " after the announcement"
        )
        for name, at in times.items():
            assert at - announced <= 3.0, f"{name} took {at - announced:.2f} s to reconnect"
        assert progress() < 2 * calls, "the clients finished before the move was over"
        for client in (near, far):
            wait_for(lambda c=client: client_done(c), 120, "the clients", lambda: everything(nodes))
        for node in nodes:
            assert node.stop() == 0
    finally:
        for node in nodes:
            node.kill()
    seen_a = recovered(Client, "client-a", near.log).seen
    seen_b = recovered(Client, "client-b", far.log).seen
    assert len(seen_a) == len(seen_b) == calls
    assert seen_a == sorted(seen_a) and seen_b == sorted(seen_b)
    assert sorted(seen_a + seen_b) == list(range(1, 2 * calls + 1))  # no gap, no repeat
    assert recovered(Counter, "server", server.log).count == 2 * calls


#: Run inside ``unshare -m`` in a namespace: a system D-Bus and an avahi-daemon of the test's
#: own (their sockets on tmpfs mounts nobody else sees), then one avahi-browse pass.
AVAHI = """set -e
mkdir -p /run/dbus /run/avahi-daemon
mount -t tmpfs tmpfs /run/dbus
mount -t tmpfs tmpfs /run/avahi-daemon
dbus-daemon --system --fork --nopidfile
avahi-daemon --no-drop-root --no-chroot --no-rlimits -f "$CONF" -D
sleep 1
timeout 10 avahi-browse --resolve --parsable --terminate _ambrosia-edge._tcp
avahi-daemon -k
"""
AVAHI_CONF = """[server]
use-ipv4=yes
use-ipv6=no
allow-interfaces={interface}
enable-dbus=yes
[publish]
disable-publishing=yes
"""


def test_avahi_browse_sees_the_service(
    tmp_path: Path, deployment: str, devices: Namespaces
) -> None:
    """Debian's avahi-browse, on the same "device" as a server, lists it with its TXT."""
    tools = ("avahi-daemon", "avahi-browse", "dbus-daemon", "unshare")
    missing = [tool for tool in tools if shutil.which(tool) is None]
    if missing and not os.environ.get("CI"):
        pytest.skip(f"not installed: {', '.join(missing)} (Debian: avahi-daemon avahi-utils dbus)")
    (ns, _), (host, _), (interface, _) = devices.names, devices.hosts, devices.links
    server = Node(tmp_path, f"{APPS}:Counter", "server", deployment)
    (tmp_path / "avahi.conf").write_text(AVAHI_CONF.format(interface=interface))
    try:
        server.start(host, ns)
        wait_for(lambda: "announced on mDNS" in server.output(), 30, "the server", server.output)
        browse = subprocess.run(
            ["ip", "netns", "exec", ns, "unshare", "-m", "sh", "-c", AVAHI],
            env=dict(os.environ, CONF=str(tmp_path / "avahi.conf")),
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        server.kill()
    resolved = [line for line in browse.stdout.splitlines() if line.startswith("=")]
    assert resolved, f"avahi-browse found nothing:\n{browse.stdout}\n{browse.stderr}"
    fields = resolved[0].split(";")
    print(f"\navahi-browse: {resolved[0]}")
    assert fields[3] == f"server\\064{deployment}"  # avahi escapes '@' as \064
    assert fields[4] == "_ambrosia-edge._tcp"
    assert fields[7] == host
    txt = set(fields[9].split(" "))
    assert {'"name=server"', f'"dep={deployment}"', '"proto=1"', '"epoch=1"', '"inc="'} <= txt
