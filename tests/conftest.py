from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

# the shared suites' asserts say what differed, as the tests' own do
pytest.register_assert_rewrite(
    "ambrosia_edge.testing.storage_suite", "ambrosia_edge.testing.link_suite"
)


@pytest.fixture(params=[pytest.param("asyncio", id="asyncio"), pytest.param("trio", id="trio")])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(autouse=True)
def no_thread_left_behind() -> Iterator[None]:
    """A test must not leave threads running: they would outlive it and race the next one."""
    before = set(threading.enumerate())
    yield
    leftover = [
        t
        for t in threading.enumerate()
        if t not in before
        and t.is_alive()
        # (a log writer's thread is a daemon, so that a crash cannot hang the interpreter's
        # exit, but a coordinator that stopped must have stopped it)
        and (not t.daemon or t.name.endswith("-log-writer"))
    ]
    for thread in leftover:
        thread.join(timeout=5)
    still = [t.name for t in leftover if t.is_alive()]
    assert not still, f"threads left running: {still}"
