"""Proxies: how an immortal names another (or itself) and calls its methods."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .executor import Host


class Proxy:
    """``proxy.method(...)`` is an awaited call; ``proxy.fork.method(...)`` a fire-and-forget one.

    A proxy is part of state like any value (it encodes as the target's name), so immortals can
    keep handles to each other across checkpoints.
    """

    __slots__ = ("__ambrosia_proxy_name__", "_cls", "_fork", "_host")

    def __init__(self, host: Host, name: str, cls: type | None = None) -> None:
        self._host = host
        self._cls = cls
        self._fork: ForkProxy | None = None
        self.__ambrosia_proxy_name__ = name

    def __getattr__(self, method: str) -> Callable[..., Awaitable[Any]]:
        if method.startswith("_"):
            raise AttributeError(method)
        host, name, cls = self._host, self.__ambrosia_proxy_name__, self._cls

        def call(*args: Any, **kwargs: Any) -> Awaitable[Any]:
            return host.request(name, cls, method, args, kwargs)

        return call

    @property
    def fork(self) -> ForkProxy:
        fork = self._fork
        if fork is None:
            fork = self._fork = ForkProxy(self)
        return fork

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
    """Method callables are made once per proxy and method: producers fork in tight loops."""

    __slots__ = ("_calls", "_proxy")

    def __init__(self, proxy: Proxy) -> None:
        self._proxy = proxy
        self._calls: dict[str, Callable[..., None]] = {}

    def __getattr__(self, method: str) -> Callable[..., None]:
        cached = self._calls.get(method)
        if cached is not None:
            return cached
        if method.startswith("_"):
            raise AttributeError(method)
        proxy = self._proxy
        host, name, cls = proxy._host, proxy.__ambrosia_proxy_name__, proxy._cls

        def call(*args: Any, **kwargs: Any) -> None:
            host.fork(name, cls, method, args, kwargs)

        self._calls[method] = call
        return call
