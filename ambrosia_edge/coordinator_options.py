"""The coordinator's own options: what it needs from the settings, and nothing else.

Declared here, apart from :mod:`.coordinator`, so that ``ambrosia-edge --help`` and the config
loader read the declarations without importing the coordinator. The peers' addresses are not
here: the coordinator asks its :class:`~ambrosia_edge.discovery.Discovery`.
"""

from __future__ import annotations

from .kinds import COUNT, FILE, LISTEN, SECONDS, SECRET, SIZE, PeerAddress
from .options import option, options, pick

__all__ = ["CoordinatorOptions"]

_MiB = 1024 * 1024


@options
class CoordinatorOptions:
    """How the coordinator batches the log, checkpoints, buffers output and meets its peers."""

    listen: PeerAddress | None = option(
        default=None,
        kind=LISTEN,
        flag="--listen",
        help="accept calls from peers here",
        example="127.0.0.1:7001",
    )
    checkpoint_bytes: int = option(
        default=64 * _MiB,
        kind=SIZE,
        flag="--checkpoint-bytes",
        help="checkpoint when the log since the last checkpoint passes SIZE",
    )
    keep_checkpoints: int = option(
        default=2,
        kind=COUNT,
        flag="--keep-checkpoints",
        metavar="K",
        help="keep the newest K checkpoints and the logs after them",
    )
    # Out of repr: settings get logged and printed, the secret must not be. No flag either: a
    # secret on the command line is visible to every user of the machine, so --secret-env
    # (SecretSource) names a variable instead.
    secret: str | None = option(
        default=None,
        kind=SECRET,
        repr=False,
        help="the deployment secret peers must share",
        cli_example="--secret-env MY_SECRET",
        toml_example='secret_env = "MY_SECRET"',
    )
    page_bytes: int = option(
        default=4 * _MiB, kind=SIZE, flag="--page-bytes", help="largest log page / input batch"
    )
    buffer_bytes: int = option(
        default=64 * _MiB,
        kind=SIZE,
        flag="--buffer-bytes",
        help="unacknowledged output kept per peer before callers wait",
    )

    # Limits on connections that have not been through the handshake (docs/protocol.md 4.6):
    # a stranger on the network can open them, so they must not cost much or last.
    handshake_timeout: float = option(
        default=10.0,
        kind=SECONDS,
        flag="--handshake-timeout",
        help="close a connection whose peer has not authenticated within SECONDS",
        example=10,
    )
    max_handshakes: int = option(
        default=64,
        kind=COUNT,
        flag="--max-handshakes",
        help="accept at most N connections at once that have not finished the handshake",
        example=64,
    )

    # TLS between coordinators (ambrosia_edge/tls.py): all three, or none.
    tls_cert: str | None = option(
        default=None,
        kind=FILE,
        flag="--tls-cert",
        help="this immortal's TLS certificate (PEM), for its name; with --tls-key and --tls-ca",
        example="server.pem",
    )
    tls_key: str | None = option(
        default=None,
        kind=FILE,
        flag="--tls-key",
        help="the private key of --tls-cert (PEM)",
        example="server.key",
    )
    tls_ca: str | None = option(
        default=None,
        kind=FILE,
        flag="--tls-ca",
        help="the CA (PEM) that peers' certificates must be signed by",
        example="ca.pem",
    )

    @classmethod
    def from_settings(cls, settings: CoordinatorOptions) -> CoordinatorOptions:
        """The coordinator's part of the settings (a ``Settings`` is every component's options
        in one), and only that."""
        return pick(cls, settings)
