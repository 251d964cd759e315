"""An HTTP proxy in front of an object store that fails a share of requests on purpose: some
never reach the store, some reach it and lose their answer (the ambiguous case), each answered
503 so that the client retries."""

from __future__ import annotations

import http.client
import random
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit


class Counts:
    def __init__(self) -> None:
        self.dropped = 0
        self.lost_answers = 0
        self.passed = 0
        self.lock = threading.Lock()


@contextmanager
def flaky_proxy(
    upstream: str, *, drop: float, lose_answer: float, seed: int = 1
) -> Iterator[tuple[str, Counts]]:
    """Yield the proxy's endpoint and its counts; only PUTs are failed."""
    target = urlsplit(upstream)
    rng = random.Random(seed)
    counts = Counts()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            pass

        def _forward(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            fate = "pass"
            if self.command == "PUT":
                with counts.lock:
                    roll = rng.random()
                if roll < drop:
                    fate = "drop"
                elif roll < drop + lose_answer:
                    fate = "lose"
            if fate == "drop":
                with counts.lock:
                    counts.dropped += 1
                self._answer(503, b"dropped on purpose")
                return
            conn = http.client.HTTPConnection(target.hostname, target.port, timeout=30)
            try:
                headers = {k: v for k, v in self.headers.items() if k.lower() != "connection"}
                conn.request(self.command, self.path, body=body, headers=headers)
                response = conn.getresponse()
                data = response.read()
            finally:
                conn.close()
            if fate == "lose":
                with counts.lock:
                    counts.lost_answers += 1
                self._answer(503, b"answer lost on purpose")
                return
            with counts.lock:
                counts.passed += 1
            self.send_response(response.status)
            for key, value in response.getheaders():
                if key.lower() not in ("transfer-encoding", "connection", "content-length"):
                    self.send_header(key, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        def _answer(self, status: int, text: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Length", str(len(text)))
            self.end_headers()
            self.wfile.write(text)

        do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _forward

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="flaky proxy", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", counts
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
