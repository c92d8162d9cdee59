"""A wgmagic client for issue 13's tests and benchmark, run as its own process (typically inside the bed's
blocked namespace with `ip netns exec`): the test process cannot move itself into a namespace.

Usage: python -m tests.testbed.wsclient MODE CONFIG [VIA] [ARG]
  connect   CONFIG VIA [TIMEOUT]  connect, report the transport; an error is reported, not raised
  sql       CONFIG VIA DSN        %wg connect --via VIA, then %%wgsql the bed's `big` table: checksums
  download  CONFIG VIA BYTES      the bulk service's known stream, sha256 (prints "progress N" lines)
  upload    CONFIG VIA BYTES      to the sink service, which answers the sha256 of what arrived
  latency   CONFIG VIA COUNT      SELECT 1 round trips over one connection (milliseconds)
Environment: WGMAGIC_VIA_CA, HTTPS_PROXY, NO_PROXY as for any wgmagic client. The last line of output is one
JSON object.
"""

from __future__ import annotations

import hashlib
import json
import struct
import sys
import time

PEER4 = "198.18.0.1"


def _report(**fields: object) -> None:
    print(json.dumps(fields, default=str), flush=True)


# How the inner TCP's retransmissions came about (timeouts, recovery episodes, those Eifel proved spurious),
# counted by wrapping the sans-I/O connection's own methods in this process: the benchmark's diagnosis.
_TCP_EPISODES = {"rto": 0, "recoveries": 0, "spurious_recoveries": 0}


def _count_tcp_episodes() -> None:
    from wgmagic.netstack.tcp.connection import TcpConnection
    from wgmagic.netstack.tcp.recovery import LossRecovery

    def counting(name: str, method):
        def wrapper(*args, **kwargs):
            result = method(*args, **kwargs)
            if name != "spurious_recoveries" or result is not None:
                _TCP_EPISODES[name] += 1
            return result
        return wrapper

    TcpConnection._on_rto = counting("rto", TcpConnection._on_rto)
    TcpConnection._enter_recovery = counting("recoveries", TcpConnection._enter_recovery)
    LossRecovery.check_spurious = counting("spurious_recoveries", LossRecovery.check_spurious)


def _tunnel_facts(tunnel) -> dict:
    import resource

    stats = tunnel.stats()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {"transport": tunnel.transport_description, "retransmits": stats["tcp"]["retransmits"],
            "counters": stats["counters"], "cpu_seconds": usage.ru_utime + usage.ru_stime,
            "tcp_episodes": dict(_TCP_EPISODES)}


def connect_only(config: str, via: str, timeout: float = 15.0) -> None:
    from wgmagic.errors import WgMagicError
    from wgmagic.runtime.tunnel import connect

    notes: list[str] = []
    try:
        with connect(config, via=via or None, timeout=timeout, note=notes.append) as tunnel:
            _report(ok=True, notes=notes, **_tunnel_facts(tunnel))
    except WgMagicError as exc:
        _report(ok=False, error=type(exc).__name__, message=str(exc), notes=notes)


def sql(config: str, via: str, dsn: str) -> None:
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    shell.user_ns.update(config_path=config, dsn=dsn)
    shell.run_line_magic("load_ext", "wgmagic")
    started = time.monotonic()
    result = shell.run_cell(f"%wg connect {{config_path}} --via '{via}' --timeout 20" if via else
                            "%wg connect {config_path} --timeout 20")
    if not result.success:
        _report(ok=False, stage="connect", message=str(result.error_in_exec or result.error_before_exec))
        return
    connected = time.monotonic() - started
    result = shell.run_cell("%%wgsql {dsn} -o frame\nSELECT id, x, label, at, flag FROM big ORDER BY id")
    if not result.success:
        _report(ok=False, stage="query", message=str(result.error_in_exec or result.error_before_exec))
        return
    frame = shell.user_ns["frame"]
    labels = hashlib.md5("\n".join(frame["label"]).encode()).hexdigest()
    import wgmagic

    tunnel = wgmagic.get_tunnel()
    _report(ok=True, rows=len(frame), sum_id=int(frame["id"].sum()), sum_x=float(frame["x"].sum()),
            labels_md5=labels, flags=int(frame["flag"].sum()),
            at_first=frame["at"].iloc[0].isoformat(), at_last=frame["at"].iloc[-1].isoformat(),
            dtypes={c: str(t) for c, t in frame.dtypes.items()}, connect_seconds=connected,
            query_seconds=time.monotonic() - started - connected, **_tunnel_facts(tunnel))
    shell.run_line_magic("unload_ext", "wgmagic")


def download(config: str, via: str, size: int) -> None:
    from wgmagic.runtime.tunnel import connect

    with connect(config, via=via or None, timeout=20) as tunnel:
        sock = tunnel.open_connection(PEER4, 9000, timeout=120)
        sock.sendall(struct.pack("!Q", size))
        digest = hashlib.sha256()
        buf = bytearray(256 * 1024)
        view = memoryview(buf)
        got = 0
        step = max(size // 8, 1)
        mark = step
        started = time.perf_counter()
        while got < size:
            n = sock.recv_into(buf)
            if not n:
                break
            digest.update(view[:n])
            got += n
            if got >= mark:
                print(f"progress {got}", flush=True)
                mark += step
        elapsed = time.perf_counter() - started
        sock.close()
        _report(ok=got == size, bytes=got, sha256=digest.hexdigest(), seconds=elapsed,
                mb_s=got / elapsed / 1e6, **_tunnel_facts(tunnel))


def upload(config: str, via: str, size: int) -> None:
    from tests.testbed.streams import iter_stream, recv_exactly
    from wgmagic.runtime.tunnel import connect

    with connect(config, via=via or None, timeout=20) as tunnel:
        sock = tunnel.open_connection(PEER4, 9002, timeout=120)
        digest = hashlib.sha256()
        started = time.perf_counter()
        for chunk in iter_stream(size):
            sock.sendall(chunk)
            digest.update(chunk)
        sock.shutdown(1)
        answer = recv_exactly(sock, 64)
        elapsed = time.perf_counter() - started
        sock.close()
        _report(ok=answer.decode() == digest.hexdigest(), bytes=size, seconds=elapsed, mb_s=size / elapsed / 1e6,
                **_tunnel_facts(tunnel))


def latency(config: str, via: str, count: int, dsn: str) -> None:
    import psycopg

    from wgmagic.runtime.tunnel import connect

    with connect(config, via=via or None, timeout=20) as tunnel:
        forward = tunnel.forward("db.internal:5432")
        params = forward.libpq_params()
        with psycopg.connect(dsn, **params) as conn:
            times = []
            for _ in range(count):
                started = time.perf_counter()
                conn.execute("SELECT 1").fetchone()
                times.append((time.perf_counter() - started) * 1000)
        times.sort()
        _report(ok=True, median_ms=times[len(times) // 2], p99_ms=times[int(len(times) * 0.99)],
                **_tunnel_facts(tunnel))


def main(argv: list[str]) -> int:
    mode, config = argv[0], argv[1]
    _count_tcp_episodes()
    via = argv[2] if len(argv) > 2 else ""
    if mode == "connect":
        connect_only(config, via, float(argv[3]) if len(argv) > 3 else 15.0)
    elif mode == "sql":
        sql(config, via, argv[3])
    elif mode == "download":
        download(config, via, int(argv[3]))
    elif mode == "upload":
        upload(config, via, int(argv[3]))
    elif mode == "latency":
        latency(config, via, int(argv[3]), argv[4])
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
