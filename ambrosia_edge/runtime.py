"""Hosting one immortal in this process: recovery, going live, and the ``run`` entry point.

The process around the immortal lives here: building its store, transport, discovery and
coordinator from the settings, signals, logging, the event loop's choice and exit codes.
Replay itself is :mod:`.recovery`'s :class:`~ambrosia_edge.recovery.Replayer`, and the
coordinator's part of a checkpoint is its own (``snapshot``/``restore``).
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import anyio
import anyio.from_thread
import anyio.lowlevel

from . import codec
from .checkpoint import Checkpoint
from .config import PeerAddress, Settings
from .control import log_identity, serve_control, socket_path
from .coordinator import Coordinator, CoordinatorOptions
from .discovery import Discovery, StaticDiscovery, open_discovery
from .discovery_options import discovery_spec
from .errors import AmbrosiaError, ConfigError, DeposedError, LogLockedError, StateEncodingError
from .executor import Executor
from .feed import feed_sources
from .immortal import Immortal, state_of
from .lease import lease_of
from .recovery import Replayer, complete_upgrade
from .sources import ImpulseSource, open_declared
from .standby import describe_holder, follow_until_primary
from .store import LogStore, open_store
from .tls import tls_files
from .transport import TRANSPORTS, Transport

log = logging.getLogger("ambrosia_edge")


def class_path(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


class Runtime:
    """One immortal instance: its object, executor, coordinator and store."""

    def __init__(
        self,
        cls: type[Immortal],
        settings: Settings,
        *,
        store: LogStore | None = None,
        transport: Transport | None = None,
        discovery: Discovery | None = None,
        sources: Sequence[ImpulseSource | str] = (),
    ) -> None:
        if not (isinstance(cls, type) and issubclass(cls, Immortal)):
            raise ConfigError(f"{cls!r} is not a subclass of ambrosia_edge.Immortal")
        self.cls = cls
        self.settings = settings
        self.name = settings.name
        self.store = store if store is not None else open_store(settings.log, fsync=settings.fsync)
        self.transport = transport if transport is not None else default_transport(settings)
        #: closed on the way out only when built here: a caller's may serve several runtimes
        self._own_discovery = discovery is None
        self.discovery = (
            discovery
            if discovery is not None
            else open_discovery(discovery_spec(settings), peers=settings.peers)
        )
        if settings.listen is None and not isinstance(self.discovery, StaticDiscovery):
            log.warning(
                "%s: no --listen: discovery cannot announce it, and no peer can call it",
                self.name,
            )
        lease = lease_of(self.store)
        if settings.lease_ttl is not None and lease is not None and hasattr(lease, "ttl"):
            lease.ttl = settings.lease_ttl  # a fencing lease's lifetime (--lease-ttl)
        #: run on the primary besides the immortal's own impulse_sources() (sources.py)
        self.sources = list(sources)
        #: sends the immortal's publishes to the broker of --mqtt (MQTT out)
        self.publisher: Any = None
        if settings.mqtt is not None:
            # imports paho-mqtt: only when configured
            from .mqtt_options import mqtt_publisher, mqtt_source

            if settings.subscribe:
                self.sources.append(mqtt_source(settings))
            self.publisher = mqtt_publisher(settings)
        if settings.ui is not None:
            from .ui_options import web_source  # imports the web stack: only when configured

            self.sources.append(web_source(settings, self))
        #: built by recovery, with the immortal's executor
        self._coordinator: Coordinator | None = None
        self.executor: Executor | None = None
        self.port: int | None = None
        self.recovery: dict[str, Any] = {}
        #: where to serve the control socket while live (``run`` sets it; None: no socket)
        self.control: Path | None = None

    @property
    def coordinator(self) -> Coordinator:
        assert self._coordinator is not None, "the runtime has not recovered yet"
        return self._coordinator

    @property
    def immortal(self) -> Immortal:
        assert self.executor is not None, "the runtime has not recovered yet"
        return self.executor.obj

    # --- recovery ----------------------------------------------------------------------------

    def recover(self, *, read_only: bool = False, from_checkpoint: int | None = -1) -> None:
        """Rebuild the immortal from its checkpoint and log; nothing is sent or logged here.

        ``read_only`` replays without taking the writer lock or repairing a torn tail (to look
        at a log another process may be writing); ``from_checkpoint`` picks the checkpoint to
        start from: -1 the newest, None none at all (replay the whole log).
        """
        started = time.monotonic()
        replayer = Replayer(
            self.cls,
            self.store,
            name=self.name,
            checkpoint=from_checkpoint,
            read_only=read_only,
            coordinator=self._build_coordinator,
        )
        replayer.run()
        replayer.finish()
        self._adopt(replayer, started, read_only=read_only)

    def stand_by(self) -> None:
        """Follow the log as a standby of the instance that holds it, until this one holds
        it; then the same as :meth:`recover` (:mod:`.standby`). Blocks; a signal handler that
        raises stops it anywhere, as it does a recovery."""
        log.info(
            "%s: standby of %s: following %s, taking over when it stops",
            self.name,
            describe_holder(self.store),
            self.store.url,
        )

        def replayer(read_only: bool) -> Replayer:
            return Replayer(
                self.cls,
                self.store,
                name=self.name,
                read_only=read_only,
                coordinator=self._build_coordinator,
            )

        started = time.monotonic()
        replay = follow_until_primary(
            replayer,
            self.store,
            name=self.name,
            transport=self.transport,
            listen=self.settings.listen,
            handshake_timeout=self.settings.handshake_timeout,
            checkpoint=self._standby_checkpoint,
        )
        self._adopt(replay, started)
        self.recovery["standby"] = True

    def _adopt(self, replayer: Replayer, started: float, *, read_only: bool = False) -> None:
        """Take a finished replay's coordinator and executor as this runtime's own (a standby's
        too, once it holds the log: it goes on to be primary)."""
        self._coordinator = replayer.coordinator
        self.executor = replayer.executor
        checkpoint = replayer.checkpoint
        self.recovery = {
            "checkpoint": checkpoint.chunk if checkpoint else None,
            "pages": replayer.pages,
            "seconds": time.monotonic() - started,
            "epoch": replayer.coordinator.epoch,
        }

    def _build_coordinator(self, executor: Callable[[Coordinator], Executor]) -> Coordinator:
        coordinator = Coordinator(
            self.name,
            self.store,
            self.transport,
            CoordinatorOptions.from_settings(self.settings),
            discovery=self.discovery,
            executor=executor,
            on_checkpoint=self._checkpoint,
        )
        standbys = getattr(lease_of(self.store), "standbys", None)
        if standbys is not None and hasattr(self.store, "write_standby_checkpoint"):
            coordinator.standby_checkpoints = lambda: bool(standbys())
        return coordinator

    def _checkpoint(self, chunk: int, next_page: int) -> bytes | None:
        """Snapshot at the current dispatch point (called between pages), or None if busy."""
        executor = self.executor
        assert executor is not None
        return self._snapshot(executor, self.coordinator, chunk, next_page)

    def _snapshot(
        self, executor: Executor, coordinator: Coordinator, chunk: int, next_page: int
    ) -> bytes | None:
        """Checkpoint ``chunk`` of ``executor``'s immortal as it stands, between pages: this
        runtime's own, or a standby's replay; None if a handler is suspended."""
        if not executor.quiescent:
            return None
        complete_upgrade(executor, self.coordinator, self.cls)  # a pending live upgrade
        obj = executor.obj
        state = state_of(obj)
        try:
            encoded = codec.encode(state, where=type(obj).__name__)
        except StateEncodingError:
            for attribute, value in state.items():  # name the attribute, not just the path
                codec.encode(value, where=f"{type(obj).__name__}.{attribute}")
            raise
        snapshot = coordinator.snapshot()
        assert snapshot.next_page == next_page
        return Checkpoint.build(
            immortal=self.name,
            class_path=class_path(self.cls),
            class_version=self.cls.version,
            chunk=chunk,
            state=encoded,
            next_call_id=executor.next_call_id,
            coordinator=snapshot,
        ).encode()

    def _standby_checkpoint(self, replay: Replayer, chunk: int) -> bytes | None:
        return self._snapshot(
            replay.executor, replay.coordinator, chunk, replay.coordinator.next_page
        )

    def request_checkpoint(self) -> None:
        self.coordinator.request_checkpoint()

    def status(self) -> dict[str, Any]:
        """What the control socket reports (``ambrosia-edge status``): cheap, JSON-able."""
        coordinator = self.coordinator
        listen = self.settings.listen
        return {
            "name": self.name,
            "pid": os.getpid(),
            "epoch": coordinator.epoch,
            "log": self.store.url,
            "chunk": coordinator.chunk,
            "pages": coordinator.next_page - 1,
            "listen": f"{PeerAddress(listen.host, self.port)}" if listen and self.port else None,
            "peers": {
                peer: "discovered" if address is None else str(address)
                for peer, address in self.settings.peers.items()
            },
            "incarnation": coordinator.incarnation,
            "stopped_links": dict(coordinator.stopped_links),
        }

    # --- running -----------------------------------------------------------------------------

    async def serve(self, *, task_status: Any = anyio.TASK_STATUS_IGNORED) -> None:
        """Recover, then run as primary until cancelled."""
        try:
            if self.executor is None:
                self.recover()
            executor = self.executor
            assert executor is not None
            async with anyio.create_task_group() as tg:
                token = anyio.lowlevel.current_token()

                def spawn(fn: Callable[..., Awaitable[Any]], *args: Any) -> None:
                    tg.start_soon(_guarded, self.name, fn, *args)

                def call_from_thread(fn: Callable[[], None]) -> None:
                    anyio.from_thread.run_sync(fn, token=token)

                executor.go_live(spawn, call_from_thread)
                if self.publisher is not None:
                    self.coordinator.publishes_to = self.settings.mqtt
                self.port = await tg.start(self.coordinator.run)
                if self.publisher is not None:
                    await tg.start(self.publisher.run, self.coordinator)
                self._log_recovered()
                await anyio.to_thread.run_sync(self._announce)
                # live from here on: what runs only on a primary starts now
                if self.control is not None:
                    await tg.start(serve_control, self, self.control)
                await tg.start(feed_sources, executor.obj, self.coordinator, self.sources)
                tg.start_soon(_guarded, self.name, executor.obj.becoming_primary)
                task_status.started(self)
        finally:
            try:
                if self._own_discovery:
                    with anyio.CancelScope(shield=True), anyio.move_on_after(2):
                        await self.discovery.aclose()  # a goodbye: peers look elsewhere at once
            finally:
                self.store.close()

    def _announce(self) -> None:
        """Record the listen address in the log's lease, for ``status`` (if the lease can)."""
        listen = self.settings.listen
        announce = getattr(lease_of(self.store), "announce", None)
        if announce is not None and listen is not None and self.port:
            announce(str(PeerAddress(listen.host, self.port)))

    def _log_recovered(self) -> None:
        r = self.recovery
        source = f"checkpoint {r['checkpoint']}" if r["checkpoint"] else "the start"
        listen = self.settings.listen
        where = f"; listening on {listen.host}:{self.port}" if listen and self.port else ""
        if r.get("standby"):
            log.info(
                "%s: primary in epoch %d, taking over as a standby (followed %d pages of %s "
                "from %s)%s",
                self.name,
                r["epoch"],
                r["pages"],
                self.store.url,
                source,
                where,
            )
            return
        log.info(
            "%s: recovered from %s + %d pages of %s in %.2f s; primary in epoch %d%s",
            self.name,
            source,
            r["pages"],
            self.store.url,
            r["seconds"],
            r["epoch"],
            where,
        )


