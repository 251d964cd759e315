"""What a stranger can make a coordinator spend: a closed connection gives its memory back at
once, and before the handshake a peer gets small frames, little time and a capped number of
connections (docs/protocol.md 4.6)."""

from __future__ import annotations

import contextlib
import gc
import os
import signal
import struct
import subprocess
import sys
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import anyio
import anyio.abc
import cbor2
import pytest
from apps.counting import Counter
from instances import Instance, eventually, settings
from support import free_port

from ambrosia_edge import wire
from ambrosia_edge.wire import Frame

pytestmark = pytest.mark.anyio

_MiB = 1024 * 1024


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


@contextlib.contextmanager
def no_cycle_collection() -> Iterator[None]:
    """What is freed must be freed by reference counting, as soon as the last user lets go;
    memory is measured by tracemalloc (what the interpreter holds, whatever the C allocator
    keeps of what was freed)."""
    gc.collect()
    gc.disable()
    tracemalloc.start()
    try:
        yield
    finally:
        tracemalloc.stop()
        gc.enable()


def traced() -> int:
    return tracemalloc.get_traced_memory()[0]


def hello(name: str = "mallory", **fields: object) -> bytes:
    base: dict[str, object] = {"v": wire.PROTOCOL_VERSION, "from": name, "to": "server", "epoch": 1}
    base.update(fields)
    return wire.control(Frame.HELLO, base)


async def read_frame(stream: anyio.abc.SocketStream, buffered: bytes = b"") -> tuple[Frame, bytes]:
    while len(buffered) < 5:
        buffered += await stream.receive()
    length, ftype = wire.parse_head(buffered[:5])
    while len(buffered) < 5 + length:
        buffered += await stream.receive()
    return ftype, buffered[5 : 5 + length]


async def test_a_closed_connection_frees_its_half_received_body_at_once(tmp_path: Path) -> None:
    """A peer that sends half of a 64 MiB frame and disconnects must not leave the half
    behind, held by a cycle through the stored error's traceback until a collection."""
    port = free_port()
    with no_cycle_collection():
        async with anyio.create_task_group() as tg:
            server = Instance(tg, Counter, settings("server", tmp_path / "s", port, {}))
            runtime = await server.start()
            inbound = runtime.coordinator._inbound
            for _ in range(3):
                start = traced()
                async with await anyio.connect_tcp("127.0.0.1", port) as stream:
                    assert (await read_frame(stream))[0] is Frame.CHALLENGE
                    await stream.send(hello())
                    assert (await read_frame(stream))[0] is Frame.WELCOME
                    await eventually(lambda: "mallory" in inbound, "the link to be served")
                    head = struct.pack("<IB", wire.MAX_FRAME, Frame.DATA)
                    await stream.send(head + bytes(wire.DATA_HEAD_SIZE))
                    chunk = bytes(_MiB)
                    for _ in range(32):
                        await stream.send(chunk)
                    await eventually(
                        lambda: inbound["mallory"].buffered >= 32 * _MiB, "the half to arrive"
                    )
                await eventually(lambda: "mallory" not in inbound, "the link to be closed")
                await eventually(
                    lambda: traced() < start + 8 * _MiB,  # noqa: B023 (awaited here)
                    f"the half-received body to be freed ({traced() - start:+,} bytes)",
                    timeout=1,
                )
            tg.cancel_scope.cancel()


async def _challenged(port: int) -> anyio.abc.SocketStream:
    """A stranger's connection that has read the CHALLENGE and says nothing."""
    stream = await anyio.connect_tcp("127.0.0.1", port)
    with anyio.fail_after(10):
        assert (await read_frame(stream))[0] is Frame.CHALLENGE
    return stream


async def _closed(stream: anyio.abc.SocketStream, within: float) -> dict[str, object] | None:
    """What the server says before it closes ``stream`` (a REFUSE's fields, or None)."""
    said: dict[str, object] | None = None
    data = b""
    with anyio.fail_after(within):
        try:
            while True:
                data += await stream.receive()
        except (anyio.EndOfStream, anyio.BrokenResourceError):
            pass
    if data:
        ftype, payload = await read_frame(stream, data)
        assert ftype is Frame.REFUSE
        said = cbor2.loads(payload)
    await stream.aclose()
    return said


