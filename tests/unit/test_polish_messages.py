"""What a fresh user met on a first trial (2026-12-05), each at its root: a notebook run headless asked for a
private key, and the messages of a few failures. No bed: in-process objects only."""

from __future__ import annotations

import asyncio
import base64
import re
import socket
import ssl

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wgmagic.config import PRIVATE_KEY_ENV, parse_config
from wgmagic.errors import ConfigError

PRIVATE = base64.b64encode(bytes(range(32))).decode()
PEER = base64.b64encode(bytes(range(100, 132))).decode()
KEYLESS = (f"[Interface]\nAddress = 198.18.0.2/32\n\n[Peer]\nPublicKey = {PEER}\nEndpoint = 127.0.0.1:9\n"
           "AllowedIPs = 198.18.0.0/24\n")


# ---- 5: a frontend that refuses to prompt (nbconvert: no stdin) is "no one to ask" -----------------------------
def test_a_frontend_without_stdin_gets_the_missing_key_error(monkeypatch):
    from IPython.core.error import StdinNotImplementedError

    monkeypatch.delenv(PRIVATE_KEY_ENV, raising=False)

    def refuse(prompt: str) -> str:  # what ipykernel's getpass raises when the frontend does not allow stdin
        raise StdinNotImplementedError("getpass was called, but this frontend does not support input requests.")

    with pytest.raises(ConfigError, match=f"PrivateKey: is missing.*{PRIVATE_KEY_ENV}") as caught:
        parse_config(KEYLESS, ask_private_key=refuse)
    assert "getpass" not in str(caught.value) and "StdinNotImplemented" not in str(caught.value)
    for nobody in (EOFError(), OSError("no tty")):  # the other ways of nobody answering, same message
        def gone(prompt: str, error: BaseException = nobody) -> str:
            raise error
        with pytest.raises(ConfigError, match=PRIVATE_KEY_ENV):
            parse_config(KEYLESS, ask_private_key=gone)


# ---- 4: `%%wgsql --help` (or -h) prints the options whatever the cell body -----------------------------------
@pytest.fixture
def shell():
    from IPython.core.interactiveshell import InteractiveShell

    sh = InteractiveShell.instance()
    sh.run_line_magic("load_ext", "wgmagic")
    yield sh
    sh.run_line_magic("unload_ext", "wgmagic")


@pytest.mark.parametrize("cell", ["%%wgsql --help", "%%wgsql --help\n", "%%wgsql -h\n\n  \n",
                                  "%%wgsql sqlite:// --help\nSELECT 1", "help_x << %%wgsql --help",
                                  "help_y << %%wgsql -h\nSELECT 1"])
def test_wgsql_help_on_the_cell_magic_line_lists_the_options(shell, capsys, cell):
    for name in ("help_x", "help_y"):
        shell.user_ns.pop(name, None)
    result = shell.run_cell(cell)
    out = capsys.readouterr()
    assert result.success, (result.error_in_exec, result.error_before_exec, out)
    assert "usage: %%wgsql" in out.out and "--alias" in out.out, out
    assert "cell body is empty" not in out.out + out.err
    assert "help_x" not in shell.user_ns and "help_y" not in shell.user_ns  # nothing ran


def test_an_empty_wgsql_cell_without_help_is_still_refused(shell, capsys):
    result = shell.run_cell("%%wgsql sqlite:// --no-tunnel")
    assert not result.success
    assert "cell body is empty" in capsys.readouterr().out + repr(result.error_in_exec)


# ---- 7: a failed WebSocket's message never ends on an empty reason ---------------------------------------------
QUIET = [ConnectionResetError, ConnectionAbortedError, BrokenPipeError, EOFError, OSError, TimeoutError,
         RuntimeError, ValueError, ssl.SSLError, ssl.SSLEOFError, socket.gaierror]


@settings(max_examples=200, deadline=None)
@given(kind=st.sampled_from(QUIET), message=st.sampled_from(["", " "]),
       url=st.sampled_from(["wss://gw.example:443/wg", "ws://gw.example/wg", "fly+wss://127.0.0.1:18443/",
                            "fly+ws://127.0.0.1:18443/"]),
       proxy=st.sampled_from([None, "http://alice:s3cret@proxy.example:3128"]),
       server=st.sampled_from(["the relay", "the Fly gateway"]))
def test_a_failure_without_a_message_still_says_why(kind, message, url, proxy, server):
    from wgmagic.runtime.wsconnect import describe_failure

    exc = kind(message) if message else kind()
    text = describe_failure(exc, url, proxy, server=server)
    assert text.strip() and not text.rstrip().endswith((":", "()", "( )")), text
    assert "s3cret" not in text
    reason = text.rpartition(": ")[2]
    assert reason.strip(" ();"), text


