"""Per-room temperature statistics from an MQTT sensor topic, published back to MQTT.

Sensors publish readings on ``home/ROOM/temperature`` (a number, or ``{"t": number}``); each
reading is an impulse, logged before it runs, and the broker's copy is acknowledged only then,
so a reading the broker handed over is never lost. The immortal keeps count, mean, minimum and
maximum per room and publishes them, retained, on ``home/ROOM/stats`` after every reading: a
publish is an output, sent once the reading is durable and never lost either. Other immortals
can feed it readings (``add``) and ask for a room's numbers (``stats``) over RPC.

Run it (README.md has the whole walk-through)::

    ambrosia-edge run rooms.py:Rooms --name rooms --log ./logs/rooms \\
        --mqtt mqtt://127.0.0.1:1883 --subscribe 'home/+/temperature=reading:json'
"""

from __future__ import annotations

from typing import Any

from ambrosia_edge import Immortal, impulse, rpc


class Rooms(Immortal):
    def __init__(self) -> None:
        #: room -> count, sum, min, max of its readings
        self.rooms: dict[str, dict[str, float]] = {}

    @impulse
    def reading(self, topic: str, value: Any) -> None:
        """A sensor's reading, from MQTT: ``home/ROOM/temperature``."""
        room = topic.split("/")[1]
        celsius = value["t"] if isinstance(value, dict) else value
        self.add_reading(room, float(celsius))

    @rpc
    def add(self, room: str, celsius: float) -> dict[str, Any]:
        """A reading from another immortal (a wired sensor); returns the room's numbers."""
        return self.add_reading(room, float(celsius))

    @rpc
    def stats(self, room: str) -> dict[str, Any] | None:
        return self.summary(room) if room in self.rooms else None

    def add_reading(self, room: str, celsius: float) -> dict[str, Any]:
        s = self.rooms.get(room)
        if s is None:
            s = self.rooms[room] = {"count": 0, "sum": 0.0, "min": celsius, "max": celsius}
        s["count"] += 1
        s["sum"] += celsius
        s["min"] = min(s["min"], celsius)
        s["max"] = max(s["max"], celsius)
        summary = self.summary(room)
        # retained: a dashboard that subscribes later gets each room's latest numbers at once
        self.publish(f"home/{room}/stats", summary, retain=True)
        return summary

    def summary(self, room: str) -> dict[str, Any]:
        s = self.rooms[room]
        return {
            "room": room,
            "count": int(s["count"]),
            "mean": round(s["sum"] / s["count"], 2),
            "min": s["min"],
            "max": s["max"],
        }
