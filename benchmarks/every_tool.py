"""The 1,000,000-row table into a DataFrame with each data tool, through wgmagic's tunnel against the same tool
straight to the database, in the same run (issue 14).

  through   a process on this machine: the tool is given tunnel.engine(url) / tunnel.url(url)
  straight  the same code in a process inside the test bed's namespace, connecting to 198.18.0.1 directly
            (no tunnel, no WireGuard: what the tool costs on its own)

Tools: pandas.read_sql with a SQLAlchemy engine (psycopg; pg8000), JupySQL's %sql (autopandas), polars with
ConnectorX, ADBC (Arrow, then to_pandas). Each figure is the median of --runs runs after one warm-up run.
Needs root (it brings up the test bed). Usage: python -m benchmarks.every_tool [--rows 1000000] [--runs 3]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import time
from typing import Any

from tests.testbed.bed import PEER4, REPO, TestBed

QUERY = "SELECT id, x, label, at, flag FROM big"
TOOLS = ("pandas+psycopg", "pandas+pg8000", "jupysql", "polars/connectorx", "adbc")


def _load(tool: str, url: str, tunnel: Any) -> Any:
    """One load of the table into a DataFrame with `tool`; `tunnel` None: straight to the database."""
    if tool.startswith("pandas+"):
        import pandas as pd
        import sqlalchemy

        driver = tool.split("+")[1]
        driver_url = url.replace("postgresql://", f"postgresql+{driver}://")
        options: dict[str, Any] = {}
        if driver == "pg8000":  # no libpq options; ssl_context=False is its sslmode=disable
            driver_url, options = driver_url.partition("?")[0], {"connect_args": {"ssl_context": False}}
        engine = (tunnel.engine(driver_url, **options) if tunnel else
                  sqlalchemy.create_engine(driver_url, **options))
        try:
            return pd.read_sql(QUERY, engine)
        finally:
            engine.dispose()
    if tool == "jupysql":
        from IPython.core.interactiveshell import InteractiveShell

        shell = InteractiveShell.instance()
        if "sql" not in shell.extension_manager.loaded:
            shell.run_line_magic("load_ext", "sql")
            shell.run_line_magic("config", "SqlMagic.autopandas = True")
            shell.run_line_magic("config", "SqlMagic.displaylimit = 1")
            shell.run_line_magic("config", "SqlMagic.autolimit = 0")
        import sqlalchemy

        driver_url = url.replace("postgresql://", "postgresql+psycopg://")
        shell.user_ns["engine"] = tunnel.engine(driver_url) if tunnel else sqlalchemy.create_engine(driver_url)
        shell.run_line_magic("sql", "engine --alias bench")
        try:
            return shell.run_line_magic("sql", QUERY)
        finally:
            shell.run_line_magic("sql", "--close bench")
            shell.user_ns.pop("engine").dispose()
    if tool == "polars/connectorx":
        import polars as pl

        return pl.read_database_uri(QUERY, tunnel.url(url) if tunnel else url)
    if tool == "adbc":
        import adbc_driver_postgresql.dbapi as adbc

        with adbc.connect(tunnel.url(url) if tunnel else url) as conn, conn.cursor() as cursor:
            cursor.execute(QUERY)
            return cursor.fetch_arrow_table().to_pandas()
    raise ValueError(tool)


def child(spec: dict[str, Any]) -> None:
    """Runs in its own process: {"tool", "url", "rows", "runs", "config" (None: straight)}."""
    tunnel = None
    if spec["config"]:
        import wgmagic

        tunnel = wgmagic.connect(spec["config"], name="bench")
    try:
        times = []
        for index in range(spec["runs"] + 1):
            start = time.perf_counter()
            frame = _load(spec["tool"], spec["url"], tunnel)
            elapsed = time.perf_counter() - start
            assert len(frame) == spec["rows"], (spec["tool"], len(frame))
            del frame
            if index:  # the first run warms up imports, caches and the server's buffers
                times.append(elapsed)
    finally:
        if tunnel is not None:
            tunnel.close()
    print("RESULT", json.dumps(statistics.median(times)), flush=True)


def _result(stdout: str, stderr: str, what: str) -> float:
    for line in stdout.splitlines():
        if line.startswith("RESULT "):
            return float(json.loads(line[7:]))
    raise SystemExit(f"{what} failed:\n{stderr[-3000:]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--tools", default=",".join(TOOLS), help="comma-separated subset of " + ", ".join(TOOLS))
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(json.loads(args.child))
        return
    import subprocess
    import tempfile

    tools = [t for t in args.tools.split(",") if t]
    bed = TestBed().up()
    results: dict[str, tuple[float, float]] = {}
    try:
        bed.ensure_big_table(args.rows)
        with tempfile.NamedTemporaryFile("w", suffix=".conf", delete=False) as config:
            config.write(bed.client_config(identity=7))
        straight_url = f"postgresql://app:{bed.db_password}@{PEER4}:5432/app?sslmode=disable"
        tunnel_url = f"postgresql://app:{bed.db_password}@db.internal:5432/app?sslmode=disable"
        command = ["env", f"PYTHONPATH={REPO}", sys.executable, "-m", "benchmarks.every_tool", "--child"]
        for tool in tools:
            spec = {"tool": tool, "rows": args.rows, "runs": args.runs}
            done = bed.run_in_peer(*command, json.dumps({**spec, "url": straight_url, "config": None}),
                                   check=False, timeout=3600)
            straight = _result(done.stdout, done.stderr, f"{tool} straight")
            done = subprocess.run([*command, json.dumps({**spec, "url": tunnel_url, "config": config.name})],
                                  capture_output=True, text=True, timeout=3600, cwd=REPO)
            through = _result(done.stdout, done.stderr, f"{tool} through the tunnel")
            results[tool] = (through, straight)
            print(f"  {tool:18} through {through:6.2f} s   straight {straight:6.2f} s   "
                  f"ratio {through / straight:.2f}", flush=True)
    finally:
        bed.down()
        with contextlib.suppress(NameError, OSError):
            os.unlink(config.name)
    print(f"\n{QUERY} ({args.rows:,} rows x 5 columns) into a DataFrame, median of {args.runs} (after a warm-up):")
    print(f"  {'tool':18} {'through the tunnel':>18} {'straight':>10} {'ratio':>7}")
    for tool, (through, straight) in results.items():
        print(f"  {tool:18} {through:16.2f} s {straight:8.2f} s {through / straight:7.2f}")


if __name__ == "__main__":
    main()
