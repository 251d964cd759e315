"""Incarnations: a log wiped and started again under the same name is not taken for the old one.

The client streams awaited calls to the server (tests/apps/upgrading.py). The server's log is
wiped and the server started again: the links stop at both ends with an error naming both
incarnations, instead of rebasing on the new log's sequence numbers (which would silently drop
what the new server sends, docs/protocol.md 4.10), and nothing of the client's runs there.
"""

from __future__ import annotations

import io
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from ambrosia_edge.storage.local import LocalStore
from ambrosia_edge.storage.memory import MemoryStore
from apps.upgrading import Client, Server
from support import APPS, Child, free_port, lone_coordinator, wait_for

from ambrosia_edge import incarnation
from ambrosia_edge.checkpoint import Checkpoint, decode_checkpoint
from ambrosia_edge.errors import IncarnationError
from ambrosia_edge.inspection import read_log, write_text
from ambrosia_edge.logstatus import LogStatus
from ambrosia_edge.logstatus import write_text as status_text
from ambrosia_edge.page import Page, decode_chunk_header, decode_page
from ambrosia_edge.testing import Cluster, eventually

pytestmark = pytest.mark.anyio


async def test_a_wiped_server_is_a_new_incarnation_and_the_links_stop(tmp_path: Path) -> None:
    async with Cluster(tmp_path, fsync=False) as c:
        c.port("server"), c.port("client")
        server = await c.start(Server, "server")
        client = await c.start(Client, "client")
        old = server.runtime.coordinator.incarnation  # type: ignore[union-attr]
        await eventually(lambda: len(client.obj.seen) >= 20, "20 calls")
        await c.crash("server")
        seen = list(client.obj.seen)
        shutil.rmtree(tmp_path / "server")
        server = await c.start(Server, "server")
        new = server.runtime.coordinator.incarnation  # type: ignore[union-attr]
        assert old and new and old != new
        links = client.runtime.coordinator.stopped_links  # type: ignore[union-attr]
        await eventually(lambda: "server" in links, "the client to stop its link to the server")
        assert old in links["server"] and new in links["server"], links
        assert "new incarnation" in links["server"] and "restore server's log" in links["server"]
        theirs = server.runtime.coordinator.stopped_links  # type: ignore[union-attr]
        await eventually(lambda: "client" in theirs, "the new server to stop its link")
        assert old in theirs["client"] and new in theirs["client"]
        # nothing silently dropped or taken for something else: the new server ran none of
        # the client's calls and the client took no reply from it; its call waits, unanswered
        assert server.obj.count == 0
        assert client.obj.seen == seen and not client.obj.done
        assert client.runtime.coordinator.dispatched.get("server", (0, 0)) == (  # type: ignore[union-attr]
            len(seen),
            len(seen),
        )
        status = client.runtime.status()  # type: ignore[union-attr]
        assert status["stopped_links"] == {"server": links["server"]}
        assert status["incarnation"] == client.runtime.coordinator.incarnation  # type: ignore[union-attr]


async def test_the_client_remembers_the_server_across_its_own_crash(tmp_path: Path) -> None:
    """The server's id is logged with the client's next page, not only in its checkpoints
    (which a client awaiting replies all along never takes)."""
    async with Cluster(tmp_path, fsync=False) as c:
        c.port("server"), c.port("client")
        await c.start(Server, "server")
        client = await c.start(Client, "client")
        await eventually(lambda: len(client.obj.seen) >= 20, "20 calls")
        await c.crash("client")
        await c.crash("server")
        shutil.rmtree(tmp_path / "server")
        await c.start(Server, "server")
        client = await c.start(Client, "client")
        links = client.runtime.coordinator.stopped_links  # type: ignore[union-attr]
        await eventually(lambda: "server" in links, "the client to stop its link to the server")
        assert c["server"].obj.count == 0


async def test_the_id_is_kept_in_chunk_headers_and_checkpoints(tmp_path: Path) -> None:
    async with Cluster(tmp_path, fsync=False) as c:
        c.port("server"), c.port("client")
        server = await c.start(Server, "server")
        first = server.runtime.coordinator.incarnation  # type: ignore[union-attr]
        await c.crash("server")  # perhaps before checkpoint 1: then chunk 1 keeps the id
        server = await c.start(Server, "server")
        assert server.runtime.coordinator.incarnation == first  # type: ignore[union-attr]
        store = LocalStore(str(tmp_path / "server"))
        server.runtime.request_checkpoint()  # type: ignore[union-attr]
        await eventually(store.list_checkpoints, "a checkpoint")
        await c.crash("server")
    cp = decode_checkpoint(store.read_checkpoint(store.list_checkpoints()[-1]), "cp")
    assert cp.incarnation == first
    report = read_log(str(tmp_path / "server"))
    assert report.incarnation == first and not report.notes
    text = io.StringIO()
    write_text(report, text)
    assert f"incarnation: {first}" in text.getvalue()
    for chunk in store.list_chunks():
        _, body = next(iter(store.read_records(chunk, repair=False)))
        assert decode_chunk_header(body, "header")["incarnation"] == first


