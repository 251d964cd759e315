"""The recorder of the AMBROSIA paper (§4.1): input from the outside world arrives as impulses.

Lines typed into the terminal are not replayable: once read, they are gone from stdin. So the
immortal does not read them in a handler. A task started in ``becoming_primary`` (which runs
live only, never during replay) reads them and sends each one to the recorder's own
``@impulse`` method. The runtime logs the impulse before it runs, and from then on it is an
input like any other: kill the recorder with ``kill -9``, start it again, and it replays the
log and shows every line entered before. A line that was read but not yet logged when the
process died is lost, which is what an impulse means (paper §4.2).
"""

from __future__ import annotations

import sys
import threading

from ambrosia_edge import Immortal, impulse


class Recorder(Immortal):
    def __init__(self) -> None:
        self.lines: list[str] = []

    @impulse
    def accept_input(self, line: str) -> None:
        self.lines.append(line)
        print(f"recorder: {len(self.lines)} lines: {self.lines}", flush=True)

    async def becoming_primary(self) -> None:
        print(f"recorder: ready with {len(self.lines)} lines; type a line", flush=True)
        # readline blocks, so it runs in a thread of its own. A daemon thread, rather than
        # anyio.to_thread.run_sync(sys.stdin.readline): Python waits at exit for the (non-daemon)
        # anyio worker, so Ctrl-C would stop the immortal but not the process until Enter.
        threading.Thread(target=self.read_terminal, name="stdin", daemon=True).start()

    def read_terminal(self) -> None:
        """Runs in the reader thread; forking an impulse from any thread is allowed."""
        while line := sys.stdin.readline():
            self.this.fork.accept_input(line.rstrip("\n"))
        print("recorder: end of input; still running (Ctrl-C stops it)", flush=True)
