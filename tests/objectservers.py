"""The object-store servers of :mod:`ambrosia_edge.testing.objectservers` for this suite: a
server whose program is missing skips its tests, except in CI, which installs them all (the
``test`` extra; Azurite from npm in ``.ci/run``), so there it fails."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ambrosia_edge.testing import free_port
from ambrosia_edge.testing import objectservers as servers
from ambrosia_edge.testing.objectservers import ObjectServer

__all__ = ["ObjectServer", "azurite_server", "free_port", "moto_server", "seaweedfs_server"]


def _or_skip(
    start: Callable[..., contextlib.AbstractContextManager[ObjectServer]],
) -> Callable[..., contextlib.AbstractContextManager[ObjectServer]]:
    @contextlib.contextmanager
    def started(tmp: Path, **options: Any) -> Iterator[ObjectServer]:
        with contextlib.ExitStack() as stack:
            try:
                server = stack.enter_context(start(tmp, **options))
            except servers.ServerMissing as exc:
                (pytest.fail if os.environ.get("CI") else pytest.skip)(str(exc))
            yield server

    return started


moto_server = _or_skip(servers.moto_server)
seaweedfs_server = _or_skip(servers.seaweedfs_server)
azurite_server = _or_skip(servers.azurite_server)