async def _guarded(name: str, fn: Callable[..., Awaitable[Any]], *args: Any) -> None:
    """Non-deterministic tasks may fail without taking the immortal down; say so loudly."""
    try:
        await fn(*args)
    except Exception:
        log.exception(
            "%s: task %s failed (the immortal keeps running)", name, getattr(fn, "__qualname__", fn)
        )


def default_transport(settings: Settings | None = None) -> Transport:
    """TCP, with TLS if the settings name its files (ConfigError if they cannot be loaded)."""
    module, _, attr = TRANSPORTS["tcp"].partition(":")
    kind = getattr(importlib.import_module(module), attr)
    files = None
    if settings is not None:
        files = tls_files(settings.tls_cert, settings.tls_key, settings.tls_ca)
    if files is None:
        transport: Transport = kind()
        return transport
    assert settings is not None
    transport = kind(
        tls=files,
        handshake_timeout=settings.handshake_timeout,
        max_handshakes=settings.max_handshakes,
    )
    return transport


def run_immortal(settings: Settings) -> int:
    """Entry point of ``ambrosia-edge run``: host one immortal until SIGINT or SIGTERM."""
    from .loader import load_class

    if not log.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("ambrosia-edge: %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.DEBUG if os.environ.get("AMBROSIA_EDGE_DEBUG") else logging.INFO)
        log.propagate = False
    cls = load_class(settings.target)
    if not (isinstance(cls, type) and issubclass(cls, Immortal)):
        raise ConfigError(f"{settings.target} is not a subclass of ambrosia_edge.Immortal")
    runtime = Runtime(cls, settings, sources=[open_declared(table) for table in settings.sources])
    runtime.control = socket_path(runtime.name, log_identity(runtime.store))
    from .migration import finish_unfinished, migrate_in

    if settings.migrate_from is not None:  # a live migration: take the log over first
        migrate_in(settings, runtime.store, runtime.transport, runtime.discovery)
    else:
        finish_unfinished(runtime.store, runtime.name)
    lease = lease_of(runtime.store)
    if lease is not None and hasattr(lease, "on_deposed"):
        # found by the lease's renewal, between writes: nothing this process does from now on
        # counts, so it stops at once rather than shutting down (which would try to write)
        lease.on_deposed = _exit_deposed

    async def main() -> None:
        # signals first: a SIGTERM during start-up must stop us cleanly too
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGUSR1) as signals:
            async with anyio.create_task_group() as tg:
                await tg.start(runtime.serve)
                tg.start_soon(_stop_when_moved, runtime, tg.cancel_scope)
                async for signum in signals:
                    if signum == signal.SIGUSR1:
                        log.info("%s: checkpoint requested", runtime.name)
                        runtime.request_checkpoint()
                    else:
                        log.info("%s: stopping (signal %d)", runtime.name, signum)
                        tg.cancel_scope.cancel()
                        return

    # Until the event loop handles signals (in main), SIGTERM ends a recovery here, cleanly:
    # recovery writes nothing but the cut of a torn tail, one system call, so it may stop
    # anywhere. Without this, a stop requested during a long replay killed the process.
    previous = signal.signal(signal.SIGTERM, _stop_recovering)
    try:
        try:
            runtime.recover()  # before the loop: a damaged log is reported plainly, not from a task
        except LogLockedError:
            if not settings.standby:
                raise
            runtime.stand_by()  # another instance holds the log: follow it, take over from it
    except _StopRecovering:
        runtime.store.close()
        log.info("%s: stopped while recovering (signal %d)", runtime.name, signal.SIGTERM)
        return 0
    finally:
        signal.signal(signal.SIGTERM, previous)
    try:
        anyio.run(main, backend_options=_backend_options())
    except BaseExceptionGroup as group:
        raise _first_ambrosia_error(group) or group from None
    seal = runtime.coordinator.moved_to
    if seal is not None:
        print(
            f"ambrosia-edge: {runtime.name} moved to {seal.moved_to} (epoch {seal.epoch}); "
            f"its log at {runtime.store.url} is sealed and this instance has stopped",
            file=sys.stderr,
            flush=True,
        )
    if any(
        t.is_alive() and not t.daemon
        for t in threading.enumerate()
        if t is not threading.main_thread()
    ):
        # a spawned task blocked in a worker thread (reading a terminal, a sensor) would keep
        # the interpreter alive; the log is closed and durable, so leave without waiting
        log.debug("%s: leaving worker threads behind", runtime.name)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
    return 0


