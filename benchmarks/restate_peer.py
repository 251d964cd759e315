"""The optional second durable-execution baseline: Restate, with its Python SDK.

Used when ``restate-server`` is on the PATH (``npm install -g @restatedev/restate-server``)
and the SDK and an ASGI server are installed (``pip install restate-sdk hypercorn``).

``python -m benchmarks.restate_peer serve`` starts ``restate-server`` with its default
(durable) configuration, its data in ``$BENCH_STATUS`` and its ingress, admin and node ports on
127.0.0.1; serves a virtual object ``Counter`` with the SDK (hypercorn on 127.0.0.1) and
registers it. The counter is the object's state, so each increment is applied exactly once:

* ``inc``: one increment;
* ``inc_batch(k)``: k increments, one state update after the other, in one invocation.

The service runs in a child process of its own (``service PORT``). On SIGTERM both children
are stopped by their pids. ``python -m benchmarks.restate_peer client``
waits for ``go.json``, sends the invocations one-way (``/send``: Restate acknowledges each once
it has durably accepted it) over ``CONCURRENCY`` keep-alive connections, and then reads the
counter until it has gone up by the requested amount.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from typing import Any

from ambrosia_edge.testing import free_port

from .status import publish, status_dir, wait_for_go

BATCH = 100  # increments per inc_batch invocation
CONCURRENCY = 16  # connections the client sends invocations over
KEY = "bench"


def available() -> bool:
    """Whether this machine has what the Restate baseline needs."""
    import importlib.util

    return shutil.which("restate-server") is not None and all(
        importlib.util.find_spec(m) is not None for m in ("restate", "hypercorn")
    )


def _request(port: int, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        headers = {"content-type": "application/json"} if body is not None else {}
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def _app() -> Any:
    # (the handlers' annotations are looked up in this module's globals, so the contexts are
    # annotated Any: restate is imported here, where it is known to be installed)
    import restate

    counter = restate.VirtualObject("Counter")

    @counter.handler()
    async def inc(ctx: Any) -> None:  # restate.ObjectContext
        ctx.set("n", (await ctx.get("n") or 0) + 1)

    @counter.handler()
    async def inc_batch(ctx: Any, k: int) -> None:
        for _ in range(k):
            ctx.set("n", (await ctx.get("n") or 0) + 1)

    @counter.handler(kind="shared")
    async def get(ctx: Any) -> int:  # restate.ObjectSharedContext
        return int(await ctx.get("n") or 0)

    return restate.app(services=[counter])


def serve() -> int:
    here = status_dir()
    ingress, admin, node, service = (free_port() for _ in range(4))
    env = {
        **os.environ,
        "RESTATE_INGRESS__BIND_ADDRESS": f"127.0.0.1:{ingress}",
        "RESTATE_ADMIN__BIND_ADDRESS": f"127.0.0.1:{admin}",
        "RESTATE_BIND_ADDRESS": f"127.0.0.1:{node}",
    }
    server_bin = shutil.which("restate-server")
    assert server_bin is not None, "restate-server is not on the PATH"
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    children: list[subprocess.Popen[bytes]] = []
    try:
        with open(here / "restate-server.log", "wb") as out:
            children.append(
                subprocess.Popen(
                    [server_bin, "--listen-mode", "tcp", "--base-dir", str(here / "restate")],
                    env=env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            )
        # The SDK's service in a process of its own: once its native module is loaded, that
        # process no longer stops on SIGTERM, so it is killed, and this one stays in charge.
        with open(here / "restate-service.log", "wb") as out:
            children.append(
                subprocess.Popen(
                    [sys.executable, "-m", "benchmarks.restate_peer", "service", str(service)],
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            )
        _register(admin, service, children)
        publish("server", {"pid": os.getpid(), "ready": True, "ingress": ingress})
        stop.wait()
    finally:
        for child in children:
            child.terminate()
        for child in children:
            try:
                child.wait(timeout=5)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
    return 0


def service(port: int) -> int:
    import hypercorn.asyncio
    import hypercorn.config

    config = hypercorn.config.Config()
    config.bind = [f"127.0.0.1:{port}"]
    config.loglevel = "WARNING"
    asyncio.run(hypercorn.asyncio.serve(_app(), config))
    return 0


def _register(admin: int, service: int, children: list[subprocess.Popen[bytes]]) -> None:
    """Register the SDK service with restate-server, retrying while either is still starting."""
    body = json.dumps({"uri": f"http://127.0.0.1:{service}"}).encode()
    deadline = time.monotonic() + 60
    while True:
        for child in children:
            if child.poll() is not None:
                raise RuntimeError(
                    f"a Restate process exited with {child.returncode} before the counter "
                    "service was registered; see restate-server.log and restate-service.log"
                )
        try:
            status, reply = _request(admin, "POST", "/deployments", body)
            if status in (200, 201):
                return
            problem = f"HTTP {status}: {reply[:200]!r}"
        except OSError as exc:
            problem = str(exc)
        if time.monotonic() > deadline:
            raise RuntimeError(f"could not register the counter service: {problem}")
        time.sleep(0.05)


def client() -> int:
    here = status_dir()
    while not (here / "server.json").exists():
        time.sleep(0.01)
    ingress = int(json.loads((here / "server.json").read_text())["ingress"])
    base = {"pid": os.getpid(), "ready": True}
    publish("client", base)
    params = wait_for_go()
    total = int(params["total"])
    if params["workload"] == "counter-batched":
        bodies = [str(min(BATCH, total - i)).encode() for i in range(0, total, BATCH)]
        path = f"/Counter/{KEY}/inc_batch/send"
    else:
        bodies = [b""] * total
        path = f"/Counter/{KEY}/inc/send"
    start = _counter(ingress)
    go_t = time.time()

    def send(share: list[bytes]) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", ingress, timeout=30)
        for body in share:
            headers = {"content-type": "application/json"} if body else {}
            connection.request("POST", path, body=body or None, headers=headers)
            response = connection.getresponse()
            reply = response.read()
            if response.status not in (200, 202):
                raise RuntimeError(f"Restate refused an invocation: {response.status} {reply!r}")
        connection.close()

    with concurrent.futures.ThreadPoolExecutor(CONCURRENCY) as pool:
        list(pool.map(send, [bodies[i::CONCURRENCY] for i in range(CONCURRENCY)]))
    enqueued_t = time.time()
    while (now := _counter(ingress)) < start + total:
        time.sleep(0.005)
    done_t = time.time()
    publish(
        "client",
        {
            **base,
            "done": True,
            "go_t": go_t,
            "enqueued_t": enqueued_t,
            "done_t": done_t,
            "applied": now - start,
        },
    )
    return 0


def _counter(ingress: int) -> int:
    status, reply = _request(ingress, "POST", f"/Counter/{KEY}/get")
    if status != 200:
        raise RuntimeError(f"reading the counter failed: {status} {reply!r}")
    return int(reply)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.restate_peer")
    parser.add_argument("role", choices=["serve", "service", "client"])
    parser.add_argument("port", nargs="?", type=int, help="the service's port (service)")
    args = parser.parse_args(argv)
    if args.role == "service":
        return service(args.port)
    return serve() if args.role == "serve" else client()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
