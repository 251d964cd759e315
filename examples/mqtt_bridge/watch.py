"""A dashboard on the terminal: print each room's statistics as the ``rooms`` immortal
publishes them, dropping a repeat by its ``message-id`` (what a crash of ``rooms`` can cause)::

    python watch.py mqtt://127.0.0.1:1883
"""

from __future__ import annotations

import argparse
import contextlib
import json
import threading
from typing import Any
from urllib.parse import urlsplit

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("broker", help="mqtt://HOST:PORT")
    args = parser.parse_args()
    url = urlsplit(args.broker)
    seen: set[str] = set()
    lock = threading.Lock()

    def on_message(_c: Any, _u: Any, message: Any) -> None:
        props = dict(getattr(message.properties, "UserProperty", None) or ())
        message_id = props.get("message-id")
        with lock:
            if message_id is not None and message_id in seen:
                return  # published again after a crash: we have it
            if message_id is not None:
                seen.add(message_id)
        s = json.loads(message.payload)
        retained = " (retained)" if message.retain else ""
        print(
            f"{s['room']}: {s['count']} readings, mean {s['mean']}, "
            f"min {s['min']}, max {s['max']}{retained}",
            flush=True,
        )

    client = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
    client.on_message = on_message
    client.on_connect = lambda c, *_: c.subscribe("home/+/stats", 1)
    client.on_subscribe = lambda *_: print("watch: subscribed to home/+/stats", flush=True)
    client.connect(url.hostname or "127.0.0.1", url.port or 1883)
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C ends it
        client.loop_forever()


if __name__ == "__main__":
    main()
