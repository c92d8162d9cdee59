"""tunnel.http_client / async_http_client wiring (wgmagic/runtime/services/http.py): httpx's transport gets the
tunnel's httpcore network backend, connection failures come back as httpx's own errors naming the target, and
what would route around the tunnel is refused. Real HTTPS through a real tunnel: tests/integration/test_every_tool.py.
"""

from __future__ import annotations

import asyncio

import pytest

httpx = pytest.importorskip("httpx")

from wgmagic.runtime.services.http import (  # noqa: E402
    AsyncTunnelBackend,
    TunnelBackend,
    async_http_client,
    http_client,
)


class RefusingTunnel:
    def __init__(self) -> None:
        self.asked: list[tuple[str, int, float]] = []

    def open_connection(self, host: str, port: int, timeout: float | None = 15.0):
        self.asked.append((host, port, timeout))
        raise ConnectionRefusedError(f"{host}:{port} refused the connection (reached through tunnel 'wg1')")


def test_the_transport_uses_the_tunnel_backend():
    tunnel = RefusingTunnel()
    with http_client(tunnel, timeout=3) as client:
        assert isinstance(client._transport._pool._network_backend, TunnelBackend)
        with pytest.raises(httpx.ConnectError, match=r"api\.internal:443 refused"):
            client.get("https://api.internal/x")
    assert tunnel.asked == [("api.internal", 443, 3)]


def test_async_transport_uses_the_tunnel_backend():
    tunnel = RefusingTunnel()

    async def go() -> None:
        async with async_http_client(tunnel, timeout=3) as client:
            assert isinstance(client._transport._pool._network_backend, AsyncTunnelBackend)
            with pytest.raises(httpx.ConnectError, match=r"api\.internal:8080 refused"):
                await client.get("http://api.internal:8080/x")

    asyncio.run(go())
    assert tunnel.asked == [("api.internal", 8080, 3)]


def test_timeouts_become_connect_timeouts():
    class Silent:
        def open_connection(self, host, port, timeout=15.0):
            raise TimeoutError(f"connecting to {host}:{port} timed out")

    with http_client(Silent()) as client, pytest.raises(httpx.ConnectTimeout, match="timed out"):
        client.get("http://api.internal/")


@pytest.mark.parametrize("option", ["transport", "proxy", "mounts"])
def test_routing_around_the_tunnel_is_refused(option):
    with pytest.raises(TypeError, match=option):
        http_client(RefusingTunnel(), **{option: None})
