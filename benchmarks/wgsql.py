"""`%%wgsql SELECT * FROM big` into a DataFrame, against what users do today, same run.

  ours        %%wgsql through wgmagic's tunnel, in this process (a real InteractiveShell): the binary
              COPY loader
  old         the same %%wgsql with the CSV COPY loader it had before issue 11 (benchmarks/text_loader.py)
  adbc        ADBC (adbc-driver-postgresql) straight to the database, no tunnel: cursor.fetch_df() in the
              bed's peer namespace (issue 15's yardstick: ours <= 2.0 x adbc)
  (a) today   psycopg straight to the database (no tunnel), pd.DataFrame(cur.fetchall())
  (b) loader  wgmagic's bulk loader straight to the database (no tunnel): what the tunnel costs
  (b') old    the old CSV loader straight to the database (no tunnel): the loaders alone
  (c) JupySQL %sql (autopandas) through the wireguard-go reference client (kernel TCP), if installed

Each figure is the median of --runs runs. Needs root (it brings up the test bed) and
`pip install -e '.[bench]'` (adbc-driver-postgresql, jupysql).
Usage: python -m benchmarks.wgsql [--rows 1000000] [--runs 3]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import textwrap
import time

from tests.testbed.bed import PEER4, REPO, TestBed

QUERY = "SELECT * FROM big"

# Each tool's script runs in its own process (python -c), in the bed's peer namespace or the reference client's:
# `setup` once, then `once` (which leaves the DataFrame in `frame`) timed --runs times. The str.format fields
# ({runs}, {rows}, {query!r}, {conninfo!r}, ...) are filled by the caller.
TIMED = r'''
import json, statistics, sys, time
{setup}
times = []
for _ in range({runs}):
    start = time.perf_counter()
{once}
    times.append(time.perf_counter() - start)
assert len(frame) == {rows}, len(frame)
print("RESULT", json.dumps(statistics.median(times)))
print("TIMES", json.dumps(times))
'''


def timed_script(setup: str, once: str) -> str:
    """The TIMED template around one tool: a str.format template whose script prints RESULT (the median
    seconds) and TIMES (each run's seconds), as `_result` and `_times` read them."""
    return (TIMED.replace("{setup}", setup.strip("\n"), 1)
            .replace("{once}", textwrap.indent(once.strip("\n"), "    "), 1))


TODAY = timed_script("import pandas as pd, psycopg", r'''
with psycopg.connect({conninfo!r}) as conn, conn.cursor() as cur:
    cur.execute({query!r})
    frame = pd.DataFrame(cur.fetchall(), columns=[c.name for c in cur.description])
''')

LOADER = timed_script(r'''
import psycopg
sys.path.insert(0, {repo!r})
from wgmagic.sql import results
from wgmagic.sql.results import run_statement
if {old}:
    from benchmarks import text_loader
    results._copy_out = text_loader._copy_out
''', r'''
with psycopg.connect({conninfo!r}, autocommit=True) as conn:
    frame = run_statement(conn, {query!r}, None).frame
''')

ADBC = timed_script("import adbc_driver_postgresql.dbapi as adbc", r'''
with adbc.connect({uri!r}) as conn, conn.cursor() as cur:
    cur.execute({query!r})
    frame = cur.fetch_df()
''')

JUPYSQL = timed_script(r'''
from IPython.core.interactiveshell import InteractiveShell
shell = InteractiveShell.instance()
shell.run_line_magic("load_ext", "sql")
shell.run_line_magic("config", "SqlMagic.autopandas = True")
shell.run_line_magic("config", "SqlMagic.displaylimit = 10")
shell.run_line_magic("config", "SqlMagic.autolimit = 0")
shell.run_line_magic("sql", {url!r})
''', r'''
frame = shell.run_line_magic("sql", {query!r})
''')


def ours(bed: TestBed, rows: int, runs: int, *, text_loader: bool = False) -> float:
    return statistics.median(ours_times(bed, rows, runs, text_loader=text_loader))


def ours_times(bed: TestBed, rows: int, runs: int, *, text_loader: bool = False) -> list[float]:
    """Seconds per run of `%%wgsql SELECT * FROM big` into a DataFrame, each on a fresh SQL connection."""
    from IPython.core.interactiveshell import InteractiveShell

    from wgmagic.sql import results

    shell = InteractiveShell.instance()
    shell.user_ns.update(config=bed.client_config(), dsn=bed.dsn())
    shell.run_line_magic("load_ext", "wgmagic")
    new_copy_out = results._copy_out
    if text_loader:
        from benchmarks import text_loader as old

        results._copy_out = old._copy_out  # the CSV loader, for the comparison only
    try:
        assert shell.run_cell("%wg connect {config} --name bench").success
        assert shell.run_cell("%%wgsql {dsn} --alias bench\nSELECT 1").success
        times = []
        for _ in range(runs):
            shell.run_cell("%wgsql bench --close")  # a fresh connection each run, as the others make
            start = time.perf_counter()
            result = shell.run_cell(f"%%wgsql {{dsn}} --alias bench -o frame\n{QUERY}")
            times.append(time.perf_counter() - start)
            assert result.success and len(shell.user_ns["frame"]) == rows
        return times
    finally:
        results._copy_out = new_copy_out
        shell.run_line_magic("unload_ext", "wgmagic")


# ---- issue 25: one cell per fresh interpreter, with its peak RSS --------------------------------------------

# `%%wgsql` in a fresh interpreter (a new kernel): connect, then one timed cell; prints ONE [seconds, rows,
# peak RSS MiB of the whole process]. `repo` is the wgmagic tree to import (this one, or a checkout of an
# earlier commit for the "before" figures); `settings` are %config lines run before the cell.
PEAK_RSS = r"""
def peak_rss():
    # VmHWM: this process image's peak RSS in MiB (ru_maxrss would carry a forking parent's peak across exec)
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:")) / 1024
"""
WGSQL_ONE = PEAK_RSS + r"""
import json, sys, time
sys.path.insert(0, {repo!r})
from IPython.core.interactiveshell import InteractiveShell
shell = InteractiveShell.instance()
shell.user_ns.update(config={config!r}, dsn={dsn!r}, target={target!r})
shell.run_line_magic("load_ext", "wgmagic")
shell.run_line_magic("config", "WgMagic.displaylimit = 5")
shell.run_line_magic("config", "WgMagic.progress_bar = False")
for line in {settings!r}:
    shell.run_line_magic("config", line)
assert shell.run_cell("%wg connect {{config}} --name bench").success
assert shell.run_cell("%%wgsql {{dsn}} --alias bench\nSELECT 1").success
start = time.perf_counter()
result = shell.run_cell({cell!r})
assert result.success, result.error_in_exec
value = result.result
if hasattr(value, "exhausted"):  # --chunks: an iterator, consumed here as code that processes in pieces does
    rows = 0
    for part in value:
        rows += len(part)
    del part
else:
    rows = value.rows if hasattr(value, "rows") and isinstance(value.rows, int) else len(value)
elapsed = time.perf_counter() - start
print("ONE", json.dumps([elapsed, rows, peak_rss()]))
"""

# ADBC straight to the database (the peer's namespace, no tunnel), one fetch per fresh interpreter.
ADBC_ONE = PEAK_RSS + r"""
import json, time
import adbc_driver_postgresql.dbapi as adbc
start = time.perf_counter()
with adbc.connect({uri!r}) as conn, conn.cursor() as cur:
    cur.execute({query!r})
    frame = {fetch}
elapsed = time.perf_counter() - start
print("ONE", json.dumps([elapsed, len(frame), peak_rss()]))
"""


# ADBC through a forward of wgmagic's tunnel, one fetch per fresh interpreter: what the tunnel alone allows a
# client that holds no GIL (the same transfer %%wgsql makes).
ADBC_TUNNEL_ONE = PEAK_RSS + r"""
import json, sys, time
sys.path.insert(0, {repo!r})
import adbc_driver_postgresql.dbapi as adbc
from wgmagic.runtime.tunnel import connect
with connect({config!r}) as tunnel:
    params = tunnel.forward("db.internal:5432", local=0).libpq_params()
    uri = "postgresql://app:{password}@" + params["hostaddr"] + ":" + str(params["port"]) + "/app?sslmode=disable"
    start = time.perf_counter()
    with adbc.connect(uri) as conn, conn.cursor() as cur:
        cur.execute({query!r})
        frame = cur.fetch_df()
    elapsed = time.perf_counter() - start
print("ONE", json.dumps([elapsed, len(frame), peak_rss()]))
"""


def adbc_tunnel_one(bed: TestBed, query: str) -> tuple[float, int, float]:
    """(seconds, rows, peak RSS MiB) of ADBC through a forward of wgmagic's tunnel, in a fresh interpreter."""
    import subprocess

    script = ADBC_TUNNEL_ONE.format(repo=str(REPO), config=bed.client_config(), password=bed.db_password,
                                    query=query)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=1800, cwd=REPO)
    if done.returncode:
        raise SystemExit(f"ADBC through the tunnel failed:\n{done.stderr[-3000:]}")
    return _one(done.stdout)


