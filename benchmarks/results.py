"""What a run produced: every raw measurement, as the harness fills it and the report reads it."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class Results:
    mode: str
    command: str
    started: str
    seconds: float = 0.0
    machine: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    throughput: list[dict[str, Any]] = field(default_factory=list)
    ping: list[dict[str, Any]] = field(default_factory=list)
    counter: list[dict[str, Any]] = field(default_factory=list)
    disk: list[dict[str, Any]] = field(default_factory=list)
    replay: list[dict[str, Any]] = field(default_factory=list)
    recovery: list[dict[str, Any]] = field(default_factory=list)
    log_replay: list[dict[str, Any]] = field(default_factory=list)
    #: the throughput and ping workloads deployed otherwise (benchmarks/deployments.py)
    deployments: list[dict[str, Any]] = field(default_factory=list)
    failover: list[dict[str, Any]] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)
