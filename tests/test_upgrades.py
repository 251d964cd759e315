"""Live upgrades (paper §5.4): a new version recovers with the old code and converts the state
when it becomes the primary, then checkpoints; the chunk headers record where it happened.

The immortals are in tests/apps/upgrading.py: ``Server`` (version 1), ``ServerV2`` (``count``
renamed ``total``, ``peek`` added, ``previous = Server``) and ``Doubling`` (a version 2 whose
``add`` counts double). Crashes of real processes during the upgrade are in
test_upgrade_under_fire.py.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import anyio
import pytest
from ambrosia_edge.storage.local import LocalStore
from apps import upgrading
from apps.upgrading import Client, ClientV2, Doubling, Server, ServerV2

from ambrosia_edge.checkpoint import decode_checkpoint
from ambrosia_edge.config import Settings
from ambrosia_edge.errors import CheckpointError, ConfigError
from ambrosia_edge.inspection import read_log, write_text
from ambrosia_edge.page import decode_chunk_header
from ambrosia_edge.recovery import code_for
from ambrosia_edge.runtime import Runtime
from ambrosia_edge.testing import Cluster, eventually
from ambrosia_edge.timetravel import replay

CALLS = upgrading.CALLS
SUM = CALLS * (CALLS + 1) // 2


class NotPrevious(Doubling):
    """``Doubling`` without the old code: the new ``add`` would replay the old calls."""

    previous = None


def recovered(cls: type, log: Path) -> Any:
    runtime = Runtime(cls, Settings(target="tests:upgrading", name="server", log=str(log)))
    runtime.recover()  # as a new primary would (the processes are stopped)
    runtime.store.close()
    return runtime.immortal


def headers(log: Path) -> dict[int, dict[str, Any]]:
    store = LocalStore(str(log))
    found = {}
    for chunk in store.list_chunks():
        for offset, body in store.read_records(chunk, repair=False):
            found[chunk] = decode_chunk_header(body, f"chunk {chunk} offset {offset}")
            break
    return found


def newest_checkpoint(log: Path) -> Any:
    store = LocalStore(str(log))
    n = store.list_checkpoints()[-1]
    return decode_checkpoint(store.read_checkpoint(n), "checkpoint")


async def upgraded_cluster(root: Path, new: type, *, at: int = 40) -> tuple[list[int], Any]:
    """Version 1 serves ``at`` calls or more (none of them checkpointed), then ``new`` takes
    over from its log; return the client's results and the server's object."""
    async with Cluster(root, fsync=False, keep_checkpoints=100) as c:
        c.port("server"), c.port("client")
        server = await c.start(Server, "server")
        client = await c.start(Client, "client")
        await eventually(lambda: len(client.obj.seen) >= at, f"{at} calls", 30)
        await c.crash("server")
        server = await c.start(new, "server")
        await eventually(lambda: client.obj.done, "the client to finish", 30)
        return list(client.obj.seen), server.obj


@pytest.mark.anyio
async def test_a_field_renamed_and_a_method_added(tmp_path: Path) -> None:
    seen, server = await upgraded_cluster(tmp_path, ServerV2)
    assert seen == [i * (i + 1) // 2 for i in range(1, CALLS + 1)]
    assert type(server) is ServerV2 and server.total == SUM and not hasattr(server, "count")
    log = tmp_path / "server"
    # the new version's first chunk records it, and opens with a checkpoint of it
    versions = [h.get("class_version") for h in headers(log).values()]
    assert versions[0] == 1 and versions[-1] == 2, versions
    checkpoint = newest_checkpoint(log)
    assert (checkpoint.class_version, checkpoint.class_path) == (2, "apps.upgrading:ServerV2")
    final = recovered(ServerV2, log)
    assert type(final) is ServerV2 and final.total == SUM
    text = io.StringIO()
    write_text(read_log(str(log)), text)
    assert "class version 1 -> 2 from here: a live upgrade" in text.getvalue()


@pytest.mark.anyio
async def test_what_version_1_logged_is_replayed_by_version_1(tmp_path: Path) -> None:
    """``Doubling`` counts new calls double; the calls version 1 ran keep their results."""
    log = tmp_path / "server"
    async with Cluster(tmp_path, fsync=False, keep_checkpoints=100) as c:
        c.port("server"), c.port("client")
        await c.start(Server, "server")
        client = await c.start(Client, "client")
        await eventually(lambda: len(client.obj.seen) >= 40, "40 calls", 30)
        await c.crash("server")
        await c.crash("client")
    v1 = recovered(Server, log).count
    assert v1 >= sum(range(41))
    # replayed by the old code, converted at the end: history is kept
    assert recovered(Doubling, log).total == v1
    # the new code replaying the old calls would rewrite history: why `previous` exists
    assert recovered(NotPrevious, log).total != v1


@pytest.mark.anyio
async def test_a_crash_before_the_upgrade_checkpoint_replays_to_the_chunk_header(
    tmp_path: Path,
) -> None:
    seen, _ = await upgraded_cluster(tmp_path, Doubling)
    log = tmp_path / "server"
    expected = recovered(Doubling, log).total
    store = LocalStore(str(log))
    upgrade_chunk = max(n for n, h in headers(log).items() if h.get("class_version") == 2)
    assert upgrade_chunk == min(n for n, h in headers(log).items() if h.get("class_version") == 2)
    # as if the process died after opening the new version's chunk, before its checkpoint
    store.open()
    for n in store.list_checkpoints():
        if n >= upgrade_chunk:
            store.delete_checkpoint(n)
    store.close()
    assert newest_checkpoint(log).class_version == 1
    # old pages with the old code, converted at the header, new pages with the new code
    assert recovered(Doubling, log).total == expected
    # without the old code it cannot be: the old calls would count double
    assert recovered(NotPrevious, log).total != expected
    # the time-travel tool follows the same history
    assert replay(str(log), Doubling, checkpoint=None).obj.total == expected
    assert replay(str(log), Doubling, checkpoint=None).state.keys() == {"total"}
    assert seen[-1] == expected  # what the client was answered last


def test_a_version_going_backwards_is_refused_at_the_chunk_header(tmp_path: Path) -> None:
    anyio.run(upgraded_cluster, tmp_path, ServerV2)
    log = tmp_path / "server"
    store = LocalStore(str(log))
    upgrade_chunk = min(n for n, h in headers(log).items() if h.get("class_version") == 2)
    store.open()
    for n in store.list_checkpoints():
        if n >= upgrade_chunk:
            store.delete_checkpoint(n)
    store.close()
    before = {p.name: p.read_bytes() for p in log.iterdir() if p.name != "LOCK"}
    with pytest.raises(CheckpointError, match="version cannot go backwards"):
        Runtime(Server, Settings(target="x:y", name="server", log=str(log))).recover()
    assert {p.name: p.read_bytes() for p in log.iterdir() if p.name != "LOCK"} == before


def test_previous_must_be_an_older_immortal_class() -> None:
    assert code_for(ServerV2, 1) is Server
    assert code_for(ServerV2, 2) is ServerV2
    assert code_for(Server, 0) is None

    class Wrong(ServerV2):
        version = 3
        previous = int  # type: ignore[assignment]

    class Newer(ServerV2):
        version = 3
        previous = Doubling  # version 2: fine

    class Backwards(Server):
        previous = ServerV2

    assert code_for(Newer, 1) is Server
    with pytest.raises(ConfigError, match="previous must be the Immortal class"):
        code_for(Wrong, 1)
    with pytest.raises(ConfigError, match="previous must be an older version"):
        code_for(Backwards, 0)


@pytest.mark.anyio
async def test_a_client_waiting_for_replies_is_converted_once_nothing_waits(
    tmp_path: Path,
) -> None:
    async with Cluster(tmp_path, fsync=False, keep_checkpoints=100) as c:
        c.port("server"), c.port("client")
        await c.start(ServerV2, "server")
        client = await c.start(Client, "client")
        await eventually(lambda: len(client.obj.seen) >= 30, "30 calls", 30)
        await c.crash("client")
        client = await c.start(ClientV2, "client")
        assert type(client.obj) is Client  # on_first_start of version 1 still waits
        await eventually(lambda: type(client.obj) is ClientV2, "the conversion", 30)
        assert client.obj.results == [i * (i + 1) // 2 for i in range(1, CALLS + 1)]
        assert client.obj.peeked == SUM and client.obj.done
        log = tmp_path / "client"
        await eventually(lambda: newest_checkpoint(log).class_version == 2, "its checkpoint", 30)
    checkpoint = newest_checkpoint(tmp_path / "client")
    assert (checkpoint.class_version, checkpoint.class_path) == (2, "apps.upgrading:ClientV2")
