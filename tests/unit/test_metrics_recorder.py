"""metrics.py: the totals read from a live engine, and the recorder's samples (rates, idle repeats, windows)."""

from __future__ import annotations

import asyncio

import pytest

from tests.unit.memory_net import ECHO_PORT, PEER_HOST, MemoryNet, handshake
from wgmagic.runtime import metrics
from wgmagic.runtime.metrics import IDLE_AFTER, IDLE_INTERVAL, MetricsRecorder, totals
from wgmagic.runtime.relay import HappyEyeballs


def test_totals_and_samples_of_a_live_engine():
    async def main():
        net = MemoryNet(asyncio.get_running_loop())
        try:
            engine = net.engine
            before = totals(engine)
            assert before["handshakes"] == 0 and before["tcp_connections"] == 0 and before["drops"] == 0
            wall = iter(float(t) for t in range(100, 200))
            recorder = MetricsRecorder(engine, interval=0.1, seconds=1.0, wall_clock=lambda: next(wall))
            first = recorder.sample()
            assert first["time"] == 100.0 and first["rx_bytes_per_s"] == 0.0  # no previous sample: no rate
            await handshake(net)
            outcome = asyncio.get_running_loop().create_future()
            HappyEyeballs(engine, [PEER_HOST], ECHO_PORT, 5.0, outcome.set_result, outcome.set_exception)
            conn = await asyncio.wait_for(outcome, 10)
            after = totals(engine)
            assert after["handshakes"] == 1 and after["tcp_connections"] == 1 and after["tcp_established"] == 1
            assert after["udp_rx_bytes"] == 0  # the memory transport counts no UDP bytes
            assert after["wg_tx_packets"] >= 2 and after["wg_rx_packets"] >= 1 and after["tcp_srtt"] is not None
            second = recorder.sample()
            assert second["handshakes"] == 1 and second["connections"] == 1 and second["handshake_rtt"] is not None
            assert 0.0 <= second["handshake_age"] < 10.0
            assert metrics.tcp_stats(engine)["connections"] == 1
            conn.abort(engine.now())
            # The ring keeps `seconds / interval` samples; history(window) cuts by the wall-clock "time".
            for _ in range(20):
                recorder.sample()
            assert len(recorder.history()) == 10
            assert [r["time"] for r in recorder.history(window=2.0)] == [119.0, 120.0, 121.0]
        finally:
            net.close()

    asyncio.run(main())


def test_an_idle_tunnel_repeats_its_last_sample_and_slows_down():
    async def main():
        net = MemoryNet(asyncio.get_running_loop())
        try:
            recorder = MetricsRecorder(net.engine, interval=0.1, seconds=10.0)
            recorder.sample()
            calls = []
            real_totals = metrics.totals
            metrics.totals = lambda engine: calls.append(1) or real_totals(engine)  # type: ignore[assignment]
            try:
                delays = []
                loop = asyncio.get_running_loop()
                real_call_later = loop.call_later
                loop.call_later = lambda delay, *a: (delays.append(delay), real_call_later(3600, *a))[1]
                recorder._datagrams = 0  # nothing moved since
                for _ in range(IDLE_AFTER + 1):
                    recorder._tick()
                loop.call_later = real_call_later
            finally:
                metrics.totals = real_totals
            assert calls == []  # an idle sample repeats the last record, reading no counter
            assert delays[:IDLE_AFTER - 1] == [pytest.approx(0.1)] * (IDLE_AFTER - 1)
            assert delays[-1] == IDLE_INTERVAL
            assert all(r["rx_bytes_per_s"] == 0.0 for r in recorder.samples)
            recorder.stop()
        finally:
            net.close()

    asyncio.run(main())