def test_a_log_from_before_incarnations_gets_a_stable_id(tmp_path: Path) -> None:
    assert incarnation.legacy("a", None) == incarnation.legacy("a", None)
    cp = Checkpoint("a", "m:C", 1, 3, 9, 2, b"", 1)
    assert incarnation.legacy("a", cp) != incarnation.legacy("a", None)
    assert len(incarnation.new()) == 2 * incarnation.ID_BYTES


def test_pages_carry_the_peers_met_only_when_there_are_some() -> None:
    plain = Page(3, 1)
    assert plain.encode()[0] == 0x85
    met = Page(3, 1, peers={"server": "00ff"})
    assert met.encode()[0] == 0x86
    assert decode_page(met.encode(), "here").peers == {"server": "00ff"}
    assert decode_page(plain.encode(), "here").peers == {}


def test_a_peer_without_an_id_is_not_checked_and_a_changed_one_is_refused() -> None:
    coordinator = lone_coordinator(MemoryStore("memory://incarnations"))
    coordinator._meet("old-release", None)  # a peer from before incarnations
    assert coordinator.peer_incarnations == {}
    coordinator._meet("server", "aaaa")
    coordinator._meet("server", "aaaa")
    assert coordinator.peer_incarnations == {"server": "aaaa"}
    assert coordinator._met == {"server": "aaaa"}  # logged with the next page
    with pytest.raises(
        IncarnationError, match=r"incarnation aaaa of server.*now runs incarnation bbbb"
    ):
        coordinator._meet("server", "bbbb")
    assert "server" in coordinator.stopped_links


def test_status_shows_the_id_and_the_stopped_links() -> None:
    status = LogStatus(log="x", state="running", incarnation="00ff", stopped_links={"b": "why"})
    out = io.StringIO()
    status_text(status, out)
    assert "incarnation: 00ff\n" in out.getvalue()
    assert "stopped:     link to b: why\n" in out.getvalue()


def log_id(log: Path) -> Any:
    """The incarnation in the first chunk's header (read while its writer runs)."""
    store = LocalStore(str(log))
    _, body = next(iter(store.read_records(store.list_chunks()[0], repair=False)))
    return decode_chunk_header(body, "header").get("incarnation")


def test_real_processes_a_wiped_server_is_reported_by_its_client(tmp_path: Path) -> None:
    """The same with the CLI in child processes: the client's log output and ``ambrosia-edge
    status`` name both incarnations, and the new server runs nothing of the client's."""
    status = tmp_path / "status"
    status.mkdir()
    ps, pc = free_port(), free_port()
    env = {"AMBROSIA_TEST_CALLS": "300"}
    log = tmp_path / "server"
    server = Child(f"{APPS}:Counter", "server", log, ps, {"client": pc}, status, env)
    client = Child(f"{APPS}:Client", "client", tmp_path / "client", pc, {"server": ps}, status, env)
    try:
        server.start()
        client.start()
        wait_for(lambda: (s := client.status()) and len(s["seen"]) >= 20, 60, "20 calls")
        old = log_id(log)
        server.kill()
        shutil.rmtree(log)
        server.start()
        wait_for(
            lambda: "link to server stopped" in client.output(),
            60,
            "the client to stop its link",
            lambda: client.output() + server.output(),
        )
        new = log_id(log)
        assert old and new and old != new
        said = client.output()
        assert f"incarnation {old} of server" in said and f"now runs incarnation {new}" in said
        wait_for(lambda: "link to client stopped" in server.output(), 60, "the server to stop")
        assert server.status()["count"] == 0  # type: ignore[index]
        done = subprocess.run(
            [sys.executable, "-m", "ambrosia_edge", "status", str(tmp_path / "client")],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=status,
        )
        assert "stopped:     link to server: server is a new incarnation" in done.stdout, done
        assert client.stop() == 0 and server.stop() == 0
    finally:
        server.kill()
        client.kill()
