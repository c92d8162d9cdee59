"""wg-quick configuration text -> frozen dataclasses.

The accepted syntax is wg-quick's: `[Interface]` and `[Peer]` sections of `Key = value` lines, `#` comments,
comma-separated lists. Every error names the source, the line and the key, and never quotes a key's value,
so a mistyped private key cannot end up in a notebook's output.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Interface, IPv4Network, IPv6Address, IPv6Interface, IPv6Network
from pathlib import Path
from typing import Literal, cast

from wgmagic.addresses import AddressError, split_host_port
from wgmagic.errors import ConfigError
from wgmagic.files import text_lines

IPAddress = IPv4Address | IPv6Address
IPInterface = IPv4Interface | IPv6Interface
IPNetwork = IPv4Network | IPv6Network

# Keys that configure a kernel interface or the host's routing; in user mode there is no interface to act on.
KERNEL_ONLY_KEYS = {"postup", "postdown", "preup", "predown", "table", "fwmark", "saveconfig"}
SECRET_KEYS = {"privatekey", "presharedkey"}

_LABEL = r"[A-Za-z0-9_][A-Za-z0-9_-]{0,62}"
# wgmagic's own settings ride in comments that wg-quick ignores: `#@wgmagic Key = value`.
_MARKED = re.compile(r"^\s*#@wgmagic\s+([A-Za-z]+)\s*=\s*(.*?)\s*$", re.IGNORECASE)
MARKED_PEER_KEYS = {"via"}
_HOSTNAME = re.compile(rf"^(?=.{{1,253}}$){_LABEL}(?:\.{_LABEL})*\.?$")

# The private key may stay out of the file: then it comes from this variable, or is asked for (hidden).
PRIVATE_KEY_ENV = "WGMAGIC_PRIVATE_KEY"

# Curve25519 points of small order (the u-coordinates of order 1, 2, 4 and 8, and their non-canonical
# encodings below 2^255), compared with the top bit cleared as X25519 ignores it (RFC 7748 5). A peer key
# among them makes every Diffie-Hellman result the all-zero value, which the whitepaper's handshake (5.4.2)
# and RFC 7748 section 6.1 require rejecting: no session could ever be made with it.
_SMALL_ORDER_POINTS = frozenset(bytes.fromhex(h) for h in (
    "00" * 32,
    "01" + "00" * 31,
    "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800",
    "5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157",
    "ec" + "ff" * 30 + "7f",
    "ed" + "ff" * 30 + "7f",
    "ee" + "ff" * 30 + "7f",
))


def is_small_order_point(key: bytes) -> bool:
    """True for a Curve25519 public key whose X25519 with any private key is all zeros (RFC 7748 6.1)."""
    return len(key) == 32 and key[:31] + bytes([key[31] & 0x7F]) in _SMALL_ORDER_POINTS


@dataclass(frozen=True)
class InterfaceConfig:
    """The [Interface] section (wg-quick(8)): the private key (32 bytes, Curve25519; never in a repr),
    the Address lines, DNS servers and search domains, MTU (bytes; None: the default 1420) and ListenPort."""

    private_key: bytes = field(repr=False)
    addresses: tuple[IPInterface, ...] = ()
    dns_servers: tuple[IPAddress, ...] = ()
    dns_search: tuple[str, ...] = ()
    mtu: int | None = None
    listen_port: int | None = None

    def __repr__(self) -> str:
        return (f"InterfaceConfig(private_key=<redacted>, addresses={self.addresses!r}, "
                f"dns_servers={self.dns_servers!r}, dns_search={self.dns_search!r}, mtu={self.mtu!r}, "
                f"listen_port={self.listen_port!r})")


@dataclass(frozen=True)
class PeerConfig:
    """One [Peer] section (wg(8)): the public key (32 bytes), the preshared key (32 bytes or None; never in
    a repr), the Endpoint (host, port) or None, AllowedIPs, PersistentKeepalive (seconds or None), and `via`,
    wgmagic's `#@wgmagic Via = ...` line (a URL or None)."""

    public_key: bytes
    preshared_key: bytes | None = field(default=None, repr=False)
    endpoint: tuple[str, int] | None = None
    allowed_ips: tuple[IPNetwork, ...] = ()
    persistent_keepalive: int | None = None
    # `#@wgmagic Via = wss://...` under [Peer]: how wgmagic reaches this peer where UDP is blocked.
    # A comment to wg-quick, so the file stays valid for it.
    via: str | None = None

    @property
    def public_key_b64(self) -> str:
        return base64.b64encode(self.public_key).decode()

    def __repr__(self) -> str:
        psk = "<redacted>" if self.preshared_key else None
        via = ""
        if self.via:
            from wgmagic.via import mask_url

            via = ", via=" + repr(" ".join(mask_url(word) for word in self.via.split()))
        return (f"PeerConfig(public_key={self.public_key_b64!r}, preshared_key={psk}, "
                f"endpoint={self.endpoint!r}, allowed_ips={self.allowed_ips!r}, "
                f"persistent_keepalive={self.persistent_keepalive!r}{via})")


