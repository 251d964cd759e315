"""``ambrosia-edge device``: the kind of machine this is, and the defaults ``run`` takes from it."""

from __future__ import annotations

import argparse
import json

__all__ = ["add_parser", "main"]

DESCRIPTION = """\
Detect the kind of machine (a Raspberry Pi from /proc/device-tree/model or /proc/cpuinfo, a
laptop from a battery under /sys/class/power_supply, otherwise a server) and print the defaults
that `ambrosia-edge run` takes from it. The config file and flags override each of them."""


def add_parser(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    common: argparse.ArgumentParser,
) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        name,
        parents=[common],
        help="print the detected device profile and the defaults it implies",
        description=DESCRIPTION,
    )
    parser.add_argument(
        "--profile",
        choices=("auto", "pi", "laptop", "server"),
        default="auto",
        help="show this profile instead of the detected one (default: auto)",
    )
    parser.add_argument(
        "--root",
        metavar="DIR",
        help="detect from DIR/proc and DIR/sys instead of / (a copy of another machine's)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON")
    return parser


def main(args: argparse.Namespace) -> int:
    from ambrosia_edge.devices.profiles import profile_named

    from ..kinds import format_size

    profile = profile_named(args.profile, args.root)
    if args.json:
        print(
            json.dumps(
                {
                    "profile": profile.name,
                    "model": profile.model,
                    "reason": profile.reason,
                    "memory": profile.memory,
                    "defaults": dict(profile.defaults),
                },
                indent=2,
            )
        )
        return 0
    model = f" ({profile.model})" if profile.model else ""
    print(f"profile: {profile.name}{model}")
    print(f"why:     {profile.reason}")
    if profile.memory is not None:
        print(f"memory:  {profile.memory >> 20} MiB")
    print("defaults for `ambrosia-edge run` (the config file and flags override them):")
    for key, value in profile.defaults.items():
        shown = value if key == "keep_checkpoints" else format_size(value)
        print(f"  {key} = {shown}")
    return 0
