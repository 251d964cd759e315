"""Proxies: how an immortal names another (or itself) and calls its methods.

A proxy turns attribute access into calls on its :class:`~ambrosia_edge.host.Host`, the
protocol the executor satisfies; it never imports the executor itself.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from .host import Host


class Proxy:
    """``proxy.method(...)`` is an awaited call; ``proxy.fork.method(...)`` a fire-and-forget one.

    A proxy is part of state like any value (it encodes as the target's name), so immortals can
    keep handles to each other across checkpoints.
    """

    __slots__ = ("__ambrosia_proxy_name__", "_cls", "_host", "fork")

    def __init__(self, host: Host, name: str, cls: type | None = None) -> None:
        self._host = host
        self._cls = cls
        self.__ambrosia_proxy_name__ = name
        #: ``proxy.fork.method(...)``: the fire-and-forget form of the same calls
        self.fork = ForkProxy(self)

    def __getattr__(self, method: str) -> Callable[..., Awaitable[Any]]:
        if method.startswith("_"):
            raise AttributeError(method)
        host, name, cls = self._host, self.__ambrosia_proxy_name__, self._cls

        def call(*args: Any, **kwargs: Any) -> Awaitable[Any]:
            return host.request(name, cls, method, args, kwargs)

        return call

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Proxy)
            and other.__ambrosia_proxy_name__ == self.__ambrosia_proxy_name__
        )

    def __hash__(self) -> int:
        return hash(("proxy", self.__ambrosia_proxy_name__))

    def __repr__(self) -> str:
        return f"<proxy to immortal {self.__ambrosia_proxy_name__!r}>"


class ForkProxy:
    """``proxy.fork.method``: the method's callable is made once, then found like an attribute.

    Producers fork in tight loops. Once made, the callable is stored in the instance's
    ``__dict__`` under the method's name, so later lookups never reach ``__getattr__`` (which
    Python only calls after a failed lookup, at the price of an exception raised inside).
    """

    def __init__(self, proxy: Proxy) -> None:
        self._proxy = proxy

    def __getattr__(self, method: str) -> Callable[..., None]:
        if method.startswith("_"):
            raise AttributeError(method)
        proxy = self._proxy
        call = proxy._host.forker(proxy.__ambrosia_proxy_name__, proxy._cls, method)
        self.__dict__[method] = call
        return call
