"""A re-armable wake-up signal: anyio's Event is one-shot, the coordinator's queues are not."""

from __future__ import annotations

import anyio


class Wakeup:
    """``set()`` wakes every current waiter; later waiters wait for the next ``set()``.

    A ``set()`` with nobody waiting is remembered, so a producer never loses a wake-up to a
    consumer that was busy at that moment (the consumer re-checks its condition after waking).
    """

    __slots__ = ("_event", "_flag")

    def __init__(self) -> None:
        self._event = anyio.Event()
        self._flag = False

    def set(self) -> None:
        if self._flag:
            return  # already pending: producers call this once per message
        self._flag = True
        self._event.set()

    async def wait(self) -> None:
        if not self._flag:
            await self._event.wait()
        self._flag = False
        if self._event.is_set():
            # the backend's own class, made directly: anyio.Event() first asks which event
            # loop runs (~4 µs against ~1.4), and a continuation waits on a few of these a step
            self._event = type(self._event)()
