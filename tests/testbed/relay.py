"""A seeded UDP impairment relay: loss, delay with jitter, reordering and duplication, per direction.

This kernel has no netem, so the test bed puts this between the client and the peer's UDP port. It runs as
its own process so it never competes for the GIL with the code under test.

Usage: python -m tests.testbed.relay LISTEN_PORT TARGET_PORT JSON_SETTINGS
LISTEN_PORT 0 (what the bed passes): the kernel picks a free port; the first line on stdout is `ready PORT`,
or the process exits with status 1 and `relay: cannot bind 127.0.0.1:PORT: REASON` on stderr.
JSON_SETTINGS: {"seed": 1, "up": {...}, "down": {...}} with loss, delay, jitter, reorder, reorder_delay,
duplicate (probabilities and seconds), and max_size (bytes: a datagram whose UDP payload is larger is
dropped and counted, as a path whose MTU is smaller and whose ICMP "fragmentation needed" never arrives: a
path-MTU black hole; 0 = no limit); "up" is client -> peer.
"""

from __future__ import annotations

import heapq
import json
import random
import select
import signal
import socket
import sys
import time
from dataclasses import dataclass


@dataclass
class Direction:
    loss: float = 0.0
    delay: float = 0.0
    jitter: float = 0.0
    reorder: float = 0.0
    reorder_delay: float = 0.02
    duplicate: float = 0.0
    max_size: int = 0

    def schedule(self, rng: random.Random, now: float, size: int = 0) -> list[float]:
        """Send times for one datagram of `size` bytes: none if lost or too big, two if duplicated."""
        if self.max_size and size > self.max_size:
            return []
        if self.loss and rng.random() < self.loss:
            return []
        copies = 2 if self.duplicate and rng.random() < self.duplicate else 1
        times = []
        for _ in range(copies):
            delay = self.delay + (rng.uniform(-self.jitter, self.jitter) if self.jitter else 0.0)
            if self.reorder and rng.random() < self.reorder:
                delay += self.reorder_delay
            times.append(now + max(0.0, delay))
        return times


def run(listen_port: int, target_port: int, settings: dict) -> None:
    rng = random.Random(settings.get("seed", 1))
    up = Direction(**settings.get("up", {}))
    down = Direction(**settings.get("down", {}))
    listen_host = settings.get("listen", "127.0.0.1")  # another loopback address (127.0.0.2, ::1...) if given
    client_side = socket.socket(socket.AF_INET6 if ":" in listen_host else socket.AF_INET, socket.SOCK_DGRAM)
    try:
        client_side.bind((listen_host, listen_port))
    except OSError as exc:
        sys.exit(f"relay: cannot bind {listen_host}:{listen_port}: {exc.strerror or exc}")
    peer_side = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    peer_side.bind(("127.0.0.1", 0))
    for sock in (client_side, peer_side):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
        sock.setblocking(False)
    target = ("127.0.0.1", target_port)
    client: tuple[str, int] | None = None
    queue: list[tuple[float, int, bytes, int]] = []  # (when, order, data, direction 0=up 1=down)
    order = 0
    counts = {"up_in": 0, "down_in": 0, "up_out": 0, "down_out": 0, "up_too_big": 0, "down_too_big": 0}
    stop = False

    def on_signal(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    print("ready", client_side.getsockname()[1], flush=True)
    while not stop:
        now = time.monotonic()
        while queue and queue[0][0] <= now:
            _, _, data, direction = heapq.heappop(queue)
            try:
                if direction == 0:
                    peer_side.sendto(data, target)
                    counts["up_out"] += 1
                elif client is not None:
                    client_side.sendto(data, client)
                    counts["down_out"] += 1
            except OSError:
                pass
        timeout = max(0.0, queue[0][0] - now) if queue else 0.5
        readable, _, _ = select.select([client_side, peer_side], [], [], timeout)
        now = time.monotonic()
        for sock in readable:
            for _ in range(256):
                try:
                    data, addr = sock.recvfrom(65535)
                except (BlockingIOError, InterruptedError):
                    break
                except OSError:
                    break
                if sock is client_side:
                    client = addr
                    counts["up_in"] += 1
                    direction, rules = 0, up
                else:
                    counts["down_in"] += 1
                    direction, rules = 1, down
                if rules.max_size and len(data) > rules.max_size:
                    counts["down_too_big" if direction else "up_too_big"] += 1
                    continue
                for when in rules.schedule(rng, now, len(data)):
                    order += 1
                    heapq.heappush(queue, (when, order, data, direction))
    print(json.dumps(counts), flush=True)


if __name__ == "__main__":
    run(int(sys.argv[1]), int(sys.argv[2]), json.loads(sys.argv[3]))
