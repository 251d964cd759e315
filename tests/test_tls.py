"""TLS between coordinators: mutual authentication with the deployment's CA, and each peer's
certificate for the immortal it is (or claims to be); anything else is refused before a byte
of it is logged."""

from __future__ import annotations

import datetime
import importlib.util
import logging
from pathlib import Path
from typing import Any

import anyio
import pytest
import trustme
from apps.counting import Counter
from instances import Instance, eventually, settings
from support import free_port

from ambrosia_edge.errors import ConfigError
from ambrosia_edge.runtime import default_transport

pytestmark = pytest.mark.anyio


def files(tmp_path: Path, ca: Any, name: str, **issue: Any) -> dict[str, str]:
    """Settings for TLS with a certificate of ``ca`` for ``name`` (and the deployment's CA)."""
    folder = tmp_path / "tls"
    folder.mkdir(exist_ok=True)
    cert = ca.issue_cert(name, **issue)
    cert.cert_chain_pems[0].write_to_path(str(folder / f"{name}.pem"))
    cert.private_key_pem.write_to_path(str(folder / f"{name}.key"))
    return {
        "tls_cert": str(folder / f"{name}.pem"),
        "tls_key": str(folder / f"{name}.key"),
        "tls_ca": str(folder / "ca.pem"),
    }


@pytest.fixture
def ca(tmp_path: Path) -> Any:
    authority = trustme.CA()
    (tmp_path / "tls").mkdir()
    authority.cert_pem.write_to_path(str(tmp_path / "tls" / "ca.pem"))
    return authority


async def test_peers_with_certificates_of_the_ca_talk_over_tls(tmp_path: Path, ca: Any) -> None:
    await talk_over_tls(tmp_path, ca)


@pytest.mark.skipif(
    importlib.util.find_spec("uvloop") is None, reason="uvloop (the fast extra) is not installed"
)
@pytest.mark.parametrize(
    "anyio_backend", [pytest.param(("asyncio", {"use_uvloop": True}), id="uvloop")]
)
async def test_tls_on_uvloop(tmp_path: Path, ca: Any) -> None:
    """uvloop hands back its own TLS protocol for an accepted socket, not the link's."""
    await talk_over_tls(tmp_path, ca)


async def talk_over_tls(tmp_path: Path, ca: Any) -> None:
    ps, pc = free_port(), free_port()
    async with anyio.create_task_group() as tg:
        server = Instance(
            tg,
            Counter,
            settings("server", tmp_path / "s", ps, {"client": pc}, **files(tmp_path, ca, "server")),
        )
        client = Instance(
            tg,
            Counter,
            settings("client", tmp_path / "c", pc, {"server": ps}, **files(tmp_path, ca, "client")),
        )
        runtime = await server.start()
        sender = await client.start()
        assert sender.executor is not None
        for n in range(1, 101):
            sender.executor.proxy("server").fork.reading(float(n))
        await eventually(lambda: len(server.obj.readings) == 100, "100 calls over TLS")
        assert server.obj.readings == [float(n) for n in range(1, 101)]
        link = runtime.coordinator._inbound["client"]
        assert link.certificate_names == frozenset({"client"})
        tg.cancel_scope.cancel()


def _impostors(tmp_path: Path, ca: Any) -> dict[str, dict[str, str] | None]:
    other = trustme.CA()
    other.cert_pem.write_to_path(str(tmp_path / "tls" / "other-ca.pem"))
    foreign = files(tmp_path, other, "stranger")
    foreign["tls_ca"] = str(tmp_path / "tls" / "ca.pem")  # it trusts our CA, we do not trust it
    past = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=1)
    expired = files(
        tmp_path, ca, "late", not_before=past - datetime.timedelta(days=30), not_after=past
    )
    return {
        "a certificate for another name": files(tmp_path, ca, "mallory"),
        "a certificate of another CA": foreign,
        "an expired certificate": expired,
        "plain TCP": None,
    }


