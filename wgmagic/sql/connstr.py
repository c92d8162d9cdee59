"""Connection strings, as the sql layer has always imported them.

The parser itself lives in `wgmagic.connstr`, a pure-text module low in the layers (beside `config`), so that
the runtime's `Tunnel.url()` / `Tunnel.engine()` can route a connection string through a tunnel without
importing the sql layer (docs/layers.md).
"""

from wgmagic.connstr import (
    DEFAULT_PORTS,
    SECRET_OPTIONS,
    Dsn,
    DsnError,
    mask_all_secrets,
    mask_secrets,
    parse_dsn,
)

__all__ = ["DEFAULT_PORTS", "SECRET_OPTIONS", "Dsn", "DsnError", "mask_all_secrets", "mask_secrets", "parse_dsn"]
