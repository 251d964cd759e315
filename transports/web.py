"""A local web page that shows a running immortal and sends it impulses: the ``ui`` source.

``--ui 127.0.0.1:8080`` serves it. The page shows the immortal's name, role, epoch, log
position, checkpoints, peers with their links and watermarks, calls and impulses per second
and the state as a read-only tree, updated live through server-sent events; and a form per
``@impulse`` method, built from its signature (ambrosia_edge/impulse_forms.py). What a form
sends is an impulse like any other (paper §4): the request is answered once the impulse is
durable in the log, so a page that says "logged" never loses it, and a crash before that
answer loses it, as an impulse may be lost before it is logged.

Built on Starlette (anyio-native) served by Hypercorn, which runs on both of anyio's event
loops (asyncio and trio; uvicorn runs on asyncio only), in the same loop as the immortal:
forms call the feed directly, and the state is read between pages without a lock. Both are
imported only when ``--ui`` is given (the ``ui`` extra).

Who may send: on a loopback address anyone on this machine may, as with the control socket's
checkpoint request; the page accepts only requests naming the address it serves (a web site
the user visits cannot reach it through DNS rebinding) and only JSON posts (which a foreign
page cannot send without a CORS preflight, never answered here). Beyond loopback, or
whenever a token is configured, every API request needs the token (``Authorization: Bearer
TOKEN``, or ``?token=`` where a browser cannot set headers), compared in constant time.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import logging
import os
import secrets
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import sniffio
from anyio.abc import TaskStatus
from hypercorn.config import Config
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from ambrosia_edge.errors import AmbrosiaError, ConfigError
from ambrosia_edge.impulse_forms import Form, FormError, forms_of, parse_arguments
from ambrosia_edge.observe import Observed, Recent, Watch
from ambrosia_edge.sources import ImpulseFeed
from ambrosia_edge.ui_options import UI_TOKEN_ENV, UiOptions, is_loopback

__all__ = ["WebSource"]

log = logging.getLogger("ambrosia_edge")

STATIC = Path(__file__).resolve().parent / "web_static"
#: Seconds between two pictures sent to open pages.
TICK = 0.5
#: How long a form waits for its impulse to be durable before answering that it does not know.
DURABLE_WAIT = 10.0
#: Largest request body accepted (an impulse's arguments).
MAX_BODY = 256 * 1024
_FILES = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/ui.js": ("ui.js", "text/javascript; charset=utf-8"),
    "/ui.css": ("ui.css", "text/css; charset=utf-8"),
}


class WebSource:
    """Serves the page of one immortal at ``options.ui`` while the immortal is primary."""

    def __init__(self, options: UiOptions, observed: Observed) -> None:
        if options.ui is None:
            raise ConfigError("the web page needs an address (--ui 127.0.0.1:8080)")
        self.address = options.ui
        self.observed = observed
        self.loopback = is_loopback(self.address.host)
        token = options.ui_token or os.environ.get(UI_TOKEN_ENV) or None
        #: what the API asks for: the token given (on loopback too: other users of the machine
        #: reach loopback), one made now beyond loopback, else None (no token needed)
        self.token: str | None = token
        self.generated = False
        if token is None and not self.loopback:
            self.token = secrets.token_urlsafe(18)
            self.generated = True
        #: the port bound, once running (the one asked for, or a free one for port 0)
        self.port: int | None = None
        self.page: Page | None = None

    @classmethod
    def from_options(cls, options: Any, observed: Observed) -> WebSource:
        """From settings (anything with the fields of UiOptions, such as Settings)."""
        fields = {name: getattr(options, name) for name in UiOptions.__dataclass_fields__}
        return cls(UiOptions(**fields), observed)

    @property
    def url(self) -> str:
        """Where the page is (with the token, which a browser keeps and sends)."""
        host = self.address.host
        host = f"[{host}]" if ":" in host else host
        query = f"?token={self.token}" if self.token else ""
        return f"http://{host}:{self.port or self.address.port}/{query}"

    async def run(
        self, feed: ImpulseFeed, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        try:
            sock = _bind(self.address.host, self.address.port)
        except ConfigError as exc:
            # the page is a window on the immortal, not part of it: it runs on without one
            log.error("%s: no web page: %s", self.observed.name, exc)
            return
        self.port = sock.getsockname()[1]
        page = self.page = Page(feed, self.observed, self.token, loopback=self.loopback)
        config = Config()
        config.bind = [f"fd://{sock.detach()}"]
        config.graceful_timeout = 1.0
        config.accesslog = None
        # Hypercorn's own news ("Running on ...") is ours to say; its warnings stay
        server_log = logging.getLogger("ambrosia_edge.web")
        server_log.setLevel(logging.WARNING)
        config.errorlog = server_log
        serve = _server()
        ambrosia_log = logging.getLogger("ambrosia_edge")
        ambrosia_log.addHandler(page.recent)

        # shielded: Hypercorn stops cleanly when its shutdown trigger fires, not when cancelled
        # from outside (on asyncio that leaves its tasks half-stopped); the deadline set at
        # shutdown is the last resort for a server that does not stop
        shield = anyio.CancelScope(shield=True)

        async def server() -> None:
            with shield:
                await serve(page.app, config, shutdown_trigger=page.closing.wait)

        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(server)
                tg.start_soon(page.tick)
                self._announce()
                task_status.started()
                try:
                    await anyio.sleep_forever()
                finally:
                    page.closing.set()
                    shield.deadline = anyio.current_time() + 3 * config.graceful_timeout
        finally:
            ambrosia_log.removeHandler(page.recent)
            self.port = None

    def _announce(self) -> None:
        name = self.observed.name
        if self.token is None:
            log.info("%s: web page at %s", name, self.url)
        elif self.loopback:
            log.info("%s: web page at %s (its API needs the token)", name, self.url)
        elif self.generated:
            log.info(
                "%s: web page at %s (beyond loopback: its API needs this token, new at each "
                "start; set %s or ui_token to keep one)",
                name,
                self.url,
                UI_TOKEN_ENV,
            )
        else:
            log.info(
                "%s: web page at %s (beyond loopback: its API needs the token)", name, self.url
            )

    def __repr__(self) -> str:
        return f"<web page at {self.address}>"


def _bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound here so a taken port is a clear error and port 0 works."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        infos = socket.getaddrinfo(host, port, family, socket.SOCK_STREAM)
    except OSError as exc:
        raise ConfigError(f"--ui: cannot resolve {host!r}: {exc.strerror or exc}") from None
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(infos[0][4])
        sock.listen(64)
    except OSError as exc:
        sock.close()
        raise ConfigError(
            f"--ui: cannot listen on {host}:{port}: {exc.strerror or exc} (pick another "
            "port, or 0 for any free one)"
        ) from None
    sock.setblocking(False)
    return sock


def _server() -> Any:
    """Hypercorn's ``serve`` for the event loop we run in."""
    if sniffio.current_async_library() == "trio":
        from hypercorn.trio import serve as serve_trio

        return serve_trio
    from hypercorn.asyncio import serve as serve_asyncio

    return serve_asyncio


