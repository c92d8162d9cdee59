"""What a new user met on a first trial (2026-11-30), each at its root: the private key from the environment on
every path, peer keys of small order, the doctor's fix line per kind of config error, listeners' bind errors,
missing optional packages, `%wg help`, addresses as users write them, warnings as plain lines, --via auto without
a URL, and one tunnel naming rule. No bed: loopback sockets and in-process objects only."""

from __future__ import annotations

import base64
import errno
import gc
import logging
import os
import socket
import sys
import types

import pytest

from wgmagic.config import _SMALL_ORDER_POINTS, PRIVATE_KEY_ENV, is_small_order_point, load_config, parse_config
from wgmagic.errors import ConfigError, HandshakeTimeoutError, MissingDependencyError

PRIVATE = base64.b64encode(bytes(range(32))).decode()
PEER = base64.b64encode(bytes(range(100, 132))).decode()


def _config(*, private: str | None = PRIVATE, peer: str = PEER, endpoint: str = "127.0.0.1:9") -> str:
    key = f"PrivateKey = {private}\n" if private else ""
    return (f"[Interface]\n{key}Address = 198.18.0.2/32\n\n[Peer]\nPublicKey = {peer}\nEndpoint = {endpoint}\n"
            "AllowedIPs = 198.18.0.0/24\n")


@pytest.fixture(autouse=True)
def _no_key_in_environment(monkeypatch):
    monkeypatch.delenv(PRIVATE_KEY_ENV, raising=False)
    monkeypatch.delenv("WGMAGIC_VIA", raising=False)


# ---- 3: WGMAGIC_PRIVATE_KEY, one rule for the CLI, wgmagic.connect() and %wg connect ---------------------------
def test_private_key_from_the_environment_when_the_file_has_none(monkeypatch, tmp_path):
    path = tmp_path / "nopriv.conf"
    path.write_text(_config(private=None))
    with pytest.raises(ConfigError, match=f"PrivateKey: is missing.*{PRIVATE_KEY_ENV}") as caught:
        load_config(str(path), ask_private_key=None)
    assert caught.value.key == "PrivateKey"
    monkeypatch.setenv(PRIVATE_KEY_ENV, PRIVATE)
    assert load_config(str(path)).interface.private_key == bytes(range(32))  # the CLI's and connect()'s path
    monkeypatch.setenv(PRIVATE_KEY_ENV, "not a key")
    with pytest.raises(ConfigError, match=PRIVATE_KEY_ENV) as caught:
        load_config(str(path))
    assert "not a key" not in str(caught.value)


def test_private_key_asked_for_when_someone_can_answer(monkeypatch, tmp_path):
    import wgmagic.config as config

    asked = []
    assert parse_config(_config(private=None), ask_private_key=lambda prompt: asked.append(prompt) or PRIVATE)
    assert PRIVATE_KEY_ENV in asked[0]
    monkeypatch.setattr(sys, "stdin", types.SimpleNamespace(isatty=lambda: True))
    monkeypatch.setattr("getpass.getpass", lambda prompt: PRIVATE)
    path = tmp_path / "nopriv.conf"
    path.write_text(_config(private=None))
    assert load_config(str(path)).interface.private_key == bytes(range(32))  # a terminal: the hidden prompt
    monkeypatch.setattr(sys, "stdin", types.SimpleNamespace(isatty=lambda: False))
    assert config.private_key_prompt() is None  # a pipe or a script: the error, never a hanging read
    with pytest.raises(ConfigError, match="is missing"):
        load_config(str(path))


# ---- 4: a peer key of small order is a config error, before any handshake ------------------------------------
def test_small_order_peer_keys_are_refused_where_x25519_gives_zero():
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

    ours = X25519PrivateKey.generate()
    for point in _SMALL_ORDER_POINTS:
        for encoded in (point, point[:31] + bytes([point[31] | 0x80])):  # X25519 ignores the top bit
            assert is_small_order_point(encoded)
            with pytest.raises(ValueError):  # the all-zero shared secret, which cryptography refuses
                ours.exchange(X25519PublicKey.from_public_bytes(encoded))
            with pytest.raises(ConfigError, match="PublicKey: is not a usable Curve25519 key") as caught:
                parse_config(_config(peer=base64.b64encode(encoded).decode()), source="wrongkey.conf")
            assert caught.value.line == 6
    for _ in range(200):
        key = os.urandom(32)
        assert not is_small_order_point(key)


