"""Progress shown while a command works: `%%wgsql`'s row bar and `%wg bench`'s phase bars (tqdm, imported on
use; without tqdm nothing is shown)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from typing import Any


class PhaseBar:
    """A tqdm bar per bench phase (download, upload, latency), created lazily; `update(phase, fraction)` with
    fraction in [0, 1]."""

    def __init__(self) -> None:
        self.bar: Any = None
        self.phase = ""

    def update(self, phase: str, fraction: float) -> None:
        try:
            from tqdm.auto import tqdm
        except ImportError:
            return
        if phase != self.phase:
            self.close()
            self.phase = phase
            self.bar = tqdm(total=100, desc=phase, leave=False, unit="%")
        self.bar.n = int(fraction * 100)
        self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


@contextlib.contextmanager
def progress_bar(threshold: float | None = 1.0) -> Iterator[Callable[[int, int], None] | None]:
    """A progress callback (rows, bytes) that shows rows, MB and rows/s once a result has taken `threshold`
    seconds (None: no bar); wgmagic.sql.results reports progress only after its own PROGRESS_AFTER."""
    if threshold is None:
        yield None
        return
    from wgmagic.sql.progress import RowProgress

    progress = RowProgress()
    started = time.monotonic()

    def update(rows: int, size: int) -> None:
        if progress.bar is None and time.monotonic() - started < threshold:
            return
        progress(rows, size)

    try:
        yield update
    finally:
        progress.close()
