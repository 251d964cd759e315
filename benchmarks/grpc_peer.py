"""The gRPC baseline: a server and a client process speaking raw bytes, no code generation.

``python -m benchmarks.grpc_peer serve --port P`` serves two methods through a generic handler:

* ``/bench.Bench/Stream``, client-streaming: counts messages and bytes, answers with the count;
* ``/bench.Bench/Ping``, unary: echoes its payload.

``python -m benchmarks.grpc_peer client --port P`` waits for ``go.json`` in ``$BENCH_STATUS``
(the same protocol as the immortals in :mod:`benchmarks.apps`) and runs the workload it names.
Both write ``NAME.json`` status files the harness reads. Serializers are ``None``, so the
payload bytes go to the wire as they are.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from concurrent import futures

import grpc

from .status import publish, wait_for_go

SERVICE = "bench.Bench"
_OPTIONS = [
    ("grpc.max_send_message_length", 64 << 20),
    ("grpc.max_receive_message_length", 64 << 20),
]


def serve(port: int) -> int:
    name = "server"
    base = {"pid": os.getpid(), "ready": True}

    def stream(requests: Iterator[bytes], context: grpc.ServicerContext) -> bytes:
        clock = time.time
        n = 0
        size = 0
        first_t = last_t = 0.0
        for payload in requests:
            last_t = clock()
            n += 1
            size += len(payload)
            if n == 1:
                first_t = last_t
        publish(
            name,
            {
                **base,
                "done": True,
                "first_t": first_t,
                "first_n": 1,
                "last_t": last_t,
                "last_n": n,
                "received": n,
                "bytes": size,
            },
        )
        return n.to_bytes(8, "little")

    def ping(payload: bytes, context: grpc.ServicerContext) -> bytes:
        return payload

    handler = grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "Stream": grpc.stream_unary_rpc_method_handler(stream),
            "Ping": grpc.unary_unary_rpc_method_handler(ping),
        },
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4), options=_OPTIONS)
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    publish(name, base)
    stop.wait()
    server.stop(grace=None)
    return 0


def client(port: int) -> int:
    name = "client"
    base = {"pid": os.getpid(), "ready": True}
    channel = grpc.insecure_channel(f"127.0.0.1:{port}", options=_OPTIONS)
    grpc.channel_ready_future(channel).result(timeout=30)
    stream = channel.stream_unary(f"/{SERVICE}/Stream")
    ping = channel.unary_unary(f"/{SERVICE}/Ping")
    ping(b"hello")  # the connection is up and warm before the clock starts
    publish(name, base)
    params = wait_for_go()
    payload = b"x" * int(params["size"])
    total = int(params["total"])
    samples: list[int] = []
    go_t = time.time()
    if params["workload"] == "throughput":

        def messages() -> Iterator[bytes]:
            for _ in range(total):
                yield payload

        count = int.from_bytes(stream(messages()), "little")
        if count != total:
            raise SystemExit(f"grpc server counted {count} messages, not {total}")
    elif params["workload"] == "ping":
        clock = time.perf_counter_ns
        for _ in range(total):
            started = clock()
            ping(payload)
            samples.append(clock() - started)
    else:
        raise SystemExit(f"unknown workload {params['workload']!r}")
    publish(name, {**base, "done": True, "go_t": go_t, "done_t": time.time(), "samples": samples})
    channel.close()
    return 0


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.grpc_peer")
    parser.add_argument("role", choices=["serve", "client"])
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    return serve(args.port) if args.role == "serve" else client(args.port)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
