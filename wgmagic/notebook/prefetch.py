"""Imports the first `%%wgsql` needs, started by `%wg connect` on a thread of their own, and what they cost: the
prefetch records its own stages and the cell's waits for them, which the query timeline (wgmagic.sql.timeline)
charges to the cell's first statement."""

from __future__ import annotations

import contextlib
import threading
import time


class Prefetch:
    """The SQL driver and pandas, imported on a thread from `%wg connect` on: the first `%%wgsql` no longer
    waits for a handshake, then for psycopg, then for pandas, one after the other (time to first result).
    `import wgmagic` and `%load_ext wgmagic` stay cheap: nothing starts before a tunnel is asked for.

    The thread imports in two stages, each marked by an event; the magics wait for a stage before they use
    its modules, so no module is ever imported by two threads at once (that could meet the import system's
    deadlock detection and a half-initialised module).

    `stages` are the thread's own records, ("import", start, end) per stage (time.monotonic() seconds); `wait`
    returns the (start, end) of the caller's wait, so a cell can tell what it waited for
    (wgmagic.sql.timeline.prefetch_charge) from the wait beyond it."""

    # The first %%wgsql resolves its host through the tunnel before its driver connects: the DNS messages'
    # library (dnspython, tens of ms to import) comes first, while the handshake is in flight.
    DRIVER = ("wgmagic.netstack.dns", "wgmagic.runtime.resolver", "psycopg", "wgmagic.sql.parameters",
              "wgmagic.sql.dialects.postgres")
    FRAMES = ("numpy", "pandas")

    def __init__(self) -> None:
        self.driver = threading.Event()
        self.frames = threading.Event()
        self._lock = threading.Lock()
        self._started = False
        self.stages: list[tuple[str, float, float]] = []

    def start(self) -> None:
        with self._lock:
            if self._started:
                return
            self._started = True
        threading.Thread(target=self._run, name="wgmagic-prefetch", daemon=True).start()

    def _run(self) -> None:
        import importlib

        for names, done in ((self.DRIVER, self.driver), (self.FRAMES, self.frames)):
            began = time.monotonic()
            for name in names:
                with contextlib.suppress(Exception):  # a missing module fails later, where it is used
                    importlib.import_module(name)
            self.stages.append(("import", began, time.monotonic()))  # before set(): a waiter sees its record
            done.set()

    def wait(self, stage: threading.Event) -> tuple[float, float]:
        """Wait (at most 60 s) for a stage if the prefetch was started; the wait's (start, end), monotonic s."""
        began = time.monotonic()
        if self._started:
            stage.wait(60.0)
        return began, time.monotonic()


PREFETCH = Prefetch()
