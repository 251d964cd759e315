"""``ambrosia-edge export`` and ``import``: move a stopped immortal's log as one archive file."""

from __future__ import annotations

import argparse
from types import SimpleNamespace

from . import log_url

__all__ = ["EXPORT", "IMPORT"]

EXPORT_DESCRIPTION = """\
Write the newest checkpoint of a stopped immortal's log and the log after it into one portable
archive (a tar file with a manifest of checksums and the format version). Copy it to another
device and unpack it there with `ambrosia-edge import`; the devices may be of any architecture."""

IMPORT_DESCRIPTION = """\
Unpack an archive written by `ambrosia-edge export` into an empty log location; then start the
immortal there with `ambrosia-edge run ... --log LOG`. A damaged archive, or one from a newer
release, is refused before anything is written."""


def add_export(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    common: argparse.ArgumentParser,
) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        name,
        parents=[common],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        help="pack a stopped immortal's log into one archive file",
        description=EXPORT_DESCRIPTION,
        epilog="examples:\n  ambrosia-edge export server server.tar\n"
        "  ambrosia-edge export /media/sdcard/var/lib/ambrosia-edge/hub hub.tar",
    )
    parser.add_argument(
        "log", metavar="LOG", help="an immortal's name (default log location) or a log URL/path"
    )
    parser.add_argument("file", metavar="FILE", help="the archive to write")
    return parser


def run_export(args: argparse.Namespace) -> int:
    from ..archive import export_log

    done = export_log(log_url(args.log), args.file)
    checkpoint = f"checkpoint {done.checkpoint}" if done.checkpoint is not None else "no checkpoint"
    chunks = ", ".join(str(c) for c in done.chunks) or "none"
    print(
        f"exported {done.immortal or 'the log'}: {checkpoint}, chunks {chunks} "
        f"({done.bytes} bytes) to {args.file}"
    )
    return 0


def add_import(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    common: argparse.ArgumentParser,
) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        name,
        parents=[common],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        help="unpack an exported archive into an empty log",
        description=IMPORT_DESCRIPTION,
        epilog="examples:\n  ambrosia-edge import server.tar server\n"
        "  ambrosia-edge import hub.tar /var/lib/ambrosia-edge/hub",
    )
    parser.add_argument("file", metavar="FILE", help="an archive written by export")
    parser.add_argument(
        "log", metavar="LOG", help="an immortal's name (default log location) or a log URL/path"
    )
    return parser


def run_import(args: argparse.Namespace) -> int:
    from ..archive import import_log

    target = log_url(args.log)
    manifest = import_log(args.file, target)
    name = manifest.get("immortal") or "the immortal"
    print(f"imported {name} into {target}; start it with: ambrosia-edge run ... --log {target}")
    return 0


EXPORT = SimpleNamespace(add_parser=add_export, main=run_export)
IMPORT = SimpleNamespace(add_parser=add_import, main=run_import)
