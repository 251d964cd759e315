"""Finding a plug-in by name: the one lookup behind every registry of the core.

Storage tiers, discovery and impulse sources are each named in a table of lazy
``"module:attribute"`` strings, so the core never imports a concrete implementation it is not
asked for (on a small board, importing what a deployment does not use costs start-up time and
memory), and third parties add their own through an entry-point group. A name whose module
cannot be imported is usually an optional extra that is not installed: the error says which.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from importlib.metadata import entry_points
from typing import Any

from .errors import ConfigError

__all__ = ["load"]


def load(
    name: str,
    *,
    builtin: Mapping[str, str],
    group: str,
    extras: Mapping[str, str],
    what: str,
    unknown: Callable[[str], str],
) -> Any:
    """The attribute that ``name`` stands for, from ``builtin`` or the entry-point ``group``.

    ``what`` names the plug-in in the "not available" error (``storage tier for s3://``);
    ``unknown(known)`` words the error for a name nobody registered, given the built-in names.
    """
    target = builtin.get(name)
    if target is None:
        for ep in entry_points(group=group):
            if ep.name == name:
                target = ep.value
                break
    if target is None:
        raise ConfigError(unknown(", ".join(sorted(builtin))))
    module_name, _, attribute = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        extra = extras.get(name)
        hint = f"; install it with: pip install 'ambrosia-edge[{extra}]'" if extra else ""
        raise ConfigError(f"{what} is not available ({exc}){hint}") from exc
    found: Any = module
    for part in attribute.split("."):
        found = getattr(found, part)
    return found
