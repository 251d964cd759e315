"""Dropping an impulse the outside world sent twice, by an id it gave it (paper §4, DESIGN §11).

A source that must not lose a message (MQTT at QoS 1) acknowledges it only once its impulse is
durable, so a crash between the log write and the acknowledgement makes the sender deliver it
again: the log then holds it twice. When the sender names each message, the source passes that
name with the impulse, under the keyword :data:`ONCE`, and the executor runs the impulse only if
the name is not among the recent ones. The decision is made when the impulse executes, in log
order, so replay makes it the same way, and the window of recent names lives in the immortal's
state (attribute :data:`SEEN`), so it is in every checkpoint.
"""

from __future__ import annotations

from typing import Any

#: The keyword carrying ``[id, window]`` with an impulse; never passed on to the method.
ONCE = "__ambrosia_once__"
#: The immortal's attribute holding the recent ids, oldest first (a dict used as an ordered set).
SEEN = "_impulse_ids_seen"


def first_time(obj: Any, once: object) -> bool:
    """Record ``once`` (``[id, window]``) in ``obj``'s window; False if the id was there."""
    if not (isinstance(once, list | tuple) and len(once) == 2 and isinstance(once[1], int)):
        return True  # not ours: run it
    key, window = once
    key = str(key)
    seen: dict[str, bool] | None = obj.__dict__.get(SEEN)
    if seen is None:
        seen = obj.__dict__[SEEN] = {}
    if key in seen:
        return False
    seen[key] = True
    while len(seen) > window:
        del seen[next(iter(seen))]
    return True
