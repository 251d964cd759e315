"""The web page's options, declared apart from the page so that reading them imports no web stack.

``ambrosia-edge --help``, the config loader and a process without ``--ui`` read these
declarations without importing Starlette or Hypercorn (a small board starts faster without
them); the page itself, :mod:`ambrosia_edge.transports.web`, is imported only when ``--ui`` is
given.
"""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING, Any

from .kinds import LISTEN, SECRET, PeerAddress
from .options import option, options

if TYPE_CHECKING:
    from .sources import ImpulseSource

__all__ = ["UI_TOKEN_ENV", "UiOptions", "is_loopback", "web_source"]

#: Environment variable read when the config gives no token.
UI_TOKEN_ENV = "AMBROSIA_EDGE_UI_TOKEN"


def is_loopback(host: str) -> bool:
    """Whether only this machine can reach ``host`` (``localhost``, 127.0.0.0/8, ``::1``)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name other than localhost may resolve to anything


@options
class UiOptions:
    """Where the web page that shows the immortal and sends it impulses listens."""

    ui: PeerAddress | None = option(
        default=None,
        kind=LISTEN,
        flag="--ui",
        help="serve a web page that shows the immortal and sends it impulses at HOST:PORT "
        "(off unless given; beyond loopback it asks for a token, printed at start)",
        example="127.0.0.1:8080",
    )
    # No flag: a token on the command line is visible to every user of the machine.
    ui_token: str | None = option(
        default=None,
        kind=SECRET,
        repr=False,
        help=f"token the page asks for when --ui listens beyond loopback (or ${UI_TOKEN_ENV}; "
        "default: a new one, printed at start)",
        toml_example=f"# export {UI_TOKEN_ENV}=...",
    )


def web_source(settings: Any, runtime: Any) -> ImpulseSource:
    """The page for ``settings`` (a :class:`UiOptions`), showing ``runtime``; imports the web
    stack only now."""
    from .sources import source_factory

    source: ImpulseSource = source_factory("ui").from_options(settings, runtime)
    return source
