"""The IPython magics: `%wg` (tunnels, forwards, diagnostics) and `%%wgsql` (SQL into DataFrames).

`WgMagic` is thin, as JupySQL's `SqlMagic` is: its traits are the settings, its state is the registry of the
tunnels and SQL connections this kernel opened, and each command is a function in wgmagic.notebook.cmd.
Arguments are parsed by wgmagic.notebook.arguments, failures presented by wgmagic.notebook.presentation.
Argument text is never variable-expanded by IPython (`{var}` and `$var` are looked up by the commands).
"""

from __future__ import annotations

import functools
import os
from typing import TYPE_CHECKING, Any

from IPython.core.magic import Magics, line_cell_magic, line_magic, magics_class, no_var_expand
from traitlets import Bool, Enum, Float, Int, TraitError, Unicode, default, validate

if TYPE_CHECKING:
    from wgmagic.notebook.arguments import CommandParser

DEFAULT_DISPLAY_LIMIT = 50


@magics_class
class WgMagic(Magics):
    """%wg and %%wgsql. Settings are traitlets: `%config WgMagic` lists them, `%config WgMagic.displaylimit = 5`
    sets one; they are also read from `[tool.wgmagic]` in the project's pyproject.toml or the user's config
    file (wgmagic.notebook.settings says which, and in what order).

    State: `tunnels` (name -> Tunnel) with `current_tunnel`, `connections` (alias -> SQL connection) with
    `current_connection`, the open `dashboards`, and `settings_file` (the path read, or None)."""

    displaylimit = Int(DEFAULT_DISPLAY_LIMIT, allow_none=True, config=True,
                       help="Rows of a result shown (the DataFrame holds them all); 0 or None shows every row "
                            "(as JupySQL's displaylimit).")
    timeout = Float(10.0, config=True, help="Seconds %wg connect waits for the first handshake.")
    tcp_user_timeout = Float(30.0, allow_none=True, config=True,
                             help="Seconds data may go unacknowledged before a tunnel connection fails (RFC 5482; "
                                  "None: off). Applies from the next %wg connect.")
    share = Bool(None, allow_none=True, config=True,
                 help="%wg connect shares each tunnel through its key's host process, as --share does (several "
                      "notebooks on one key; GIL-holding native drivers); None: $WGMAGIC_SHARE, else no.")
    progress_bar = Bool(True, config=True, help="Show a progress bar while a large result arrives.")
    progress_bar_threshold = Float(1.0, config=True,
                                   help="Seconds a result must take before its progress bar appears.")
    autocommit = Bool(True, config=True, help="Commit each statement (as psql does); False: COMMIT yourself.")
    default_tunnel = Unicode(None, allow_none=True, config=True,
                             help="The tunnel %wg and %%wgsql use without --tunnel, and the name %wg connect "
                                  "gives a tunnel without --name; None: the most recent one.")
    dsn_filename = Unicode(config=True, help="The connections file %%wgsql --section reads (INI, no passwords).")
    autopolars = Bool(False, config=True, help="Return a polars.DataFrame instead of a pandas one (JupySQL's name).")
    string_dtype = Enum(["str", "object"], "str", config=True,
                        help="pandas dtype of text columns: str (pandas' Arrow-backed strings) or object.")

    @default("dsn_filename")
    def _default_dsn_filename(self) -> str:
        from wgmagic.notebook.settings import default_dsn_filename

        return default_dsn_filename()

    @validate("displaylimit")
    def _valid_displaylimit(self, proposal: Any) -> int:
        """JupySQL's rule: None is 0 (every row), a negative number is refused."""
        if proposal["value"] is None:
            return 0
        if proposal["value"] < 0:
            raise TraitError("displaylimit must be 0 or None (every row) or more")
        return int(proposal["value"])

    @validate("dsn_filename")
    def _valid_dsn_filename(self, proposal: Any) -> str:
        """`~` expanded when set, as JupySQL's dsn_filename."""
        return os.path.expanduser(proposal["value"])

    @validate("timeout", "progress_bar_threshold")
    def _valid_seconds(self, proposal: Any) -> float:
        if not proposal["value"] >= 0:
            raise TraitError(f"{proposal['trait'].name} must be 0 or more seconds")
        return float(proposal["value"])

    def __init__(self, shell: Any, *, settings_from: str | os.PathLike[str] | None = None) -> None:
        super().__init__(shell)
        self.tunnels: dict[str, Any] = {}
        self.current_tunnel: str | None = None
        self.connections: dict[str, Any] = {}
        self.current_connection: str | None = None
        self.dashboards: list[Any] = []
        from wgmagic.notebook.settings import apply_settings_file

        path = apply_settings_file(self, settings_from)  # below IPython's own configuration, as JupySQL's
        self.settings_file: str | None = None if path is None else str(path)

    @no_var_expand
    @line_magic
    def wg(self, line: str) -> Any:
        """(replaced below the class by wg_usage(): the commands as the parser knows them)"""
        from wgmagic.notebook.arguments import parse_arguments, wg_usage, without_comment
        from wgmagic.notebook.cmd import command
        from wgmagic.notebook.presentation import guarded

        args = parse_arguments(_wg_parser(), without_comment(line))
        if args is None:
            return None
        if args.command in (None, "help"):
            print(wg_usage())
            return None
        return guarded(f"%wg {args.command}", command(args.command), self, args)

    @no_var_expand
    @line_cell_magic
    def wgsql(self, line: str, cell: str | None = None) -> Any:
        """Run SQL through the tunnel: %%wgsql [VAR <<] [DSN|ALIAS] [--alias A] [-o VAR] [--tunnel N]
        [--limit N] [--close], or on one line `x = %wgsql [DSN|ALIAS] [options] SELECT ...`. `{name}` and
        `:name` bind notebook variables as parameters."""
        from wgmagic.notebook.cmd.wgsql import wgsql

        return wgsql(self, line, cell)

    def tunnel(self, name: str | None = None) -> Any:
        """The named tunnel, or the current one; a UsageError that says what to do when there is none."""
        from wgmagic.notebook.cmd.tunnels import find_tunnel

        return find_tunnel(self, name)

    def close_all(self) -> None:
        """Close every dashboard, SQL connection and tunnel the magics opened (on %unload_ext)."""
        for dashboard in self.dashboards:
            dashboard.close()
        self.dashboards.clear()
        for conn in self.connections.values():
            conn.close()
        self.connections.clear()
        for tunnel in self.tunnels.values():
            tunnel.close()
        self.tunnels.clear()
        self.current_tunnel = self.current_connection = None


@functools.cache
def _wg_parser() -> CommandParser:
    """The `%wg` parser, built once (for the docstring below, at `%load_ext`) and used by every `%wg` line:
    argparse reads a parser without changing it, and building this one takes milliseconds."""
    from wgmagic.notebook.arguments import wg_parser

    return wg_parser()


def _wg_doc() -> str:
    return _wg_parser().format_help() + "\n`%wg COMMAND --help` for each command's arguments."


WgMagic.wg.__doc__ = _wg_doc()