def _one(stdout: str) -> tuple[float, int, float]:
    seconds, rows, rss = json.loads(next(line for line in stdout.splitlines() if line.startswith("ONE "))[4:])
    return float(seconds), int(rows), float(rss)


def wgsql_one(bed: TestBed, cell: str, *, repo: str | None = None, settings: tuple[str, ...] = (),
              target: str = "") -> tuple[float, int, float]:
    """(seconds, rows, peak RSS MiB) of one `%%wgsql` cell through the tunnel, in a fresh interpreter."""
    import subprocess

    script = WGSQL_ONE.format(repo=repo or str(REPO), config=bed.client_config(), dsn=bed.dsn(), target=target,
                              settings=list(settings), cell=cell)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=1800,
                          cwd=repo or REPO)
    if done.returncode:
        raise SystemExit(f"benchmark cell failed:\n{done.stderr[-3000:]}")
    return _one(done.stdout)


def adbc_one(bed: TestBed, query: str, *, fetch: str = "cur.fetch_df()") -> tuple[float, int, float]:
    """(seconds, rows, peak RSS MiB) of ADBC straight to the database, in a fresh interpreter."""
    uri = f"postgresql://app:{bed.db_password}@{PEER4}:5432/app?sslmode=disable"
    script = ADBC_ONE.format(uri=uri, query=query, fetch=fetch)
    return _one(bed.run_in_peer(sys.executable, "-c", script, timeout=1800).stdout)


