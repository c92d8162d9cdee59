"""Postgres through a wgmagic forward against psycopg over kernel TCP through a wireguard-go client, same run.

Measures `SELECT 1` round trips (p50/p99) and `COPY big TO STDOUT` throughput with identical psycopg loops on
both sides, then the idle cost of a tunnel: CPU while only keepalives flow, and RSS before and after
`connect`. Needs root (it brings up the test bed).
Usage: python -m benchmarks.postgres [--queries 3000] [--rows 1000000] [--idle 30] [--local tcp|unix]
       python -m benchmarks.postgres --select-only --runs 3     # SELECT 1 alone, ours and reference in turn
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time

from benchmarks.common import rss_mib
from tests.testbed.bed import PEER4, REPO, TestBed

CLIENT_LOOPS = r'''
import json, time, psycopg
def select_one(conninfo, count):
    with psycopg.connect(conninfo, autocommit=True) as conn:
        cur = conn.cursor()
        for _ in range(200):
            cur.execute("SELECT 1").fetchone()  # warm-up: plans, buffers, congestion window
        times = []
        for _ in range(count):
            t = time.perf_counter(); cur.execute("SELECT 1").fetchone(); times.append((time.perf_counter() - t) * 1000)
    times.sort(); return times[len(times) // 2], times[int(len(times) * 0.99)]
def copy_out(conninfo):
    with psycopg.connect(conninfo, autocommit=True) as conn, conn.cursor() as cur:
        size = 0; start = time.perf_counter()
        with cur.copy("COPY big TO STDOUT") as copy:
            for chunk in copy:
                size += len(chunk)
        return size / (time.perf_counter() - start) / 1e6, size
'''


def reference(conninfo: str, queries: int, bed: TestBed, *, copy: bool = True) -> dict:
    script = CLIENT_LOOPS + f'''
print(json.dumps({{"select": select_one({conninfo!r}, {queries}), "copy": copy_out({conninfo!r}) if {copy} else None}}))
'''
    return json.loads(bed.run_in_reference(sys.executable, "-c", script, timeout=900).stdout)


def select_only(bed: TestBed, queries: int, runs: int, local: str) -> None:
    """SELECT 1 p50 through one forward and through the reference client, `runs` times each in turn (the
    reference client's figure measured between ours, so both see the same machine)."""
    from wgmagic.runtime.tunnel import connect

    namespace: dict = {}
    exec(CLIENT_LOOPS, namespace)
    ref_conninfo = f"host={PEER4} port=5432 dbname=app user=app password={bed.db_password} sslmode=disable"
    ours_p50, ref_p50 = [], []
    with connect(bed.client_config()) as tunnel:
        forward = tunnel.forward("db.internal:5432", local=None if local == "unix" else 0)
        params = forward.libpq_params()
        conninfo = " ".join(f"{k}={v}" for k, v in params.items())
        conninfo += f" dbname=app user=app password={bed.db_password} sslmode=disable"
        for _ in range(runs):
            ours_p50.append(namespace["select_one"](conninfo, queries)[0])
            ref_p50.append(reference(ref_conninfo, queries, bed, copy=False)["select"][0])
    mine, theirs = sorted(ours_p50)[len(ours_p50) // 2], sorted(ref_p50)[len(ref_p50) // 2]
    print(f"SELECT 1 p50 (median of {runs}): wgmagic forward ({local}) {mine:.3f} ms "
          f"{[round(x, 3) for x in ours_p50]}, reference {theirs:.3f} ms {[round(x, 3) for x in ref_p50]}, "
          f"ratio {mine / theirs:.2f}")


def ours(bed: TestBed, queries: int, idle: float, local: str = "tcp") -> dict:
    from wgmagic.runtime.tunnel import connect

    namespace: dict = {}
    exec(CLIENT_LOOPS, namespace)  # the very same loops as the reference
    import psycopg  # noqa: F401  (loaded before the RSS reading, as a driver would be)

    rss_before = rss_mib()
    with connect(bed.client_config()) as tunnel:
        rss_connected = rss_mib()
        cpu_before, wall_before = _cpu(), time.monotonic()
        time.sleep(idle)
        idle_cpu = (_cpu() - cpu_before) / (time.monotonic() - wall_before)
        forward = tunnel.forward("db.internal:5432", local=None if local == "unix" else 0)
        params = forward.libpq_params()
        conninfo = " ".join(f"{k}={v}" for k, v in params.items())
        conninfo += f" dbname=app user=app password={bed.db_password} sslmode=disable"
        select = namespace["select_one"](conninfo, queries)
        copy = namespace["copy_out"](conninfo)
        rss_after = rss_mib()
    return {"select": select, "copy": copy, "idle_cpu": idle_cpu, "rss_before": rss_before,
            "rss_connected": rss_connected, "rss_after_work": rss_after}


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--queries", type=int, default=3000)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--idle", type=float, default=30.0, help="seconds of idle tunnel to measure CPU over")
    parser.add_argument("--local", choices=("tcp", "unix"), default="tcp",
                        help="the forward's listener: loopback TCP (as the scoreboard) or a Unix socket (%%%%wgsql's)")
    parser.add_argument("--select-only", action="store_true", help="SELECT 1 only, ours and the reference in turn")
    parser.add_argument("--runs", type=int, default=3, help="runs of each side with --select-only")
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    bed = TestBed().up()
    if args.select_only:
        try:
            select_only(bed, args.queries, args.runs, args.local)
        finally:
            bed.down()
        return
    try:
        bed.ensure_big_table(args.rows)
        ref = reference(f"host={PEER4} port=5432 dbname=app user=app password={bed.db_password} sslmode=disable",
                        args.queries, bed)
        mine = ours(bed, args.queries, args.idle, args.local)
    finally:
        bed.down()
    (p50, p99), (rp50, rp99) = mine["select"], ref["select"]
    print(f"SELECT 1 p50/p99: wgmagic forward {p50:.3f}/{p99:.3f} ms, reference {rp50:.3f}/{rp99:.3f} ms, "
          f"p50 difference {p50 - rp50:+.3f} ms")
    print(f"COPY big TO STDOUT ({mine['copy'][1] / 1e6:.0f} MB): wgmagic forward {mine['copy'][0]:.1f} MB/s, "
          f"reference {ref['copy'][0]:.1f} MB/s, ratio {mine['copy'][0] / ref['copy'][0]:.2f}")
    print(f"idle tunnel CPU: {mine['idle_cpu'] * 100:.3f}% of one core over {args.idle:g} s (keepalives only)")
    print(f"RSS: {mine['rss_before']:.0f} MiB before connect, {mine['rss_connected']:.0f} MiB after, "
          f"{mine['rss_after_work']:.0f} MiB after the queries and COPY")


if __name__ == "__main__":
    main()