@pytest.mark.parametrize(
    "case",
    [
        "a certificate for another name",
        "a certificate of another CA",
        "an expired certificate",
        "plain TCP",
    ],
)
async def test_a_peer_without_a_good_certificate_for_its_name_is_refused(
    tmp_path: Path, ca: Any, case: str, caplog: pytest.LogCaptureFixture
) -> None:
    ps, pc = free_port(), free_port()
    tls = _impostors(tmp_path, ca)[case]
    with caplog.at_level(logging.WARNING, logger="ambrosia_edge"):
        async with anyio.create_task_group() as tg:
            server = Instance(
                tg,
                Counter,
                settings(
                    "server", tmp_path / "s", ps, {"client": pc}, **files(tmp_path, ca, "server")
                ),
            )
            client = Instance(
                tg,
                Counter,
                settings("client", tmp_path / "c", pc, {"server": ps}, **(tls or {})),
            )
            runtime = await server.start()
            sender = await client.start()
            assert sender.executor is not None
            sender.executor.proxy("server").fork.reading(666.0)

            expected = "is for mallory, not for 'client'" if "name" in case else ": TLS: "

            def refused() -> bool:
                return any(expected in r.getMessage() for r in caplog.records)

            await eventually(refused, "the server to refuse the client")
            assert server.obj.readings == []
            assert runtime.coordinator.received.get("client", [0, 0]) == [0, 0]
            tg.cancel_scope.cancel()


def test_tls_needs_all_three_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--tls-key and --tls-ca together; --tls-ca missing"):
        default_transport(
            settings("a", tmp_path, free_port(), {}, tls_cert="a.pem", tls_key="a.key")
        )
    with pytest.raises(ConfigError, match="cannot load the TLS certificate"):
        default_transport(
            settings("a", tmp_path, free_port(), {}, tls_cert="a", tls_key="b", tls_ca="c")
        )


async def test_strangers_past_the_cap_on_tls_handshakes_are_closed_and_a_peer_carries_on(
    tmp_path: Path, ca: Any
) -> None:
    """The TLS handshake comes before the HELLO, so the transport caps it: connections that
    never start one hold at most ``max_handshakes`` slots, the next are closed at once."""
    ps, pc = free_port(), free_port()
    limits = {"max_handshakes": 3, "handshake_timeout": 120.0}
    async with anyio.create_task_group() as tg:
        server = Instance(
            tg,
            Counter,
            settings("server", tmp_path / "s", ps, {}, **files(tmp_path, ca, "server"), **limits),
        )
        client = Instance(
            tg,
            Counter,
            settings("client", tmp_path / "c", pc, {"server": ps}, **files(tmp_path, ca, "client")),
        )
        await server.start()
        sender = await client.start()
        assert sender.executor is not None
        proxy = sender.executor.proxy("server")
        for n in range(1, 11):
            proxy.fork.reading(float(n))
        await eventually(lambda: len(server.obj.readings) == 10, "10 calls")
        silent = [await anyio.connect_tcp("127.0.0.1", ps) for _ in range(3)]
        transport = server.runtime.transport if server.runtime else None
        await eventually(lambda: transport._handshaking == 3, "3 TLS handshakes under way")  # type: ignore[union-attr]
        for _ in range(2):
            async with await anyio.connect_tcp("127.0.0.1", ps) as late:
                with (
                    anyio.fail_after(5),
                    pytest.raises((anyio.EndOfStream, anyio.BrokenResourceError)),
                ):
                    await late.receive()
        for n in range(11, 21):
            proxy.fork.reading(float(n))
        await eventually(lambda: len(server.obj.readings) == 20, "10 more calls")
        assert server.obj.readings == [float(n) for n in range(1, 21)]
        for stream in silent:
            await stream.aclose()
        await eventually(lambda: transport._handshaking == 0, "the slots to be free")  # type: ignore[union-attr]
        tg.cancel_scope.cancel()


def test_tls_files_in_a_config_file_are_relative_to_it(tmp_path: Path) -> None:
    from ambrosia_edge.config import load_settings

    config = tmp_path / "conf" / "server.toml"
    config.parent.mkdir()
    config.write_text(
        'target = "x.py:X"\nname = "server"\n'
        'tls_cert = "tls/server.pem"\ntls_key = "tls/server.key"\ntls_ca = "/etc/ca.pem"\n'
        "handshake_timeout = 2.5\nmax_handshakes = 8\n"
    )
    loaded = load_settings(config)
    assert loaded.tls_cert == str(config.parent / "tls" / "server.pem")
    assert loaded.tls_key == str(config.parent / "tls" / "server.key")
    assert loaded.tls_ca == "/etc/ca.pem"
    assert (loaded.handshake_timeout, loaded.max_handshakes) == (2.5, 8)
    flags = load_settings(None, target="x.py:X", handshake_timeout="500ms")
    assert flags.handshake_timeout == 0.5
