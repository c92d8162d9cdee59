"""A wgmagic client for issue 23's mid-session path tests, run as its own process inside a namespace (the test
process cannot move itself into one) and steered through stdin while the test changes the path under it.

Usage: python -m tests.testbed.pathclient CONFIG VIA
  prints {"stage": "up", ...} once connected with a TCP connection open to the echo service, then for each line
  read from stdin:
  "changed"  the path just changed: a message goes out on the old connection at once (in flight through the
             outage), new connections are tried until one echoes; prints {"stage": "changed", "resumed":
             seconds, "old_ok": whether the old connection echoed it, "transport": ...}
  "udp"      wait until the tunnel is back on UDP; prints {"stage": "udp", "seconds": ..., "transport": ...,
             "query_ok": ...}
  "quit"     close and exit.
Each output line is one JSON object; log lines at WARNING and above ($PATHCLIENT_LOG: another level) go to
stderr.
"""

from __future__ import annotations

import json
import logging
import socket
import sys
import time

PEER4 = "198.18.0.1"
ECHO = 9001
DEADLINE = 90.0  # seconds: generous bounds, never a timing threshold; the tests assert their own


def _report(**fields: object) -> None:
    print(json.dumps(fields, default=str), flush=True)


def _echo(sock: socket.socket, message: bytes, timeout: float) -> bool:
    sock.settimeout(timeout)
    sock.sendall(message)
    got = b""
    while len(got) < len(message):
        chunk = sock.recv(len(message) - len(got))
        if not chunk:
            return False
        got += chunk
    return got == message


def _query(tunnel, timeout: float = 5.0) -> bool:
    try:
        with tunnel.open_connection(PEER4, ECHO, timeout=timeout) as sock:
            return _echo(sock, b"query", timeout)
    except OSError:
        return False


def _status(tunnel) -> str:
    """What `%wg status` shows for the tunnel."""
    from wgmagic.notebook.status import TunnelStatus

    return repr(TunnelStatus.of(tunnel))


def main(argv: list[str]) -> int:
    import os

    logging.basicConfig(level=os.environ.get("PATHCLIENT_LOG", "WARNING"), stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    config, via = argv[0], argv[1]
    from wgmagic.runtime.tunnel import connect

    with connect(config, via=via, timeout=20) as tunnel:
        old = tunnel.open_connection(PEER4, ECHO, timeout=20)
        _report(stage="up", transport=tunnel.transport_description, old_ok=_echo(old, b"before", 10))
        for line in sys.stdin:
            command = line.strip()
            if command == "changed":
                started = time.monotonic()
                old.settimeout(DEADLINE)
                old.sendall(b"in flight through the change")  # retransmitted by the inner TCP across it
                resumed = None
                while time.monotonic() - started < DEADLINE:
                    if _query(tunnel):
                        resumed = time.monotonic() - started
                        break
                    time.sleep(0.5)
                try:
                    got = b""
                    while len(got) < 28:
                        chunk = old.recv(28 - len(got))
                        if not chunk:
                            break
                        got += chunk
                    old_ok = got == b"in flight through the change" and _echo(old, b"after", 10)
                except OSError as exc:
                    old_ok = f"{type(exc).__name__}: {exc}"
                _report(stage="changed", resumed=resumed, old_ok=old_ok, transport=tunnel.transport_description,
                        status=_status(tunnel),
                        counters=tunnel.stats()["counters"], peer=tunnel.peer_report())
            elif command == "udp":
                started = time.monotonic()
                while (time.monotonic() - started < DEADLINE
                       and not tunnel.transport_description.startswith("UDP")):
                    time.sleep(0.2)
                seconds = time.monotonic() - started
                _report(stage="udp", seconds=seconds, transport=tunnel.transport_description, status=_status(tunnel),
                        query_ok=_query(tunnel), old_ok=_echo(old, b"still", 10),
                        counters=tunnel.stats()["counters"])
            elif command == "quit":
                break
        old.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
