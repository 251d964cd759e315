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
from .fields import as_bytes, as_int, as_list, as_map, as_pair, as_str

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
            immortal=as_str(doc["immortal"]),
            class_path=as_str(doc["class"]),
            class_version=as_int(doc["class_version"]),
            chunk=as_int(doc["chunk"]),
            next_page=as_int(doc["next_page"]),
            epoch=as_int(doc["epoch"]),
            state=as_bytes(doc["state"]),
            next_call_id=as_int(doc["next_call_id"]),
            inputs={as_str(k): as_pair(v) for k, v in as_map(doc["inputs"]).items()},
            outputs={as_str(k): _output(v) for k, v in as_map(doc["outputs"]).items()},
            incarnation=None if doc.get("incarnation") is None else as_str(doc["incarnation"]),
            peers={as_str(k): as_str(v) for k, v in as_map(doc.get("peers", {})).items()},
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{where} is missing or has a malformed field ({exc})") from None


def _output(value: object) -> tuple[int, list[tuple[int, bytes]]]:
    """One destination's out-buffer: [next sequence number, [[number, message], ...]]."""
    nxt, entries = as_list(value)
    kept = []
    for entry in as_list(entries):
        seq, message = as_list(entry)
        kept.append((as_int(seq), as_bytes(message)))
    return as_int(nxt), kept
