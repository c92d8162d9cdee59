"""The `%%wgsql` progress bar: rows and MB received, and a rate measured over a real interval.

The bar appears once a result has taken a second (the bulk path's first report). tqdm's own rate would be
rows / (time since the bar appeared): at the first report that is a million rows over microseconds, billions
of rows per second. Here the rate is (rows since the first report) / (seconds since it), by an injectable
clock, and is shown only once that interval is above zero.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

BAR_FORMAT = "{desc}: {n_fmt} rows [{elapsed}{postfix}]"  # no tqdm {rate}: ours is in the postfix


class RowProgress:
    """A `Progress` callback (rows, bytes) that draws a tqdm bar on first call; close() removes it."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic,
                 make_bar: Callable[[], Any] | None = None) -> None:
        self._clock = clock
        self._make_bar = make_bar
        self.bar: Any = None
        self._first: tuple[float, int] | None = None  # (clock, rows) at the first report

    def rate(self, rows: int, now: float) -> float | None:
        """Rows per second since the first report; None until time has passed since it."""
        if self._first is None:
            return None
        elapsed = now - self._first[0]
        if elapsed <= 0:
            return None
        return (rows - self._first[1]) / elapsed

    def __call__(self, rows: int, size: int) -> None:
        now = self._clock()
        if self.bar is None:
            self.bar = self._new_bar()
            if self.bar is None:
                return
        if self._first is None:
            self._first = (now, rows)
        rate = self.rate(rows, now)
        postfix = f"{size / 1e6:.1f} MB" + (f", {rate:,.0f} rows/s" if rate is not None else "")
        self.bar.n = rows
        self.bar.set_postfix_str(postfix, refresh=False)
        self.bar.refresh()

    def _new_bar(self) -> Any:
        if self._make_bar is not None:
            return self._make_bar()
        try:
            from tqdm.auto import tqdm
        except ImportError:
            return None
        return tqdm(desc="receiving", unit=" rows", leave=False, bar_format=BAR_FORMAT)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