class Page:
    """The page's application: its routes, and the pictures it sends to open pages."""

    def __init__(
        self, feed: ImpulseFeed, observed: Observed, token: str | None, *, loopback: bool
    ) -> None:
        self.feed = feed
        self.loopback = loopback
        self.observed = observed
        self.token = token
        self.watch = Watch(observed)
        self.forms: dict[str, Form] = forms_of(type(observed.immortal))
        self.recent = Recent()
        self.closing = anyio.Event()
        self._tick = anyio.Event()
        self.listeners = 0
        #: the latest pictures, as server-sent events, and a version that grows when they do
        self.events: dict[str, tuple[int, str]] = {}
        self._seen_counts: tuple[int, int, int] | None = None
        self._seen_recent = -1
        self._checkpoint_chunk = -1
        self._listed_at = 0.0
        self.app = Starlette(
            routes=[
                *(Route(path, self.static) for path in _FILES),
                Route("/api/snapshot", self.snapshot),
                Route("/api/events", self.stream),
                Route("/api/impulse/{method}", self.impulse, methods=["POST"]),
            ]
        )

    # --- guards -----------------------------------------------------------------------------

    def _refused(self, request: Request, *, post: bool = False) -> Response | None:
        """Why ``request`` is refused, or None: the Host it names, the token, the body type."""
        host = request.headers.get("host", "")
        if self.loopback and _host_name(host) not in _LOOPBACK_NAMES:
            return _error(421, f"this page answers only at a loopback address, not {host!r}")
        if self.token is not None:
            given = request.query_params.get("token", "")
            header = request.headers.get("authorization", "")
            if header.lower().startswith("bearer "):
                given = header[7:].strip()
            if not hmac.compare_digest(given.encode(), self.token.encode()):
                problem = "a wrong token" if given else "no token"
                return _error(
                    401,
                    f"this page needs a token and the request had {problem}; open the "
                    "address printed at start (it ends in ?token=...)",
                )
        if post:
            origin = request.headers.get("origin")
            if origin is not None and origin.partition("://")[2] != host:
                return _error(403, f"a request from another site ({origin}) is refused")
            if request.headers.get("content-type", "").split(";")[0].strip() != (
                "application/json"
            ):
                return _error(415, "send the arguments as application/json")
        return None

    # --- routes -----------------------------------------------------------------------------

    async def static(self, request: Request) -> Response:
        name, media = _FILES[request.url.path]
        body = await anyio.to_thread.run_sync((STATIC / name).read_bytes)
        return Response(body, media_type=media, headers={"Cache-Control": "no-cache"})

    async def snapshot(self, request: Request) -> Response:
        refused = self._refused(request)
        if refused is not None:
            return refused
        await self._refresh_checkpoints()
        return JSONResponse(
            {
                "overview": self.watch.overview(),
                "state": self.watch.state(),
                "forms": [form.as_json() for form in self.forms.values()],
                "recent": self.recent.items(),
                "token_required": self.token is not None,
            }
        )

    async def stream(self, request: Request) -> Response:
        refused = self._refused(request)
        if refused is not None:
            return refused
        return StreamingResponse(
            self._events(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    async def _events(self) -> AsyncIterator[str]:
        sent: dict[str, int] = {}
        self.listeners += 1
        try:
            yield "retry: 1000\n\n"
            while not self.closing.is_set():
                if not self.events:
                    await self._next_tick()
                for kind, (version, data) in list(self.events.items()):
                    if sent.get(kind) != version:
                        sent[kind] = version
                        yield f"event: {kind}\ndata: {data}\n\n"
                await self._next_tick()
        finally:
            self.listeners -= 1

    async def _next_tick(self) -> None:
        with anyio.move_on_after(5 * TICK):
            await self._tick.wait()

    async def impulse(self, request: Request) -> Response:
        refused = self._refused(request, post=True)
        if refused is not None:
            return refused
        method = request.path_params["method"]
        form = self.forms.get(method)
        if form is None:
            known = ", ".join(self.forms) or "none"
            return _error(
                404, f"{self.observed.name} has no @impulse method {method!r} (known: {known})"
            )
        body = await _read_body(request)
        if body is None:
            return _error(413, f"the arguments are over {MAX_BODY} bytes")
        try:
            sent = json.loads(body or b"{}")
        except ValueError as exc:
            return _error(400, f"the body is not JSON: {exc}")
        values = sent.get("args", {}) if isinstance(sent, dict) else sent
        try:
            kwargs = parse_arguments(form, values)
            receipt = self.feed.send(method, **kwargs)
        except (FormError, AmbrosiaError) as exc:
            log.warning("%s: web page: impulse refused: %s", self.observed.name, exc)
            return _error(400, str(exc))
        with anyio.move_on_after(DURABLE_WAIT):
            await receipt.wait()
        if not receipt.durable:
            return _error(
                504,
                f"impulse {method} was sent but is not yet in the log after {DURABLE_WAIT:g} s "
                "(the log may be slow or full); it runs once if it is logged",
            )
        return JSONResponse({"ok": True, "method": method, "impulse": receipt.number})

    # --- pictures for open pages ------------------------------------------------------------

    async def tick(self) -> None:
        """Every TICK, while a page is open: new pictures of what changed, then wake pages."""
        version = 0
        while True:
            if self.listeners:
                version += 1
                await self._refresh_checkpoints()
                self._picture(version)
                tick, self._tick = self._tick, anyio.Event()
                tick.set()
            await anyio.sleep(TICK)

    def _picture(self, version: int) -> None:
        overview = self.watch.overview()
        self.events["overview"] = (version, json.dumps(overview))
        coordinator = self.observed.coordinator
        counts = (overview["calls"], overview["impulses"], coordinator.next_page)
        if counts != self._seen_counts:
            self._seen_counts = counts
            self.events["state"] = (version, json.dumps(self.watch.state()))
        if self.recent.count != self._seen_recent:
            self._seen_recent = self.recent.count
            self.events["recent"] = (version, json.dumps(self.recent.items()))

    async def _refresh_checkpoints(self) -> None:
        """The stored checkpoints, listed again when a new one was taken, and each second
        until it is stored (it is taken first, then stored by a task of its own)."""
        chunk = self.observed.coordinator.chunk
        now = time.monotonic()
        if chunk == self._checkpoint_chunk and (
            chunk in self.watch.checkpoints or now - self._listed_at < 1.0
        ):
            return
        self._checkpoint_chunk = chunk
        self._listed_at = now
        store = getattr(self.observed, "store", None)
        if store is None:
            return
        with contextlib.suppress(Exception):  # a picture without the list beats none
            self.watch.checkpoints = await anyio.to_thread.run_sync(store.list_checkpoints)


_LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1"}


async def _read_body(request: Request) -> bytes | None:
    """The body, or None once it passes MAX_BODY (without reading on: a huge body costs
    nothing but the bytes read up to the limit)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY:
        return None
    parts: list[bytes] = []
    size = 0
    async for part in request.stream():
        size += len(part)
        if size > MAX_BODY:
            return None
        parts.append(part)
    return b"".join(parts)


def _host_name(host: str) -> str:
    """The name in a Host header, without its port (and brackets, for IPv6)."""
    if host.startswith("["):
        return host[1:].partition("]")[0]
    name = host.rpartition(":")[0] if ":" in host else host
    if name.startswith("127."):
        return "127.0.0.1"
    return name.lower()


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"ok": False, "error": message}, status_code=status)
