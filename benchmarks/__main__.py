"""The scoreboard (issue 15): every benchmark against its baseline in the same run, one table.

    python -m benchmarks            # the full board, a few minutes
    python -m benchmarks --quick    # the same rows, smaller sizes and fewer runs: about a minute

Needs root (it brings up the test bed, tests/testbed/bed.py, and tears it down) and `pip install -e '.[bench]'`
(adbc-driver-postgresql). Baselines, measured in the same run against the same wireguard-go peer:
  ADBC straight   adbc-driver-postgresql's fetch_df in the peer's namespace, no tunnel at all
  reference       the wireguard-go reference client with kernel TCP (its own namespace), same Python loops
  no tunnel       the same tool (%%wgsql) straight to the database through the reference client
Each figure is the median of several runs, with the spread (min-max) after it. The measuring loops are the
single-purpose benchmarks' own (benchmarks/transfer.py, postgres.py, wgsql.py), not copies.

Never run by CI except `--quick` as a smoke test that the table prints (tests/integration/test_scoreboard.py):
the figures depend on the machine; the ratios against baselines of the same run are what to read.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import resource
import statistics
import sys
import time
from dataclasses import dataclass
from typing import Any

from benchmarks import postgres, transfer, wgsql
from benchmarks.common import rss_mib
from tests.testbed.bed import PEER4, REPO, TestBed

TUNNELS = 20  # idle tunnels in one process; identities 1..TUNNELS of the bed
# CPU seconds per GiB moved, ours / the reference client's (wireguard-go + its client), on merge3 before the speed
# work (/tmp/speed-before.txt): the target is a quarter less, read as a ratio so that it carries across machines.
CPU_RATIO_BEFORE = 0.52  # merge3 (fa0310e) on 2026-11-30, `python -m benchmarks --runs 3`; None: informational

PARALLEL = r'''
import threading
def parallel(make, streams, size):
    """Aggregate MB/s of `streams` simultaneous downloads of `size` bytes each (transfer.py's download loop)."""
    rates, threads = [], []
    start = time.perf_counter()
    for _ in range(streams):
        threads.append(threading.Thread(target=lambda: rates.append(download(make, size))))
    for t in threads: t.start()
    for t in threads: t.join()
    if len(rates) != streams: raise SystemExit("a parallel download failed")
    return streams * size / (time.perf_counter() - start) / 1e6
def idle_connections(make, count):
    """MiB of RSS that `count` open, idle connections to the echo service add to this process."""
    def rss():
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:")) / 1024
    before = rss(); socks = []
    for _ in range(count):
        s = make(9001); s.sendall(b"x"); s.recv(1); socks.append(s)
    grown = rss() - before
    for s in socks: s.close()
    return grown
'''


@dataclass
class Row:
    figure: str
    unit: str
    ours: list[float]
    baseline: list[float] | None
    target: str  # shown as is
    holds: Any  # callable(ours_median, baseline_median) -> bool, or None (informational)

    def cells(self) -> list[str]:
        mine = statistics.median(self.ours)
        base = statistics.median(self.baseline) if self.baseline else None
        ratio = f"{mine / base:.2f}x" if base else "-"
        verdict = "info" if self.holds is None else ("yes" if self.holds(mine, base) else "NO")
        return [self.figure, _spread(self.ours, self.unit), _spread(self.baseline, self.unit) if self.baseline else "-",
                ratio, self.target, verdict]


def _spread(values: list[float], unit: str) -> str:
    digits = 3 if statistics.median(values) < 10 else 1
    text = f"{statistics.median(values):.{digits}f} {unit}"
    if len(values) > 1:
        text += f" ({min(values):.{digits}f}-{max(values):.{digits}f}, n={len(values)})"
    return text


def print_table(rows: list[Row], out: Any = sys.stdout) -> None:
    header = ["figure", "ours", "baseline", "ratio", "target", "holds?"]
    table = [header] + [row.cells() for row in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    for k, line in enumerate(table):
        print(" | ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip(), file=out)
        if k == 0:
            print("-+-".join("-" * width for width in widths), file=out)


# ---- the reference side: one script in the reference client's namespace --------------------------------

def reference_side(bed: TestBed, p: argparse.Namespace) -> dict:
    conninfo = f"host={PEER4} port=5432 dbname=app user=app password={bed.db_password} sslmode=disable"
    script = transfer.CLIENT_LOOPS + postgres.CLIENT_LOOPS + PARALLEL + f'''
import resource
make = lambda port: socket.create_connection(("{PEER4}", port))
size = {p.mib} << 20
out = {{"down": [], "up": [], "select": [], "parallel": {{}}}}
cpu = []
for _ in range({p.runs}):
    u = resource.getrusage(resource.RUSAGE_SELF); before = u.ru_utime + u.ru_stime
    out["down"].append(download(make, size)); out["up"].append(upload(make, size))
    u = resource.getrusage(resource.RUSAGE_SELF); cpu.append(u.ru_utime + u.ru_stime - before)
out["client_cpu"] = cpu
for _ in range({p.runs}):
    out["select"].append(select_one({conninfo!r}, {p.queries})[0])
for n in (1, 4, 16):
    out["parallel"][n] = [parallel(make, n, size // n) for _ in range({p.runs})]
out["idle_rss"] = idle_connections(make, {p.connections})
print(json.dumps(out))
'''
    wg_pid = bed.processes[0].pid  # the reference client's wireguard-go (the bed starts it first)
    wg_before = _process_cpu(wg_pid)
    result = json.loads(bed.run_in_reference(sys.executable, "-c", script, timeout=1800).stdout)
    wg_cpu = _process_cpu(wg_pid) - wg_before
    moved_gib = 2 * p.mib * p.runs / 1024
    # wireguard-go's share over the whole script; outside the transfers it only waits on the short SELECTs
    result["cpu_per_gib"] = (sum(result["client_cpu"]) + wg_cpu) / moved_gib
    return result


def _process_cpu(pid: int) -> float:
    """User + system CPU seconds of another process, from /proc/PID/stat (fields 14 and 15)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _self_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# ---- our side ----------------------------------------------------------------------------------------------

def tunnel_side(bed: TestBed, p: argparse.Namespace) -> dict:
    """Transfers, SELECT 1, ADBC and idle connections through one tunnel in this process."""
    from wgmagic.runtime.tunnel import connect

    loops: dict = {}
    exec(transfer.CLIENT_LOOPS + postgres.CLIENT_LOOPS + PARALLEL, loops)  # the very same loops as the reference
    out: dict = {"down": [], "up": [], "cpu_per_gib": [], "select": [], "parallel": {}, "adbc": []}
    with connect(bed.client_config()) as tunnel:
        make = lambda port: tunnel.open_connection(PEER4, port, timeout=30)  # noqa: E731
        size = p.mib << 20
        for _ in range(p.runs):
            before = _self_cpu()
            out["down"].append(loops["download"](make, size))
            out["up"].append(loops["upload"](make, size))
            out["cpu_per_gib"].append((_self_cpu() - before) / (2 * p.mib / 1024))
        forward = tunnel.forward("db.internal:5432", local=0)
        params = forward.libpq_params()
        conninfo = (f"host={params['host']} hostaddr={params['hostaddr']} port={params['port']} dbname=app "
                    f"user=app password={bed.db_password} sslmode=disable")
        for _ in range(p.runs):
            out["select"].append(loops["select_one"](conninfo, p.queries)[0])
        uri = f"postgresql://app:{bed.db_password}@{params['hostaddr']}:{params['port']}/app?sslmode=disable"
        adbc: dict = {}
        exec(wgsql.ADBC.format(uri=uri, query=wgsql.QUERY, rows=p.rows, runs=p.runs), adbc)  # prints its RESULT
        out["adbc"] = adbc["times"]
        for n in (1, 4, 16):
            out["parallel"][n] = [loops["parallel"](make, n, size // n) for _ in range(p.runs)]
        out["idle_rss"] = loops["idle_connections"](make, p.connections)
    return out


FIRST_RESULT = r'''
import json, sys, time
sys.path.insert(0, {repo!r})
from IPython.core.interactiveshell import InteractiveShell
shell = InteractiveShell.instance()
shell.user_ns.update(config={config!r}, dsn={dsn!r})
shell.run_line_magic("load_ext", "wgmagic")
if {preload}:  # a notebook whose first cell was `import pandas as pd`
    assert shell.run_cell("import pandas as pd").success
start0 = start = time.perf_counter()
if {tunnel}:
    assert shell.run_cell("%wg connect {{config}} --name first").success
connected = time.perf_counter()
assert shell.run_cell("%%wgsql {{dsn}} -o frame\nSELECT 1").success
done = time.perf_counter()
assert len(shell.user_ns["frame"]) == 1
cells = []
for _ in range({cells}):  # then the same small cell again: what a snappy notebook feels like
    start = time.perf_counter()
    shell.run_cell("%%wgsql -o frame\nSELECT 1")
    cells.append((time.perf_counter() - start) * 1000)
print("FIRST", json.dumps([(connected - start0) * 1000, (done - start0) * 1000, sorted(cells)[len(cells) // 2]]))
'''


def first_result(bed: TestBed, p: argparse.Namespace) -> dict[str, list[float]]:
    """ms from `%wg connect` to the first `%%wgsql` DataFrame, each in a fresh interpreter, then the p50 of
    further `%%wgsql SELECT 1` cells; the baselines are the same cells with no tunnel, through the reference
    client. Measured twice:

    - fresh ("first"): a new kernel with nothing of psycopg or pandas imported. Both sides then import the
      driver and pandas inside the measured window (about 450 ms of CPU on a 2-core test machine, the same work
      with or without a tunnel), so the issue's 150 ms budget is judged here as what the tunnel adds to the
      no-tunnel figure.
    - warm ("warm"): pandas imported before (a notebook whose first cell is `import pandas as pd`); the
      driver is still imported inside the window. The issue's target, under 150 ms, is judged on this one.
    """
    out: dict[str, list[float]] = {"first": [], "connect": [], "cell": [], "first_base": [], "cell_base": [],
                                   "warm": [], "warm_base": []}
    for _ in range(p.first_runs):
        for preload, key in ((False, "first"), (True, "warm")):
            script = FIRST_RESULT.format(repo=str(REPO), config=bed.client_config(), dsn=bed.dsn(), tunnel=True,
                                         cells=p.cells if key == "first" else 1, preload=preload)
            done = _run_here(script)
            connected, total, cell = json.loads(next(x for x in done.splitlines() if x.startswith("FIRST "))[6:])
            out[key].append(total)
            script = FIRST_RESULT.format(repo=str(REPO), config="", dsn=bed.dsn(host=PEER4), tunnel=False,
                                         cells=p.cells if key == "first" else 1, preload=preload)
            base = bed.run_in_reference(sys.executable, "-c", script, timeout=300).stdout
            _, base_total, base_cell = json.loads(next(x for x in base.splitlines() if x.startswith("FIRST "))[6:])
            out[f"{key}_base"].append(base_total)
            if key == "first":
                out["connect"].append(connected)
                out["cell"].append(cell)
                out["cell_base"].append(base_cell)
    return out


def _run_here(script: str) -> str:
    import subprocess

    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=REPO)
    if done.returncode:
        raise SystemExit(f"benchmark script failed:\n{done.stderr[-3000:]}")
    return done.stdout


def idle_tunnels(bed: TestBed, p: argparse.Namespace) -> tuple[list[float], float, list[float]]:
    """CPU (% of one core) of this process with TUNNELS idle tunnels up, per window; MiB of RSS per tunnel;
    the reference client's wireguard-go idle CPU over the same windows (its one tunnel)."""
    from wgmagic.runtime.tunnel import connect

    rss_before = rss_mib()
    tunnels = []
    try:
        for identity in range(1, TUNNELS + 1):
            tunnels.append(connect(bed.client_config(identity=identity), name=f"idle{identity}"))
        rss_per_tunnel = (rss_mib() - rss_before) / TUNNELS
        time.sleep(0.5)  # let the handshakes' aftermath settle
        ours, ref = [], []
        wg_pid = bed.processes[0].pid
        for _ in range(p.idle_windows):
            cpu, wg, wall = _self_cpu(), _process_cpu(wg_pid), time.monotonic()
            time.sleep(p.idle_seconds)
            elapsed = time.monotonic() - wall
            ours.append((_self_cpu() - cpu) / elapsed * 100)
            ref.append((_process_cpu(wg_pid) - wg) / elapsed * 100)
    finally:
        for tunnel in tunnels:
            tunnel.close()
    return ours, rss_per_tunnel, ref


def adbc_straight(bed: TestBed, p: argparse.Namespace) -> list[float]:
    uri = f"postgresql://app:{bed.db_password}@{PEER4}:5432/app?sslmode=disable"
    script = wgsql.ADBC.format(uri=uri, query=wgsql.QUERY, rows=p.rows, runs=p.runs)
    return wgsql._times(bed.run_in_peer(sys.executable, "-c", script, timeout=1800).stdout)


BIG_TABLE = "big_many"  # issue 25: `big`'s rows, --big-rows of them


def bigger_results(bed: TestBed, p: argparse.Namespace) -> dict[str, list[Any]]:
    """Issue 25's figures, each cell in a fresh interpreter with its peak RSS: %%wgsql of --big-rows rows into
    pandas, into a Parquet file (--to), and of --rows rows into polars and pandas; ADBC straight to the
    database (fetch_df, and fetch_arrow_table for the Parquet row's memory yardstick) in the same run; and,
    with --before REF, the same pandas cells with the wgmagic of commit REF."""
    import shutil
    import tempfile

    wgsql.ensure_table(bed, BIG_TABLE, p.big_rows)
    big_query, query = f"SELECT * FROM {BIG_TABLE}", wgsql.QUERY
    out: dict[str, list[Any]] = {key: [] for key in (
        "big", "big_adbc", "big_adbc_tunnel", "big_to", "big_chunks", "big_before", "polars", "pandas", "small_adbc",
        "small_before")}
    before = wgsql.before_tree(p.before) if p.before else None
    try:
        with tempfile.TemporaryDirectory(prefix="wgmagic-bench-") as directory:
            target = os.path.join(directory, "big.parquet")
            for _ in range(p.big_runs):
                out["big_adbc"].append(wgsql.adbc_one(bed, big_query))
                out["big_adbc_tunnel"].append(wgsql.adbc_tunnel_one(bed, big_query))
                out["big"].append(wgsql.wgsql_one(bed, f"%%wgsql bench -o frame\n{big_query}"))
                out["big_to"].append(wgsql.wgsql_one(bed, f"%%wgsql bench --to {{target}}\n{big_query}", target=target))
                out["big_chunks"].append(wgsql.wgsql_one(bed, f"%%wgsql bench --chunks 100000\n{big_query}"))
                if before:
                    out["big_before"].append(wgsql.wgsql_one(bed, f"%%wgsql bench -o frame\n{big_query}", repo=before))
            for _ in range(p.runs):
                out["small_adbc"].append(wgsql.adbc_one(bed, query))
                out["pandas"].append(wgsql.wgsql_one(bed, f"%%wgsql bench -o frame\n{query}"))
                out["polars"].append(wgsql.wgsql_one(bed, f"%%wgsql bench -o frame\n{query}",
                                                     settings=("WgMagic.autopolars = True",)))
                if before:
                    out["small_before"].append(wgsql.wgsql_one(bed, f"%%wgsql bench -o frame\n{query}", repo=before))
    finally:
        if before is not None:  # the checkout of REF: removed whatever happened
            shutil.rmtree(before, ignore_errors=True)
    for key, runs in out.items():
        expected = p.big_rows if key.startswith("big") else p.rows
        assert all(rows == expected for _, rows, _ in runs), (key, runs)
    return out


def bigger_rows(big: dict[str, list[Any]], p: argparse.Namespace) -> list[Row]:
    def seconds(key: str) -> list[float]:
        return [run[0] for run in big[key]]

    def rss(key: str) -> list[float]:
        return [run[2] for run in big[key]]

    label, small = f"{p.big_rows:,}", f"{p.rows:,}"
    rows = [
        Row(f"%%wgsql {label} rows into pandas vs ADBC straight (fresh kernel)", "s", seconds("big"),
            seconds("big_adbc"), "<= 2.0x", lambda m, b: m <= 2.0 * b),
        Row("  peak RSS of that process vs ADBC straight's", "MiB", rss("big"), rss("big_adbc"), "<= 1.5x",
            lambda m, b: m <= 1.5 * b),
        Row(f"  %%wgsql {label} rows vs ADBC through the same tunnel (a forward)", "s", seconds("big"),
            seconds("big_adbc_tunnel"), "info", None),
        Row(f"%%wgsql --to file.parquet, {label} rows: peak RSS (vs ADBC straight's)", "MiB", rss("big_to"),
            rss("big_adbc"), "< 500 MiB", lambda m, b: m < 500),
        Row("  its time (vs ADBC straight into pandas)", "s", seconds("big_to"), seconds("big_adbc"), "info", None),
        Row(f"%%wgsql --chunks 100000, {label} rows consumed: peak RSS (vs ADBC straight's)", "MiB",
            rss("big_chunks"), rss("big_adbc"), "info", None),
        Row("  its time (vs ADBC straight into pandas)", "s", seconds("big_chunks"), seconds("big_adbc"), "info",
            None),
        Row(f"%%wgsql {small} rows into pandas vs ADBC straight (fresh kernel)", "s", seconds("pandas"),
            seconds("small_adbc"), "<= 2.0x", lambda m, b: m <= 2.0 * b),
        Row(f"autopolars {small} rows vs the pandas path", "s", seconds("polars"), seconds("pandas"), "<= 1.00x",
            lambda m, b: m <= b),
        Row(f"  autopolars {small} rows vs ADBC straight", "s", seconds("polars"), seconds("small_adbc"), "info",
            None),
    ]
    if big["big_before"]:
        rows += [
            Row(f"before ({p.before}): %%wgsql {label} rows into pandas vs ADBC straight", "s", seconds("big_before"),
                seconds("big_adbc"), "info", None),
            Row(f"  before ({p.before}): its peak RSS vs ADBC straight's", "MiB", rss("big_before"), rss("big_adbc"),
                "info", None),
            Row(f"before ({p.before}): %%wgsql {small} rows into pandas vs ADBC straight", "s",
                seconds("small_before"), seconds("small_adbc"), "info", None),
            Row(f"after / before: {label} rows, time", "s", seconds("big"), seconds("big_before"), "info", None),
            Row(f"after / before: {label} rows, peak RSS", "MiB", rss("big"), rss("big_before"), "info", None),
        ]
    return rows


class _OnlyBigger(Exception):
    pass


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller sizes, fewer runs: about a minute")
    parser.add_argument("--runs", type=int, help="runs per figure (default 5; --quick 2)")
    parser.add_argument("--big-rows", type=int, help="rows of the large-result figures (default 10,000,000; "
                        "--quick 500,000)")
    parser.add_argument("--big-runs", type=int, help="runs of each large-result figure (default 2; --quick 1)")
    parser.add_argument("--before", metavar="REF", help="also measure the %%%%wgsql cells with the wgmagic of this "
                        "commit (e.g. main), in the same run")
    parser.add_argument("--only-bigger", action="store_true", help="only the large-result (issue 25) figures")
    args = parser.parse_args(argv)
    quick = args.quick
    p = argparse.Namespace(
        runs=args.runs or (2 if quick else 5), rows=100_000 if quick else 1_000_000, mib=16 if quick else 96,
        queries=300 if quick else 2000, connections=1000, first_runs=2 if quick else 5, cells=20 if quick else 50,
        idle_windows=2 if quick else 5, idle_seconds=1.0 if quick else 4.0,
        big_rows=args.big_rows or (500_000 if quick else 10_000_000), big_runs=args.big_runs or (1 if quick else 2),
        before=args.before)
    sys.path.insert(0, str(REPO))
    # A fresh interpreter (the first-result rows) should find compiled bytecode as an installed package does
    # (pip compiles on install); with PYTHONDONTWRITEBYTECODE=1 every run would compile wgmagic's sources again.
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    sys.dont_write_bytecode = False
    started = time.monotonic()
    bed = TestBed(identities=TUNNELS + 1).up()
    chatter = io.StringIO()  # what the magics and loops print while being measured; shown only on a failure
    try:
        with contextlib.redirect_stdout(chatter):
            bed.ensure_big_table(p.rows)
            bigger = bigger_results(bed, p)
            if args.only_bigger:
                raise _OnlyBigger
            ref = reference_side(bed, p)
            straight = adbc_straight(bed, p)
            mine = tunnel_side(bed, p)
            wgsql_times = wgsql.ours_times(bed, p.rows, p.runs)
            first = first_result(bed, p)
            idle_cpu, rss_per_tunnel, idle_ref = idle_tunnels(bed, p)
    except _OnlyBigger:
        print(f"\nwgmagic scoreboard, large results only (median of {p.big_runs} / {p.runs} runs; "
              f"{time.monotonic() - started:.0f} s; {os.cpu_count()} CPUs)")
        print_table(bigger_rows(bigger, p))
        return
    except BaseException:
        print(chatter.getvalue()[-3000:], file=sys.stderr)
        raise
    finally:
        bed.down()
    rows_label = f"{p.rows:,}"
    cpu_target = "info" if CPU_RATIO_BEFORE is None else f"<= {0.75 * CPU_RATIO_BEFORE:.2f}x"
    rows = [
        Row(f"%%wgsql SELECT * FROM big ({rows_label} rows) vs ADBC straight", "s", wgsql_times, straight,
            "<= 2.0x", lambda m, b: m <= 2.0 * b),
        Row("ADBC through tunnel.forward vs ADBC straight", "s", mine["adbc"], straight, "<= 2.0x",
            lambda m, b: m <= 2.0 * b),
        Row("SELECT 1 p50 via forward vs reference client", "ms", mine["select"], ref["select"], "<= 1.00x",
            lambda m, b: m <= b),
        Row("%wg connect -> first %%wgsql DataFrame, fresh kernel (vs no tunnel)", "ms", first["first"],
            first["first_base"], "< no tunnel + 150 ms", lambda m, b: m - b < 150),
        Row("  of which %wg connect", "ms", first["connect"], None, "-", None),
        Row("%wg connect -> first %%wgsql DataFrame, pandas imported (vs no tunnel)", "ms", first["warm"],
            first["warm_base"], "< 150 ms", lambda m, b: m < 150),
        Row("%%wgsql SELECT 1 cell p50 (vs no tunnel)", "ms", first["cell"], first["cell_base"], "info", None),
        Row(f"download {p.mib} MiB vs reference client", "MB/s", mine["down"], ref["down"], ">= 1.5x",
            lambda m, b: m >= 1.5 * b),
        Row(f"upload {p.mib} MiB vs reference client", "MB/s", mine["up"], ref["up"], ">= 1.3x",
            lambda m, b: m >= 1.3 * b),
        Row("CPU s per GiB moved (ref: client + wireguard-go)", "s", mine["cpu_per_gib"], [ref["cpu_per_gib"]],
            cpu_target, None if CPU_RATIO_BEFORE is None else (lambda m, b: m / b <= 0.75 * CPU_RATIO_BEFORE)),
    ]
    for n in (1, 4, 16):
        rows.append(Row(f"{n} parallel download(s), aggregate", "MB/s", mine["parallel"][n],
                        ref["parallel"][str(n)], "info", None))
    rows += [
        Row(f"{p.connections:,} idle connections: RSS added", "MiB", [mine["idle_rss"]], [ref["idle_rss"]],
            "< 20 MiB", lambda m, b: m < 20),
        Row(f"{TUNNELS} idle tunnels: CPU (ref: 1 wireguard-go)", "% core", idle_cpu, idle_ref, "< 1%",
            lambda m, b: m < 1.0),
        Row(f"{TUNNELS} idle tunnels: RSS per tunnel", "MiB", [rss_per_tunnel], None, "info", None),
    ]
    rows += bigger_rows(bigger, p)
    mode = "quick" if quick else "full"
    print(f"\nwgmagic scoreboard ({mode}: median of {p.runs} runs, spread min-max; {time.monotonic() - started:.0f} s; "
          f"{os.cpu_count()} CPUs)")
    print_table(rows)


if __name__ == "__main__":
    sys.exit(main())
