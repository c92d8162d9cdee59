"""`%wg` lines end at a shell comment, as the README writes them (`%wg status   # endpoint, handshake age`):
a word that starts with `#` outside quotes ends the line; a `#` inside a word or in quotes stays."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wgmagic.notebook.arguments import without_comment


@pytest.mark.parametrize(("line", "kept"), [
    ("status   # endpoint, handshake age", "status"),
    ("connect wg0.conf                  # or {var} / $var holding wg-quick text", "connect wg0.conf"),
    ("connect fly.conf --via fly    # wss://<the Endpoint's host>:443/", "connect fly.conf --via fly"),
    ("forward db.internal:5432 'a # b'", "forward db.internal:5432 'a # b'"),
    ('forward "x #y" # z', 'forward "x #y"'),
    ("connect a#b.conf", "connect a#b.conf"),
    ("# all of it", ""),
    ("status", "status"),
])
def test_a_comment_ends_the_line(line: str, kept: str) -> None:
    assert without_comment(line) == kept


@given(st.text(alphabet=st.characters(blacklist_characters="#", blacklist_categories=("Cs",)), max_size=60))
def test_a_line_without_hash_is_untouched(line: str) -> None:
    assert without_comment(line) == line


def test_the_readme_lines_parse_as_printed() -> None:
    from wgmagic.notebook.arguments import parse_arguments, wg_parser

    args = parse_arguments(wg_parser(), without_comment(
        "status                            # endpoint, handshake age, bytes, forwards, connections (no secrets)"))
    assert args is not None and args.command == "status"
    args = parse_arguments(wg_parser(), without_comment(
        "connect fly.conf --via auto                # UDP first; for a Fly gateway, that WebSocket if UDP gets no"))
    assert args is not None and (args.command, args.config, args.via) == ("connect", "fly.conf", "auto")
