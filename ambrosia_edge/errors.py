"""Every error ambrosia-edge raises on purpose, under one root.

::

    AmbrosiaError                    root of everything below; carries a stable ``code``
    ├── ConfigError                  bad command line, config file or URL
    │   └── ListenError              the --listen address cannot be listened on
    ├── StoreError                   a storage tier failed
    │   ├── LogLockedError           another process holds the log (one writer per log)
    │   ├── DeposedError             a newer writer took the log's lease; this one must stop
    │   │   └── LogSealedError       the log was handed over to another instance (live migration)
    │   ├── CorruptLogError          a record in the middle of a log is damaged
    │   └── CheckpointError          a checkpoint cannot be read or written
    ├── CodecError                   CBOR encoding or decoding failed
    │   └── StateEncodingError       an immortal's attribute cannot be checkpointed
    ├── ProtocolError                a peer sent a malformed or unexpected frame
    │   ├── AuthenticationError      a peer failed the deployment-secret handshake
    │   ├── AuthenticationError      a peer failed the deployment-secret handshake
    │   ├── IncarnationError         a peer's log was replaced since we last talked to it
    │   └── StandbyError             the peer is a standby of that name: try its next address
    ├── MigrationError               a live migration (--migrate-from) could not be done
    ├── RemoteError                  an awaited call raised in the callee
    ├── UnknownMethodError           a call names a method the immortal does not have
    ├── NotAnImpulseError            non-deterministic code called a non-impulse method
    ├── NondeterminismError          a handler awaited something other than the runtime
    └── ConnectionClosed             a link ended (an ordinary outcome, so not a BaseException)
        ├── ClosedByUs               we closed the link on purpose
        └── BrokenByPeer             the peer or the network broke it; reconnect

Errors a user may script against carry ``code``, a short stable string. The tree is checked
against the classes by the tests, so it can be trusted.
"""

from __future__ import annotations


class AmbrosiaError(Exception):
    """Root of all ambrosia-edge errors."""

    code = "ambrosia"


class ConfigError(AmbrosiaError):
    code = "config"


class StoreError(AmbrosiaError):
    code = "store"


class LogLockedError(StoreError):
    code = "log-locked"


class DeposedError(StoreError):
    """A writer found a larger epoch on its log's lease: another instance took over, so this
    one stops at once and nothing it writes from now on becomes part of the log."""

    code = "deposed"
    #: what ``ambrosia-edge run`` exits with, so a supervisor can tell it from a failure
    exit_code = 3


class LogSealedError(DeposedError):
    """The log ends in a seal: a live migration handed it to another instance, which is the
    immortal now. Nothing may be appended; the message names the new home."""

    code = "log-sealed"


class CorruptLogError(StoreError):
    """A damaged record that is not a torn tail; the files are left untouched."""

    code = "log-corrupt"


class CheckpointError(StoreError):
    code = "checkpoint"


class CodecError(AmbrosiaError):
    code = "codec"


class StateEncodingError(CodecError):
    code = "state-encoding"


class ProtocolError(AmbrosiaError):
    code = "protocol"


class AuthenticationError(ProtocolError):
    code = "auth"


class IncarnationError(ProtocolError):
    """A peer's log is another incarnation than the one this immortal talked to (wiped and
    started again, or a copy of another): the link stops rather than drop or repeat messages."""

    code = "incarnation"


class MigrationError(AmbrosiaError):
    """A live migration could not be done; the message says what was left where."""

    code = "migration"


class StandbyError(ProtocolError):
    """The instance reached follows the log as a standby and takes no calls; the primary is at
    another of the name's addresses (or becomes so when the standby takes over)."""

    code = "standby"


class RemoteError(AmbrosiaError):
    """The callee of an awaited call raised; the reply carrying this was logged."""

    code = "remote"

    def __init__(
        self, type_name: str, message: str, *, immortal: str = "", method: str = ""
    ) -> None:
        where = f" in {immortal}.{method}" if immortal else ""
        super().__init__(f"{type_name}{where}: {message}")
        self.type_name = type_name
        self.message = message
        self.immortal = immortal
        self.method = method


class UnknownMethodError(AmbrosiaError):
    code = "unknown-method"


class NotAnImpulseError(AmbrosiaError):
    code = "not-an-impulse"


class NondeterminismError(AmbrosiaError):
    code = "nondeterminism"


class ConnectionClosed(AmbrosiaError):
    code = "closed"


class ClosedByUs(ConnectionClosed):
    """We closed the connection on purpose (shutdown, a newer connection replaced it)."""


class BrokenByPeer(ConnectionClosed):
    """The peer or the network broke the connection; the caller should reconnect."""

    code = "broken"


class ListenError(ConfigError):
    """The address given to ``--listen`` cannot be listened on (in use, not this machine's)."""

    code = "listen"
