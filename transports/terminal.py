"""Lines typed into a terminal (or any text stream) as impulses: the ``terminal`` source.

A line read from stdin is gone from it, so it cannot be replayed: it reaches the immortal as an
impulse, which the runtime logs before it runs (paper §4.1, the recorder). A line read but not
yet logged when the process dies is lost, which is what an impulse means.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from typing import TextIO
from urllib.parse import urlsplit

import anyio
import anyio.from_thread
import anyio.lowlevel
from anyio.abc import TaskStatus

from ambrosia_edge.errors import ConfigError
from ambrosia_edge.sources import ImpulseFeed


class TerminalSource:
    """Sends each line of ``stream`` (stdin by default), without its newline, to ``method``.

    Reading blocks, so it happens in a thread of its own: a daemon thread, because a read
    that never returns (nobody types) must not keep the process alive once the immortal has
    stopped, which a worker thread of ``anyio.to_thread`` would (Python waits for those).
    ``at_end`` is called on the event loop when the stream ends.
    """

    def __init__(
        self,
        method: str,
        *,
        stream: TextIO | None = None,
        at_end: Callable[[], object] | None = None,
    ) -> None:
        self.method = method
        self.stream = stream
        self.at_end = at_end

    @classmethod
    def from_url(cls, url: str) -> TerminalSource:
        """``terminal:METHOD``: stdin, each line to the ``@impulse`` method METHOD."""
        method = urlsplit(url).path if ":" in url else ""
        if not method.isidentifier():
            raise ConfigError(
                f"impulse source {url!r} names no method to feed; write terminal:METHOD, "
                "with METHOD an @impulse of the immortal"
            )
        return cls(method)

    async def run(
        self, feed: ImpulseFeed, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        stream = self.stream if self.stream is not None else sys.stdin
        token = anyio.lowlevel.current_token()
        ended = anyio.Event()
        stopped = False
        failed: list[Exception] = []
        method = self.method

        def deliver(line: str) -> None:
            if stopped:
                return  # a line read after we stopped is not taken
            try:
                feed.send(method, line)
            except Exception as exc:  # a wrong method, say: raised by run, so it is reported
                failed.append(exc)
                ended.set()
                raise

        def read() -> None:
            try:
                while line := stream.readline():
                    anyio.from_thread.run_sync(deliver, line.rstrip("\n"), token=token)
                anyio.from_thread.run_sync(ended.set, token=token)
            except Exception:
                return  # the stream or the event loop is gone: nobody wants more lines

        thread = threading.Thread(target=read, name=f"{feed.immortal}-terminal", daemon=True)
        try:
            thread.start()
            task_status.started()
            await ended.wait()
            if failed:
                raise failed[0]
            if self.at_end is not None:
                self.at_end()
        finally:
            stopped = True

    def __repr__(self) -> str:
        return f"<terminal source feeding {self.method}>"
