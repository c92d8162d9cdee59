"""`%%wgsql`: SQL through the tunnel into DataFrames, its connection registry (`WgMagic.connections`: alias ->
connection, with `current_connection`), the choice of dialect, and `%wg connections`.

The magic asks the sql layer which dialect serves a DSN (`wgmagic.sql.dialects.dialect_for`) and the connection
itself how a cell is cut into statements (`SqlConnection.statements`): it never asks a driver.
"""

from __future__ import annotations

import argparse
import time
from typing import TYPE_CHECKING, Any

from IPython.core.error import UsageError

from wgmagic.notebook.arguments import (
    CAPTURE,
    VARIABLE,
    keyword_dsn_as_one_argument,
    parse_arguments,
    split_sql_line,
    wgsql_parser,
)
from wgmagic.notebook.cmd.tunnels import default_tunnel_name, find_tunnel
from wgmagic.notebook.prefetch import PREFETCH
from wgmagic.notebook.presentation import guarded
from wgmagic.notebook.progress import progress_bar
from wgmagic.notebook.variables import lookup, value

if TYPE_CHECKING:
    from wgmagic.notebook.magics import WgMagic
    from wgmagic.sql.dialect import SqlConnection


def wgsql(magic: WgMagic, line: str, cell: str | None) -> Any:
    """`%%wgsql [VAR <<] [DSN|ALIAS] [options]` with SQL in the cell, or `%wgsql [DSN|ALIAS] [options] SQL` on
    one line: the last result's DataFrame (every row; displayed up to the display limit), or None."""
    capture = CAPTURE.match(line)
    target_var = None
    if capture:
        target_var, line = capture.group(1), capture.group(2)
    parser = wgsql_parser()
    if cell is None and "--close" in line.split():  # `%wgsql [ALIAS] --close` takes no SQL: all are arguments
        cell = ""
    elif cell is None:  # `x = %wgsql [DSN|ALIAS] [options] SELECT ...`: the SQL starts where our words end
        split = split_sql_line(line, parser, lambda word: word in magic.connections)
        line, cell = split.arguments, split.sql
    args = parse_arguments(parser, keyword_dsn_as_one_argument(line), may_hold_secrets=("target",))
    if args is None:
        return None
    return guarded("%%wgsql", run, magic, args, cell or "", target_var)


def run(magic: WgMagic, args: argparse.Namespace, cell: str, target_var: str | None) -> Any:
    """The cell's statements on the connection `args` name; results printed or returned (see wgsql)."""
    cell_started = time.monotonic()  # the query timeline charges the cell's time to its first statement
    waits = [PREFETCH.wait(PREFETCH.driver)]  # before any import of the SQL layer (see Prefetch)

    if args.limit is not None and args.limit < 0:
        raise UsageError("--limit must be 0 or more")
    if args.out is not None and not args.out.isidentifier():
        raise UsageError(f"-o/--out takes a Python variable name, not {args.out!r}")
    conn = sql_connection(magic, args)
    if args.close:
        conn.close()
        magic.connections.pop(conn.alias, None)
        if magic.current_connection == conn.alias:
            magic.current_connection = next(iter(magic.connections), None)
        print(f"wgmagic: closed connection {conn.alias!r}")
        return None
    magic.current_connection = conn.alias
    conn.set_autocommit(magic.autocommit)  # %config WgMagic.autocommit applies to open connections too
    statements = conn.statements(cell, magic.shell.user_ns)  # cut by the dialect's rules for this session
    if not statements:
        conn.ensure()
        print(f"wgmagic: connected: {conn.dsn.masked()}")
        return None
    waits.append(PREFETCH.wait(PREFETCH.frames))  # pandas went on importing while the connection opened
    from wgmagic.sql import timeline
    from wgmagic.sql.outputs import OutputSpec, run_cell

    try:
        spec = OutputSpec("arrow" if args.arrow else "polars" if magic.autopolars else "pandas",
                          magic.string_dtype, value(magic.shell.user_ns, args.to) if args.to else None, args.chunks)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    before = timeline.recorded()
    charged = timeline.prefetch_charge(waits, PREFETCH.stages)
    conn.lead = timeline.LeadIn(cell_started, charged.pop("import", 0.0), sum(charged.values()))
    with progress_bar(magic.progress_bar_threshold if magic.progress_bar else None) as progress:
        results = run_cell(conn, statements, spec, progress=progress)
    if getattr(args, "timing", False) and timeline.recorded() > before:
        print_after_cell(magic, timeline.explain(timeline.recent(1)[0]))
    frame = None
    for result in results:
        if result.frame is not None:
            frame = result.frame
        else:
            print(affected(result))
    if frame is None:
        return None
    frame = shown(frame, (magic.displaylimit or None) if args.limit is None else args.limit)
    for name in (args.out, target_var):  # the same object as the result (and `_`): every row
        if name:
            magic.shell.user_ns[name] = frame
    return frame


