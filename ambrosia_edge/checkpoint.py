"""The checkpoint document: an immortal's state plus its coordinator's, at a log position.

One CBOR map (docs/protocol.md has the byte-level spec)::

    {"format": "ambrosia-edge/checkpoint", "version": 1,
     "immortal": name, "class": "module:Qualname", "class_version": int,
     "chunk": n, "next_page": p, "epoch": e,          # covers every page before p
     "state": bytes,                                  # codec-encoded {attribute: value}
     "next_call_id": int,
     "inputs": {source: [total, replayable]},         # executed watermarks
     "outputs": {destination: [next_replayable, [[replayable, message], ...]]},
     "incarnation": id, "peers": {name: id}}         # optional (incarnation.py)

Only replayable output is kept: impulses in send buffers are dropped at recovery anyway (paper
§4.2, behaviour 4). The app state is a nested byte string so that the coordinator's part can be
read (``ambrosia-edge inspect``) without the application's classes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import cbor2

from .errors import CheckpointError

CHECKPOINT_FORMAT = "ambrosia-edge/checkpoint"
CHECKPOINT_VERSION = 1


@dataclass(slots=True)
class CoordinatorState:
    """The coordinator's part of a checkpoint: what it has executed, and its output buffers.

    ``Coordinator.snapshot()`` gives it at a dispatch point, ``Coordinator.restore()`` starts
    from it; the checkpoint document holds it beside the application's state.
    """

    epoch: int
    next_page: int  # the first page not covered
    inputs: dict[str, tuple[int, int]] = field(default_factory=dict)  # executed watermarks
    #: destination -> (next replayable sequence number, [(replayable number, message), ...])
    outputs: dict[str, tuple[int, list[tuple[int, bytes]]]] = field(default_factory=dict)
    #: this log's id, and the ids of the peers' logs as last seen (incarnation.py)
    incarnation: str | None = None
    peers: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class Checkpoint:
    immortal: str
    class_path: str
    class_version: int
    chunk: int
    next_page: int
    epoch: int
    state: bytes
    next_call_id: int
    inputs: dict[str, tuple[int, int]] = field(default_factory=dict)
    outputs: dict[str, tuple[int, list[tuple[int, bytes]]]] = field(default_factory=dict)
    incarnation: str | None = None
    peers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def build(
        cls,
        *,
        immortal: str,
        class_path: str,
        class_version: int,
        chunk: int,
        state: bytes,
        next_call_id: int,
        coordinator: CoordinatorState,
    ) -> Checkpoint:
        """The document of an application's encoded state and its coordinator's."""
        return cls(
            immortal=immortal,
            class_path=class_path,
            class_version=class_version,
            chunk=chunk,
            next_page=coordinator.next_page,
            epoch=coordinator.epoch,
            state=state,
            next_call_id=next_call_id,
            inputs=coordinator.inputs,
            outputs=coordinator.outputs,
            incarnation=coordinator.incarnation,
            peers=coordinator.peers,
        )

    @property
    def coordinator(self) -> CoordinatorState:
        return CoordinatorState(
            self.epoch, self.next_page, self.inputs, self.outputs, self.incarnation, self.peers
        )

    def encode(self) -> bytes:
        doc: dict[str, Any] = {
            "format": CHECKPOINT_FORMAT,
            "version": CHECKPOINT_VERSION,
            "immortal": self.immortal,
            "class": self.class_path,
            "class_version": self.class_version,
            "chunk": self.chunk,
            "next_page": self.next_page,
            "epoch": self.epoch,
            "state": self.state,
            "next_call_id": self.next_call_id,
            "inputs": {k: list(v) for k, v in self.inputs.items()},
            "outputs": {
                k: [nxt, [[seq, msg] for seq, msg in entries]]
                for k, (nxt, entries) in self.outputs.items()
            },
        }
        if self.incarnation is not None:
            doc["incarnation"] = self.incarnation
        if self.peers:
            doc["peers"] = dict(self.peers)
        return cbor2.dumps(doc)


def decode_checkpoint(data: bytes, where: str) -> Checkpoint:
    try:
        doc: Any = cbor2.loads(data)
    except Exception as exc:
        raise CheckpointError(f"{where} is not readable CBOR ({exc})") from None
    if not isinstance(doc, dict) or doc.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{where} is not an ambrosia-edge checkpoint")
    if doc.get("version") != CHECKPOINT_VERSION:
        raise CheckpointError(
            f"{where} has checkpoint format version {doc.get('version')}; this release reads "
            f"version {CHECKPOINT_VERSION}"
        )
    try:
        return Checkpoint(
            immortal=str(doc["immortal"]),
            class_path=str(doc["class"]),
            class_version=int(doc["class_version"]),
            chunk=int(doc["chunk"]),
            next_page=int(doc["next_page"]),
            epoch=int(doc["epoch"]),
            state=bytes(doc["state"]),
            next_call_id=int(doc["next_call_id"]),
            inputs={str(k): (int(v[0]), int(v[1])) for k, v in doc["inputs"].items()},
            outputs={
                str(k): (int(v[0]), [(int(seq), bytes(msg)) for seq, msg in v[1]])
                for k, v in doc["outputs"].items()
            },
            incarnation=None if doc.get("incarnation") is None else str(doc["incarnation"]),
            peers={str(k): str(v) for k, v in doc.get("peers", {}).items()},
        )
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise CheckpointError(f"{where} is missing or has a malformed field ({exc})") from None
