"""A FUSE file system that forgets, on command, everything a power cut would.

Writes pass through to a backing directory, so the processes using the mount see an ordinary
file system. Beside it the file system keeps what a disk would still hold after losing power:

* a file's content as of its last ``fsync``/``fdatasync`` (bytes written since are lost);
* a directory's entries as of its last ``fsync`` (a file created, renamed or unlinked since
  has its old name, or none, or comes back).

``cut`` (sent to the control socket) freezes the file system at once: every later operation
fails with EIO, as a dead disk would answer. When the mount is then unmounted, the backing
directory is replaced by the durable image, and a new mount of it is what the machine finds
when it boots again. Files present when the file system is mounted count as durable.

``--keep-unsynced SEED`` models a disk that wrote back some of the dirty pages before the
power went: each range written since the last flush of its file survives with probability
one half (decided by SEED), so a file may keep a later write and lose an earlier one.

Run as ``python powercutfs.py BACKING MOUNTPOINT CONTROL_SOCKET``; it stays in the foreground
until unmounted (``fusermount3 -u MOUNTPOINT``). The control socket takes one line per
connection: ``cut`` (answers ``cut``), ``cut N`` (the cut comes right after the next N
operations that change something: a write, a flush, a create, a rename...) or ``stats``
(answers a JSON object of counters).
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import os
import random
import shutil
import socket
import sys
import threading
from pathlib import Path
from typing import Any

import mfusepy

ROOT = 0


class PowerCutFS(mfusepy.Operations):
    """The file system's operations; one lock makes each of them atomic against ``cut``."""

    use_ns = True

    def __init__(self, backing: str, scratch: str, keep_seed: int | None) -> None:
        self.backing = os.path.realpath(backing)
        self.scratch = scratch  # durable copies of files, one per inode, named by number
        os.makedirs(scratch, exist_ok=True)
        self.keep_seed = keep_seed
        self.mutex = threading.RLock()
        self.frozen = False
        self.countdown: int | None = None
        self.changes = 0  # operations that changed something, for choosing where to cut
        self.next_ino = 1
        self.ino_of: dict[str, int] = {"/": ROOT}  # live path -> inode
        self.path_of: dict[int, str] = {ROOT: "/"}
        self.is_dir: dict[int, bool] = {ROOT: True}
        #: what a directory's entries were at its last flush
        self.durable_entries: dict[int, dict[str, int]] = {ROOT: {}}
        #: inodes whose durable content is in scratch (others: unchanged since mount)
        self.copied: set[int] = set()
        #: ranges written (or zeroed, or cut off) since the file's last flush
        self.dirty: dict[int, list[tuple[int, int]]] = {}
        self.handles: dict[int, tuple[int, int]] = {}  # fh -> (backing fd, inode)
        self.next_fh = 1
        self.counters = {"fsync": 0, "fsyncdir": 0, "write": 0, "create": 0, "rename": 0}
        self._scan("/")

    # -- bookkeeping ---------------------------------------------------------------------------

    def _scan(self, path: str) -> None:
        entries = self.durable_entries[self.ino_of[path]]
        for name in os.listdir(self._real(path)):
            child = self._join(path, name)
            ino = self._new_inode(child, os.path.isdir(self._real(child)))
            entries[name] = ino
            if self.is_dir[ino]:
                self.durable_entries[ino] = {}
                self._scan(child)

    def _new_inode(self, path: str, is_dir: bool) -> int:
        ino = self.next_ino
        self.next_ino += 1
        self.ino_of[path] = ino
        self.path_of[ino] = path
        self.is_dir[ino] = is_dir
        return ino

    def _real(self, path: str) -> str:
        return self.backing + path if path != "/" else self.backing

    @staticmethod
    def _join(directory: str, name: str) -> str:
        return ("" if directory == "/" else directory) + "/" + name

    @staticmethod
    def _split(path: str) -> tuple[str, str]:
        head, _, name = path.rpartition("/")
        return head or "/", name

    def _copy_path(self, ino: int) -> str:
        return os.path.join(self.scratch, str(ino))

    def _ensure_copy(self, ino: int) -> None:
        """Keep the durable content of a file about to change, if it is still the live one."""
        if ino in self.copied or self.is_dir.get(ino, True):
            return
        shutil.copyfile(self._real(self.path_of[ino]), self._copy_path(ino))
        self.copied.add(ino)

    def _mark(self, ino: int, start: int, end: int) -> None:
        if end > start:
            self.dirty.setdefault(ino, []).append((start, end))

    def _check(self) -> None:
        if self.frozen:
            raise mfusepy.FuseOSError(errno.EIO)

    def _fh(self, fh: int) -> tuple[int, int]:
        try:
            return self.handles[fh]
        except KeyError:
            raise mfusepy.FuseOSError(errno.EBADF) from None

    def _op(self, mutating: bool = False) -> contextlib.AbstractContextManager[None]:
        return _Locked(self, mutating)

    def _tick(self) -> None:
        self.changes += 1
        if self.countdown is not None:
            self.countdown -= 1
            if self.countdown <= 0:
                self.frozen = True

    # -- the power cut -------------------------------------------------------------------------

    def cut(self, after: int = 0) -> None:
        """Cut the power now, or right after ``after`` more operations that change something."""
        with self.mutex:
            if after <= 0:
                self.frozen = True
            else:
                self.countdown = after

    def write_image(self, target: str) -> None:
        """Write what the disk holds after the cut into ``target`` (a new directory)."""
        rng = random.Random(self.keep_seed) if self.keep_seed is not None else None
        os.mkdir(target)
        self._image_dir(ROOT, target, rng)

    def _image_dir(self, ino: int, target: str, rng: random.Random | None) -> None:
        for name, child in sorted(self.durable_entries.get(ino, {}).items()):
            path = os.path.join(target, name)
            if self.is_dir[child]:
                os.mkdir(path)
                self._image_dir(child, path, rng)
                continue
            source = self._copy_path(child) if child in self.copied else None
            if source is None:
                live = self.path_of.get(child)
                source = self._real(live) if live is not None else None
            if source is None or not os.path.exists(source):
                Path(path).write_bytes(b"")
            else:
                shutil.copyfile(source, path)
            if rng is not None and child in self.dirty and child in self.copied:
                self._replay_some(child, path, rng)

    def _replay_some(self, ino: int, path: str, rng: random.Random) -> None:
        """Apply about half of the unflushed writes of ``ino``, from its live content."""
        live = self.path_of.get(ino)
        if live is None or not os.path.exists(self._real(live)):
            return
        with open(self._real(live), "rb") as src, open(path, "r+b") as dst:
            size = os.fstat(src.fileno()).st_size
            for start, end in self.dirty[ino]:
                if rng.random() < 0.5 and start < size:
                    src.seek(start)
                    dst.seek(start)
                    dst.write(src.read(min(end, size) - start))

    # -- operations ----------------------------------------------------------------------------

    def getattr(self, path: str, fh: int | None = None) -> dict[str, Any]:
        with self._op():
            st = os.lstat(self._real(path))
            keys = ("st_mode", "st_nlink", "st_uid", "st_gid", "st_size", "st_blocks")
            attrs: dict[str, Any] = {k: getattr(st, k) for k in keys}
            for k in ("st_atime", "st_mtime", "st_ctime"):
                attrs[k] = getattr(st, k + "_ns")
            return attrs

    def statfs(self, path: str) -> dict[str, int]:
        with self._op():
            sv = os.statvfs(self.backing)
            keys = ("f_bsize", "f_frsize", "f_blocks", "f_bfree", "f_bavail", "f_files")
            keys += ("f_ffree", "f_favail", "f_flag", "f_namemax")
            return {k: getattr(sv, k) for k in keys}

    def readdir(self, path: str, fh: int) -> list[str]:
        with self._op():
            return [".", "..", *os.listdir(self._real(path))]

    def opendir(self, path: str) -> int:
        with self._op():
            if path not in self.ino_of:
                raise mfusepy.FuseOSError(errno.ENOENT)
            return 0

    def releasedir(self, path: str, fh: int) -> int:
        return 0

    def fsyncdir(self, path: str, datasync: int, fh: int) -> int:
        with self._op(mutating=True):
            ino = self.ino_of[path]
            self.durable_entries[ino] = {
                name: self.ino_of[self._join(path, name)] for name in os.listdir(self._real(path))
            }
            self.counters["fsyncdir"] += 1
            return 0

    def mkdir(self, path: str, mode: int) -> int:
        with self._op(mutating=True):
            os.mkdir(self._real(path), mode)
            ino = self._new_inode(path, True)
            self.durable_entries[ino] = {}
            return 0

    def rmdir(self, path: str) -> int:
        with self._op(mutating=True):
            os.rmdir(self._real(path))
            ino = self.ino_of.pop(path)
            self.path_of.pop(ino, None)
            return 0

    def _open_backing(self, path: str, flags: int) -> int:
        keep = flags & ~(os.O_CREAT | os.O_EXCL | os.O_TRUNC | getattr(os, "O_DIRECT", 0))
        keep = (keep & ~os.O_ACCMODE) | os.O_RDWR
        return os.open(self._real(path), keep)

    def _handle(self, fd: int, ino: int) -> int:
        fh = self.next_fh
        self.next_fh += 1
        self.handles[fh] = (fd, ino)
        return fh

    def create(self, path: str, mode: int, flags: int = os.O_RDWR) -> int:
        with self._op(mutating=True):
            fd = os.open(self._real(path), os.O_RDWR | os.O_CREAT | os.O_EXCL, mode)
            ino = self._new_inode(path, False)
            Path(self._copy_path(ino)).write_bytes(b"")  # never flushed: empty on the disk
            self.copied.add(ino)
            self.counters["create"] += 1
            return self._handle(fd, ino)

    def open(self, path: str, flags: int) -> int:
        with self._op(mutating=True):
            ino = self.ino_of.get(path)
            if ino is None:
                raise mfusepy.FuseOSError(errno.ENOENT)
            fd = self._open_backing(path, flags)
            if flags & os.O_TRUNC:
                self._truncate(ino, fd, 0)
            return self._handle(fd, ino)

    def release(self, path: str, fh: int) -> int:
        with self.mutex:  # even when frozen: the descriptor is closed either way
            fd, _ = self.handles.pop(fh, (-1, 0))
            if fd >= 0:
                os.close(fd)
            return 0

    def flush(self, path: str, fh: int) -> int:
        return 0

    def read(self, path: str, size: int, offset: int, fh: int) -> bytes:
        with self._op():
            fd, _ = self._fh(fh)
            return os.pread(fd, size, offset)

    def write(self, path: str, data: bytes, offset: int, fh: int) -> int:
        with self._op(mutating=True):
            fd, ino = self._fh(fh)
            self._ensure_copy(ino)
            n = os.pwrite(fd, data, offset)
            self._mark(ino, offset, offset + n)
            self.counters["write"] += 1
            return n

    def _truncate(self, ino: int, fd: int, length: int) -> None:
        self._ensure_copy(ino)
        size = os.fstat(fd).st_size
        os.ftruncate(fd, length)
        self._mark(ino, min(size, length), max(size, length))

    def truncate(self, path: str, length: int, fh: int | None = None) -> int:
        with self._op(mutating=True):
            ino = self.ino_of.get(path)
            if ino is None:
                raise mfusepy.FuseOSError(errno.ENOENT)
            fd = os.open(self._real(path), os.O_RDWR)
            try:
                self._truncate(ino, fd, length)
            finally:
                os.close(fd)
            return 0

    def fallocate(self, path: str, mode: int, offset: int, size: int, fh: int) -> int:
        with self._op(mutating=True):
            fd, ino = self._fh(fh)
            self._ensure_copy(ino)
            zero_range, keep_size = 0x10, 0x01
            if mode & ~(zero_range | keep_size):
                raise mfusepy.FuseOSError(errno.EOPNOTSUPP)
            length = os.fstat(fd).st_size
            end = offset + size
            if mode & zero_range:
                zeros = bytes(min(size, 1 << 20))
                at = offset
                stop = min(end, length) if mode & keep_size else end
                while at < stop:
                    at += os.pwrite(fd, zeros[: stop - at], at)
            elif not mode & keep_size and end > length:
                os.ftruncate(fd, end)
            self._mark(ino, offset, end)
            return 0

    def fsync(self, path: str, datasync: int, fh: int) -> int:
        with self._op(mutating=True):
            fd, ino = self._fh(fh)
            self.counters["fsync"] += 1
            if ino not in self.copied:
                return 0  # unchanged since mount
            ranges = self.dirty.pop(ino, [])
            size = os.fstat(fd).st_size
            with open(self._copy_path(ino), "r+b") as copy:
                for start, end in ranges:
                    if start >= size:
                        continue
                    copy.seek(start)
                    copy.write(os.pread(fd, min(end, size) - start, start))
                copy.truncate(size)
            return 0

    def unlink(self, path: str) -> int:
        with self._op(mutating=True):
            ino = self.ino_of[path]
            self._ensure_copy(ino)
            os.unlink(self._real(path))
            del self.ino_of[path]
            self.path_of.pop(ino, None)
            return 0

    def rename(self, old: str, new: str) -> int:
        with self._op(mutating=True):
            replaced = self.ino_of.get(new)
            if replaced is not None:
                self._ensure_copy(replaced)
            os.rename(self._real(old), self._real(new))
            if replaced is not None:
                self.path_of.pop(replaced, None)
            moved = [p for p in self.ino_of if p == old or p.startswith(old + "/")]
            for p in moved:
                ino = self.ino_of.pop(p)
                q = new + p[len(old) :]
                self.ino_of[q] = ino
                self.path_of[ino] = q
            self.counters["rename"] += 1
            return 0

    def chmod(self, path: str, mode: int) -> int:
        with self._op():
            os.chmod(self._real(path), mode)
            return 0

    def utimens(self, path: str, times: tuple[int, int] | None = None) -> int:
        with self._op():
            os.utime(self._real(path), ns=times)
            return 0

    def access(self, path: str, amode: int) -> int:
        with self._op():
            if not os.access(self._real(path), amode):
                raise mfusepy.FuseOSError(errno.EACCES)
            return 0


