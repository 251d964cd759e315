"""A bad or hostile peer gets refused; it never crashes the coordinator or reaches the log."""

from __future__ import annotations

import contextlib
import struct
from pathlib import Path

import anyio
import cbor2
import pytest
from apps.counting import Counter
from instances import Instance, eventually, settings
from support import free_port

from ambrosia_edge import wire
from ambrosia_edge.wire import Frame

pytestmark = pytest.mark.anyio


async def _talk(port: int, *frames: bytes) -> tuple[Frame, dict[str, object]] | None:
    """Send frames after the challenge; return the first reply after them (or None on EOF)."""
    async with await anyio.connect_tcp("127.0.0.1", port) as stream:
        head = await stream.receive(5)
        length, ftype = wire.parse_head(head[:5])
        assert ftype is Frame.CHALLENGE
        buffered = head[5:]
        while len(buffered) < length:
            buffered += await stream.receive()
        for data in frames:
            await stream.send(data)
        try:
            with anyio.fail_after(10):
                reply = b""
                while True:
                    reply += await stream.receive()
                    if len(reply) >= 5:
                        n, ftype = wire.parse_head(reply[:5])
                        if len(reply) >= 5 + n:
                            return ftype, cbor2.loads(reply[5 : 5 + n])
        except (anyio.EndOfStream, anyio.BrokenResourceError):
            return None


def hello(**fields: object) -> bytes:
    base: dict[str, object] = {
        "v": wire.PROTOCOL_VERSION,
        "from": "mallory",
        "to": "server",
        "epoch": 1,
    }
    base.update(fields)
    return wire.control(Frame.HELLO, base)


async def test_malformed_and_hostile_frames_are_refused_and_the_server_carries_on(
    tmp_path: Path,
) -> None:
    port = free_port()
    async with anyio.create_task_group() as tg:
        server = Instance(
            tg, Counter, settings("server", tmp_path / "s", port, {}, secret="s3cret")
        )
        await server.start()
        cases = {
            "garbage": b"\x00\x00\x00\x00\xff",
            "oversized": struct.pack("<IB", wire.MAX_FRAME + 2, Frame.HELLO),
            "not cbor": wire.frame(Frame.HELLO, b"\xff\xfe"),
            "wrong secret": hello(mac=b"0" * 32),
            "no secret": hello(),
            "claims to be us": hello(**{"from": "server"}),
            "wrong version": hello(v=99),
        }
        replies = {}
        for name, data in cases.items():
            replies[name] = await _talk(port, data)
        assert server.runtime is not None
        assert server.runtime.coordinator.stats["refused"] == len(cases)
        for name in ("not cbor", "wrong secret", "no secret", "claims to be us", "wrong version"):
            reply = replies[name]
            assert reply is not None and reply[0] is Frame.REFUSE, name
        assert "failed authentication" in str(replies["wrong secret"][1]["message"])  # type: ignore[index]
        assert "which is us" in str(replies["claims to be us"][1]["message"])  # type: ignore[index]
        # still alive, and nothing from these connections was logged
        runtime = server.runtime
        assert runtime is not None
        assert "mallory" not in runtime.coordinator.received
        server.obj.this.fork.reading(1.0)
        await eventually(lambda: server.obj.readings == [1.0], "a normal impulse after the attacks")
        tg.cancel_scope.cancel()


async def test_peers_with_the_same_secret_talk_and_a_wrong_secret_is_kept_out(
    tmp_path: Path,
) -> None:
    ps, pc, pm = free_port(), free_port(), free_port()
    async with anyio.create_task_group() as tg:
        server = Instance(
            tg, Counter, settings("server", tmp_path / "s", ps, {"client": pc}, secret="right")
        )
        client = Instance(
            tg, Counter, settings("client", tmp_path / "c", pc, {"server": ps}, secret="right")
        )
        mallory = Instance(
            tg, Counter, settings("mallory", tmp_path / "m", pm, {"server": ps}, secret="wrong")
        )
        await server.start()
        await client.start()
        await mallory.start()
        assert client.runtime is not None and mallory.runtime is not None
        client.runtime.executor.proxy("server").fork.reading(2.0)  # type: ignore[union-attr]
        mallory.runtime.executor.proxy("server").fork.reading(666.0)  # type: ignore[union-attr]
        await eventually(lambda: server.obj.readings == [2.0], "the client's impulse")
        assert server.runtime is not None
        stats = server.runtime.coordinator.stats
        await eventually(lambda: stats["refused"] >= 2, "mallory to be refused twice")
        assert "mallory" not in server.runtime.coordinator.received
        assert server.obj.readings == [2.0]
        tg.cancel_scope.cancel()


async def test_a_receiver_that_does_not_know_the_secret_cannot_make_us_trim(
    tmp_path: Path,
) -> None:
    """An impostor answering for "server" with a huge WELCOME must not make the sender drop
    messages nobody has logged: the sender checks the receiver's proof of the secret."""
    port, own = free_port(), free_port()
    hellos: list[dict[str, object]] = []

    async def impostor(stream: anyio.abc.SocketStream) -> None:
        async with stream:
            await stream.send(wire.control(Frame.CHALLENGE, {"v": 1, "nonce": b"n" * 16}))
            data = await stream.receive()
            hellos.append(cbor2.loads(data[5:]))
            await stream.send(wire.control(Frame.WELCOME, {"total": 10**6, "replayable": 10**6}))
            with anyio.move_on_after(5), contextlib.suppress(anyio.EndOfStream):
                await stream.receive()

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=port)
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, impostor)
        sensor = Instance(
            tg, Counter, settings("sensor", tmp_path / "n", own, {"server": port}, secret="right")
        )
        runtime = await sensor.start()
        assert runtime.executor is not None
        runtime.executor.proxy("server").fork.reading(1.0)
        await eventually(lambda: len(hellos) >= 2, "two connection attempts")
        out = runtime.coordinator.outputs["server"]
        assert len(out) == 1 and out.acked_total == 0 and out.rebase_pending
        tg.cancel_scope.cancel()


async def test_a_batch_whose_header_lies_is_refused_before_it_is_logged(tmp_path: Path) -> None:
    port = free_port()
    async with anyio.create_task_group() as tg:
        server = Instance(tg, Counter, settings("server", tmp_path / "s", port, {}))
        runtime = await server.start()
        message = b"\x01" + b"\x83dread\x80\xa0"  # a replayable CALL
        lying = wire.data(1, 1, 0, [wire.frame_message(message)])  # claims 0 replayable
        truncated = wire.data(1, 2, 2, [wire.frame_message(message)])  # claims 2 messages
        for frame in (lying, truncated):
            async with await anyio.connect_tcp("127.0.0.1", port) as stream:
                await stream.receive()  # CHALLENGE
                await stream.send(hello())
                await stream.receive()  # WELCOME
                await stream.send(frame)
                with anyio.move_on_after(5), contextlib.suppress(anyio.EndOfStream):
                    while await stream.receive():
                        pass
        assert runtime.coordinator.stats["refused"] == 2
        assert runtime.coordinator.received["mallory"] == [0, 0]
        assert runtime.coordinator.durable.get("mallory", (0, 0)) == (0, 0)
        tg.cancel_scope.cancel()