def ensure_table(bed: TestBed, name: str, rows: int) -> None:
    """A table like the bed's `big` (id, x, label, at, flag) with `rows` rows, made once."""
    bed.psql_admin(
        f"CREATE TABLE IF NOT EXISTS {name} (id int, x float8, label text, at timestamptz, flag bool); "
        f"INSERT INTO {name} SELECT i, i * 0.5, 'row ' || i, '2026-01-01'::timestamptz + i * interval '1 second', "
        f"i % 2 = 0 FROM generate_series(1, {rows}) i WHERE NOT EXISTS (SELECT 1 FROM {name} LIMIT 1); "
        f"ALTER TABLE {name} OWNER TO app;", database="app")


def before_tree(ref: str) -> str:
    """A checkout of `ref` (a commit of this repository) in a temporary directory, for "before" figures."""
    import subprocess
    import tempfile

    directory = tempfile.mkdtemp(prefix="wgmagic-before-")
    archive = subprocess.run(["git", "-C", str(REPO), "archive", ref], capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", directory], input=archive.stdout, check=True)
    return directory


def _result(stdout: str) -> float:
    return float(json.loads(next(line for line in stdout.splitlines() if line.startswith("RESULT "))[7:]))


def _times(stdout: str) -> list[float]:
    """Every run's seconds, as the scripts above print them on their TIMES line."""
    return [float(t) for t in json.loads(next(line for line in stdout.splitlines() if line.startswith("TIMES "))[6:])]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    bed = TestBed().up()
    try:
        bed.ensure_big_table(args.rows)
        conninfo = f"host={PEER4} port=5432 dbname=app user=app password={bed.db_password} sslmode=disable"
        fill = {"conninfo": conninfo, "query": QUERY, "rows": args.rows, "runs": args.runs, "repo": str(REPO)}
        today = _result(bed.run_in_peer(sys.executable, "-c", TODAY.format(**fill), timeout=1800).stdout)
        loader = _result(bed.run_in_peer(sys.executable, "-c", LOADER.format(old=False, **fill), timeout=1800).stdout)
        old_loader = _result(bed.run_in_peer(sys.executable, "-c", LOADER.format(old=True, **fill),
                                             timeout=1800).stdout)
        uri = f"postgresql://app:{bed.db_password}@{PEER4}:5432/app?sslmode=disable"
        adbc = _result(bed.run_in_peer(sys.executable, "-c", ADBC.format(uri=uri, **fill), timeout=1800).stdout)
        url = f"postgresql+psycopg://app:{bed.db_password}@{PEER4}:5432/app"
        jupysql: float | None = None
        if importlib.util.find_spec("sql") is not None:
            done = bed.run_in_reference(sys.executable, "-c", JUPYSQL.format(url=url, **fill), timeout=1800,
                                        check=False)
            if done.returncode:
                raise SystemExit(f"JupySQL run failed:\n{done.stderr[-3000:]}")
            jupysql = _result(done.stdout)
        mine = ours(bed, args.rows, args.runs)
        old = ours(bed, args.rows, args.runs, text_loader=True)
    finally:
        bed.down()
    print(f"{QUERY} ({args.rows:,} rows x 5 columns) into a DataFrame, median of {args.runs}:")
    print(f"  %%wgsql through wgmagic's tunnel       {mine:6.2f} s   (binary COPY loader)")
    print(f"  old: the same with the CSV loader      {old:6.2f} s   ours/old = {mine / old:.2f}")
    print(f"  adbc: ADBC fetch_df, no tunnel         {adbc:6.2f} s   ours/adbc = {mine / adbc:.2f} (issue 15: <= 2.0)")
    print(f"  (a) psycopg fetchall, no tunnel        {today:6.2f} s   ours/(a) = {mine / today:.2f} (target <= 0.75)")
    print(f"  (b) wgmagic's loader, no tunnel        {loader:6.2f} s   ours/(b) = {mine / loader:.2f} (tunnel cost); "
          f"(b)/adbc = {loader / adbc:.2f}")
    print(f"  (b') the old CSV loader, no tunnel     {old_loader:6.2f} s   (b)/(b') = {loader / old_loader:.2f}")
    if jupysql is None:
        print("  (c) JupySQL %sql via wireguard-go      skipped: jupysql is not installed (pip install -e '.[bench]')")
    else:
        print(f"  (c) JupySQL %sql via wireguard-go      {jupysql:6.2f} s   ours/(c) = {mine / jupysql:.2f} "
              "(target < 1)")


if __name__ == "__main__":
    main()
