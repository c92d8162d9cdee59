import base64
import ipaddress
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wgmagic.config import decode_config_bytes, load_config, parse_config
from wgmagic.errors import ConfigError

PRIV = base64.b64encode(bytes(range(32))).decode()
PUB = base64.b64encode(bytes(range(32, 64))).decode()
PSK = base64.b64encode(bytes(range(64, 96))).decode()

GOOD = f"""
# a comment
[Interface]
PrivateKey = {PRIV}
Address = 198.18.0.2/32, fd77:6d61:6769:6300::2/128
Address = 198.18.1.2/24
DNS = 198.18.0.1, fd77:6d61:6769:6300::1, internal
MTU = 1380
ListenPort = 51999
PostUp = iptables -A FORWARD   # kernel-only, ignored with a warning

[Peer]
PublicKey = {PUB}
PresharedKey = {PSK}
Endpoint = gateway.example:51820
AllowedIPs = 198.18.0.0/24, fd77:6d61:6769:6300::/64
PersistentKeepalive = 25

[Peer]
PublicKey = {base64.b64encode(bytes(range(128, 160))).decode()}
Endpoint = [fd00::1]:51820
"""


def test_parses_every_key():
    cfg = parse_config(GOOD, source="wg0.conf")
    iface = cfg.interface
    assert iface.private_key == bytes(range(32))
    assert iface.addresses == (ipaddress.ip_interface("198.18.0.2/32"),
                               ipaddress.ip_interface("fd77:6d61:6769:6300::2/128"),
                               ipaddress.ip_interface("198.18.1.2/24"))
    assert iface.dns_servers == (ipaddress.ip_address("198.18.0.1"),
                                 ipaddress.ip_address("fd77:6d61:6769:6300::1"))
    assert iface.dns_search == ("internal",)
    assert iface.mtu == 1380 and iface.listen_port == 51999
    first, second = cfg.peers
    assert first.public_key == bytes(range(32, 64))
    assert first.preshared_key == bytes(range(64, 96))
    assert first.endpoint == ("gateway.example", 51820)
    assert first.persistent_keepalive == 25
    assert second.endpoint == ("fd00::1", 51820)
    assert second.allowed_ips == ()
    assert any("PostUp" in w and "line 10" in w for w in cfg.warnings)


def test_secrets_never_in_repr_or_errors():
    cfg = parse_config(GOOD)
    text = repr(cfg) + str(cfg)
    for secret in (PRIV, PSK, bytes(range(32)).hex(), repr(bytes(range(32))), repr(bytes(range(64, 96)))):
        assert secret not in text
    bad_private = PRIV[:-4] + "!!!="
    with pytest.raises(ConfigError) as info:
        parse_config(f"[Interface]\nPrivateKey = {bad_private}\n")
    assert bad_private not in str(info.value) and PRIV[:20] not in str(info.value)


@pytest.mark.parametrize(("text", "line", "key", "words"), [
    ("[Interface]\nPrivateKey = abc\n", 2, "PrivateKey", "not 32 bytes of base64"),
    (f"[Interface]\nPrivateKey = {PRIV}\nAddress = 300.1.1.1/32\n", 3, "Address", "not an IP address"),
    (f"[Interface]\nPrivateKey = {PRIV}\nMTU = big\n", 3, "MTU", "whole number"),
    (f"[Interface]\nPrivateKey = {PRIV}\nMTU = 100\n", 3, "MTU", "outside"),
    (f"[Interface]\nPrivateKey = {PRIV}\n[Peer]\nPublicKey = {PUB}\nEndpoint = fd00::1:51820\n", 5,
     "Endpoint", "brackets"),
    (f"[Interface]\nPrivateKey = {PRIV}\n[Peer]\nPublicKey = {PUB}\nEndpoint = host\n", 5, "Endpoint",
     "host:port"),
    (f"[Interface]\nPrivateKey = {PRIV}\n[Peer]\nPublicKey = {PUB}\nAllowedIPs = 10.0.0.0/33\n", 5,
     "AllowedIPs", "not an IP network"),
    (f"[Interface]\nPrivateKey = {PRIV}\n[Peer]\nEndpoint = 1.2.3.4:5\n", 3, "PublicKey", "missing"),
    (f"[Interface]\nPrivateKey = {PRIV}\nColour = blue\n", 3, "Colour", "not a key"),
    (f"[Interface]\nPrivateKey = {PRIV}\nPrivateKey = {PRIV}\n", 3, "PrivateKey", "twice"),
    ("[Interface]\nAddress = 10.0.0.1/32\n", 1, "PrivateKey", "missing"),
    ("[Wat]\n", 1, None, "unknown section"),
    ("PrivateKey = x\n", 1, "PrivateKey", "before any"),
])
def test_errors_name_line_key_and_problem(text, line, key, words):
    with pytest.raises(ConfigError) as info:
        parse_config(text, source="bad.conf")
    err = info.value
    assert err.source == "bad.conf" and err.line == line and err.key == key
    assert words in str(err) and str(err).startswith(f"bad.conf, line {line}")


