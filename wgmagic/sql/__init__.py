"""SQL over the tunnel: dialects (`dialect.py`, `dialects/`), statements and parameters, typed results, messages."""
