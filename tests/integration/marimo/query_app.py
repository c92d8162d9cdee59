"""A marimo notebook that connects and queries through wgmagic (tests/integration/test_marimo.py runs it headless
with `marimo export html`, and twice in one process with App.run). The config's path and the DSN (with its
password) come from the environment, never from a command line."""

import marimo

__generated_with = "0.25.2"
app = marimo.App()


@app.cell
def _():
    import os

    import marimo as mo
    import psycopg

    import wgmagic
    return mo, os, psycopg, wgmagic


@app.cell
def _(os, wgmagic):
    tunnel = wgmagic.connect(os.environ["WGMAGIC_TEST_CONFIG"], timeout=20)  # the connect cell
    return (tunnel,)


@app.cell
def _(os, psycopg, tunnel):
    with psycopg.connect(tunnel.url(os.environ["WGMAGIC_TEST_DSN"]), connect_timeout=20) as conn:
        rows = conn.execute("SELECT count(*) FROM measurements").fetchone()[0]
    return (rows,)


@app.cell
def _(os, psycopg, tunnel, wgmagic):
    with wgmagic.connect(os.environ["WGMAGIC_TEST_CONFIG"]) as outer:  # noqa: SIM117 (two libraries own blocks)
        with wgmagic.connect(os.environ["WGMAGIC_TEST_CONFIG"]) as inner:
            with psycopg.connect(inner.url(os.environ["WGMAGIC_TEST_DSN"]), connect_timeout=20) as c:
                nested = c.execute("SELECT 42").fetchone()[0]
    nested_same = outer is inner is tunnel and not tunnel.closed
    return nested, nested_same


@app.cell
def _(mo, nested, nested_same, rows):
    mo.md(f"wgmagic-marimo: rows={rows} nested={nested} same={nested_same}")
    return


if __name__ == "__main__":
    app.run()
