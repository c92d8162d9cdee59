"""relay.py: HappyEyeballs (RFC 8305 section 5) and SocketRelay, on a real asyncio loop with local socket pairs,
through an Engine whose peer host is in-process (tests/unit/memory_net.py)."""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import os
import socket

import pytest

from tests.unit.memory_net import DOWNLOAD_PORT, ECHO_PORT, PEER_HOST, MemoryNet, handshake
from wgmagic.runtime.relay import HappyEyeballs, SocketRelay

SILENT = ipaddress.ip_address("198.18.0.99")  # routed through the tunnel, but nobody has it: SYNs go unanswered


def run(coro_factory, **net_options):
    async def main():
        net = MemoryNet(asyncio.get_running_loop(), **net_options)
        try:
            await handshake(net)
            return await coro_factory(net)
        finally:
            net.close()

    return asyncio.run(main())


def connect(net, addresses, port, *, delay=0.25, timeout=5.0):
    loop = asyncio.get_running_loop()
    outcome = loop.create_future()
    attempt = HappyEyeballs(net.engine, addresses, port, timeout, outcome.set_result,
                            lambda error: outcome.set_exception(error), delay=delay)
    return attempt, outcome


def test_happy_eyeballs_moves_on_after_the_attempt_delay_and_resets_the_loser():
    async def scenario(net):
        attempt, outcome = connect(net, [SILENT, PEER_HOST], ECHO_PORT, delay=0.05)
        assert len(attempt.attempts) == 1  # one attempt at a time until the delay passes
        conn = await asyncio.wait_for(outcome, 10)
        assert conn.remote[0] == PEER_HOST and attempt.winner is conn and attempt.done
        assert attempt.attempts == [a for a in attempt.attempts if a.conn is conn]  # the silent one was reset
        assert all(id(a.conn) not in net.engine.streams for a in attempt.attempts)
        return True

    assert run(scenario)


def test_happy_eyeballs_reports_the_most_preferred_addresss_error_once_all_failed():
    async def scenario(net):
        # Port 1 of the peer host answers with a RST at once: refused; the silent address times out.
        attempt, outcome = connect(net, [PEER_HOST, SILENT], 1, delay=0.05, timeout=0.5)
        with pytest.raises(ConnectionRefusedError):
            await asyncio.wait_for(outcome, 10)
        assert attempt.done and [index for index, _ in sorted(attempt.errors, key=lambda e: e[0])] == [0, 1]

    run(scenario)


def test_happy_eyeballs_with_no_usable_address_fails_at_once():
    async def scenario(net):
        _, outcome = connect(net, [ipaddress.ip_address("fd00::1")], 80)  # no IPv6 Address: tcp_connect raises
        with pytest.raises(OSError):
            await asyncio.wait_for(outcome, 1)

    run(scenario)


async def relay_to(net, port):
    """A SocketRelay made in HappyEyeballs' on_connected, as forwards make theirs: no event is missed between."""
    loop = asyncio.get_running_loop()
    ours, theirs = socket.socketpair()
    done, made = loop.create_future(), loop.create_future()

    def connected(conn):
        made.set_result(SocketRelay(net.engine, theirs, conn, connected=True, on_done=done.set_result,
                                    wake_local_peer=lambda: ours.send(b"\0")))

    HappyEyeballs(net.engine, [PEER_HOST], port, 5.0, connected, made.set_exception)
    relay = await asyncio.wait_for(made, 10)
    reader, writer = await asyncio.open_connection(sock=ours)
    return relay, reader, writer, done


def test_socket_relay_echoes_both_ways_and_ends_cleanly():
    async def scenario(net):
        relay, reader, writer, done = await relay_to(net, ECHO_PORT)
        payload = os.urandom(300_000)
        writer.write(payload)
        await writer.drain()
        echoed = await asyncio.wait_for(reader.readexactly(len(payload)), 20)
        assert echoed == payload
        writer.write_eof()
        assert await asyncio.wait_for(reader.read(), 10) == b""  # the far end's FIN, after the echo
        await asyncio.wait_for(done, 10)
        assert relay.done and (relay.bytes_up, relay.bytes_down) == (len(payload), len(payload))
        assert relay.pending == b"" and id(relay.conn) not in net.engine.streams
        writer.close()

    run(scenario)


def test_socket_relay_download_larger_than_the_local_buffer_arrives_whole():
    data = os.urandom(3_000_000)

    async def scenario(net):
        relay, reader, writer, _done = await relay_to(net, DOWNLOAD_PORT)
        received = bytearray()
        while len(received) < len(data):
            chunk = await asyncio.wait_for(reader.read(1 << 16), 20)
            assert chunk
            received += chunk
            await asyncio.sleep(0)  # a slow reader: the relay's pending part waits for the socket
        assert bytes(received) == data
        assert await asyncio.wait_for(reader.read(), 10) == b""
        assert relay.bytes_down == len(data)
        writer.close()

    run(scenario, download=data)


def test_a_reset_from_the_far_end_reaches_the_local_client_as_a_reset_after_the_data():
    data = os.urandom(100_000)

    async def scenario(net):
        net.reset_next = True
        _relay, reader, writer, _done = await relay_to(net, DOWNLOAD_PORT)
        received = bytearray()
        with pytest.raises(ConnectionResetError) as caught:
            while True:
                chunk = await asyncio.wait_for(reader.read(1 << 16), 20)
                if not chunk:
                    break  # a clean end of stream would make a truncated transfer look complete
                received += chunk
        assert caught.value.errno in (None, errno.ECONNRESET)
        assert bytes(received) == data[:len(received)]
        writer.close()

    run(scenario, download=data)
