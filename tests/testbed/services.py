"""Small TCP services the test bed runs inside the peer's namespace (one process, a thread per connection).

  bulk source  9000: read an 8-byte big-endian N, send N bytes of the known stream, close
  echo         9001: send back whatever arrives
  sink         9002: read to EOF, answer the 64-character hex sha256 of what arrived, close
  reset        9003: read an 8-byte N, send N bytes of the known stream, wait until they are acknowledged,
                     then reset the connection (close with SO_LINGER 0: RST)
  http         8080: a tiny HTTP server (for SOCKS tests)
  udp echo     9004/udp: send each datagram back to where it came from (UDP forwards, SOCKS5 UDP ASSOCIATE)
Port 9009 stays closed on purpose.

Usage: python -m tests.testbed.services [--ephemeral] ADDRESS [ADDRESS ...]
Inside the bed's own namespace the fixed ports above are the suite's own. On a loopback this machine shares
(--ephemeral) every service binds port 0 and the kernel picks a free one. Either way the first line on stdout is
`ready {"ADDRESS": {"bulk": PORT, "echo": PORT, "sink": PORT, "http": PORT, "udp_echo": PORT, ...}}`; a bind that
fails ends the process with status 1 and `services: cannot listen on ADDRESS:PORT (NAME): REASON` on stderr.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import socket
import struct
import sys
import threading

from tests.testbed.streams import iter_stream, recv_exactly

BULK, ECHO, SINK, HTTP = 9000, 9001, 9002, 8080
RESET = 9003
UDP_ECHO = 9004


def _bulk(conn: socket.socket) -> None:
    header = recv_exactly(conn, 8)
    if len(header) < 8:
        return
    (size,) = struct.unpack("!Q", header)
    for chunk in iter_stream(size):
        conn.sendall(chunk)
    _linger(conn)


def _linger(conn: socket.socket) -> None:
    """Half-close and wait for the client's EOF before closing.

    Closing with unacknowledged data would orphan the socket, and the kernel may reset orphans under memory
    pressure (many parallel transfers): the client would then wait for data that will never come.
    """
    conn.shutdown(socket.SHUT_WR)
    conn.settimeout(120)
    while conn.recv(65536):
        pass


def _echo(conn: socket.socket) -> None:
    while True:
        data = conn.recv(65536)
        if not data:
            return
        conn.sendall(data)


def _sink(conn: socket.socket) -> None:
    digest = hashlib.sha256()
    buffer = bytearray(1 << 20)
    while True:
        n = conn.recv_into(buffer)
        if not n:
            break
        digest.update(memoryview(buffer)[:n])
    conn.sendall(digest.hexdigest().encode())
    _linger(conn)


def _reset(conn: socket.socket) -> None:
    import fcntl
    import time

    header = recv_exactly(conn, 8)
    if len(header) < 8:
        return
    for chunk in iter_stream(struct.unpack("!Q", header)[0]):
        conn.sendall(chunk)
    unacked = bytearray(4)
    for _ in range(3000):  # a reset discards unacknowledged bytes: let the client have all N first
        fcntl.ioctl(conn.fileno(), 0x5411, unacked)  # SIOCOUTQ
        if not int.from_bytes(unacked, sys.byteorder):
            break
        time.sleep(0.01)
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    conn.close()


HANDLERS = {BULK: _bulk, ECHO: _echo, SINK: _sink, RESET: _reset}


def _serve(listener: socket.socket, handler) -> None:
    while True:
        conn, _ = listener.accept()

        def run(conn: socket.socket = conn) -> None:
            with conn:
                try:
                    handler(conn)
                except OSError:
                    pass

        threading.Thread(target=run, daemon=True).start()


class _Hello(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"hello from the private network\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


class _HTTPServer6(http.server.ThreadingHTTPServer):  # daemon threads, as the IPv4 one
    address_family = socket.AF_INET6


def _udp_echo(sock: socket.socket) -> None:
    while True:
        try:
            data, source = sock.recvfrom(65535)
            sock.sendto(data, source)
        except OSError:
            pass


def _listen(address: str, port: int, name: str, family: int) -> socket.socket:
    listener = socket.socket(family, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind((address, port))
        listener.listen(512)
    except OSError as exc:
        listener.close()
        sys.exit(f"services: cannot listen on {address}:{port} ({name}): {exc.strerror or exc}")
    return listener


def main(addresses: list[str], *, ephemeral: bool = False) -> None:
    threads = []
    ports: dict[str, dict[str, int]] = {}
    for address in addresses:
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        chosen = ports.setdefault(address, {})
        for port, handler in HANDLERS.items():
            name = handler.__name__.lstrip("_")
            listener = _listen(address, 0 if ephemeral else port, name, family)
            chosen[name] = listener.getsockname()[1]
            threads.append(threading.Thread(target=_serve, args=(listener, handler), daemon=True))
        udp = socket.socket(family, socket.SOCK_DGRAM)
        try:
            udp.bind((address, 0 if ephemeral else UDP_ECHO))
        except OSError as exc:
            sys.exit(f"services: cannot listen on {address}:{UDP_ECHO}/udp (udp_echo): {exc.strerror or exc}")
        chosen["udp_echo"] = udp.getsockname()[1]
        threads.append(threading.Thread(target=_udp_echo, args=(udp,), daemon=True))
        server_class = _HTTPServer6 if family == socket.AF_INET6 else http.server.ThreadingHTTPServer
        http_port = 0 if ephemeral else HTTP
        try:
            server = server_class((address, http_port), _Hello)
        except OSError as exc:
            sys.exit(f"services: cannot listen on {address}:{http_port} (http): {exc.strerror or exc}")
        chosen["http"] = server.server_address[1]
        threads.append(threading.Thread(target=server.serve_forever, daemon=True))
    for thread in threads:
        thread.start()
    print("ready", json.dumps(ports), flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    arguments = sys.argv[1:]
    main([a for a in arguments if a != "--ephemeral"], ephemeral="--ephemeral" in arguments)
