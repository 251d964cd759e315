"""A running immortal's control channel: a Unix socket that ``checkpoint`` (and later
``status`` and other commands) use, whatever tier the log is on.

Where: one socket per log, in ``$XDG_RUNTIME_DIR/ambrosia-edge`` when that is set, else in the
per-user state directory (``…/ambrosia-edge/control``), in private directories (0700) with
the socket itself 0600. A socket path holds at most ~107 bytes, so a path that would be longer
moves to ``/tmp/ambrosia-edge-UID`` (0700, owned by the user, checked). The file is named
``NAME-DIGEST.sock``: the immortal's name for whoever lists the directory, and a digest of the
log's identity (its lease's ``resource``, else its URL) by which a command finds it, so a command
given only a log location finds the immortal, and two immortals of the same name with
different logs (two test runs, two users' copies) never share a socket. A socket left behind by
a killed process is replaced when the next one starts.

Protocol: one JSON object per line each way, any number of requests per connection.

* ``{"op": "status"}`` → ``{"ok": true, "name": …, "pid": …, "epoch": …, "log": …, "pages": …,
  "peers": {…}, …}``
* ``{"op": "checkpoint"}`` → ``{"ok": true, "name": …, "pid": …}`` once requested; with
  ``"wait": true`` the reply comes when the checkpoint is stored and adds ``"checkpoint": N``
* anything else → ``{"ok": false, "error": "…"}``

Only the owner of the process can connect (the file modes), which is the same trust as the
SIGUSR1 that also requests a checkpoint.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import socket
import stat
import tempfile
import time
from pathlib import Path
from typing import Any, Protocol

import anyio
import anyio.abc
import platformdirs
from anyio.streams.buffered import BufferedByteReceiveStream

from .errors import AmbrosiaError
from .lease import lease_of
from .store import LogStore

__all__ = [
    "ControlError",
    "Controllable",
    "find_sockets",
    "log_identity",
    "request",
    "serve_control",
    "socket_candidates",
    "socket_path",
]

log = logging.getLogger("ambrosia_edge")

_APP = "ambrosia-edge"
#: sun_path is 108 bytes on Linux and 104 on macOS, with the terminating NUL.
MAX_SOCKET_PATH = 100
#: Longest request or reply line; a status reply is a few hundred bytes.
MAX_LINE = 1 << 20
#: How long a ``checkpoint`` with ``wait`` waits for it to be stored, unless told.
WAIT_DEFAULT = 60.0
_WAIT_POLL = 0.05
_UNSAFE = re.compile(r"[^A-Za-z0-9_.*-]")


class ControlError(AmbrosiaError):
    """A control request failed: nothing answers at the socket, or the immortal said no."""


class Controllable(Protocol):
    """What the control channel needs of the immortal it serves (a Runtime, or a stand-in)."""

    @property
    def name(self) -> str: ...

    @property
    def store(self) -> LogStore: ...

    def request_checkpoint(self) -> None: ...

    def status(self) -> dict[str, Any]:
        """A JSON-able snapshot with at least name, pid, epoch, log and the current chunk."""
        ...


# --- where the socket is --------------------------------------------------------------------


def log_identity(store: object) -> str:
    """The same for every spelling of one log's URL: its lease's resource, else its URL."""
    lease = lease_of(store)
    if lease is not None:
        return lease.resource
    return str(getattr(store, "url", store))


def _digest(identity: str) -> str:
    return hashlib.sha256(identity.encode()).hexdigest()[:16]


def _directories() -> list[Path]:
    """Where sockets may be, in the order a server tries them."""
    directories = []
    runtime = os.environ.get("XDG_RUNTIME_DIR", "")
    if runtime and os.path.isabs(runtime):
        directories.append(Path(runtime) / _APP)
    directories.append(Path(platformdirs.user_state_dir(_APP)) / "control")
    directories.append(Path(tempfile.gettempdir()) / f"{_APP}-{os.getuid()}")
    return directories


def _socket_file(name: str, identity: str) -> str:
    return f"{_UNSAFE.sub('_', name)[:32]}-{_digest(identity)}.sock"


def socket_candidates(name: str, identity: str) -> list[Path]:
    """The paths a server of ``name`` on the log ``identity`` may use, best first."""
    file = _socket_file(name, identity)
    return [
        directory / file
        for directory in _directories()
        if len(os.fsencode(directory / file)) <= MAX_SOCKET_PATH
    ]


def socket_path(name: str, identity: str) -> Path:
    """Where a server of ``name`` on the log ``identity`` listens: the first candidate (if
    none is short enough, the last directory's, which binding then reports as too long)."""
    candidates = socket_candidates(name, identity)
    if candidates:
        return candidates[0]
    return _directories()[-1] / _socket_file(name, identity)


def find_sockets(identity: str) -> list[Path]:
    """The sockets present for the log ``identity``, in the order a server would have used."""
    pattern = f"*-{_digest(identity)}.sock"
    found: list[Path] = []
    for directory in _directories():
        with contextlib.suppress(OSError):
            found.extend(sorted(directory.glob(pattern)))
    return found


def _private_directory(directory: Path) -> None:
    """Create ``directory`` for this user alone, or refuse one another user could write."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = directory.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
        raise ControlError(f"{directory} is not a directory of this user; remove it")
    if info.st_mode & 0o077:
        os.chmod(directory, 0o700)


# --- the client -----------------------------------------------------------------------------


def request(path: Path, message: dict[str, Any], *, timeout: float = 10.0) -> dict[str, Any]:
    """Send one request and return the reply; ``OSError`` if nothing listens at ``path``,
    ControlError if the immortal refused the request or broke the protocol."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(os.fspath(path))
        sock.sendall(json.dumps(message).encode() + b"\n")
        with sock.makefile("rb") as replies:
            line = replies.readline(MAX_LINE)
    try:
        reply = json.loads(line)
    except ValueError:
        reply = None
    if not isinstance(reply, dict):
        raise ControlError(f"{path} gave no valid reply to {message.get('op')!r}: {line[:80]!r}")
    if not reply.get("ok"):
        raise ControlError(str(reply.get("error", f"{message.get('op')!r} was refused")))
    return reply


def _answers(path: Path) -> bool:
    """Whether a process serves ``path`` (a socket whose process died refuses connections)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(2.0)
        try:
            sock.connect(os.fspath(path))
        except OSError:
            return False
    return True


# --- the server -----------------------------------------------------------------------------


async def serve_control(
    target: Controllable,
    path: Path,
    *,
    task_status: anyio.abc.TaskStatus[Path | None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``target``'s control socket at ``path`` until cancelled, then remove it.

    Started once the immortal is live. If another process already serves ``path`` (only
    possible for a log without a lease, such as two processes' ``memory://`` logs of one
    name) this one runs without a socket: ``task_status`` then reports None.
    """
    try:
        claimed = await anyio.to_thread.run_sync(_claim, path)
        listener = await anyio.create_unix_listener(path) if claimed else None
    except (OSError, ControlError) as exc:
        log.warning("%s: runs without a control socket: %s (at %s)", target.name, exc, path)
        task_status.started(None)
        return
    if listener is None:
        log.warning(
            "%s: %s is served by another process; this one runs without a control socket",
            target.name,
            path,
        )
        task_status.started(None)
        return
    try:
        os.chmod(path, 0o600)
        inode = os.stat(path).st_ino
        log.debug("%s: control socket %s", target.name, path)
        async with listener, anyio.create_task_group() as tg:
            task_status.started(path)
            while True:
                stream = await listener.accept()
                tg.start_soon(_serve_connection, target, stream)
    finally:
        with contextlib.suppress(OSError):
            if os.stat(path).st_ino == inode:  # not a successor's socket
                os.unlink(path)


def _claim(path: Path) -> bool:
    """Make ``path`` free to bind: False if a live process serves it; stale sockets of the
    same log (under any name, in any of the directories) are removed."""
    _private_directory(path.parent)
    if path.exists() and _answers(path):
        return False
    digest = path.name.rpartition("-")[2]
    for directory in _directories():
        with contextlib.suppress(OSError):
            for stale in directory.glob(f"*-{digest}"):
                if stale == path or not _answers(stale):
                    stale.unlink(missing_ok=True)
    return True


async def _serve_connection(target: Controllable, stream: anyio.abc.ByteStream) -> None:
    async with stream:
        reader = BufferedByteReceiveStream(stream)
        try:
            while True:
                line = await reader.receive_until(b"\n", MAX_LINE)
                reply = await _answer(target, line)
                await stream.send(json.dumps(reply).encode() + b"\n")
        except (anyio.EndOfStream, anyio.IncompleteRead, anyio.BrokenResourceError):
            return
        except anyio.DelimiterNotFound:
            with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
                await stream.send(b'{"ok": false, "error": "request line too long"}\n')


async def _answer(target: Controllable, line: bytes) -> dict[str, Any]:
    try:
        message = json.loads(line)
    except ValueError:
        message = None
    if not isinstance(message, dict):
        return {"ok": False, "error": "a request is one JSON object per line"}
    op = message.get("op")
    if op == "status":
        return {"ok": True, **target.status()}
    if op == "checkpoint":
        return await _checkpoint(target, message)
    return {"ok": False, "error": f"unknown request {op!r} (known: checkpoint, status)"}


async def _checkpoint(target: Controllable, message: dict[str, Any]) -> dict[str, Any]:
    status = target.status()
    chunk = int(status.get("chunk", 0))
    log.info("%s: checkpoint requested (control socket)", target.name)
    target.request_checkpoint()
    reply: dict[str, Any] = {"ok": True, "name": status["name"], "pid": status["pid"]}
    if not message.get("wait"):
        return reply
    timeout = message.get("timeout", WAIT_DEFAULT)
    if not isinstance(timeout, int | float) or timeout <= 0:
        return {"ok": False, "error": f"timeout must be a positive number, got {timeout!r}"}
    # A checkpoint taken after the request starts a chunk after the current one.
    deadline = time.monotonic() + timeout
    while True:
        stored = await anyio.to_thread.run_sync(target.store.list_checkpoints)
        if stored and stored[-1] > chunk:
            return {**reply, "checkpoint": stored[-1]}
        if time.monotonic() > deadline:
            return {
                "ok": False,
                "error": f"{target.name} requested a checkpoint but stored none within "
                f"{timeout:g} s; it waits until no handler is awaiting a reply",
            }
        await anyio.sleep(_WAIT_POLL)
