"""A tunnel's end leaves nothing on the server: its connections are ended toward the server before
it closes, and what a killed process left is ended by the next tunnel on the same key.

- `end_connections(engine, timeout)`: every TCP connection of the tunnel closes with a FIN after what was
  queued (RFC 9293 3.6; a RST where unread data remains, as Linux does); those not finished within `timeout`
  (about a second) are reset; each step's segments leave over the transport before the caller closes it.
  `Tunnel.close` runs it before the engine closes.
- `LeftoverRecord`: the 4-tuples of the open connections (`Stack.open_connections`), kept in a file beside the
  tunnel's key lock (`<lock name>.connections`, 0600 in the private runtime directory, written whole by
  `files.write_bytes`), refreshed on the loop every RECORD_PERIOD seconds while something changed, removed on
  close. A process killed outright leaves it; the next tunnel on the key, holding the lock now, reads it and,
  after its first handshake, sends each connection's probe (`Stack.probe_leftover`, netstack/leftovers.py):
  the server's challenge ACK draws the RST it accepts.
- `before_exit(fn)` / `forget(fn)`: called, newest first, before the tunnels close at interpreter exit (the
  magics register their `close_all` there, so `%%wgsql` sessions say the driver's goodbye, libpq's Terminate,
  while the tunnel still carries it). `install_sigterm()`: a SIGTERM (a kernel manager's shutdown, `kill`)
  runs the same as an exit, then dies of SIGTERM as before; only when SIGTERM had its default action and only
  from the main thread.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import os
import signal
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from wgmagic import files
from wgmagic.netstack import leftovers
from wgmagic.netstack.leftovers import FourTuple
from wgmagic.netstack.tcp.state import CLOSE_WAIT, CLOSED, ESTABLISHED, FIN_WAIT_2, SYN_RECEIVED, TIME_WAIT
from wgmagic.runtime import registry

if TYPE_CHECKING:
    from wgmagic.runtime.engine import Engine
    from wgmagic.runtime.keylock import KeyLock
    from wgmagic.runtime.loop import LoopThread

logger = logging.getLogger(__name__)

GOODBYE_TIMEOUT = 1.0  # seconds for the FINs to be acknowledged before the rest are reset
RECORD_PERIOD = 0.2  # seconds between looks at the open connections
# When to send a leftover's SYN again: Linux answers at most one challenge ACK per connection every
# tcp_invalid_ratelimit (500 ms), counting any out-of-window answer the dead process drew just before it died
# (a keep-alive, a path-MTU check), so one SYN may go unanswered (TcpExtTCPACKSkippedChallenge).
PROBE_AGAIN = (0.7, 1.5, 3.0)
POLL = 0.02
_DONE = (CLOSED, TIME_WAIT, FIN_WAIT_2)  # nothing more to say to the server (FIN_WAIT_2: our FIN is acked)


# ---- ending the connections toward the server ------------------------------------------------------------
async def _end_connections(engine: Engine, timeout: float) -> tuple[int, int]:
    stack = engine.stack
    closing = 0
    now = engine.now()
    for conn in list(stack.tcp.values()):
        if conn.state in (ESTABLISHED, CLOSE_WAIT, SYN_RECEIVED):
            conn.close(now)
            stack.wake(conn)
            closing += 1
    for conn in stack.tcp.values():
        stack.wake(conn)  # what any of them still has queued (a relay's RST) leaves too
    engine.pump()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline and any(c.state not in _DONE for c in stack.tcp.values()):
        await asyncio.sleep(POLL)
    reset = 0
    now = engine.now()
    for conn in list(stack.tcp.values()):
        if conn.state not in _DONE:
            conn.abort(now)
            stack.wake(conn)
            reset += 1
    engine.pump()
    return closing, reset


def end_connections(thread: LoopThread, engine: Engine, timeout: float = GOODBYE_TIMEOUT) -> None:
    """End every TCP connection of `engine` toward the server: FIN after what was queued, RST for those not
    done within `timeout` seconds; the segments leave over the transport (the engine's pump sends them) before
    this returns. From any thread but the loop's; never raises (a loop already gone has nothing to end)."""
    if engine.closed or not thread.running:
        return
    try:
        closing, reset = thread.run(_end_connections(engine, timeout), timeout=timeout + 3.0)
    except Exception as exc:
        logger.debug("ending the connections: %s", type(exc).__name__)
        return
    if closing or reset:
        logger.info("closed %d connection(s) toward the server, %d of them reset", closing, reset)


def last_handshake(engine: Engine) -> float | None:
    """On the loop thread: when the newest session of any peer was made (time.monotonic() seconds), or None."""
    now = engine.now()
    offset = engine.device.protocol_time(now) - now  # the device's clock counts suspended time
    made = [peer.current.created for peer in engine.device.peers.values() if peer.current is not None]
    return max(made) - offset if made else None


# ---- the record of open connections, for the next tunnel on the key ---------------------------------------
class LeftoverRecord:
    """The file `<lock>.connections` beside the key lock `path` (see the module docstring)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._written: tuple[FourTuple, ...] = ()
        self._handle: asyncio.TimerHandle | None = None
        self.probed = 0

    @classmethod
    def beside(cls, key_lock: KeyLock) -> LeftoverRecord | None:
        """The record for a tunnel holding `key_lock`, or None where nothing is locked (no flock, no private
        runtime directory: no other process can be told)."""
        if not key_lock.held:
            return None
        lock_path = key_lock.held[0][0]
        return cls(lock_path[: -len(".lock")] + ".connections")

    def take(self) -> list[FourTuple]:
        """What a process that held the key before left in the record (the file is removed). Never raises."""
        try:
            fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0))
        except OSError:
            return []
        try:
            data = os.read(fd, leftovers.MAX_RECORD_BYTES)
        except OSError:
            data = b""
        finally:
            os.close(fd)
        self.remove()
        found, skipped = leftovers.decode(data)
        if skipped:
            logger.debug("the connection record had %d malformed line(s)", skipped)
        return found

    def write(self, connections: list[FourTuple]) -> None:
        """Write the record when it changed (an empty one is removed). Never raises (logged at debug)."""
        current = tuple(connections)
        if current == self._written:
            return
        try:
            if current:
                files.write_bytes(self.path, leftovers.encode(current), private=True)
            else:
                self.remove()
            self._written = current
        except OSError as exc:
            logger.debug("the connection record: %s", exc.strerror)

    def remove(self) -> None:
        with contextlib.suppress(OSError):
            os.unlink(self.path)
        self._written = ()

    # -- on the loop thread --
    def start(self, engine: Engine) -> None:
        """Probe what the last holder left once the first handshake completes, and keep the record (loop)."""
        left = self.take()
        if left:
            waiter = engine.wait_handshake()
            waiter.add_done_callback(lambda fut: self._probe(engine, left, fut))
        self._tick(engine)

    def _probe(self, engine: Engine, left: list[FourTuple], fut: asyncio.Future[float | None]) -> None:
        if fut.cancelled() or fut.exception() is not None or engine.closed:
            return
        self.probed = self._send_probes(engine, left)
        logger.info("ending %d connection(s) a previous process left on the server", self.probed)
        for delay in PROBE_AGAIN:  # a rate-limited challenge ACK gets another chance; an ended one draws a RST
            engine.loop.call_later(delay, self._send_probes, engine, left)

    @staticmethod
    def _send_probes(engine: Engine, left: list[FourTuple]) -> int:
        if engine.closed:
            return 0
        now = engine.now()
        sent = sum(engine.stack.probe_leftover(c, now) for c in left)
        engine.pump()
        return sent

    def _tick(self, engine: Engine) -> None:
        if engine.closed:
            return
        self.write(engine.stack.open_connections())
        self._handle = engine.loop.call_later(RECORD_PERIOD, self._tick, engine)

    def stop(self) -> None:
        """Stop keeping the record and remove it (loop thread: after end_connections)."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self.remove()


# ---- exit hooks -------------------------------------------------------------------------------------------
_before_exit: list[Callable[[], object]] = []
_hooks_lock = threading.Lock()
_sigterm_installed = False


def before_exit(fn: Callable[[], object]) -> None:
    """Call `fn()` at interpreter exit (or SIGTERM) before the tunnels close; newest first."""
    with _hooks_lock:
        if fn not in _before_exit:
            _before_exit.append(fn)


def forget(fn: Callable[[], object]) -> None:
    """Undo `before_exit(fn)`."""
    with _hooks_lock:
        if fn in _before_exit:
            _before_exit.remove(fn)


def run_exit_hooks() -> None:
    """Run the before-exit hooks (each once), then close every open tunnel. Never raises."""
    with _hooks_lock:
        hooks = list(reversed(_before_exit))
        _before_exit.clear()
    for fn in hooks:
        try:
            fn()
        except Exception as exc:
            logger.debug("an exit hook failed: %s", type(exc).__name__)
    with contextlib.suppress(Exception):
        registry.close_all()


def _on_sigterm(signum: int, _frame: object) -> None:
    run_exit_hooks()
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGTERM)


def install_sigterm() -> None:
    """Make SIGTERM end the tunnels' connections first (see the module docstring); idempotent."""
    global _sigterm_installed
    if _sigterm_installed or threading.current_thread() is not threading.main_thread():
        return
    try:
        if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
            signal.signal(signal.SIGTERM, _on_sigterm)
    except (ValueError, OSError, AttributeError):
        return
    _sigterm_installed = True


# Registered after registry's own exit hook (this module imports after it), so it runs first: the hooks, then
# the tunnels, each closing its connections toward the server.
atexit.register(run_exit_hooks)
