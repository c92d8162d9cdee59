"""%%wgsql's result beyond the display limit: every row, displayed as the first rows and their count.

Imported on first use only (it imports pandas); a module of its own so that the class pickles by name.
"""

from __future__ import annotations

from typing import Any

import pandas as pd


class WgsqlFrame(pd.DataFrame):
    """A DataFrame holding every row of a result (as JupySQL's ResultSet does), whose notebook and text display
    show its first `_wgmagic_limit` rows and "N rows; showing the first L". Anything derived from it (head,
    filters, copies, arithmetic) is a plain DataFrame."""

    _metadata = ["_wgmagic_limit"]

    @property
    def _constructor(self) -> Any:
        return pd.DataFrame

    def _wgmagic_note(self) -> str:
        return (f"{len(self):,} rows; showing the first {self._wgmagic_limit:,} (every row is in the result; "
                "--limit N or %config WgMagic.displaylimit to show more)")

    def __repr__(self) -> str:
        return f"{pd.DataFrame.__repr__(self.head(self._wgmagic_limit))}\n{self._wgmagic_note()}"

    def _repr_html_(self) -> str | None:
        html = self.head(self._wgmagic_limit)._repr_html_()
        if html is None:
            return None
        return f"{html}<p>{self._wgmagic_note()}</p>"


def limited_frame(frame: pd.DataFrame, limit: int) -> WgsqlFrame:
    """`frame`'s rows (the same data, not copied) as a WgsqlFrame displayed `limit` rows at a time."""
    limited = WgsqlFrame(frame)
    limited._wgmagic_limit = limit
    return limited
