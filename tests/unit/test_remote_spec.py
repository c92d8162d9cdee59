"""`wgmagic up -R` and `%wg expose` text: any input gives an Expose or a clear error, never another exception."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from wgmagic.addresses import Expose, parse_expose
from wgmagic.cli.common import parse_remote_spec
from wgmagic.errors import WgMagicError


@settings(max_examples=400, deadline=None)
@given(st.text(alphabet=st.sampled_from("0123456789:=[].abcf-x "), max_size=40))
def test_remote_spec_gives_an_expose_or_a_usage_error(text):
    try:
        spec = parse_remote_spec(text)
    except WgMagicError:
        return
    try:
        expose = parse_expose(spec, option="-R")
    except ValueError as exc:
        assert "-R" in str(exc)
        return
    assert isinstance(expose, Expose) and 0 < expose.port < 65536 and 0 < expose.target_port < 65536
