"""The durable-execution baseline: DBOS Transact on SQLite, a counter service and its client.

``python -m benchmarks.dbos_peer serve`` launches a DBOS application whose system database and
application database are SQLite files in ``$BENCH_STATUS``. It holds one counter row and two
workflows:

* ``inc``: one increment, as a DBOS datasource transaction (the update and the record of the
  step commit together, so the increment happens exactly once);
* ``inc_batch(k)``: k such transactions, one after the other, in one workflow.

``python -m benchmarks.dbos_peer client`` is a separate process that waits for ``go.json``
and asks for the increments the way DBOS clients do: by enqueueing workflows into the
service's queue with :class:`dbos.DBOSClient` (every enqueue is itself a durable insert). It
then watches the counter until it has gone up by the requested amount.

Both SQLite databases run in WAL mode with ``synchronous=FULL``: every commit is still on disk
when it returns, and WAL is how SQLite is set up when it has to be fast. The queue polls every
5 ms instead of DBOS's default second.
"""

from __future__ import annotations

import argparse
import os
import signal
import sqlite3
import sys
import threading
import time
from pathlib import Path
from typing import Any

from .status import publish, status_dir, wait_for_go

QUEUE = "counter"
BATCH = 100  # increments per inc_batch workflow
CONCURRENCY = 16  # workflows the service runs at once from the queue


def _engine(path: Path) -> Any:
    import sqlalchemy as sa

    engine = sa.create_engine(f"sqlite:///{path}")

    @sa.event.listens_for(engine, "connect")
    def _pragmas(connection: Any, record: Any) -> None:
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=FULL")

    return engine


def serve() -> int:
    import logging

    import sqlalchemy as sa
    from dbos import DBOS, DBOSConfig, SQLAlchemyDatasource

    logging.getLogger("dbos").setLevel(logging.WARNING)
    here = status_dir()
    app_db = here / "app.sqlite"
    datasource = SQLAlchemyDatasource.create(f"sqlite:///{app_db}", engine=_engine(app_db))
    with datasource.engine.begin() as connection:
        connection.execute(
            sa.text("CREATE TABLE IF NOT EXISTS counter (id INTEGER PRIMARY KEY, n INTEGER)")
        )
        connection.execute(sa.text("INSERT OR IGNORE INTO counter VALUES (1, 0)"))

    @datasource.transaction()
    def bump() -> None:
        datasource.sql_session().execute(sa.text("UPDATE counter SET n = n + 1 WHERE id = 1"))

    @DBOS.workflow(name="inc")
    def inc() -> None:
        bump()

    @DBOS.workflow(name="inc_batch")
    def inc_batch(k: int) -> None:
        for _ in range(k):
            bump()

    config: DBOSConfig = {
        "name": "bench-counter",
        "system_database_url": f"sqlite:///{here / 'system.sqlite'}",
        "system_database_engine": _engine(here / "system.sqlite"),
        "log_level": "WARNING",
    }
    DBOS(config=config)
    DBOS.launch()
    DBOS.register_queue(QUEUE, worker_concurrency=CONCURRENCY, polling_interval_sec=0.005)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    publish("server", {"pid": os.getpid(), "ready": True})
    stop.wait()
    DBOS.destroy(destroy_registry=True)
    return 0


def _counter(connection: sqlite3.Connection) -> int:
    row = connection.execute("SELECT n FROM counter WHERE id = 1").fetchone()
    return int(row[0]) if row else 0


def client() -> int:
    from dbos import DBOSClient, EnqueueOptions

    here = status_dir()
    dbos = DBOSClient(
        system_database_url=f"sqlite:///{here / 'system.sqlite'}",
        system_database_engine=_engine(here / "system.sqlite"),
        application_name="bench-counter",
    )
    reader = sqlite3.connect(f"file:{here / 'app.sqlite'}?mode=ro", uri=True)
    base = {"pid": os.getpid(), "ready": True}
    publish("client", base)
    params = wait_for_go()
    total = int(params["total"])
    batched = params["workload"] == "counter-batched"
    start = _counter(reader)
    go_t = time.time()
    if batched:
        options: EnqueueOptions = {"queue_name": QUEUE, "workflow_name": "inc_batch"}
        left = total
        while left:
            k = min(BATCH, left)
            dbos.enqueue(options, k)
            left -= k
    else:
        options = {"queue_name": QUEUE, "workflow_name": "inc"}
        for _ in range(total):
            dbos.enqueue(options)
    enqueued_t = time.time()
    while _counter(reader) < start + total:
        time.sleep(0.002)
    done_t = time.time()
    publish(
        "client",
        {**base, "done": True, "go_t": go_t, "enqueued_t": enqueued_t, "done_t": done_t},
    )
    reader.close()
    dbos.destroy()
    return 0


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.dbos_peer")
    parser.add_argument("role", choices=["serve", "client"])
    args = parser.parse_args(argv)
    return serve() if args.role == "serve" else client()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