@dataclass(frozen=True)
class WireGuardConfig:
    """A parsed wg-quick file: its [Interface], its peers in file order, where it came from (`source`, for
    messages) and the warnings the parser had (lines it accepted but wgmagic ignores)."""

    interface: InterfaceConfig
    peers: tuple[PeerConfig, ...]
    source: str = "<string>"
    warnings: tuple[str, ...] = ()

    @property
    def mtu(self) -> int:
        return self.interface.mtu or 1420


class _Parser:
    def __init__(self, source: str) -> None:
        self.source = source
        self.warnings: list[str] = []

    def error(self, message: str, line: int | None = None, key: str | None = None) -> ConfigError:
        return ConfigError(message, source=self.source, line=line, key=key)

    def key32(self, value: str, line: int, key: str) -> bytes:
        try:
            raw = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raw = b""
        if len(raw) != 32:
            raise self.error("is not 32 bytes of base64 (a WireGuard key is 44 characters ending in '=')",
                             line, key)
        return raw

    def addresses(self, value: str, line: int, key: str) -> tuple[IPInterface, ...]:
        out: list[IPInterface] = []
        for item in _split(value):
            try:
                out.append(ipaddress.ip_interface(item))
            except ValueError:
                raise self.error(f"{item!r} is not an IP address with an optional /prefix", line, key)
        return tuple(out)

    def networks(self, value: str, line: int, key: str) -> tuple[IPNetwork, ...]:
        out: list[IPNetwork] = []
        for item in _split(value):
            try:
                out.append(ipaddress.ip_network(item, strict=False))
            except ValueError:
                raise self.error(f"{item!r} is not an IP network such as 10.0.0.0/24 or fd00::/64", line, key)
        return tuple(out)

    def integer(self, value: str, line: int, key: str, low: int, high: int) -> int:
        try:
            number = int(value, 10)
        except ValueError:
            raise self.error(f"{value!r} is not a whole number", line, key)
        if not low <= number <= high:
            raise self.error(f"{number} is outside {low}..{high}", line, key)
        return number

    def endpoint(self, value: str, line: int, key: str) -> tuple[str, int]:
        try:
            host, port = split_host_port(value)
        except AddressError as exc:
            raise self.error(f"must be host:port, [ipv6]:port or 1.2.3.4:port ({exc.reason})", line, key)
        if value.startswith("["):
            try:
                IPv6Address(host.split("%", 1)[0])
            except ValueError:
                raise self.error(f"{host!r} is not an IPv6 address", line, key)
        else:
            if ":" in host:
                raise self.error("an IPv6 endpoint must be in brackets: [address]:port", line, key)
            try:
                IPv4Address(host)
            except ValueError:
                if not _HOSTNAME.match(host):
                    raise self.error(f"{host!r} is neither an IP address nor a host name", line, key)
        return host, port


