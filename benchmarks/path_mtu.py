"""A 4 MiB download through wgmagic with and without a path-MTU black hole (issue 23 item 4), on the test bed.

Root; brings up the bed. Rows: the relay with no size limit; the relay dropping every outer datagram over 1372
bytes (UDP payload) with the black-hole handling on; the same with it off (what wgmagic did before: the
receive side never reports, the send side never falls back), bounded by a deadline.

    .venv/bin/python -m benchmarks.path_mtu
"""

from __future__ import annotations

import hashlib
import struct
import time

from tests.testbed import streams
from tests.testbed.bed import TestBed, clean_leftovers
from wgmagic.netstack.tcp import pmtu
from wgmagic.runtime.tunnel import connect

SIZE = 4 * 1024 * 1024
LIMIT = 1372
DEADLINE = 30.0


def download(tun, size: int, deadline: float) -> tuple[int, float, bool]:
    """(bytes received, seconds, intact) within `deadline` seconds."""
    started = time.monotonic()
    received = 0
    digest = hashlib.sha256()
    with tun.open_connection("198.18.0.1", 9000, timeout=10) as sock:
        sock.settimeout(1.0)
        sock.sendall(struct.pack("!Q", size))
        while received < size and time.monotonic() - started < deadline:
            try:
                data = sock.recv(1 << 18)
            except TimeoutError:
                continue
            if not data:
                break
            digest.update(data)
            received += len(data)
    elapsed = time.monotonic() - started
    return received, elapsed, received == size and digest.hexdigest() == streams.stream_sha256(size)


def main() -> None:
    clean_leftovers()
    bed = TestBed().up()
    rows = []
    try:
        for name, limit, on, identity in (("no limit", 0, True, 1), (f"> {LIMIT} B dropped, handling on", LIMIT,
                                                                    True, 2),
                                          (f"> {LIMIT} B dropped, handling off (before)", LIMIT, False, 3)):
            saved = pmtu.REPORT_MTUS, pmtu.BLACK_HOLE_RTOS
            if not on:
                pmtu.REPORT_MTUS, pmtu.BLACK_HOLE_RTOS = (), 10**9
            try:
                with bed.relay(max_size=limit) as relay, \
                        connect(bed.client_config(endpoint=relay.endpoint, identity=identity)) as tun:
                    received, elapsed, intact = download(tun, SIZE, DEADLINE)
            finally:
                pmtu.REPORT_MTUS, pmtu.BLACK_HOLE_RTOS = saved
            rows.append((name, received, elapsed, intact))
    finally:
        bed.down()
    print(f"{'4 MiB download from 198.18.0.1':45} {'bytes':>9} {'seconds':>8} {'MB/s':>6} intact")
    for name, received, elapsed, intact in rows:
        print(f"{name:45} {received:9d} {elapsed:8.2f} {received / elapsed / 1e6:6.2f} {intact}")


if __name__ == "__main__":
    main()
