"""``ambrosia-edge version``: the installed version (``--version`` prints the same)."""

from __future__ import annotations

import argparse
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as dist_version

__all__ = ["add_parser", "main", "version_text"]

PROG = "ambrosia-edge"


def version_text() -> str:
    try:
        number = dist_version(PROG)
    except PackageNotFoundError:
        number = "unknown"
    return f"{PROG} {number}"


def add_parser(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    common: argparse.ArgumentParser,
) -> argparse.ArgumentParser:
    return subparsers.add_parser(name, parents=[common], help="print the version")


def main(args: argparse.Namespace) -> int:
    print(version_text())
    return 0
