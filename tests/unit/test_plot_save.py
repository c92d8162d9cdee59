"""`%wg plot --save FILE` (wgmagic/notebook/plots.py PngFigure.save) writes through wgmagic.files (issue 21,
item 2): the PNG lands at the path named, replacing a symlink there instead of writing through it."""

from __future__ import annotations

import os
import stat

from wgmagic.notebook.plots import PngFigure


def test_save_replaces_a_symlink_and_writes_the_whole_png(tmp_path, monkeypatch):
    victim = tmp_path / "victim"
    victim.write_text("keep")
    (tmp_path / "plot.png").symlink_to(victim)
    monkeypatch.chdir(tmp_path)
    old = os.umask(0o022)
    try:
        PngFigure(b"\x89PNG\r\n\x1a\n...", "t").save("plot.png")
    finally:
        os.umask(old)
    assert not (tmp_path / "plot.png").is_symlink()
    assert (tmp_path / "plot.png").read_bytes() == b"\x89PNG\r\n\x1a\n..."
    assert stat.S_IMODE((tmp_path / "plot.png").stat().st_mode) == 0o644
    assert victim.read_text() == "keep"
