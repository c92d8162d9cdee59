"""wgmagic: user-mode WireGuard and TCP/IP inside a Python process.

Import is cheap on purpose: the heavy parts (pandas, matplotlib, ipywidgets, drivers) load on first use.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

from wgmagic._version import __version__

if TYPE_CHECKING:  # type checkers see the real types; at run time they load on first use (__getattr__)
    from wgmagic.runtime.hosted import HostedTunnel
    from wgmagic.runtime.share import connect
    from wgmagic.runtime.tunnel import Tunnel

__all__ = ["HostedTunnel", "Tunnel", "__version__", "connect", "get_tunnel", "load_ipython_extension",
           "unload_ipython_extension"]


def get_tunnel(name: str | None = None) -> Tunnel | HostedTunnel:
    """An open tunnel of this process by name (as `%wg connect --name` gave it), or the only/newest one; a
    HostedTunnel for a tunnel shared through its key's host process (`connect(..., share=True)`)."""
    from wgmagic.runtime.registry import open_tunnels

    tunnels = open_tunnels()
    if name is not None:
        for tunnel in tunnels:
            if tunnel.name == name:
                return tunnel
        raise LookupError(f"no open tunnel named {name!r}; open: {', '.join(t.name for t in tunnels) or 'none'}")
    if not tunnels:
        raise LookupError("no tunnel is open: %wg connect CONFIG (or wgmagic.connect(CONFIG)) first")
    return tunnels[-1]


def __getattr__(name: str) -> Any:
    if name == "Tunnel":
        from wgmagic.runtime import tunnel

        return tunnel.Tunnel
    if name == "connect":  # the in-process tunnel, or the key's shared one (runtime/share.py)
        from wgmagic.runtime import share

        return share.connect
    if name == "HostedTunnel":
        from wgmagic.runtime import hosted

        return hosted.HostedTunnel
    raise AttributeError(f"module 'wgmagic' has no attribute {name!r}")


def load_ipython_extension(ipython: Any) -> None:
    """%load_ext wgmagic: registers %wg and %%wgsql, configurable as `%config WgMagic.<setting>`."""
    from wgmagic.notebook.magics import WgMagic
    from wgmagic.notebook.presentation import install_log_handler
    from wgmagic.notebook.transformer import capture_transformer

    magics = WgMagic(ipython)
    magics._log_handler = install_log_handler()  # type: ignore[attr-defined]
    ipython.register_magics(magics)
    if capture_transformer not in ipython.input_transformers_cleanup:
        ipython.input_transformers_cleanup.append(capture_transformer)
    ipython._wgmagic = magics  # unload finds the instance (and the tunnels it opened) here


def unload_ipython_extension(ipython: Any) -> None:
    """%unload_ext wgmagic: closes the tunnels and connections the magics opened."""
    magics = getattr(ipython, "_wgmagic", None)
    if magics is None:
        return
    magics.close_all()
    lifecycle = sys.modules.get("wgmagic.runtime.lifecycle")  # loaded by the first %wg connect, if any
    if lifecycle is not None:
        lifecycle.forget(magics.close_all)
    handler = getattr(magics, "_log_handler", None)
    if handler is not None:
        import logging

        logging.getLogger("wgmagic").removeHandler(handler)
    from wgmagic.notebook.transformer import capture_transformer

    configurables = getattr(ipython, "configurables", None)
    if configurables is not None and magics in configurables:
        configurables.remove(magics)

    if capture_transformer in ipython.input_transformers_cleanup:
        ipython.input_transformers_cleanup.remove(capture_transformer)
    for kind in ("line", "cell"):
        for name in ("wg", "wgsql"):
            ipython.magics_manager.magics[kind].pop(name, None)
    del ipython._wgmagic


def __dir__() -> list[str]:
    """The public names, those loaded on first use (connect, Tunnel, HostedTunnel) included."""
    return sorted(__all__)