class _Locked:
    def __init__(self, fs: PowerCutFS, mutating: bool) -> None:
        self.fs = fs
        self.mutating = mutating

    def __enter__(self) -> None:
        self.fs.mutex.acquire()
        try:
            self.fs._check()
        except BaseException:
            self.fs.mutex.release()
            raise

    def __exit__(self, kind: object, *exc: object) -> None:
        if self.mutating and kind is None:
            self.fs._tick()
        self.fs.mutex.release()


class _FUSE(mfusepy.FUSE):
    """mfusepy 3.1 answers rmdir with success without calling the operation."""

    def rmdir(self, path: bytes) -> int:
        return int(self.operations.rmdir(path.decode(self.encoding, self.errors)))


def _serve_control(fs: PowerCutFS, control: str) -> None:
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(control)
    server.listen(4)
    while True:
        conn, _ = server.accept()
        with conn:
            command = conn.makefile("r").readline().strip()
            word, _, count = command.partition(" ")
            if word == "cut":
                fs.cut(int(count or 0))
                conn.sendall(b"cut\n")
            elif command == "stats":
                with fs.mutex:
                    data = dict(
                        fs.counters, frozen=fs.frozen, countdown=fs.countdown, changes=fs.changes
                    )
                conn.sendall(json.dumps(data).encode() + b"\n")
            else:
                conn.sendall(b"unknown command\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("backing")
    parser.add_argument("mountpoint")
    parser.add_argument("control")
    parser.add_argument("--keep-unsynced", type=int, default=None, metavar="SEED")
    args = parser.parse_args(argv)
    backing = os.path.realpath(args.backing)
    scratch = backing + ".durable"
    shutil.rmtree(scratch, ignore_errors=True)
    fs = PowerCutFS(backing, scratch, args.keep_unsynced)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(args.control)
    threading.Thread(target=_serve_control, args=(fs, args.control), daemon=True).start()
    _FUSE(fs, args.mountpoint, foreground=True, hard_remove=True, fsname="powercutfs")
    for fd, _ in list(fs.handles.values()):
        with contextlib.suppress(OSError):
            os.close(fd)
    if fs.frozen:
        image = backing + ".image"
        shutil.rmtree(image, ignore_errors=True)
        fs.write_image(image)
        shutil.rmtree(backing)
        os.rename(image, backing)
    shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
