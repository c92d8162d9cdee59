"""The %%wgsql progress bar's rate (issue 11, smaller items): no rate from a zero interval; fake clock."""

from __future__ import annotations

import io

from wgmagic.sql.progress import BAR_FORMAT, RowProgress


class FakeBar:
    def __init__(self) -> None:
        self.n = 0
        self.postfixes: list[str] = []
        self.closed = False

    def set_postfix_str(self, text: str, refresh: bool = True) -> None:
        self.postfixes.append(text)

    def refresh(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True


class FakeClock:
    def __init__(self, now: float = 100.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_first_report_shows_no_rate_and_later_ones_the_rate_since_it():
    clock, bar = FakeClock(), FakeBar()
    progress = RowProgress(clock=clock, make_bar=lambda: bar)
    progress(1_000_000, 50_000_000)  # a million rows already in when the bar appears: no interval yet
    assert bar.n == 1_000_000 and bar.postfixes[-1] == "50.0 MB"
    progress(1_200_000, 60_000_000)  # same instant: still a zero interval
    assert "rows/s" not in bar.postfixes[-1]
    clock.now += 0.5
    progress(1_300_000, 65_000_000)
    assert bar.postfixes[-1] == "65.0 MB, 600,000 rows/s"  # (1.3M - 1.0M) / 0.5 s
    assert progress.rate(1_300_000, clock.now) == 600_000
    progress.close()
    assert bar.closed and progress.bar is None


def test_clock_going_backwards_gives_no_rate():
    clock, bar = FakeClock(), FakeBar()
    progress = RowProgress(clock=clock, make_bar=lambda: bar)
    progress(10, 100)
    clock.now -= 1
    progress(20, 200)
    assert "rows/s" not in bar.postfixes[-1]


def test_tqdm_line_has_no_rate_of_its_own():
    from tqdm import tqdm

    out = io.StringIO()
    bar = tqdm(desc="receiving", file=out, bar_format=BAR_FORMAT, mininterval=0)
    progress = RowProgress(clock=FakeClock(), make_bar=lambda: bar)
    progress(5_000_000, 250_000_000)
    progress.close()
    text = out.getvalue()
    assert "5000000 rows" in text and "250.0 MB" in text and "/s" not in text