def print_after_cell(magic: WgMagic, text: str) -> None:
    """Print `text` once the cell's result has been displayed (IPython's post_run_cell event), so it stands
    under the DataFrame; at once where there is no event manager."""
    events = getattr(magic.shell, "events", None)
    if events is None:
        print(text)
        return

    def once(*_: Any) -> None:
        events.unregister("post_run_cell", once)
        print(text)

    events.register("post_run_cell", once)


def shown(frame: Any, limit: int | None) -> Any:
    """The whole DataFrame, whatever its length (`x = %wgsql ...` holds every row, as JupySQL's ResultSet
    does); beyond `limit` rows it displays its first `limit` and a line saying how many there are."""
    if limit is None or not hasattr(frame, "iloc") or len(frame) <= limit:  # polars, Arrow, a file, chunks
        return frame
    from wgmagic.notebook.frames import limited_frame

    return limited_frame(frame, limit)


def sql_connection(magic: WgMagic, args: argparse.Namespace) -> SqlConnection:
    """The connection a cell names (a DSN, an alias, `--section NAME`, or the current one), opened through its
    tunnel and kept under its alias; UsageError saying what to do when there is none."""
    from wgmagic.connstr import parse_dsn

    target = args.target
    section = None
    if args.section is not None:
        if target is not None:
            raise UsageError("%%wgsql: give a DSN, an alias or --section NAME, not two of them")
        from wgmagic.notebook.settings import read_connection

        section = read_connection(magic.dsn_filename, args.section)
        target = section.dsn
        args.alias = args.alias or section.section
    match = VARIABLE.match(target) if target else None
    if match:
        target = str(lookup(magic.shell.user_ns, match.group(1) or match.group(2)))
    if target is None or ("://" not in target and "=" not in target):
        alias = target or magic.current_connection
        if alias is None:
            raise UsageError("no SQL connection yet: start with %%wgsql postgresql://user@host/db")
        if alias not in magic.connections:
            raise UsageError(f"no connection named {alias!r}; known: {', '.join(magic.connections) or 'none'}")
        conn: SqlConnection = magic.connections[alias]
        if args.alias and args.alias != alias:
            magic.connections[args.alias] = magic.connections.pop(alias)
            conn.alias = args.alias
        return conn
    dsn = parse_dsn(target)
    from wgmagic.sql.dialects import dialect_for

    dialect = dialect_for(dsn)  # MissingDependencyError now when its driver is not installed
    alias = args.alias or dsn.masked()
    existing: SqlConnection | None = magic.connections.get(alias)
    if existing is not None and existing.dsn.masked() == dsn.masked() and (
            dsn.password is None or existing.dsn.password == dsn.password):
        return existing
    if existing is not None:
        existing.close()
    direct = args.no_tunnel or (section is not None and section.direct and not args.tunnel)
    tunnel_name = None if direct else (args.tunnel or (section.tunnel if section else None)
                                       or default_tunnel_name(magic))
    if tunnel_name is not None:
        try:
            find_tunnel(magic, tunnel_name)  # fails now, with advice, if that tunnel is not up
        except UsageError as exc:
            if section is None or args.tunnel or tunnel_name != section.tunnel:
                raise
            raise UsageError(f"{section.source}: section [{section.section}], key tunnel: {exc}") from None
    provider = None if tunnel_name is None else (lambda: find_tunnel(magic, tunnel_name))
    from wgmagic.config import private_key_prompt

    conn = dialect.connection(dsn, alias, provider, prompt=private_key_prompt(), autocommit=magic.autocommit)
    conn.tunnel_name = tunnel_name
    conn.ensure()  # a connection that cannot open is not kept, and the current one stays current
    magic.connections[alias] = conn
    return conn


def affected(result: Any) -> str:
    """A statement without rows, as psql reports it: "N rows affected", or its status ("CREATE TABLE")."""
    if result.rowcount is not None and result.rowcount >= 0 and result.status.split(" ")[0] in (
            "INSERT", "UPDATE", "DELETE", "MERGE", "COPY", "SELECT", ""):
        return f"{result.rowcount} row{'s' if result.rowcount != 1 else ''} affected"
    return result.status or "done"


def connections(magic: WgMagic, args: argparse.Namespace) -> Any:
    """`%wg connections`: the %%wgsql connections, passwords masked."""
    from wgmagic.notebook.status import ConnectionsTable

    return ConnectionsTable([c.describe() for c in magic.connections.values()], magic.current_connection)
