"""TLS between coordinators: the settings' three files made into the two contexts a transport
needs, and the check that a peer's certificate is for the immortal it claims to be.

With ``--tls-cert``, ``--tls-key`` and ``--tls-ca`` every link is TLS with mutual authentication:
each end presents a certificate signed by the deployment's CA. The sender checks the receiver's
certificate against the name it dials (as a browser checks a host name); the receiver, which
learns who is calling only from the HELLO, checks the sender's certificate against the name the
HELLO claims (:func:`check_claim`). Frames after the handshake are then authenticated and
encrypted, which the shared secret alone does not give (docs/protocol.md 4.15).
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import Any

from .errors import AuthenticationError, ConfigError

__all__ = ["TlsFiles", "certificate_names", "check_claim", "tls_files"]


@dataclass(frozen=True)
class TlsFiles:
    """The certificate and key of this immortal, and the CA its peers' certificates must be
    signed by (PEM files)."""

    cert: str
    key: str
    ca: str

    def server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.verify_mode = ssl.CERT_REQUIRED  # mutual: a sender without one is refused
        return self._load(context)

    def client_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
        context.check_hostname = True  # against the immortal name dialled
        return self._load(context)

    def _load(self, context: ssl.SSLContext) -> ssl.SSLContext:
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            context.load_cert_chain(self.cert, self.key)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(
                f"cannot load the TLS certificate {self.cert} with key {self.key}: {exc} "
                "(--tls-cert, --tls-key: PEM files, the key matching the certificate)"
            ) from None
        try:
            context.load_verify_locations(cafile=self.ca)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(
                f"cannot load the TLS CA {self.ca}: {exc} (--tls-ca: a PEM file)"
            ) from None
        return context


def tls_files(cert: str | None, key: str | None, ca: str | None) -> TlsFiles | None:
    """The three settings as one, or None without TLS; a ConfigError if only some are given."""
    given = {"--tls-cert": cert, "--tls-key": key, "--tls-ca": ca}
    missing = [flag for flag, value in given.items() if not value]
    if len(missing) == 3:
        return None
    if missing:
        raise ConfigError(
            f"TLS needs --tls-cert, --tls-key and --tls-ca together; {', '.join(missing)} "
            "missing (or tls_cert, tls_key, tls_ca in the config file)"
        )
    assert cert and key and ca
    return TlsFiles(cert, key, ca)


def certificate_names(cert: dict[str, Any] | None) -> frozenset[str]:
    """The DNS names a peer certificate (``SSLSocket.getpeercert()``) is for: its
    subjectAltName entries, or its common name if it has none."""
    if not cert:
        return frozenset()
    names = [value for kind, value in cert.get("subjectAltName", ()) if kind == "DNS"]
    if not names:
        names = [v for rdn in cert.get("subject", ()) for k, v in rdn if k == "commonName"]
    return frozenset(name.lower() for name in names)


def check_claim(names: frozenset[str] | None, claimed: str, peer: str) -> None:
    """Refuse a sender whose certificate is not for the immortal its HELLO claims to be
    (``names`` is None on a link without TLS: nothing to check)."""
    if names is not None and claimed.lower() not in names:
        shown = ", ".join(sorted(names)) or "no name"
        raise AuthenticationError(
            f"the TLS certificate of {peer} is for {shown}, not for {claimed!r}, which it "
            "claims to be"
        )
