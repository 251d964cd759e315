"""``ambrosia-edge replay``: time travel, an immortal rebuilt from its log up to a chosen point."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import sys
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError
from . import log_url

if TYPE_CHECKING:
    from ..recovery import LoggedMessage, Replayer

__all__ = ["add_parser", "main"]

REPLAY_DESCRIPTION = """\
Rebuild an immortal from its log, up to a page or a message, and show what ran and what it
came to. Read-only on every tier: the log is not modified nor locked (the immortal may be
running), no peer is connected, becoming_primary and impulse sources never run, and no
message is sent. breakpoint() in the application's code stops in the debugger as the replay
reaches it; --pdb stops before the handler of the message --until-message names.

Messages are numbered from the log's start, all sources together, in the order they ran
(--show calls prints the numbers). The log records no time, so there is no stopping at an
instant."""

SHOW = ("calls", "sends", "state")


def add_parser(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    common: argparse.ArgumentParser,
) -> argparse.ArgumentParser:
    replay = subparsers.add_parser(
        name,
        parents=[common],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        help="rebuild an immortal from its log up to a point (read-only)",
        description=REPLAY_DESCRIPTION,
        epilog="examples:\n  ambrosia-edge replay server --show state\n"
        "  ambrosia-edge replay ./logs/server --until 40 --show calls,state\n"
        "  ambrosia-edge replay ./logs/server --checkpoint 0 --until-message 1234 --pdb\n"
        "  ambrosia-edge replay ./logs/server --target app_v2:Server --show state",
    )
    replay.add_argument(
        "log", metavar="LOG_URL", help="the log: an immortal's name (default location), path or URL"
    )
    replay.add_argument(
        "--checkpoint",
        metavar="N",
        type=_checkpoint,
        default=-1,
        help="start from checkpoint N, or 'none' for the log's start (default: the newest "
        "before the stopping point)",
    )
    until = replay.add_mutually_exclusive_group()
    until.add_argument(
        "--until", metavar="PAGE", type=_positive, help="stop after page PAGE (default: the end)"
    )
    until.add_argument(
        "--until-message",
        metavar="K",
        type=_positive,
        help="stop after message K, counted from the log's start",
    )
    until.add_argument(
        "--until-time",
        metavar="ISO",
        help="not supported: the log records no time (the error says what to use instead)",
    )
    replay.add_argument(
        "--target",
        metavar="MODULE:CLASS",
        help="the class to replay through (default: the one the checkpoint names)",
    )
    replay.add_argument(
        "--show",
        metavar="WHAT",
        type=_show,
        default=(),
        help="comma-separated: 'calls' prints each message as it is replayed, 'sends' that "
        "and what each one sent (calls, replies), 'state' the state at the end",
    )
    replay.add_argument(
        "--pdb",
        action="store_true",
        help="stop in the debugger before the handler of the message --until-message names",
    )
    return replay


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not 1 or more")
    return value


def _checkpoint(text: str) -> int | None:
    if text.lower() == "none":
        return None
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a checkpoint number or 'none'") from None
    if value < 0:
        raise argparse.ArgumentTypeError("checkpoint numbers start at 0 (or write 'none')")
    return value


def _show(text: str) -> tuple[str, ...]:
    parts = tuple(p.strip() for p in text.split(",") if p.strip())
    unknown = [p for p in parts if p not in SHOW]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"cannot show {', '.join(unknown)} (choose from {', '.join(SHOW)})"
        )
    return parts


def main(args: argparse.Namespace) -> int:
    from ..timetravel import NO_TIME, describe, drive, open_replay, step_into

    if args.until_time is not None:
        raise ConfigError(f"--until-time {args.until_time}: {NO_TIME}")
    if args.pdb and args.until_message is None:
        raise ConfigError(
            "--pdb stops before the handler of one message: name it with --until-message K"
        )
    until_message = args.until_message - 1 if args.pdb else args.until_message
    replayer = open_replay(
        log_url(args.log),
        args.target,
        checkpoint=args.checkpoint,
        until=args.until,
        until_message=until_message,
    )
    show_calls = "calls" in args.show or "sends" in args.show
    start = replayer.messages
    sent = _sends(replayer) if "sends" in args.show else None

    def on_message(message: LoggedMessage) -> None:
        if sent is not None:
            sent()
        print(describe(message), flush=False)

    with _progress(replayer, enabled=not show_calls and not args.pdb) as on_page:
        drive(
            replayer,
            until_page=args.until,
            until_message=until_message,
            on_message=on_message if show_calls else None,
            on_page=on_page,
        )
    if args.pdb:
        message = replayer.peek_message()
        if message is None or replayer.messages < until_message:
            raise ConfigError(
                f"the log ends at message {replayer.messages}: there is no message "
                f"{args.until_message} to stop before"
            )
        if show_calls:
            on_message(message)
        step_into(replayer)
    if sent is not None:
        sent()
    sys.stdout.flush()
    if "state" in args.show:
        _print_state(replayer)
    _summary(replayer, start)
    return 0


def _sends(replayer: Replayer) -> Callable[[], None]:
    """Note what each message sends; the function returned prints it (indented) and forgets."""
    from ..retrotest import Tap, decoded, render

    tap = Tap(replayer.executor)

    def show() -> None:
        for event in tap.take():
            print(f"    {render(decoded(event))}")

    return show


def _print_state(replayer: Replayer) -> None:
    import pprint

    obj = replayer.obj
    print(f"state of {replayer.name} ({type(obj).__module__}:{type(obj).__qualname__}):")
    for key, value in replayer.state.items():
        text = pprint.pformat(value, width=96, compact=True, sort_dicts=False)
        print(f"  {key} = {text}".replace("\n", "\n    "))


def _summary(replayer: Replayer, start: int) -> None:
    n = replayer.checkpoint_number
    origin = "the log's start" if n is None else f"checkpoint {n}"
    done = replayer.peek_is_page_boundary and replayer.peek() is None
    where = "at the end of the log" if done else "where asked"
    sys.stdout.flush()
    print(
        f"replayed {_pages(replayer.pages)}, messages {start + 1} to {replayer.messages} from "
        f"{origin}; stopped {where}",
        file=sys.stderr,
    )


def _pages(n: int) -> str:
    return f"{n} whole page" if n == 1 else f"{n} whole pages"


@contextlib.contextmanager
def _progress(replayer: Replayer, *, enabled: bool) -> Iterator[Any]:
    """A progress bar over the chunks to replay, on a terminal, when rich is installed
    (``pip install 'ambrosia-edge[tools]'``); none otherwise. A ``breakpoint()`` in the
    application's code takes it down first, so the debugger has the terminal to itself."""
    if not enabled or not sys.stderr.isatty():
        yield None
        return
    try:  # by name: rich is optional, and type checkers need not know it
        bars: Any = importlib.import_module("rich.progress")
    except ImportError:
        yield None
        return
    progress = bars.Progress(
        bars.TextColumn("replaying {task.description}"),
        bars.BarColumn(),
        bars.TextColumn("chunk {task.completed}/{task.total}"),
        bars.TimeElapsedColumn(),
        transient=True,
    )
    task = progress.add_task("", total=replayer.chunks_to_read)
    hook = sys.breakpointhook

    def breakpoint_hook(*args: Any, **kwargs: Any) -> Any:
        progress.stop()
        if hook is not sys.__breakpointhook__ or os.environ.get("PYTHONBREAKPOINT"):
            return hook(*args, **kwargs)
        import pdb

        # what the default hook does, but in the frame that called breakpoint(), not here
        pdb.Pdb().set_trace(sys._getframe(1))
        return None

    def on_page(r: Replayer) -> None:
        if r.pages % 64 == 0:
            progress.update(
                task,
                completed=r.chunks_read,
                description=f"page {r.coordinator.next_page - 1}, message {r.messages}",
            )

    sys.breakpointhook = breakpoint_hook
    progress.start()
    try:
        yield on_page
    finally:
        progress.stop()
        sys.breakpointhook = hook