async def _stop_when_moved(runtime: Runtime, scope: anyio.CancelScope) -> None:
    """A live migration handed the immortal over (handover.py): this process is done."""
    await runtime.coordinator.wait_moved()
    scope.cancel()


def _exit_deposed(exc: AmbrosiaError) -> None:
    log.error("error: %s", exc)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(DeposedError.exit_code)


class _StopRecovering(BaseException):
    """Raised by SIGTERM during recovery; a BaseException so no handler for errors takes it."""


def _stop_recovering(signum: int, frame: object) -> None:
    raise _StopRecovering


def _backend_options() -> dict[str, Any]:
    """uvloop when it is installed (the ``fast`` extra): a shorter hop through the loop."""
    if os.environ.get("AMBROSIA_EDGE_UVLOOP", "1") == "0":
        return {}
    if importlib.util.find_spec("uvloop") is None:
        return {}
    return {"use_uvloop": True}


def _first_ambrosia_error(group: BaseExceptionGroup) -> AmbrosiaError | None:
    """Task groups wrap errors; the CLI wants the AmbrosiaError inside, to print it plainly."""
    for exc in group.exceptions:
        if isinstance(exc, AmbrosiaError):
            return exc
        if isinstance(exc, BaseExceptionGroup):
            found = _first_ambrosia_error(exc)
            if found is not None:
                return found
    return None