async def test_a_stranger_announcing_a_large_frame_is_cut_off_at_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()
    async with anyio.create_task_group() as tg:
        server = Instance(tg, Counter, settings("server", tmp_path / "s", port, {}))
        runtime = await server.start()
        stream = await _challenged(port)
        before = rss()
        await stream.send(struct.pack("<IB", wire.MAX_FRAME, Frame.HELLO))
        # closed at once, without reading on (a REFUSE may come first: not from the asyncio
        # link, which sends nothing more once what it read cannot be framed)
        refusal = await _closed(stream, within=5)
        assert refusal is None or "before the handshake" in str(refusal["message"])
        assert runtime.coordinator.stats["refused"] == 1
        assert rss() < before + 4 * _MiB
        assert any("before the handshake" in r.getMessage() for r in caplog.records)
        tg.cancel_scope.cancel()


async def test_an_idle_stranger_is_closed_after_the_handshake_timeout(tmp_path: Path) -> None:
    port = free_port()
    async with anyio.create_task_group() as tg:
        server = Instance(
            tg, Counter, settings("server", tmp_path / "s", port, {}, handshake_timeout=0.3)
        )
        runtime = await server.start()
        started = anyio.current_time()
        stream = await _challenged(port)
        assert await _closed(stream, within=5) is None
        assert anyio.current_time() - started >= 0.3
        assert runtime.coordinator.stats["timed_out"] == 1
        assert runtime.coordinator._handshaking == 0
        tg.cancel_scope.cancel()


async def test_past_the_cap_strangers_are_refused_and_a_peer_carries_on(tmp_path: Path) -> None:
    ps, pc = free_port(), free_port()
    async with anyio.create_task_group() as tg:
        server = Instance(
            tg,
            Counter,
            settings("server", tmp_path / "s", ps, {"client": pc}, max_handshakes=4),
        )
        client = Instance(tg, Counter, settings("client", tmp_path / "c", pc, {"server": ps}))
        runtime = await server.start()
        sender = await client.start()
        assert sender.executor is not None
        proxy = sender.executor.proxy("server")
        for n in range(1, 51):
            proxy.fork.reading(float(n))
        await eventually(lambda: len(server.obj.readings) == 50, "the first 50 calls")
        coordinator = runtime.coordinator
        strangers = [await _challenged(ps) for _ in range(4)]
        await eventually(lambda: coordinator._handshaking == 4, "4 connections in the handshake")
        for _ in range(6):
            async with await anyio.connect_tcp("127.0.0.1", ps) as late:
                refusal = await _closed(late, within=5)
            assert refusal is not None and "in the handshake" in str(refusal["message"])
        assert coordinator.stats["turned_away"] == 6
        for n in range(51, 101):
            proxy.fork.reading(float(n))
        await eventually(lambda: len(server.obj.readings) >= 100, "50 more calls, past the cap")
        assert server.obj.readings == [float(n) for n in range(1, 101)]
        for stream in strangers:
            await stream.aclose()
        await eventually(lambda: coordinator._handshaking == 0, "the strangers to be gone")
        await (await _challenged(ps)).aclose()  # room again
        assert coordinator.stats["turned_away"] == 6
        tg.cancel_scope.cancel()