def _split(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


def parse_config(text: str, *, source: str = "<string>",
                 ask_private_key: Callable[[str], str] | None = None) -> WireGuardConfig:
    """Parse wg-quick text. Raises ConfigError naming source, line and key; never echoes a secret.

    Without a `PrivateKey` line the key comes from $WGMAGIC_PRIVATE_KEY, else from `ask_private_key(prompt)`
    (a hidden prompt such as getpass.getpass) when given; else ConfigError("PrivateKey: is missing ...").
    """
    if not isinstance(text, str):
        raise ConfigError("configuration must be text", source=source)
    text = text.removeprefix("\ufeff")  # a byte-order mark read as a character (open() with UTF-8)
    p = _Parser(source)
    interface: dict[str, object] | None = None
    interface_line = 0
    peers: list[tuple[int, dict[str, object]]] = []
    section: dict[str, object] | None = None
    seen: set[str] = set()

    for number, raw in enumerate(text_lines(text), start=1):
        marked = _MARKED.match(raw)
        if marked:
            _marked_setting(p, section if section is not interface else None, marked.group(1),
                            marked.group(2), number)
            continue
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith("["):
            name = line.strip("[] \t").lower()
            if not line.endswith("]") or name not in ("interface", "peer"):
                raise p.error(f"unknown section {line[:40]!r}; expected [Interface] or [Peer]", number)
            if name == "interface":
                if interface is not None:
                    raise p.error("a second [Interface] section", number)
                interface, interface_line = {}, number
                section = interface
            else:
                section = {}
                peers.append((number, section))
            seen = set()
            continue
        key, sep, value = line.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key:
            raise p.error("expected 'Key = value'", number)
        lower = key.lower()
        if section is None:
            raise p.error("appears before any [Interface] or [Peer] section", number, key)
        if lower in KERNEL_ONLY_KEYS:
            p.warnings.append(f"{source}, line {number}: {key} does not apply in user mode and is ignored")
            continue
        repeatable = lower in ("address", "allowedips", "dns")
        if lower in seen and not repeatable:
            raise p.error("is given twice in this section", number, key)
        seen.add(lower)
        parsed = _parse_value(p, section is interface, lower, key, value, number)
        if repeatable and lower in section:
            section[lower] = (*section[lower], *parsed)  # type: ignore[misc]
        else:
            section[lower] = parsed

    if interface is None:
        raise p.error("has no [Interface] section")
    if "privatekey" not in interface:
        interface["privatekey"] = _private_key_elsewhere(p, interface_line, ask_private_key)
    dns = cast("tuple[object, ...]", interface.get("dns", ()))
    iface = InterfaceConfig(
        private_key=interface["privatekey"],  # type: ignore[arg-type]
        addresses=interface.get("address", ()),  # type: ignore[arg-type]
        dns_servers=tuple(d for d in dns if not isinstance(d, str)),  # type: ignore[misc]
        dns_search=tuple(d for d in dns if isinstance(d, str)),
        mtu=interface.get("mtu"),  # type: ignore[arg-type]
        listen_port=interface.get("listenport"),  # type: ignore[arg-type]
    )
    peer_configs: list[PeerConfig] = []
    seen_keys: set[bytes] = set()
    for line_no, peer in peers:
        if "publickey" not in peer:
            raise p.error("is missing", line_no, "PublicKey")
        if peer["publickey"] in seen_keys:
            raise p.error("the same peer appears twice", line_no, "PublicKey")
        seen_keys.add(peer["publickey"])  # type: ignore[arg-type]
        peer_configs.append(PeerConfig(
            public_key=peer["publickey"],  # type: ignore[arg-type]
            preshared_key=peer.get("presharedkey"),  # type: ignore[arg-type]
            endpoint=peer.get("endpoint"),  # type: ignore[arg-type]
            allowed_ips=peer.get("allowedips", ()),  # type: ignore[arg-type]
            persistent_keepalive=peer.get("persistentkeepalive") or None,  # type: ignore[arg-type]
            via=peer.get("#via"),  # type: ignore[arg-type]
        ))
    return WireGuardConfig(interface=iface, peers=tuple(peer_configs), source=source,
                           warnings=tuple(p.warnings))


def _private_key_elsewhere(p: _Parser, line: int, ask: Callable[[str], str] | None) -> bytes:
    """The private key of a file without `PrivateKey`: $WGMAGIC_PRIVATE_KEY, else asked for, else an error."""
    value, where = os.environ.get(PRIVATE_KEY_ENV, "").strip(), PRIVATE_KEY_ENV
    if not value and ask is not None:
        try:
            value = (ask(f"PrivateKey for {p.source} (or set {PRIVATE_KEY_ENV}): ") or "").strip()
        except (EOFError, OSError, NotImplementedError):
            # nobody to answer after all: no tty, stdin closed, or a frontend that refuses to prompt (IPython's
            # StdinNotImplementedError, a NotImplementedError, from a kernel run headless by nbconvert)
            value = ""
        where = "the PrivateKey typed"
    if not value:
        raise p.error(f"is missing: put it in the file, or set {PRIVATE_KEY_ENV} (on a terminal wgmagic asks "
                      "for it)", line, "PrivateKey")
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != 32:
        raise p.error(f"{where} is not 32 bytes of base64 (a WireGuard key is 44 characters ending in '=')",
                      line, "PrivateKey")
    return raw


def _marked_setting(p: _Parser, peer: dict[str, object] | None, key: str, value: str, line: int) -> None:
    """`#@wgmagic Via = URL` under a [Peer]; checked here so a typo is an error, not a silent UDP tunnel."""
    if key.lower() not in MARKED_PEER_KEYS:
        raise p.error(f"is not a #@wgmagic setting; known: {', '.join(sorted(MARKED_PEER_KEYS))}", line, key)
    if peer is None:
        raise p.error("belongs under a [Peer] section", line, key)
    if "#via" in peer:
        raise p.error("is given twice in this section", line, key)
    from wgmagic.via import parse_via

    try:
        parse_via(value)
    except ValueError as exc:
        raise p.error(str(exc), line, key)
    peer["#via"] = value


def _parse_value(p: _Parser, in_interface: bool, lower: str, key: str, value: str, line: int) -> object:
    if in_interface:
        if lower == "privatekey":
            return p.key32(value, line, key)
        if lower == "address":
            return p.addresses(value, line, key)
        if lower == "dns":
            out: list[object] = []
            for item in _split(value):
                try:
                    out.append(ipaddress.ip_address(item))
                except ValueError:
                    if not _HOSTNAME.match(item):
                        raise p.error(f"{item!r} is neither a DNS server address nor a search domain",
                                      line, key)
                    out.append(item.rstrip(".").lower())
            return tuple(out)
        if lower == "mtu":
            return p.integer(value, line, key, 576, 65535)
        if lower == "listenport":
            return p.integer(value, line, key, 0, 65535)
    else:
        if lower == "publickey":
            public = p.key32(value, line, key)
            if is_small_order_point(public):
                raise p.error("is not a usable Curve25519 key (a point of small order such "
                              "as all zeros: every key exchange with it gives zero, which WireGuard rejects); "
                              "copy the peer's real public key", line, key)
            return public
        if lower == "presharedkey":
            return p.key32(value, line, key)
        if lower == "endpoint":
            return p.endpoint(value, line, key)
        if lower == "allowedips":
            return p.networks(value, line, key)
        if lower == "persistentkeepalive":
            if value.lower() == "off":
                return 0
            return p.integer(value, line, key, 0, 65535)
    section = "[Interface]" if in_interface else "[Peer]"
    raise p.error(f"is not a key wgmagic knows in {section}", line, key)


def load_config(source: str | os.PathLike[str] | WireGuardConfig,
                ask_private_key: Callable[[str], str] | Literal["auto"] | None = "auto") -> WireGuardConfig:
    """A parsed config, a path to a wg-quick file, or wg-quick text itself. Raises ConfigError (never
    OSError or UnicodeDecodeError) for a file that is missing, unreadable or not text.

    A file without `PrivateKey`: the key from $WGMAGIC_PRIVATE_KEY, else `ask_private_key(prompt)`; "auto"
    (the default) asks with a hidden prompt where someone can answer (a terminal, or an IPython kernel), None
    never asks. The one rule of the CLI, `wgmagic.connect()` and `%wg connect`."""
    if isinstance(source, WireGuardConfig):
        return source
    ask = private_key_prompt() if ask_private_key == "auto" else ask_private_key
    if isinstance(source, os.PathLike) or ("\n" not in str(source) and "[" not in str(source)):
        path = str(Path(os.fspath(source)).expanduser())
        return parse_config(read_config_file(path), source=path, ask_private_key=ask)
    return parse_config(str(source), ask_private_key=ask)


def private_key_prompt() -> Callable[[str], str] | None:
    """getpass.getpass where someone can answer it (stdin a terminal, or a Jupyter kernel, which forwards it to
    the notebook), else None: a script or a pipe gets the "is missing" error instead of a hanging read (or a
    prompt that warns the input may echo). `%wg connect` asks for a PrivateKey, `%%wgsql` for a password with it."""
    import sys

    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    interactive = getattr(shell, "kernel", None) is not None  # a Jupyter kernel forwards getpass to the page
    if not interactive:
        try:
            interactive = sys.stdin is not None and sys.stdin.isatty()
        except (AttributeError, ValueError):
            interactive = False
    if not interactive:
        return None
    import getpass

    return lambda prompt: getpass.getpass(prompt)


def read_config_file(path: str | os.PathLike[str]) -> str:
    """The text of a wg-quick file as editors save it (see decode_config_bytes).

    Raises ConfigError naming the file: no such file, a directory, not readable (permissions), not text.
    """
    shown = os.fspath(path)
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_CONFIG_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError("no such file", source=shown) from None
    except IsADirectoryError:
        raise ConfigError("is a directory, not a wg-quick file", source=shown) from None
    except PermissionError:
        raise ConfigError("cannot be read: permission denied", source=shown) from None
    except OSError as exc:
        raise ConfigError(f"cannot be read ({exc.strerror or type(exc).__name__})", source=shown) from None
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(f"is larger than {MAX_CONFIG_BYTES // 1024} KiB: not a wg-quick file", source=shown)
    return decode_config_bytes(data, source=shown)


MAX_CONFIG_BYTES = 1 << 20  # a wg-quick file with thousands of peers is still far below this

_BOMS = ((b"\x00\x00\xfe\xff", "utf-32-be"), (b"\xff\xfe\x00\x00", "utf-32-le"), (b"\xef\xbb\xbf", "utf-8"),
         (b"\xfe\xff", "utf-16-be"), (b"\xff\xfe", "utf-16-le"))
_NOT_TEXT = re.compile(r"[\x00-\x08\x0b\x0e-\x1f\x7f]")


def decode_config_bytes(data: bytes, *, source: str = "<bytes>") -> str:
    """wg-quick text from a file's bytes, as editors save it: UTF-8 with or without a byte-order mark, or
    UTF-16/UTF-32 (little or big endian) with one, which is what Windows tools write. WireGuard for Windows
    reads the same. Raises ConfigError("is not a text file ...") for anything else (binary data, another
    encoding without a mark); the message never quotes the content.
    """
    for bom, codec in _BOMS:
        if data.startswith(bom):
            try:
                text = data[len(bom):].decode(codec)
            except UnicodeDecodeError as exc:
                raise ConfigError(f"is not a text file: it starts with a {codec.upper()} byte-order mark but "
                                  f"byte {exc.start + len(bom)} is not {codec.upper()}", source=source) from None
            break
    else:
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ConfigError(f"is not a text file: byte {exc.start} is not UTF-8 (save it as UTF-8, or as "
                              "UTF-16 with a byte-order mark)", source=source) from None
    bad = _NOT_TEXT.search(text)
    if bad:
        raise ConfigError(f"is not a text file: it holds control character U+{ord(bad.group(0)):04X} at "
                          f"character {bad.start()}", source=source)
    return text


def check_peer_keys(config: WireGuardConfig) -> None:
    """ConfigError unless every peer key is usable. A WireGuardConfig built in code skips the parser's check:
    a peer key of small order (all zeros...) would fail deep in the handshake as "Error computing shared key"
    (RFC 7748 6.1; whitepaper 5.4.2)."""
    for peer in config.peers:
        if is_small_order_point(peer.public_key):
            raise ConfigError("is not a usable Curve25519 key (a point of small order such as all zeros: every "
                              "key exchange with it gives zero, which WireGuard rejects); copy the peer's real "
                              "public key", source=config.source, key="PublicKey")
