"""HTTP clients whose connections go through a tunnel: httpx on httpcore's network-backend hook.

httpx does the HTTP (HTTP/1.1, HTTP/2 with the `h2` extra, redirects, cookies, proxies' absence); httpcore asks
its network backend for a TCP stream per connection (`NetworkBackend.connect_tcp(host, port, timeout)`), and
the backends here answer with a socket from `Tunnel.open_connection`: the host is resolved by the tunnel's DNS
and connected through the tunnel. TLS is then started by httpcore on that stream with the URL's host as the
server name, so certificates are verified against the real name (pass `verify=` a CA file or an
ssl.SSLContext for a private CA, as with any httpx client).
"""

from __future__ import annotations

import socket
import time
from typing import TYPE_CHECKING, Any

import httpcore
from httpcore._backends.anyio import AnyIOStream
from httpcore._backends.sync import SyncStream

from wgmagic.errors import WgMagicError

if TYPE_CHECKING:
    from wgmagic.runtime.tunnel import Tunnel

DEFAULT_CONNECT_TIMEOUT = 15.0  # seconds, when httpx passes none


def _connect(tunnel: Tunnel, host: str, port: int, timeout: float | None) -> socket.socket:
    try:
        sock = tunnel.open_connection(host, port, timeout=timeout or DEFAULT_CONNECT_TIMEOUT)
    except TimeoutError as exc:
        raise httpcore.ConnectTimeout(str(exc)) from exc
    except (OSError, WgMagicError) as exc:
        raise httpcore.ConnectError(str(exc)) from exc
    sock.settimeout(None)  # httpcore sets a timeout per read and write
    return sock


class TunnelBackend(httpcore.NetworkBackend):
    """httpcore's synchronous network backend through a tunnel (for httpx.HTTPTransport)."""

    def __init__(self, tunnel: Tunnel) -> None:
        self.tunnel = tunnel

    def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
                    socket_options: Any = None) -> httpcore.NetworkStream:
        return SyncStream(_connect(self.tunnel, host, port, timeout))

    def connect_unix_socket(self, path: str, timeout: float | None = None,
                            socket_options: Any = None) -> httpcore.NetworkStream:
        raise httpcore.ConnectError("a Unix socket is on this machine, not through the tunnel")

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


class AsyncTunnelBackend(httpcore.AsyncNetworkBackend):
    """httpcore's asynchronous network backend through a tunnel (for httpx.AsyncHTTPTransport, asyncio)."""

    def __init__(self, tunnel: Tunnel) -> None:
        self.tunnel = tunnel

    async def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                          local_address: str | None = None, socket_options: Any = None) -> httpcore.AsyncNetworkStream:
        import anyio

        sock = await anyio.to_thread.run_sync(_connect, self.tunnel, host, port, timeout)
        try:
            stream = await anyio.abc.SocketStream.from_socket(sock)
        except BaseException:
            sock.close()
            raise
        return AnyIOStream(stream)

    async def connect_unix_socket(self, path: str, timeout: float | None = None,
                                  socket_options: Any = None) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("a Unix socket is on this machine, not through the tunnel")

    async def sleep(self, seconds: float) -> None:
        import anyio

        await anyio.sleep(seconds)


_TRANSPORT_OPTIONS = ("verify", "cert", "trust_env", "http1", "http2", "limits", "retries")


def _split(kwargs: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments that configure the transport (httpx passes them to its default one)."""
    return {k: kwargs[k] for k in _TRANSPORT_OPTIONS if k in kwargs}


def http_client(tunnel: Tunnel, **kwargs: Any) -> Any:
    """An httpx.Client whose every connection goes through `tunnel`; kwargs are httpx.Client's.

    `transport=` and `proxy=`/`mounts=` are refused: the transport is this tunnel's.
    """
    import httpx

    _refuse(kwargs)
    options = _split(kwargs)
    transport = httpx.HTTPTransport(**options)
    transport._pool._network_backend = TunnelBackend(tunnel)  # httpcore.ConnectionPool(network_backend=)
    return httpx.Client(transport=transport, **_client_options(kwargs))


def async_http_client(tunnel: Tunnel, **kwargs: Any) -> Any:
    """An httpx.AsyncClient (asyncio or trio through anyio) whose every connection goes through `tunnel`."""
    import httpx

    _refuse(kwargs)
    options = _split(kwargs)
    transport = httpx.AsyncHTTPTransport(**options)
    transport._pool._network_backend = AsyncTunnelBackend(tunnel)
    return httpx.AsyncClient(transport=transport, **_client_options(kwargs))


def _client_options(kwargs: dict[str, Any]) -> dict[str, Any]:
    # The transport carries verify/cert/http2...; trust_env=False: no HTTP(S)_PROXY of this machine applies.
    return {"trust_env": False, **{k: v for k, v in kwargs.items() if k not in _TRANSPORT_OPTIONS}}


def _refuse(kwargs: dict[str, Any]) -> None:
    for name in ("transport", "proxy", "proxies", "mounts"):
        if name in kwargs:
            raise TypeError(f"{name}= is not for a tunnel's HTTP client: its transport goes through the tunnel")