SERVER = str(Path(__file__).parent / "emfile_server.py")


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def test_out_of_descriptors_the_server_waits_and_its_peer_carries_on(
    tmp_path: Path,
) -> None:
    """With its descriptor limit reached, a server cannot accept: the pending connections keep
    its listening socket readable, and it must wait for descriptors instead of spinning,
    while an established peer's calls still get logged and acknowledged."""
    ps, pc = free_port(), free_port()
    stderr = (tmp_path / "server.err").open("w")
    child = subprocess.Popen(
        [sys.executable, SERVER, str(tmp_path / "s"), str(ps), str(pc), "24"],
        stdout=subprocess.PIPE,
        stderr=stderr,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    strangers: list[anyio.abc.SocketStream] = []
    try:
        assert child.stdout is not None
        with anyio.fail_after(30):
            line = await anyio.to_thread.run_sync(child.stdout.readline)
        assert line == b"ready\n", line
        async with anyio.create_task_group() as tg:
            client = Instance(tg, Counter, settings("client", tmp_path / "c", pc, {"server": ps}))
            sender = await client.start()
            assert sender.executor is not None
            proxy = sender.executor.proxy("server")
            out = sender.coordinator.outputs
            for n in range(1, 21):
                proxy.fork.reading(float(n))
            await eventually(
                lambda: "server" in out and out["server"].acked_total == 20, "20 calls logged"
            )
            # strangers until one is not accepted: the server is out of descriptors
            while True:
                stream = await anyio.connect_tcp("127.0.0.1", ps)
                strangers.append(stream)
                with anyio.move_on_after(1):
                    await read_frame(stream)
                    continue
                break
            assert len(strangers) - 1 <= 24  # accepted ones: at most the spare descriptors
            for _ in range(5):  # more waiting to be accepted
                strangers.append(await anyio.connect_tcp("127.0.0.1", ps))
            before = _cpu_seconds(child.pid)
            started = anyio.current_time()
            for n in range(21, 41):
                proxy.fork.reading(float(n))
            await eventually(lambda: out["server"].acked_total == 40, "20 more calls logged")
            await anyio.sleep(max(0.0, 2 - (anyio.current_time() - started)))  # a window to measure
            cpu = _cpu_seconds(child.pid) - before
            elapsed = anyio.current_time() - started
            assert cpu < 0.25 * elapsed, f"{cpu:.2f} s of CPU in {elapsed:.2f} s while out of fds"
            tg.cancel_scope.cancel()
    finally:
        for stream in strangers:
            await stream.aclose()
        child.send_signal(signal.SIGKILL)
        child.wait()
        assert child.stdout is not None
        child.stdout.close()
        stderr.close()
    said = (tmp_path / "server.err").read_text()
    assert "Too many open files" in said
    assert said.count("cannot accept") == 1, said[-2000:]  # said once, not at every retry


async def test_a_flood_of_idle_strangers_neither_stops_a_peer_nor_stays_in_memory(
    tmp_path: Path,
) -> None:
    """2,000 connections that never say HELLO, with the default cap: 64 are held, the rest are
    refused as they come, the peer's calls all arrive in order, and memory comes back."""
    ps, pc = free_port(), free_port()
    async with anyio.create_task_group() as tg:
        server = Instance(
            tg,
            Counter,
            settings("server", tmp_path / "s", ps, {"client": pc}, handshake_timeout=120.0),
        )
        client = Instance(tg, Counter, settings("client", tmp_path / "c", pc, {"server": ps}))
        runtime = await server.start()
        sender = await client.start()
        assert sender.executor is not None
        proxy = sender.executor.proxy("server")
        proxy.fork.reading(0.0)
        await eventually(lambda: server.obj.readings == [0.0], "the first call")
        coordinator = runtime.coordinator
        start = rss()
        strangers = []
        for n in range(2000):
            strangers.append(await anyio.connect_tcp("127.0.0.1", ps))
            if n % 20 == 0:
                proxy.fork.reading(float(n // 20 + 1))
        await eventually(lambda: len(server.obj.readings) == 101, "100 calls during the flood")
        assert server.obj.readings == [float(n) for n in range(101)]
        cap = coordinator.options.max_handshakes
        await eventually(
            lambda: coordinator.stats["turned_away"] == 2000 - cap, "the flood to be refused"
        )
        assert coordinator._handshaking == cap
        for stream in strangers:
            await stream.aclose()
        del strangers, stream
        await eventually(lambda: coordinator._handshaking == 0, "the strangers to be gone")
        await eventually(
            lambda: rss() < start + 10 * _MiB, f"memory to come back (start {start:,})", timeout=1
        )
        assert coordinator.stats["timed_out"] == 0
        tg.cancel_scope.cancel()
