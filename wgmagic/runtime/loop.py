"""The one background thread of a tunnel: an asyncio event loop that owns every socket and timer.

Other threads never touch tunnel state; they post a call here and wait on a future with a timeout. Waiting
on a concurrent future is a lock acquire, which a signal interrupts, so Ctrl-C reaches a waiting notebook cell.
The engine does not need this thread: it runs on whatever loop it is given (runtime/aio.py runs it on the
caller's). Owns: the thread and its loop's life; never any tunnel state.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from wgmagic.errors import TunnelClosedError

T = TypeVar("T")


class LoopThread:
    """A daemon thread named "wgmagic-<name>" running a new asyncio event loop (`loop`) until `stop()`.

    `call(fn, *args)` runs fn there and returns its result (TimeoutError after `timeout` seconds, the call then
    cancelled; TunnelClosedError once stopped); `run(coro)` the same for a coroutine; `post(fn, *args)` fires and
    forgets. A call made from the loop thread itself runs inline. `stop()` cancels the loop's remaining tasks
    and closes the loop."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._run, name=f"wgmagic-{name}", daemon=True)
        self._started = threading.Event()
        self._stopping = False

    def start(self) -> None:
        """Start the thread and return once its loop runs."""
        self.thread.start()
        self._started.wait()

    @property
    def in_loop_thread(self) -> bool:
        return threading.current_thread() is self.thread

    @property
    def running(self) -> bool:
        return self.thread.is_alive() and not self._stopping

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.call_soon(self._started.set)
        try:
            self.loop.run_forever()
        finally:
            pending = [t for t in asyncio.all_tasks(self.loop) if not t.done()]
            for task in pending:
                task.cancel()
            if pending:
                self.loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())
            self.loop.close()

    def call(self, fn: Callable[..., T], *args: Any, timeout: float | None = 10.0) -> T:
        """Run fn(*args) on the loop thread and return its result (or raise its exception)."""
        if self.in_loop_thread:
            return fn(*args)
        if not self.running:
            raise TunnelClosedError("the tunnel is closed")
        future: concurrent.futures.Future[T] = concurrent.futures.Future()

        def invoke() -> None:
            if not future.set_running_or_notify_cancel():
                return
            try:
                future.set_result(fn(*args))
            except BaseException as exc:
                future.set_exception(exc)

        self.loop.call_soon_threadsafe(invoke)
        return self._wait(future, timeout)

    def post(self, fn: Callable[..., Any], *args: Any) -> None:
        """Fire and forget: schedule fn on the loop thread."""
        if self.in_loop_thread:
            self.loop.call_soon(fn, *args)
        elif self.running:
            with contextlib.suppress(RuntimeError):  # the loop closed between the check and the call
                self.loop.call_soon_threadsafe(fn, *args)

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run a coroutine on the loop and wait for it from another thread."""
        if not self.running:
            coro.close()
            raise TunnelClosedError("the tunnel is closed")
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return self._wait(future, timeout)

    @staticmethod
    def _wait(future: concurrent.futures.Future[T], timeout: float | None) -> T:
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            if future.done():  # the work's own TimeoutError (the same class since 3.11), not the wait's: as is
                raise
            future.cancel()
            raise TimeoutError(f"no answer from the tunnel's thread within {timeout} s") from None
        except BaseException:
            # KeyboardInterrupt while waiting: cancel the work so it does not run on behind the user's back.
            future.cancel()
            raise

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the loop and wait up to `timeout` seconds for the thread to end. Idempotent."""
        if self._stopping:
            return
        self._stopping = True
        if self.thread.is_alive():
            with contextlib.suppress(RuntimeError):
                self.loop.call_soon_threadsafe(self.loop.stop)
            if not self.in_loop_thread:
                self.thread.join(timeout)
