"""Files are cut into lines where the tools that own them cut them (\\n, \\r\\n, \\r), never at U+2028, U+0085 or
a form feed that str.splitlines would also take: a password or comment holding one stays whole."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from wgmagic.files import text_lines


def test_only_newlines_cut() -> None:
    assert text_lines("a\u2028b\nc\x85d\r\ne\x0cf\rg\n") == ["a\u2028b", "c\x85d", "e\x0cf", "g"]
    assert text_lines("") == []
    assert text_lines("\n") == [""]


@given(st.lists(st.text(alphabet=st.characters(blacklist_characters="\r\n", blacklist_categories=("Cs",)))))
def test_round_trip(lines: list[str]) -> None:
    assert text_lines("\n".join(lines) + ("\n" if lines else "")) == lines


def test_a_wg_quick_comment_with_a_line_separator(tmp_path) -> None:
    from tests.testbed.bed import keypair
    from wgmagic.config import parse_config

    ours, _ = keypair()
    _, peer = keypair()
    config = parse_config(f"[Interface]\nPrivateKey = {ours}\n# note\u2028Address = 10.9.9.9/32\n"
                          f"Address = 198.18.0.2/32\n[Peer]\nPublicKey = {peer}\nAllowedIPs = 198.18.0.0/24\n")
    assert [str(a) for a in config.interface.addresses] == ["198.18.0.2/32"]