def test_connect_refuses_a_small_order_key_built_in_code(monkeypatch):
    import dataclasses

    from wgmagic.runtime.tunnel import connect

    config = parse_config(_config())
    zero = dataclasses.replace(config, peers=(dataclasses.replace(config.peers[0], public_key=bytes(32)),))
    with pytest.raises(ConfigError, match="not a usable Curve25519 key"):
        connect(zero, timeout=1)


def test_a_handshake_that_cannot_start_leaves_no_unretrieved_future(monkeypatch, caplog):
    """Past the config check, the handshake's failure left its waiter behind and close() failed it: asyncio's
    "Future exception was never retrieved" on stderr."""
    import dataclasses

    import wgmagic.runtime.tunnel as tunnel_module

    monkeypatch.setattr(tunnel_module, "check_peer_keys", lambda config: None)
    config = parse_config(_config())
    zero = dataclasses.replace(config, peers=(dataclasses.replace(config.peers[0], public_key=bytes(32)),))
    with caplog.at_level(logging.ERROR, logger="asyncio"), pytest.raises(ValueError):
        tunnel_module.connect(zero, timeout=2)
    gc.collect()
    assert not [r for r in caplog.records if "never retrieved" in r.getMessage()]


# ---- 5: the doctor's fix line, per kind of config error ---------------------------------------------------------
def test_doctor_fix_line_fits_the_error(tmp_path, monkeypatch):
    import ipykernel  # noqa: F401  (imported, as in the whole suite: no kernel runs, so no prompt)

    from wgmagic.tools.doctor import run_doctor

    monkeypatch.setattr(sys, "stdin", types.SimpleNamespace(isatty=lambda: False))

    (tmp_path / "nopriv.conf").write_text(_config(private=None))
    (tmp_path / "badkey.conf").write_text(_config(peer="AAAA"))
    (tmp_path / "wrongkey.conf").write_text(_config(peer="A" * 43 + "="))
    (tmp_path / "endpoint.conf").write_text(_config(endpoint="db.internal"))
    (tmp_path / "adir").mkdir()
    fixes = {}
    for name in ("missing.conf", "adir", "nopriv.conf", "badkey.conf", "wrongkey.conf", "endpoint.conf"):
        check = run_doctor(str(tmp_path / name)).checks[0]
        assert check.name == "config" and check.verdict == "failed"
        fixes[name] = check.fix
    assert len(set(fixes.values())) == len(fixes), fixes  # one fix line per kind
    assert "path" in fixes["missing.conf"] and "directory" in fixes["adir"]
    assert PRIVATE_KEY_ENV in fixes["nopriv.conf"] and "44 characters" in fixes["badkey.conf"]
    assert "real public key" in fixes["wrongkey.conf"] and "HOST:PORT" in fixes["endpoint.conf"]


# ---- 6: a listener that cannot bind names its address ------------------------------------------------------------
def test_bind_errors_name_the_listener_address():
    from wgmagic.runtime.services.listener import listen_inet, listen_unix

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        for kind, what in ((socket.SOCK_STREAM, "a forward"), (socket.SOCK_STREAM, "the SOCKS5 proxy")):
            with pytest.raises(OSError) as caught:
                listen_inet("127.0.0.1", port, kind, backlog=1, what=what)
            assert caught.value.errno == errno.EADDRINUSE
            assert caught.value.strerror.startswith(f"cannot listen on 127.0.0.1:{port} for {what}: ")
            assert "another port" in caught.value.strerror
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        with pytest.raises(OSError, match=f"127.0.0.1:{taken.getsockname()[1]} for a UDP forward"):
            listen_inet("127.0.0.1", taken.getsockname()[1], socket.SOCK_DGRAM, backlog=0, what="a UDP forward")
    with pytest.raises(OSError, match="cannot listen on the Unix socket /proc/"):
        listen_unix("x.sock", "/proc", socket.SOCK_STREAM, backlog=1, alternative="-")


