"""Other libraries' clients through a tunnel: connection strings, SQLAlchemy engines, httpx clients.

Owns: the typed entry points `Tunnel.url`, `Tunnel.engine`, `Tunnel.http_client` and
`Tunnel.async_http_client` call, and the check that the optional packages they need are installed (the
`tools` extra). The work is in runtime/services/routing.py (forwards reused per target) and
runtime/services/http.py (httpcore's network backend over `Tunnel.open_connection`). Never: parsing
connection strings (wgmagic/connstr.py) or importing sqlalchemy/httpx before they are asked for.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from wgmagic.errors import import_optional

if TYPE_CHECKING:
    import httpx
    import sqlalchemy

    from wgmagic.runtime.tunnel import Tunnel


def routed_url(tunnel: Tunnel, url_or_dsn: str, *, local: str = "auto") -> str:
    """`url_or_dsn` with its host a forward of `tunnel` (see Tunnel.url)."""
    from wgmagic.runtime.services.routing import route_url

    return route_url(tunnel, url_or_dsn, local=local)


def sqlalchemy_engine(tunnel: Tunnel, url: str, **kwargs: Any) -> sqlalchemy.engine.Engine:
    """A sqlalchemy.Engine whose pooled connections go through `tunnel` (see Tunnel.engine)."""
    from wgmagic.runtime.services.routing import create_engine

    engine: sqlalchemy.engine.Engine = create_engine(tunnel, url, **kwargs)
    return engine


def require_httpx(feature: str) -> None:
    """MissingDependencyError (naming the `tools` extra and `feature`) unless httpx, httpcore and anyio import."""
    for module in ("httpx", "httpcore", "anyio"):
        import_optional(module, "tools", feature)


def http_client(tunnel: Tunnel, **kwargs: Any) -> httpx.Client:
    """An httpx.Client through `tunnel` (see Tunnel.http_client); MissingDependencyError without httpx."""
    require_httpx("tunnel.http_client()")
    from wgmagic.runtime.services.http import http_client as make

    client: httpx.Client = make(tunnel, **kwargs)
    return client


def async_http_client(tunnel: Tunnel, **kwargs: Any) -> httpx.AsyncClient:
    """An httpx.AsyncClient through `tunnel` (see Tunnel.async_http_client)."""
    require_httpx("tunnel.async_http_client()")
    from wgmagic.runtime.services.http import async_http_client as make

    client: httpx.AsyncClient = make(tunnel, **kwargs)
    return client
