"""wgmagic: user-mode WireGuard and TCP/IP inside a Python process.

Import is cheap on purpose: the heavy parts (pandas, matplotlib, ipywidgets, drivers) load on first use.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
