"""A day in an hour (issue 22): a notebook-like workload on the test bed, with its figures over time.

Queries every few seconds through `tunnel.url()` (a small one and a big one in turn, every result checked), a
"kernel restart" every few minutes (the tunnel closed with a psycopg connection open and connected again), a
child process killed outright with a locking connection open (the next tunnel on the key must end it), one
peer restart half-way, and rekeys every two minutes (REKEY_AFTER_TIME 120 s). Every sample prints RSS,
open fds, threads, the server's sessions from the tunnel's address and the wrong results so far, as one JSON
line; the last line compares the start with the end. Needs root (it brings up the test bed).
Not yet in it: a WebSocket drop (the bed's relay would have to be restarted under the tunnel).
Usage: python -m benchmarks.soak [--minutes 30] [--query-every 3] [--restart-every 180] [--sample-every 30]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time

from benchmarks.common import rss_mib
from tests.testbed.bed import REPO, TestBed, client_addresses

IDENTITY = 1
ADDRESS = client_addresses(IDENTITY)[0]
BIG = 50_000
CHILD = r'''
import sys, time, psycopg
from wgmagic.runtime.tunnel import connect
tun = connect(sys.stdin.readline().replace("\\n", "\n"))
conn = psycopg.connect(tun.url(sys.argv[1]), connect_timeout=20)
conn.execute("SELECT 1")
print("open", flush=True)
time.sleep(600)
'''


def fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def sessions(bed: TestBed) -> int:
    return int(bed.psql_admin(f"SELECT count(*) FROM pg_stat_activity WHERE client_addr = '{ADDRESS}'").strip())


def query(conn, step: int) -> bool:
    """One query, checked: True when the result is right."""
    if step % 2:
        rows = conn.execute(f"SELECT g, md5(g::text) FROM generate_series(1, {BIG}) g").fetchall()
        return len(rows) == BIG and sum(r[0] for r in rows) == BIG * (BIG + 1) // 2 and rows[-1][0] == BIG
    return conn.execute("SELECT %s::int + 1", (step,)).fetchone()[0] == step + 1


def kill_a_child(bed: TestBed, config: str) -> None:
    """A process with an open connection, killed outright: what only the next tunnel on the key can end."""
    child = subprocess.Popen([sys.executable, "-c", CHILD, bed.dsn()], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             text=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert child.stdin is not None and child.stdout is not None
    child.stdin.write(config.replace("\n", "\\n") + "\n")
    child.stdin.flush()
    child.stdout.readline()
    time.sleep(0.5)  # the record of open connections is refreshed every 0.2 s
    child.send_signal(signal.SIGKILL)
    child.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--query-every", type=float, default=3.0)
    parser.add_argument("--restart-every", type=float, default=180.0)
    parser.add_argument("--sample-every", type=float, default=30.0)
    args = parser.parse_args(argv)

    import psycopg

    from wgmagic.runtime.tunnel import connect
    from wgmagic.wireguard.timers import Timers

    bed = TestBed().up()
    timers = Timers(rekey_after_time=120.0)
    wrong = queries = restarts = 0
    samples: list[dict] = []
    try:
        config = bed.client_config(identity=IDENTITY)
        tunnel = connect(config, timers=timers)
        conn = psycopg.connect(tunnel.url(bed.dsn()), connect_timeout=20, autocommit=True)
        start = time.monotonic()
        end = start + args.minutes * 60
        next_query = next_restart = next_sample = start
        next_restart += args.restart_every
        peer_restart_at = start + args.minutes * 30
        step = 0
        while time.monotonic() < end:
            now = time.monotonic()
            if now >= next_sample:
                samples.append({"t": round(now - start, 1), "rss_mib": round(rss_mib(), 1), "fds": fds(),
                                "threads": threading.active_count(), "server_sessions": sessions(bed),
                                "queries": queries, "wrong": wrong, "restarts": restarts})
                print(json.dumps(samples[-1]), flush=True)
                next_sample += args.sample_every
            if peer_restart_at is not None and now >= peer_restart_at:
                bed.kill_peer()
                bed.restart_peer()
                peer_restart_at = None
            if now >= next_restart:  # a kernel restart: the tunnel closes with a connection open
                tunnel.close()
                conn.close()
                kill_a_child(bed, config)
                tunnel = connect(config, timers=timers)
                conn = psycopg.connect(tunnel.url(bed.dsn()), connect_timeout=20, autocommit=True)
                restarts += 1
                next_restart += args.restart_every
            if now >= next_query:
                try:
                    ok = query(conn, step)
                except psycopg.OperationalError:  # the peer restart: reconnect, as %%wgsql does
                    conn.close()
                    conn = psycopg.connect(tunnel.url(bed.dsn()), connect_timeout=30, autocommit=True)
                    ok = query(conn, step)
                queries += 1
                wrong += 0 if ok else 1
                step += 1
                next_query += args.query_every
            time.sleep(0.05)
        conn.close()
        tunnel.close()
        time.sleep(2)
        last = {"t": round(time.monotonic() - start, 1), "rss_mib": round(rss_mib(), 1), "fds": fds(),
                "threads": threading.active_count(), "server_sessions": sessions(bed), "queries": queries,
                "wrong": wrong, "restarts": restarts}
        print(json.dumps(last), flush=True)
        print(json.dumps({"start": samples[0] if samples else None, "end": last}), flush=True)
    finally:
        bed.down()
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main())
