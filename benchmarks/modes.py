"""How much each mode measures: payload sizes, message counts, repetitions and timeouts.

``smoke`` is what the test suite runs (seconds), ``quick`` about two minutes, ``full`` the set
docs/benchmarks.md reports.
"""

from __future__ import annotations

from dataclasses import dataclass

from .systems import GRPC, KIB, MIB


@dataclass
class Mode:
    name: str
    sizes: list[int]
    volume: int  # payload bytes per size and run
    min_messages: int  # at least this many messages per size (large payloads)
    max_messages: int  # at most this many (small payloads would take minutes)
    grpc_max_messages: int  # gRPC's rate is steady early; cap its runs to keep them short
    reps: int
    pings: int
    ping_warmup: int
    counter: int  # increments for ambrosia-edge
    dbos: bool
    dbos_batched: int  # increments for DBOS, batched workflows
    dbos_each: int  # increments for DBOS, one workflow each
    disk_appends: int
    disk_bytes: int
    recovery_size: int  # payload of the workload whose server is killed
    recovery_messages: int  # messages in it: enough to outlast the kill by a margin
    recovery_rolls: int  # log rolls (checkpoints after the first) before the kill
    recovery_tail: int  # bytes the server logs after its newest checkpoint before the kill
    replay_log: int  # bytes of server log to replay from the start
    replay_log_size: int  # payload of the workload that writes it
    failovers: int  # SIGKILLs of a primary with a standby following its log
    failover_pings: int  # awaited calls over them: enough to outlast the failovers
    timeout: float  # seconds for any one measurement
    deployments: bool = True  # also over TLS, on nfs:// and on S3 (benchmarks/deployments.py)


MODES = {
    "smoke": Mode(
        name="smoke",
        sizes=[1 * KIB],
        volume=2 * MIB,
        min_messages=200,
        max_messages=2000,
        grpc_max_messages=2000,
        reps=1,
        pings=200,
        ping_warmup=20,
        counter=1000,
        dbos=False,
        dbos_batched=0,
        dbos_each=0,
        disk_appends=100,
        disk_bytes=8 * MIB,
        recovery_size=1 * KIB,
        recovery_messages=8000,
        recovery_rolls=0,
        recovery_tail=2 * MIB,
        replay_log=8 * MIB,
        replay_log_size=16 * KIB,
        failovers=1,
        failover_pings=1_500,
        timeout=40,
        deployments=False,
    ),
    "quick": Mode(
        name="quick",
        sizes=[16, 1 * KIB, 64 * KIB],
        volume=128 * MIB,
        min_messages=1000,
        max_messages=250_000,
        grpc_max_messages=10_000,
        reps=3,
        pings=1000,
        ping_warmup=200,
        counter=10_000,
        dbos=True,
        dbos_batched=1000,
        dbos_each=300,
        disk_appends=500,
        disk_bytes=64 * MIB,
        recovery_size=16,
        recovery_messages=4_000_000,
        recovery_rolls=1,
        recovery_tail=32 * MIB,
        replay_log=128 * MIB,
        replay_log_size=16 * KIB,
        failovers=3,
        failover_pings=4_000,
        timeout=120,
    ),
    "full": Mode(
        name="full",
        sizes=[64 * KIB >> i for i in range(13)][::-1],  # 16 B, 32 B, ... 64 KiB
        volume=256 * MIB,
        min_messages=2000,
        max_messages=1_000_000,
        grpc_max_messages=40_000,
        reps=3,
        pings=5000,
        ping_warmup=500,
        counter=10_000,
        dbos=True,
        dbos_batched=10_000,
        dbos_each=1000,
        disk_appends=2000,
        disk_bytes=256 * MIB,
        recovery_size=16,
        recovery_messages=4_000_000,
        recovery_rolls=1,
        recovery_tail=32 * MIB,
        replay_log=1024 * MIB,
        replay_log_size=16 * KIB,
        failovers=10,
        failover_pings=10_000,
        timeout=600,
    ),
}


def messages_for(mode: Mode, size: int, system: str) -> int:
    n = min(mode.max_messages, max(mode.min_messages, mode.volume // size))
    if system == GRPC:
        n = min(n, mode.grpc_max_messages)
    return n


def throughput_batch(size: int) -> int:
    """Messages per continuation step: about 256 KiB, and at least 100."""
    return max(100, (256 * KIB) // size)