def test_load_from_path_and_missing_file(tmp_path):
    path = tmp_path / "wg.conf"
    path.write_text(GOOD)
    assert load_config(path).source == str(path)
    assert load_config(str(path)).peers[0].persistent_keepalive == 25
    with pytest.raises(ConfigError, match="no such file"):
        load_config(tmp_path / "nope.conf")


lines = st.lists(st.one_of(
    st.sampled_from(["[Interface]", "[Peer]", f"PrivateKey = {PRIV}", f"PublicKey = {PUB}", "Address = 1.2.3.4/32",
                     "Endpoint = [::1]:5", "AllowedIPs = ::/0", "DNS = a.b", "MTU = 1400", "# c", ""]),
    st.text(max_size=60),
), max_size=12)


@settings(max_examples=400, deadline=None)
@given(lines)
def test_fuzz_only_config_error_escapes(parts):
    try:
        parse_config("\n".join(parts))
    except ConfigError:
        pass


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_fuzz_arbitrary_text(text):
    try:
        parse_config(text)
    except ConfigError as exc:
        assert PRIV not in str(exc)


# ---- files as editors save them -----------------------------------------------------------------------------

MINIMAL = f"[Interface]\r\nPrivateKey = {PRIV}\r\n\r\n[Peer]\r\nPublicKey = {PUB}\r\nEndpoint = 198.18.0.1:51820\r\n"


@pytest.mark.parametrize("encoded", [
    MINIMAL.encode(),
    b"\xef\xbb\xbf" + MINIMAL.encode(),  # UTF-8 with a byte-order mark (Notepad, many Windows editors)
    b"\xff\xfe" + MINIMAL.encode("utf-16-le"),  # "Unicode" in Windows tools
    b"\xfe\xff" + MINIMAL.encode("utf-16-be"),
    MINIMAL.encode("utf-16"),  # Python's own: a BOM and the machine's order
    MINIMAL.encode("utf-32"),
])
def test_config_files_in_every_unicode_form(tmp_path, encoded):
    path = tmp_path / "wg0.conf"
    path.write_bytes(encoded)
    config = load_config(path)
    assert config.interface.private_key == bytes(range(32)) and config.peers[0].endpoint == ("198.18.0.1", 51820)
    assert load_config(str(path)).peers == config.peers
    assert parse_config("\ufeff" + MINIMAL).peers == config.peers  # a BOM that survived decoding


@pytest.mark.parametrize(("data", "words"), [
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "not a text file"),
    (b"\x7fELF\x02\x01\x01\x00", "not a text file"),
    ("[Interface]\nPrivateKey = é\n".encode("latin-1"), "not UTF-8"),
    (b"\xff\xfe[\x00I\x00\x00\xd8", "not UTF-16"),  # a lone surrogate
])
def test_a_file_that_is_not_text_says_so(tmp_path, data, words):
    path = tmp_path / "wg0.conf"
    path.write_bytes(data)
    with pytest.raises(ConfigError, match=words) as info:
        load_config(path)
    assert str(path) in str(info.value)


def test_missing_directory_and_unreadable_files(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        load_config(tmp_path / "missing.conf")
    with pytest.raises(ConfigError, match="is a directory"):
        load_config(tmp_path)
    locked = tmp_path / "locked.conf"
    locked.write_text(MINIMAL)
    locked.chmod(0)
    if os.geteuid() != 0:  # root reads anything
        with pytest.raises(ConfigError, match="permission denied"):
            load_config(locked)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=400) | st.text(max_size=200).map(lambda t: MINIMAL.replace("Endpoint", t).encode("utf-16")))
def test_any_bytes_give_a_config_or_a_config_error(data):
    try:
        text = decode_config_bytes(data, source="f.conf")
        parse_config(text, source="f.conf")
    except ConfigError as exc:
        assert str(exc).startswith("f.conf")


@pytest.mark.parametrize(("data", "words"), [
    (b"", "no [Interface] section"),
    (b"\xff\xfe" + f"[Interface]\r\nPrivateKey = {PRIV}\r\n".encode("utf-16-le"), "no [Peer] section"),
    (bytes(range(256)), "not a text file"),
])
def test_the_command_line_reports_config_files_in_one_line(tmp_path, capsys, data, words):
    from wgmagic.cli import main

    path = tmp_path / "wg0.conf"
    path.write_bytes(data)
    for command in ("status", "resolve", "ping"):
        argv = [command, str(path)] + (["db.internal"] if command != "status" else [])
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert words in err and len(err.strip().splitlines()) == 1
    assert main(["status", str(tmp_path)]) == 2 and "is a directory" in capsys.readouterr().err