def test_cli_names_the_option_whose_listener_failed():
    from wgmagic.cli.common import listener_named
    from wgmagic.errors import WgMagicError

    with pytest.raises(WgMagicError) as caught, listener_named("-L", "25432:db.internal:5432"):
        raise OSError(errno.EADDRINUSE, "cannot listen on 127.0.0.1:25432 for a forward: Address already in use")
    assert str(caught.value) == ("-L 25432:db.internal:5432: cannot listen on 127.0.0.1:25432 for a forward: "
                                 "Address already in use")


# ---- 7: an optional package missing says which extra installs it ---------------------------------------------
def test_missing_optional_packages_name_the_extra(monkeypatch):
    from wgmagic.runtime.services.routing import create_engine
    from wgmagic.runtime.tunnel import Tunnel

    monkeypatch.setitem(sys.modules, "sqlalchemy", None)
    with pytest.raises(MissingDependencyError, match=r"tunnel.engine\(\) needs .*sqlalchemy.*wgmagic\[tools\]"):
        create_engine(None, "postgresql://app@db.internal/app")
    for name in ("httpx", "httpcore"):
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(ModuleNotFoundError, match=r"pip install 'wgmagic\[tools\]'"):
        Tunnel.http_client(types.SimpleNamespace())  # type: ignore[arg-type]
    with pytest.raises(ImportError, match=r"wgmagic\[tools\]"):
        Tunnel.async_http_client(types.SimpleNamespace())  # type: ignore[arg-type]
    from wgmagic.connstr import parse_dsn
    from wgmagic.sql.dialects import dialect_for

    monkeypatch.setitem(sys.modules, "pymysql", None)
    with pytest.raises(MissingDependencyError, match=r"wgmagic\[mysql\]"):
        dialect_for(parse_dsn("mysql+pymysql://app@db.internal/app"))


# ---- 10: %wg help, and %wg? listing every subcommand ---------------------------------------------------------
def test_wg_help_prints_the_usage_and_the_docstring_lists_every_command(capsys):
    from IPython.core.interactiveshell import InteractiveShell

    from wgmagic.notebook.arguments import wg_parser
    from wgmagic.notebook.magics import WgMagic

    commands = next(a for a in wg_parser()._actions if hasattr(a, "choices") and a.choices).choices
    assert {"expose", "capture", "doctor", "help"} <= set(commands)
    doc = WgMagic.wg.__doc__
    assert all(name in doc for name in commands)
    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "wgmagic")
    try:
        capsys.readouterr()
        assert shell.run_cell("%wg help").success
        out = capsys.readouterr().out
        assert "usage: %wg" in out and "expose" in out and "capture" in out
    finally:
        shell.run_line_magic("unload_ext", "wgmagic")


# ---- 11: addresses as host:port, [v6]:port or a path ------------------------------------------------------------
def test_addresses_are_shown_as_users_write_them():
    from wgmagic.addresses import format_address

    assert format_address(("127.0.0.1", 34775)) == "127.0.0.1:34775"
    assert format_address(("::1", 5432, 0, 0)) == "[::1]:5432"
    assert format_address("/tmp/wgmagic-x/.s.PGSQL.5432") == "/tmp/wgmagic-x/.s.PGSQL.5432"


def test_status_shows_forwards_and_socks_proxies_as_addresses():
    from wgmagic.notebook.status import TunnelStatus

    forward = types.SimpleNamespace(local_address=("127.0.0.1", 34775),
                                    spec=types.SimpleNamespace(remote_host="db.internal", remote_port=5432))
    socks = types.SimpleNamespace(address="/tmp/wgmagic-a/socks")
    from tests.unit import tunnel_shapes

    tunnel = types.SimpleNamespace(
        name="wg0", forwards=[forward], socks_servers=[socks], exposes=[], peer_report=lambda: [],
        stats=tunnel_shapes.stats, history=lambda window=None: [], transport_description="UDP")
    row = TunnelStatus.of(tunnel).rows[0]
    assert row["forwards"] == "127.0.0.1:34775 -> db.internal:5432"
    assert row["socks5"] == "/tmp/wgmagic-a/socks"


# ---- 12: warnings as plain lines ------------------------------------------------------------------------------
def test_non_loopback_listener_warning_is_a_plain_log_line(caplog, recwarn):
    from wgmagic.cli import PlainFormatter
    from wgmagic.runtime.services.listener import warn_if_exposed

    with caplog.at_level(logging.WARNING, logger="wgmagic"):
        warn_if_exposed("0.0.0.0", "a forward")
    assert not recwarn.list  # no UserWarning with a file name and line
    (record,) = caplog.records
    assert PlainFormatter().format(record) == ("wgmagic: warning: a forward listens on 0.0.0.0, not loopback: "
                                               "anyone who can reach this machine can use the tunnel through it")