def test_wss_to_a_plain_ws_server_says_it_did_not_speak_tls():
    """A real wss:// handshake against a plain ws:// server on loopback (what `--via fly+wss://` met)."""
    from websockets.asyncio.client import connect
    from websockets.asyncio.server import serve

    from wgmagic.runtime.wsconnect import describe_failure

    async def attempt() -> BaseException:
        async def handler(ws):
            await ws.wait_closed()

        async with serve(handler, "127.0.0.1", 0) as server:
            port = server.sockets[0].getsockname()[1]
            try:
                async with connect(f"wss://127.0.0.1:{port}/", ssl=ssl.create_default_context(), open_timeout=10):
                    pass
            except Exception as exc:  # whatever the library raises is what the user meets
                return exc
        raise AssertionError("a TLS handshake with a plain server succeeded")

    exc = asyncio.run(attempt())
    text = describe_failure(exc, "fly+wss://127.0.0.1:18443/", None, server="the Fly gateway")
    assert "did not speak TLS" in text and "ws://" in text, (repr(exc), text)
    assert not text.rstrip().endswith(":")


# ---- 10: --to writes Parquet only, so a path named otherwise is refused before any row moves --------------------
@settings(max_examples=200, deadline=None)
@given(stem=st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="/\x00."), min_size=1,
                    max_size=12),
       suffix=st.sampled_from(["", ".csv", ".json", ".xlsx", ".txt", ".arrow", ".feather", ".parquet.gz",
                               ".parquet", ".PARQUET", ".pq", ".Pq"]))
def test_to_refuses_a_path_that_is_not_named_parquet(stem, suffix):
    from pathlib import Path

    from wgmagic.sql.outputs import OutputSpec

    for path in (f"/tmp/{stem}{suffix}", Path(f"/tmp/{stem}{suffix}")):
        if suffix.lower() in (".parquet", ".pq"):
            assert OutputSpec(to=path).to == path
            continue
        with pytest.raises(ValueError, match=r"--to writes Parquet .*\.parquet or \.pq") as caught:
            OutputSpec(to=path)
        assert (suffix or "without a suffix") in str(caught.value)


def test_wgsql_to_a_csv_name_is_a_usage_error_and_writes_nothing(shell, capsys, tmp_path):
    target = tmp_path / "out.csv"
    shell.user_ns["target"] = target
    result = shell.run_cell("%%wgsql sqlite:// --no-tunnel --to {target}\nSELECT 1 AS x")
    out = capsys.readouterr()
    assert not result.success and "Parquet" in str(result.error_in_exec) + out.out + out.err
    assert list(tmp_path.iterdir()) == []


# ---- 6: a URL scheme no dialect knows is refused before connecting, naming the scheme and the forms accepted ----
@settings(max_examples=100, deadline=None)
@given(scheme=st.from_regex(r"[a-z][a-z0-9]{2,10}", fullmatch=True), driver=st.sampled_from(["", "+nodriver"]))
def test_an_unknown_scheme_is_refused_before_connecting(scheme, driver):
    from sqlalchemy.dialects import registry

    from wgmagic.connstr import DsnError, parse_dsn
    from wgmagic.sql.dialects import dialect_for

    try:
        registry.load(scheme)
        known = not driver
    except Exception:
        known = False
    dsn = parse_dsn(f"{scheme}{driver}://app@db.internal:5000/app")
    if known or dsn.uses_libpq:
        return
    with pytest.raises(DsnError, match=rf"^{scheme}{re.escape(driver)}:// is not a database URL scheme") as caught:
        dialect_for(dsn)
    assert "postgresql://" in str(caught.value) and "sqlite://" in str(caught.value)


@pytest.mark.parametrize("url", ["mssql+pymssql://a@h:1433/d", "oracle+oracledb://a@h:1521/d",
                                 "postgresql+pg8000://a@h/d", "sqlite+aiosqlite:///x.db"])
def test_installed_sqlalchemy_dialects_are_not_refused(url):
    from wgmagic.connstr import parse_dsn
    from wgmagic.sql.dialects import dialect_for

    assert dialect_for(parse_dsn(url)) is not None


def test_wgsql_with_an_unknown_scheme_names_it_and_does_not_connect(shell, capsys):
    result = shell.run_cell("%%wgsql notadsn:// --no-tunnel\nSELECT 1")
    out = capsys.readouterr()
    text = str(result.error_in_exec) + out.out + out.err
    assert not result.success and "notadsn://" in text and "postgresql://" in text, text
    assert "Can't load plugin" not in text and "server stage" not in text and "localhost:0" not in text


# ---- 8: `%wg plot` without --window draws an axis that fits the history it has -------------------------------
@settings(max_examples=200, deadline=None)
@given(start=st.floats(0, 1e6), steps=st.lists(st.floats(0.01, 2.0), max_size=50))
def test_plot_window_fits_the_history(start, steps):
    from wgmagic.notebook.plots import SHORTEST_WINDOW, data_window

    times = [start]
    for step in steps:
        times.append(times[-1] + step)
    records = [{"time": t, "rx_bytes_per_s": 0.0} for t in times]
    window = data_window(records)
    span = times[-1] - times[0]
    assert window == max(SHORTEST_WINDOW, span)
    assert window >= span  # every sample is on the axis (x from -window to 0)
    assert window <= max(SHORTEST_WINDOW, span)  # and the axis is not longer than the data


def test_plot_without_window_is_not_a_fixed_span():
    from wgmagic.notebook.arguments import wg_parser

    assert wg_parser().parse_args(["plot"]).window is None  # was "5m": 5 minutes of axis for 1 s of data
