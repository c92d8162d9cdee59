"""Tunnel.call_on_loop / Tunnel.runtime_engine: the public way for services to run on a tunnel's loop (issue 12).

No peer is needed: a Tunnel starts its engine without waiting for a handshake.
"""

from __future__ import annotations

import threading

import pytest

from tests.testbed.bed import keypair
from tests.testbed.local import silent_udp_port
from wgmagic.config import load_config
from wgmagic.errors import TunnelClosedError
from wgmagic.runtime.tunnel import Tunnel


def test_call_on_loop_runs_on_the_loop_thread_and_passes_results_and_errors():
    ours, _ = keypair()
    _, peer = keypair()
    with silent_udp_port() as port:
        config = (f"[Interface]\nPrivateKey = {ours}\nAddress = 198.18.9.2/32\n\n"
                  f"[Peer]\nPublicKey = {peer}\nEndpoint = 127.0.0.1:{port}\nAllowedIPs = 198.18.9.0/24\n")
        tunnel = Tunnel(load_config(config), name="loop-api")
        try:
            caller = threading.current_thread()
            thread, local_port = tunnel.call_on_loop(
                lambda: (threading.current_thread(), tunnel.runtime_engine.local_port))
            assert thread is not caller and thread.name == "wgmagic-loop-api"
            assert local_port == tunnel.stats()["local_port"] != 0
            assert tunnel.call_on_loop(lambda a, b: a + b, 2, 3) == 5
            # From the loop thread itself it runs at once (no deadlock waiting for itself).
            assert tunnel.call_on_loop(lambda: tunnel.call_on_loop(lambda: "nested")) == "nested"
            with pytest.raises(ZeroDivisionError):
                tunnel.call_on_loop(lambda: 1 / 0)
        finally:
            tunnel.close()
        with pytest.raises(TunnelClosedError):
            tunnel.call_on_loop(lambda: None)
