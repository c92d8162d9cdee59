"""The test bed's private HTTPS API (api.internal): a small JSON service with a certificate for its private name
signed by the bed's CA, run inside the peer's namespace on port 443 of the peer's addresses.

  GET /hello        {"hello": "from the private network", "host": <Host header>}
  GET /rows?n=N     {"rows": [0, 1, ..., N-1]}  (N <= 100000)
  POST /echo        the request body back, as application/octet-stream

Usage: python -m tests.testbed.https CERT KEY ADDRESS [ADDRESS ...]; prints `ready` once listening.
"""

from __future__ import annotations

import http.server
import json
import socket
import ssl
import sys
import threading
from urllib.parse import parse_qs, urlsplit

PORT = 443


class _Api(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _send(self, body: bytes, content_type: str = "application/json", status: int = 200) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        if parts.path == "/hello":
            self._send(json.dumps({"hello": "from the private network", "host": self.headers.get("Host")}).encode())
        elif parts.path == "/rows":
            n = min(int(parse_qs(parts.query).get("n", ["10"])[0]), 100_000)
            self._send(json.dumps({"rows": list(range(n))}).encode())
        else:
            self._send(b'{"error": "not found"}', status=404)

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self._send(self.rfile.read(length), "application/octet-stream")

    def log_message(self, *args: object) -> None:
        pass


class _Server6(http.server.ThreadingHTTPServer):  # daemon threads, as the IPv4 one
    address_family = socket.AF_INET6


def main(cert: str, key: str, addresses: list[str]) -> None:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    for address in addresses:
        server_class = _Server6 if ":" in address else http.server.ThreadingHTTPServer
        try:
            server = server_class((address, PORT), _Api)
        except OSError as exc:
            sys.exit(f"https: cannot listen on {address}:{PORT}: {exc.strerror or exc}")
        server.socket = context.wrap_socket(server.socket, server_side=True)
        threading.Thread(target=server.serve_forever, daemon=True).start()
    print("ready", flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3:])
