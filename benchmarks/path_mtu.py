"""A 4 MiB download and a 1,000,000-row %%wgsql through wgmagic with and without a path-MTU black hole (issue 23
item 4), on the test bed.

Root; brings up the bed. Rows: the relay with no size limit; the relay dropping every outer datagram over 1372
bytes (UDP payload) with the black-hole handling on; for the download, the same with it off (what wgmagic did
before: the receive side never reports, the send side never falls back), bounded by a deadline. Each row uses
its own client key and address (a host told of the black hole keeps the lower MTU toward that address).

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
    rows: list[tuple[str, int, float, bool]] = []
    sql_rows: list[tuple[str, int, float]] = []
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
        bed.ensure_big_table(1_000_000)
        for name, limit, identity in (("no limit", 0, 4), (f"> {LIMIT} B dropped", LIMIT, 5)):
            with bed.relay(max_size=limit) as relay:
                sql_rows.append((name, *wgsql(bed, relay.endpoint, identity)))
    finally:
        bed.down()
    print(f"{'4 MiB download from 198.18.0.1':45} {'bytes':>9} {'seconds':>8} {'MB/s':>6} intact")
    for name, received, elapsed, intact in rows:
        print(f"{name:45} {received:9d} {elapsed:8.2f} {received / elapsed / 1e6:6.2f} {intact}")
    print(f"{'%%wgsql SELECT * FROM big (1,000,000 rows)':45} {'rows':>9} {'seconds':>8}")
    for name, count, elapsed in sql_rows:
        print(f"{name:45} {count:9d} {elapsed:8.2f}")


def wgsql(bed: TestBed, endpoint: str, identity: int) -> tuple[int, float]:
    """(rows, seconds) of `%%wgsql SELECT id, x, label, at, flag FROM big` in an IPython shell."""
    from tests.integration.helpers import magic_shell

    config = bed.client_config(endpoint=endpoint, identity=identity)
    with magic_shell(bed, bench_config=config, dsn=bed.dsn()) as shell:
        assert shell.run_cell("%wg connect {bench_config} --name bench").success
        assert shell.run_cell("%%wgsql {dsn} --tunnel bench\nSELECT 1").success
        started = time.monotonic()
        result = shell.run_cell("%%wgsql {dsn} --tunnel bench\nSELECT id, x, label, at, flag FROM big")
        elapsed = time.monotonic() - started
        assert result.success, result.error_in_exec
        return len(result.result), elapsed


if __name__ == "__main__":
    main()
