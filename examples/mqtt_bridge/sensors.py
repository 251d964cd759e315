"""Fake temperature sensors: publish readings for a few rooms to an MQTT broker.

Each reading goes to ``home/ROOM/temperature`` as ``{"t": 21.5}`` at QoS 1, with an id in the
MQTT 5 user property ``message-id`` (``ROOM-N``), so an immortal that takes it twice (the
broker sends it again when the immortal crashed before acknowledging it) runs it once::

    python sensors.py mqtt://127.0.0.1:1883 --rooms kitchen,bedroom --count 20

Reading N of a room is 20 + (N mod 5) / 2 degrees, so the statistics are easy to check.
Running it again with ``--first 21`` goes on with the next readings.
"""

from __future__ import annotations

import argparse
import json
import time
from urllib.parse import urlsplit

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties


def celsius(n: int) -> float:
    return 20 + (n % 5) / 2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("broker", help="mqtt://HOST:PORT")
    parser.add_argument("--rooms", default="kitchen,bedroom", help="comma-separated rooms")
    parser.add_argument("--count", type=int, default=20, help="readings per room")
    parser.add_argument("--first", type=int, default=1, help="number of the first reading")
    args = parser.parse_args()
    url = urlsplit(args.broker)
    client = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
    client.connect(url.hostname or "127.0.0.1", url.port or 1883)
    client.loop_start()
    infos = []
    for n in range(args.first, args.first + args.count):
        for room in args.rooms.split(","):
            props = Properties(PacketTypes.PUBLISH)
            props.UserProperty = ("message-id", f"{room}-{n}")
            payload = json.dumps({"t": celsius(n)})
            infos.append(client.publish(f"home/{room}/temperature", payload, 1, False, props))
    deadline = time.monotonic() + 30
    while not all(i.is_published() for i in infos) and time.monotonic() < deadline:
        time.sleep(0.01)  # paho's own thread sends; wait for the broker's acknowledgements
    sent = sum(i.is_published() for i in infos)
    client.disconnect()
    client.loop_stop()
    print(f"sensors: {sent} readings published")


if __name__ == "__main__":
    main()
