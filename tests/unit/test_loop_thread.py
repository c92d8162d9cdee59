"""LoopThread (wgmagic/runtime/loop.py): the tunnel's own thread running an asyncio loop, and the calls into it."""

from __future__ import annotations

import asyncio
import threading

import pytest

from wgmagic.errors import TunnelClosedError
from wgmagic.runtime.loop import LoopThread


@pytest.fixture
def thread():
    loop_thread = LoopThread("test")
    loop_thread.start()
    try:
        yield loop_thread
    finally:
        loop_thread.stop()


def test_call_runs_on_the_loop_thread_and_returns_or_raises(thread):
    assert thread.running and not thread.in_loop_thread
    where = thread.call(threading.current_thread)
    assert where is thread.thread and where.name == "wgmagic-test" and where.daemon

    def fail():
        raise ValueError("from the loop")

    with pytest.raises(ValueError, match="from the loop"):
        thread.call(fail)


def test_a_call_from_the_loop_thread_runs_inline(thread):
    def nested():
        assert thread.in_loop_thread
        return thread.call(lambda: "inline")  # would deadlock if it waited on its own loop

    assert thread.call(nested) == "inline"


def test_run_awaits_a_coroutine_on_the_loop(thread):
    async def work():
        await asyncio.sleep(0)
        return asyncio.get_running_loop()

    assert thread.run(work(), timeout=10) is thread.loop


def test_a_call_that_does_not_finish_in_time_is_cancelled_with_a_timeout_error(thread):
    release = threading.Event()
    ran_late = []
    thread.post(release.wait, 10)  # the loop is busy until released
    with pytest.raises(TimeoutError, match=r"within 0\.05 s"):
        thread.call(lambda: ran_late.append(1), timeout=0.05)
    release.set()
    thread.call(lambda: None)  # the loop is free again
    assert ran_late == []  # the timed-out call was cancelled, not run behind the caller's back


def test_post_is_fire_and_forget_in_order(thread):
    seen: list[int] = []
    for i in range(5):
        thread.post(seen.append, i)
    thread.call(lambda: None)
    assert seen == [0, 1, 2, 3, 4]


def test_after_stop_calls_raise_tunnel_closed_and_the_loop_is_closed():
    loop_thread = LoopThread("stopping")
    loop_thread.start()
    loop_thread.stop()
    loop_thread.stop()  # idempotent
    assert not loop_thread.running and not loop_thread.thread.is_alive()
    assert loop_thread.loop.is_closed()
    with pytest.raises(TunnelClosedError):
        loop_thread.call(lambda: None)
    coro = asyncio.sleep(0)
    with pytest.raises(TunnelClosedError):
        loop_thread.run(coro)
    loop_thread.post(lambda: None)  # dropped, no error


def test_tasks_still_running_at_stop_are_cancelled():
    loop_thread = LoopThread("tasks")
    loop_thread.start()
    cancelled = threading.Event()

    async def forever():
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    loop_thread.call(lambda: loop_thread.loop.create_task(forever()))
    loop_thread.stop()
    assert cancelled.is_set()
