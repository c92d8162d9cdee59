"""The dialects %%wgsql knows, one module each, and `dialect_for(dsn)`: the one that opens a connection string.

Every module of this package defines `DIALECT` (a wgmagic.sql.dialect.Dialect); a new dialect is one new
module here (copy `sqlite.py`) and its test, with no list to edit. The modules are found by name, in sorted
order; the first non-fallback dialect that accepts the DSN opens it, else the fallback (SQLAlchemy's generic
dialect). Two dialects accepting the same DSN is a bug the unit tests look for (tests/unit/test_dialects.py).
"""

from __future__ import annotations

import importlib
import pkgutil
from functools import cache

from wgmagic.connstr import Dsn
from wgmagic.sql.dialect import Dialect


@cache
def all_dialects() -> tuple[Dialect, ...]:
    """Every dialect of this package, the fallback last. Importing a dialect module imports no driver."""
    found = [importlib.import_module(f"{__name__}.{info.name}").DIALECT
             for info in sorted(pkgutil.iter_modules(__path__), key=lambda info: info.name)]
    return tuple(sorted(found, key=lambda dialect: dialect.fallback))


def dialect_for(dsn: Dsn, *, require_driver: bool = True) -> Dialect:
    """The dialect that opens `dsn`; with `require_driver`, MissingDependencyError (naming the pip extra) now,
    rather than at the first statement, when its driver is not installed, and DsnError when no dialect (nor any
    installed SQLAlchemy dialect) knows its scheme."""
    dialects = all_dialects()
    dialect = next((d for d in dialects if not d.fallback and d.accepts(dsn)), None)
    if dialect is None:
        dialect = next(d for d in dialects if d.fallback)
    if require_driver:
        dialect.require_driver()
        if dialect.fallback:  # a scheme nothing knows is refused now, before a tunnel or a connection is asked
            from wgmagic.sql.dialects.generic import refuse_unknown_scheme

            refuse_unknown_scheme(dsn)
    return dialect