def test_notebook_shows_library_warnings_as_one_line(capsys, monkeypatch):
    from IPython.core.interactiveshell import InteractiveShell

    monkeypatch.setattr(logging.getLogger("wgmagic"), "handlers", [])  # none configured, as in a fresh kernel
    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "wgmagic")
    try:
        logging.getLogger("wgmagic.runtime.services.listener").warning("a forward listens on %s", "0.0.0.0")
        assert capsys.readouterr().err == "wgmagic: warning: a forward listens on 0.0.0.0\n"
    finally:
        shell.run_line_magic("unload_ext", "wgmagic")
    assert not logging.getLogger("wgmagic").handlers  # unload removes it


# ---- 13: --via, said where it matters ----------------------------------------------------------------------------
def test_ping_header_mentions_the_websocket():
    from wgmagic.cli.client import ping_header
    from wgmagic.via import Via

    config = parse_config(_config())
    tunnel = types.SimpleNamespace(config=config, via=Via("websocket", "ws://u:secret@127.0.0.1:8080/wg", None))
    header = ping_header(tunnel, "198.18.0.1", 56)
    assert "peer at 127.0.0.1:9, over the WebSocket ws://u:***@127.0.0.1:8080/wg" in header
    assert "secret" not in header
    assert "WebSocket" not in ping_header(types.SimpleNamespace(config=config, via=None), "198.18.0.1", 56)


def test_via_auto_without_any_url_says_so():
    from wgmagic.runtime.tunnel import connect

    with pytest.raises(HandshakeTimeoutError, match="via auto: only UDP was tried, since no WebSocket URL"):
        connect(_config(), timeout=0.5, via="auto")


# ---- 14: one naming rule: the file's stem ---------------------------------------------------------------------
def test_tunnels_are_named_after_the_file_stem():
    from wgmagic.runtime.tunnel import default_name

    assert default_name("/etc/wireguard/wg0.conf") == "wg0"
    assert default_name("good.conf") == "good"
    assert default_name("$cfg") == "cfg"
    assert default_name("<string>") == "wg0"
    assert default_name("good.conf", {"good"}) == "good-2"
    assert default_name("<string>", {"wg0", "wg1"}) == "wg2"


def test_wgsql_with_a_sqlalchemy_url_names_the_extra(monkeypatch, capsys):
    from IPython.core.interactiveshell import InteractiveShell

    monkeypatch.setitem(sys.modules, "sqlalchemy", None)
    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "wgmagic")
    try:
        result = shell.run_cell("%%wgsql duckdb:///:memory: --no-tunnel\nSELECT 1")  # sqlite:// has its own dialect
        assert not result.success or result.result is None
        shown = capsys.readouterr()
        assert "pip install 'wgmagic[tools]'" in shown.out + shown.err
    finally:
        shell.run_line_magic("unload_ext", "wgmagic")


def test_the_magic_does_not_prompt_where_nobody_can_answer(tmp_path, monkeypatch, capsys):
    """`%wg connect` of a config without PrivateKey in an IPython with no kernel and stdin not a terminal (a
    script, a pipe): the error naming the variable, as the CLI gives, not a getpass prompt warning that the
    input may echo."""
    import warnings

    from IPython.core.interactiveshell import InteractiveShell

    monkeypatch.delenv(PRIVATE_KEY_ENV, raising=False)
    monkeypatch.setattr(sys, "stdin", types.SimpleNamespace(isatty=lambda: False))
    monkeypatch.setattr("getpass.getpass", lambda prompt: pytest.fail(f"prompted: {prompt}"))
    path = tmp_path / "nokey.conf"
    path.write_text(_config(private=None))
    sh = InteractiveShell.instance()
    sh.run_line_magic("load_ext", "wgmagic")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            result = sh.run_cell(f"%wg connect {path}")
    finally:
        sh.run_line_magic("unload_ext", "wgmagic")
    out = capsys.readouterr()
    assert not result.success
    assert PRIVATE_KEY_ENV in out.out + out.err and "is missing" in out.out + out.err
