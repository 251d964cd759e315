"""The subcommands of ``ambrosia-edge``, one module each, found by name.

A command is anything with two functions (a module will do)::

    def add_parser(subparsers, name, common) -> argparse.ArgumentParser
        # add `name` to the subparsers (with ``parents=[common]`` for the shared flags)
    def main(args: argparse.Namespace) -> int
        # run it; raise AmbrosiaError for an error the user can fix (exit 1)

Commands are registered as lazy ``"module"`` or ``"module:attr"`` strings, so only the modules
of the command line are imported, and ``--help`` stays fast: a command module imports the
runtime, the storage tiers or anything heavy inside ``main``, never at its top. Other packages
add commands through the ``ambrosia_edge.commands`` entry-point group::

    [project.entry-points."ambrosia_edge.commands"]
    status = "my_package.status_command"
"""

from __future__ import annotations

import argparse
import importlib
import os
from importlib.metadata import entry_points
from typing import Any, Protocol

from ..errors import AmbrosiaError

__all__ = [
    "BUILTIN",
    "ENTRY_POINT_GROUP",
    "Command",
    "call",
    "load_command",
    "log_url",
    "registered_commands",
]

ENTRY_POINT_GROUP = "ambrosia_edge.commands"

#: The commands that come with the package, in the order ``--help`` lists them.
BUILTIN: dict[str, str] = {
    "run": "ambrosia_edge.commands.run",
    "demo": "ambrosia_edge.commands.demo",
    "inspect": "ambrosia_edge.commands.inspect",
    "checkpoint": "ambrosia_edge.commands.checkpoint",
    "device": "ambrosia_edge.commands.device",
    "export": "ambrosia_edge.commands.archive:EXPORT",
    "import": "ambrosia_edge.commands.archive:IMPORT",
    "status": "ambrosia_edge.commands.status",
    "replay": "ambrosia_edge.commands.replay",
    "retrotest": "ambrosia_edge.commands.retrotest",
    "version": "ambrosia_edge.commands.version",
}


class Command(Protocol):
    """One subcommand: how it is parsed and what it does."""

    def add_parser(
        self,
        subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
        name: str,
        common: argparse.ArgumentParser,
    ) -> argparse.ArgumentParser: ...

    def main(self, args: argparse.Namespace) -> int: ...


def registered_commands() -> dict[str, str]:
    """Name -> lazy target: the built-in commands, then those of installed packages.

    A package cannot replace a built-in command: ``run`` must mean the same everywhere.
    """
    commands = dict(BUILTIN)
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        commands.setdefault(ep.name, ep.value)
    return commands


def load_command(target: str) -> Command:
    """Import ``"module"`` or ``"module:attr"``."""
    module_name, _, attr = target.partition(":")
    command: Any = importlib.import_module(module_name)
    for part in attr.split(".") if attr else ():
        command = getattr(command, part)
    return command  # type: ignore[no-any-return]


def call(module_name: str, function: str, *call_args: object) -> int:
    """Import a module of the package only now, and report it missing as an error, not a
    traceback: a broken optional part must not stop the commands that do not use it."""
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name != module_name:
            raise
        raise AmbrosiaError(f"{module_name} is missing from this installation") from exc
    result = getattr(module, function)(*call_args)
    return result if isinstance(result, int) else 0


def log_url(name_or_log: str) -> str:
    """A bare name means the default log of that immortal; anything path-like is a location.

    Only explicit path syntax counts as a path, so a directory that happens to share the
    immortal's name in the current directory does not change what a name means.
    """
    path_like = (
        "://" in name_or_log
        or "/" in name_or_log
        or os.sep in name_or_log
        or name_or_log.startswith((".", "~"))
    )
    if path_like:
        return os.path.expanduser(name_or_log)
    from ..config import default_log_url

    return default_log_url(name_or_log)
