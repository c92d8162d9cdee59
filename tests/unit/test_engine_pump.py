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


def test_a_deadline_that_moves_later_keeps_the_armed_timer_and_an_earlier_one_rearms():
    engine, loop = make_engine()
    due: list[float | None] = [None]
    engine.device.next_timer = lambda: None  # type: ignore[method-assign]
    engine.stack.next_timer = lambda: due[0]  # type: ignore[method-assign]
    try:
        base = loop.time()
        due[0] = base + 10.0
        engine._reschedule()
        first = engine._timer
        assert first is not None and engine._timer_deadline == base + 10.0
        for later in (base + 20.0, base + 30.0, None):  # an RTO pushed on by each send; nothing due at all
            due[0] = later
            engine._reschedule()
            assert engine._timer is first and not first.cancelled()  # no cancel and re-arm per segment
        due[0] = base + 5.0  # earlier (a delayed ACK): re-armed
        engine._reschedule()
        assert engine._timer is not first and first.cancelled() and engine._timer_deadline == base + 5.0
    finally:
        loop.close()


def test_a_timer_that_fires_early_finds_nothing_due_and_arms_the_real_deadline():
    engine, loop = make_engine()
    due: list[float | None] = [None]
    fired: list[float] = []
    engine.device.next_timer = lambda: None  # type: ignore[method-assign]
    engine.stack.next_timer = lambda: due[0]  # type: ignore[method-assign]
    engine.stack.handle_timers = lambda now: fired.append(now)  # type: ignore[method-assign]
    try:
        due[0] = loop.time()  # due now
        engine._reschedule()
        due[0] = loop.time() + 3600.0  # then moved on: the armed timer stays
        engine._reschedule()
        run_one_turn(loop)
        assert len(fired) == 1  # it fired (early) and the engine looked at its timers
        assert engine._timer is not None and engine._timer_deadline == due[0]  # now armed at the real one
    finally:
        loop.close()


def test_send_now_pumps_in_the_call_and_inside_a_pump_goes_round_once_more():
    engine, loop = make_engine()
    pumps = []
    original = engine.pump
    engine.pump = lambda now=None: (pumps.append(now), original(now))  # type: ignore[method-assign]
    woken: list[object] = []
    engine.stack.wake = woken.append  # type: ignore[method-assign]
    try:
        engine.pump_soon()  # a pump already scheduled for this turn happens now instead
        engine.send_now(object(), 1.0)
        assert pumps == [1.0] and engine._pump_handle is None and len(woken) == 1
        run_one_turn(loop)
        assert pumps == [1.0]
        engine._pumping = True  # as from an event handler inside a pump
        engine.send_now(object(), 2.0)
        assert pumps == [1.0] and engine._pump_again
    finally:
        engine._pumping = False
        loop.close()
