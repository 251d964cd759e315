"""The helpers shipped for applications' own tests work as documented."""

from __future__ import annotations

from pathlib import Path

import pytest

from ambrosia_edge import Immortal, rpc
from ambrosia_edge.testing import Cluster, eventually

pytestmark = pytest.mark.anyio


class Counter(Immortal):
    def __init__(self) -> None:
        self.count = 0

    @rpc
    async def inc(self) -> int:
        self.count += 1
        return self.count


class Client(Immortal):
    def __init__(self) -> None:
        self.seen: list[int] = []

    async def on_first_start(self) -> None:
        for _ in range(100):
            self.seen.append(await self.proxy("server").inc())


async def test_cluster_crash_and_restart_keep_exactly_once(tmp_path: Path) -> None:
    async with Cluster(tmp_path) as cluster:
        cluster.port("client")
        await cluster.start(Counter, "server")
        await cluster.start(Client, "client")
        await eventually(lambda: len(cluster["client"].obj.seen) >= 30, "some calls")
        await cluster.crash("server")
        await cluster.crash("client")
        await cluster.start(Client, "client")
        await cluster.start(Counter, "server")
        await eventually(lambda: len(cluster["client"].obj.seen) == 100, "all calls")
        assert cluster["client"].obj.seen == list(range(1, 101))
        assert cluster["server"].obj.count == 100
