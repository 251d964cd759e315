"""The recorder of the AMBROSIA paper (§4.1): input from the outside world arrives as impulses.

Lines typed into the terminal are not replayable: once read, they are gone from stdin. So the
immortal does not read them in a handler. It names the terminal as one of its impulse sources:
once recovery is over, and never during replay, the runtime reads stdin and sends each line to
the recorder's ``@impulse`` method. The runtime logs the impulse before it runs, and from then
on it is an input like any other: kill the recorder with ``kill -9``, start it again, and it
replays the log and shows every line entered before. A line that was read but not yet logged
when the process died is lost, which is what an impulse means (paper §4.2).
"""

from __future__ import annotations

from ambrosia_edge.transports.terminal import TerminalSource

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

    def impulse_sources(self) -> list[TerminalSource]:
        # "terminal:accept_input" would do as well; the object also says what to do at the end
        return [TerminalSource("accept_input", at_end=self.end_of_input)]

    def end_of_input(self) -> None:
        print("recorder: end of input; still running (Ctrl-C stops it)", flush=True)
