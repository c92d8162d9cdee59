"""An independent server of Fly.io's WireGuard-over-WebSocket framing, for issue 23's tests: it plays Fly's
gateway in front of the bed's wireguard-go. Written from the framing's description (flyctl `wg/ws.go`), not
from wgmagic's code, so a test through it checks wgmagic's client against the framing, not against itself.

Usage: python -m tests.testbed.flyserver LISTEN_HOST UPSTREAM_HOST:PORT [SEED] [--port N] [--tls CERT KEY]
Prints "flyserver listening on HOST:PORT" once it accepts WebSockets (an ephemeral port unless --port; wss with
--tls, as Fly's gateways on 443), then serves until killed. Per WebSocket: expects the 4-byte magic 2F AC ED 77,
then 4-byte big-endian lengths and datagrams, all in text messages read as one byte stream; forwards each
datagram over UDP to the upstream from a socket of its own; sends each UDP reply back as a record, cutting the
outgoing byte stream into text messages at random places (seeded), and merging records now and then; a
zero-length record every second with nothing sent.
"""

from __future__ import annotations

import asyncio
import random
import socket
import struct
import sys

MAGIC = 0x2FACED77


class _Upstream(asyncio.DatagramProtocol):
    def __init__(self, deliver) -> None:
        self.deliver = deliver

    def datagram_received(self, data: bytes, addr) -> None:
        self.deliver(data)


async def _session(websocket, upstream: tuple[str, int], rng: random.Random) -> None:
    loop = asyncio.get_running_loop()
    outgoing: asyncio.Queue[bytes] = asyncio.Queue(maxsize=1024)

    def deliver(datagram: bytes) -> None:
        if not outgoing.full():
            outgoing.put_nowait(struct.pack(">I", len(datagram)) + datagram)

    family = socket.AF_INET6 if ":" in upstream[0] else socket.AF_INET
    transport, _ = await loop.create_datagram_endpoint(lambda: _Upstream(deliver), family=family,
                                                       remote_addr=upstream)

    async def writer() -> None:
        pending = b""
        while True:
            try:
                record = await asyncio.wait_for(outgoing.get(), timeout=1.0)
            except asyncio.TimeoutError:
                record = b"\x00\x00\x00\x00"  # keepalive
            pending += record
            while not outgoing.empty() and rng.random() < 0.5:  # merge records into one message
                pending += outgoing.get_nowait()
            # cut at a random place (inside a length, inside a datagram): the rest waits for the next turn,
            # unless nothing else is queued
            cut = rng.randint(1, len(pending))
            await websocket.send(pending[:cut], text=True)
            pending = pending[cut:]
            if pending and outgoing.empty():
                await websocket.send(pending, text=True)
                pending = b""

    write_task = asyncio.ensure_future(writer())
    stream = b""
    seen_magic = False
    try:
        while True:
            message = await websocket.recv(decode=False)
            stream += message if isinstance(message, bytes) else message.encode()
            if not seen_magic:
                if len(stream) < 4:
                    continue
                if struct.unpack(">I", stream[:4])[0] != MAGIC:
                    await websocket.close(1002, "bad magic")
                    return
                stream = stream[4:]
                seen_magic = True
            while len(stream) >= 4:
                (length,) = struct.unpack(">I", stream[:4])
                if length > 65535:
                    await websocket.close(1002, "record too long")
                    return
                if len(stream) < 4 + length:
                    break
                datagram, stream = stream[4:4 + length], stream[4 + length:]
                if datagram:
                    transport.sendto(datagram)
    except Exception:  # the WebSocket closed
        pass
    finally:
        write_task.cancel()
        transport.close()


async def _main(listen_host: str, upstream: tuple[str, int], seed: int, port: int,
                tls: tuple[str, str] | None) -> None:
    import ssl

    from websockets.asyncio.server import serve

    rng = random.Random(seed)
    context = None
    if tls:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(*tls)
    async with serve(lambda ws: _session(ws, upstream, rng), listen_host, port, max_size=None,
                     compression=None, ssl=context) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        host = f"[{listen_host}]" if ":" in listen_host else listen_host
        print(f"flyserver listening on {host}:{port}", flush=True)
        await asyncio.Future()


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(prog="flyserver")
    parser.add_argument("listen_host")
    parser.add_argument("upstream")
    parser.add_argument("seed", nargs="?", type=int, default=1)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--tls", nargs=2, metavar=("CERT", "KEY"))
    args = parser.parse_args(sys.argv[1:])
    host, _, port = args.upstream.rpartition(":")
    asyncio.run(_main(args.listen_host, (host.strip("[]"), int(port)), args.seed, args.port,
                      tuple(args.tls) if args.tls else None))


if __name__ == "__main__":
    main()
