"""listener.accept_pending: the one accept loop of every local service (forward, SOCKS5 proxy)."""

from __future__ import annotations

import socket

from wgmagic.runtime.services.listener import ACCEPT_BATCH, accept_pending


def _listener(backlog: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))  # an ephemeral port
    sock.listen(backlog)
    sock.setblocking(False)
    return sock


def test_hands_every_waiting_client_to_the_service_at_most_a_batch_per_call():
    listener = _listener(ACCEPT_BATCH + 16)
    clients = [socket.create_connection(listener.getsockname(), timeout=5) for _ in range(ACCEPT_BATCH + 6)]
    handed: list[tuple[socket.socket, object]] = []
    try:
        assert accept_pending(listener, lambda sock, peer: handed.append((sock, peer)))
        assert len(handed) == ACCEPT_BATCH  # the loop calls again for the rest
        assert accept_pending(listener, lambda sock, peer: handed.append((sock, peer)))
        assert len(handed) == ACCEPT_BATCH + 6
        assert {peer for _, peer in handed} == {c.getsockname() for c in clients}
        assert accept_pending(listener, lambda sock, peer: handed.append((sock, peer)))  # nothing waits
        assert len(handed) == ACCEPT_BATCH + 6
    finally:
        for sock in [listener, *clients, *(s for s, _ in handed)]:
            sock.close()


def test_an_accept_error_is_reported_for_the_service_to_count():
    listener = _listener(1)
    listener.close()  # accept() now fails with EBADF
    assert accept_pending(listener, lambda sock, peer: None) is False
