"""The names of the systems compared, and the units the sizes are written in.

A leaf module: the side that measures and the side that reports both read these names, so
neither has to import the other.
"""

from __future__ import annotations

AMBROSIA = "ambrosia-edge"
NO_FSYNC = "ambrosia-edge --no-fsync"
GRPC = "grpcio"
DBOS_QUEUE = "DBOS (one workflow per increment)"
DBOS_BATCHED = "DBOS (100 increments per workflow)"
RESTATE_EACH = "Restate (one invocation per increment)"
RESTATE_BATCHED = "Restate (100 increments per invocation)"
#: the systems of the throughput and ping workloads, in the order the tables show them
THROUGHPUT_SYSTEMS = [AMBROSIA, NO_FSYNC, GRPC]
#: the throughput workload written as a user writes it (``async def`` handlers, a continuation
#: step of a fixed number of forks), durable, beside the tuned app; its forks per step
TYPICAL_1000 = "ambrosia-edge typical app, 1,000-fork steps"
TYPICAL_100 = "ambrosia-edge typical app, 100-fork steps"
TYPICAL_STEPS = {TYPICAL_1000: 1000, TYPICAL_100: 100}
#: the workloads ``python -m benchmarks --only`` selects from, in the order a run measures
#: them. "typical" is the typical app with what its ratios need (the tuned app, --no-fsync and
#: gRPC) at the smallest size only; "throughput" includes it.
WORKLOADS = (
    "throughput",
    "typical",
    "ping",
    "counter",
    "deployments",
    "recovery",
    "log-replay",
    "failover",
)
#: the durable-execution peers of the counter workload: their module, and what it serves
COUNTER_PEERS = {
    DBOS_QUEUE: ("benchmarks.dbos_peer", "the DBOS service"),
    DBOS_BATCHED: ("benchmarks.dbos_peer", "the DBOS service"),
    RESTATE_EACH: ("benchmarks.restate_peer", "the Restate service"),
    RESTATE_BATCHED: ("benchmarks.restate_peer", "the Restate service"),
}

#: the module of the benchmark immortals
APPS = "benchmarks.apps"
KIB = 1024
MIB = 1024 * 1024
