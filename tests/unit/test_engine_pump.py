"""The engine's pump: one per loop turn however many connections asked (pump_soon), and never re-entered."""

from __future__ import annotations

import asyncio
import base64

from wgmagic.config import parse_config
from wgmagic.runtime.engine import Engine

KEY = base64.b64encode(bytes(range(32))).decode()
PEER = base64.b64encode(bytes(range(1, 33))).decode()
CONFIG = f"""[Interface]
PrivateKey = {KEY}
Address = 198.18.0.2/32

[Peer]
PublicKey = {PEER}
AllowedIPs = 198.18.0.0/24
"""


def make_engine() -> tuple[Engine, asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    return Engine(parse_config(CONFIG), {}, loop=loop), loop


def run_one_turn(loop: asyncio.AbstractEventLoop) -> None:
    loop.call_soon(loop.stop)
    loop.run_forever()


def test_pump_soon_schedules_a_single_pump_per_turn():
    engine, loop = make_engine()
    pumps = []
    original = engine.pump
    engine.pump = lambda now=None: (pumps.append(now), original(now))  # type: ignore[method-assign]
    try:
        for _ in range(5):
            engine.pump_soon()
        run_one_turn(loop)
        run_one_turn(loop)
        assert len(pumps) == 1
        engine.pump_soon()
        run_one_turn(loop)
        run_one_turn(loop)
        assert len(pumps) == 2
    finally:
        loop.close()


def test_the_pump_never_reenters_and_goes_round_once_more_instead():
    engine, loop = make_engine()
    depth, deepest, rounds = [0], [0], [0]
    original = engine.stack.packets_to_send

    def packets_to_send(now):
        depth[0] += 1
        rounds[0] += 1
        deepest[0] = max(deepest[0], depth[0])
        if rounds[0] == 1:
            engine.pump(now)  # as a handler sending from inside the pump would
            engine.pump_soon()
        try:
            return original(now)
        finally:
            depth[0] -= 1

    engine.stack.packets_to_send = packets_to_send  # type: ignore[method-assign]
    try:
        engine.pump(1.0)
        assert deepest[0] == 1 and rounds[0] == 2  # the inner call became one more round, not a nested pump
        assert engine._pump_handle is None  # nor a pump scheduled for later
    finally:
        loop.close()
