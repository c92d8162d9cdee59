"""Every parser of user-written addresses, in one place: host:port ("db.internal:5432", "[fd00::1]:5432"), an
optional port ("host" or "host:port"), ssh-style forward specs (`-L [bind:]port:host:hostport`, `-R`, `-D
[bind:]port`), a forward's `local=` argument (PORT, HOST:PORT or unix:DIR), `--expose`, `--name` and a
dashboard window ("5m").

Pure functions on text: each returns a value or raises ValueError (AddressError for host:port, a ValueError
subclass whose `reason` omits the text) whose message names the text, never another exception. IPv6 addresses
are written in brackets as in RFC 3986 section 3.2.2 ("[fd00::1]:5432"). This module imports only the standard
library and wgmagic.errors (docs/layers.md: beside config).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

__all__ = [
    "AddressError", "Expose", "LocalSpec", "UdpListenSpec", "format_host", "is_udp_target", "no_proxy_matches",
    "parse_expose", "parse_local", "parse_name", "parse_udp_listen_spec", "parse_udp_target", "parse_window",
    "proxy_from_environment", "split_colons", "split_forward_spec", "split_host_optional_port", "split_host_port",
]


class AddressError(ValueError):
    """A malformed host:port; `reason` is the message without the text (for callers with their own prefix)."""

    def __init__(self, text: str, reason: str) -> None:
        super().__init__(f"{text!r}: {reason}")
        self.text = text
        self.reason = reason


def format_host(host: str) -> str:
    """A host as written before ':port': an IPv6 address in [brackets] (RFC 3986 section 3.2.2)."""
    return f"[{host}]" if ":" in host else host


def format_address(address: object) -> str:
    """A socket address as users write it: (host, port[, ...]) -> "host:port" or "[v6]:port"; a Unix socket's
    path (str or bytes) as it is; anything else as str()."""
    if isinstance(address, tuple) and len(address) >= 2:
        return f"{format_host(str(address[0]))}:{address[1]}"
    if isinstance(address, bytes):
        return address.decode(errors="replace")
    return str(address)


def _port(text: str, port_text: str, low: int) -> int:
    if not (port_text.isascii() and port_text.isdigit()):
        raise AddressError(text, "the port must be a number")
    port = int(port_text)
    if not low <= port <= 65535:
        raise AddressError(text, f"the port must be {low}..65535")
    return port


def split_host_port(text: str, *, default_host: str | None = None, default_port: int | None = None,
                    low: int = 1) -> tuple[str, int]:
    """'db.internal:5432', '198.18.0.1:5432' or '[fd00::1]:5432' -> (host, port), brackets removed.

    default_host: the host of a bare 'PORT' or ':PORT' (else those raise); default_port: the port of 'HOST:'
    (else it raises); low: the lowest port accepted (0 for a listener, where 0 lets the kernel choose; the
    highest is 65535). An unbracketed host may hold colons ("fd00::1:5432" -> "fd00::1"); callers that must
    reject that check the host. Raises AddressError (a ValueError) naming the text.
    """
    stripped = text.strip()
    if stripped.startswith("["):
        host, sep, rest = stripped[1:].partition("]")
        if not sep or not rest.startswith(":"):
            raise AddressError(text, "an IPv6 address is written [address]:port")
        port_text = rest[1:]
    else:
        host, sep, port_text = stripped.rpartition(":")
        if not sep and default_host is None:
            raise AddressError(text, "expected HOST:PORT")
    if not host:
        if default_host is None:
            raise AddressError(text, "expected HOST:PORT")
        host = default_host
    if not port_text and default_port is not None:
        return host, default_port
    return host, _port(text, port_text, low)


def split_host_optional_port(text: str) -> tuple[str, int | None]:
    """'host', 'host:port', 'fd00::1' or '[fd00::1]:port' -> (host, port or None). A bare IPv6 address has no
    port; a bracketed one has one only after ']:'. Raises AddressError when a port is given but malformed."""
    stripped = text.strip()
    bracketed = stripped.startswith("[")
    if (bracketed and "]:" in stripped) or (not bracketed and stripped.count(":") == 1):
        return split_host_port(stripped)
    return stripped.strip("[]"), None


def split_colons(text: str) -> list[str]:
    """Split on ':' outside [brackets]; the brackets are removed from the parts. ValueError when they do not
    pair up. 'a:[fd00::1]:80' -> ['a', 'fd00::1', '80']."""
    parts, current, depth = [], "", 0
    for char in text:
        if char == "[":
            depth += 1
            if depth > 1:
                raise ValueError("nested '['")
            continue
        if char == "]":
            depth -= 1
            if depth < 0:
                raise ValueError("unbalanced ']'")
            continue
        if char == ":" and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    if depth:
        raise ValueError("unbalanced '['")
    parts.append(current)
    return parts


def split_forward_spec(text: str) -> tuple[str | None, int, str, int]:
    """ssh -L/-R order, '[bind:]port:host:hostport' (IPv6 in brackets) -> (bind or None, port, host, hostport).
    port may be 0 (the kernel chooses), hostport 1..65535. AddressError (a ValueError) naming the text."""
    try:
        parts = split_colons(text)
    except ValueError as exc:
        raise AddressError(text, str(exc)) from None
    if len(parts) == 3:
        bind, port, host, host_port = None, *parts
    elif len(parts) == 4:
        bind, port, host, host_port = parts
    else:
        raise AddressError(text, "expected [bind:]port:host:hostport")
    if not (port.isascii() and port.isdigit() and host_port.isascii() and host_port.isdigit()):
        raise AddressError(text, "ports must be numbers")
    local_port, remote_port = int(port), int(host_port)
    if not 0 <= local_port < 65536 or not 0 < remote_port < 65536:
        raise AddressError(text, "the local port must be 0..65535 and the remote port 1..65535")
    if not host or any(c.isspace() or c in "/@" for c in host + (bind or "")):
        raise AddressError(text, "expected [bind:]port:host:hostport")
    return bind or None, local_port, host, remote_port


# ---- a forward's local end -------------------------------------------------------------------------------
@dataclass(frozen=True)
class LocalSpec:
    """Where a forward listens: kind "unix" (a socket in `socket_dir`, None: a fresh 0700 directory) or "inet"
    (`bind_host`:`bind_port` on loopback; port 0: the kernel chooses)."""

    kind: str
    bind_host: str = "127.0.0.1"
    bind_port: int = 0
    socket_dir: str | None = None


def parse_local(local: str | int | None) -> LocalSpec:
    """A forward's `local=`: None (a Unix socket in a fresh 0700 directory), PORT (int or text), 'HOST:PORT',
    '[v6]:PORT' or 'unix:DIR' -> LocalSpec. ValueError naming the text when malformed."""
    if local is None:
        return LocalSpec("unix")
    if isinstance(local, int):
        if not 0 <= local <= 65535:
            raise ValueError(f"--local {local!r}: the port must be 0..65535")
        return LocalSpec("inet", bind_port=local)
    if local.startswith("unix:"):
        return LocalSpec("unix", socket_dir=local[5:] or None)
    try:
        host, port = split_host_port(local, default_host="127.0.0.1", default_port=0, low=0)
    except AddressError:
        raise ValueError(f"--local {local!r}: expected PORT, HOST:PORT or unix:DIR") from None
    return LocalSpec("inet", bind_host=host, bind_port=port)


# ---- UDP targets and -L udp:... ---------------------------------------------------------------------------
def is_udp_target(target: str) -> bool:
    return target.strip().lower().startswith("udp:")


def parse_udp_target(target: str) -> tuple[str, int]:
    """'udp:HOST:PORT' (or 'udp:[v6]:PORT') -> (host, port); ValueError naming the target when malformed."""
    text = target.strip()
    if not is_udp_target(text):
        raise ValueError(f"{target!r}: a UDP target is written udp:HOST:PORT")
    rest = text[4:].strip()
    try:
        host, port = split_host_port(rest)
    except AddressError as exc:
        raise ValueError(f"{target!r}: {exc.reason}") from None
    if ":" in host and not rest.startswith("["):
        raise ValueError(f"{target!r}: an IPv6 target is written udp:[address]:port")
    if not host.strip("[]") or any(c.isspace() or c in "[]/@" for c in host):
        raise ValueError(f"{target!r}: expected udp:HOST:PORT")
    return host, port


@dataclass(frozen=True)
class UdpListenSpec:
    """`wgmagic up -L udp:[bind:]port:host:hostport`, split (ssh -L's order, with a udp: prefix)."""

    bind: str
    port: int
    host: str
    host_port: int

    @property
    def target(self) -> str:
        return f"udp:{format_host(self.host)}:{self.host_port}"

    @property
    def local(self) -> str:
        return f"{format_host(self.bind)}:{self.port}"


def parse_udp_listen_spec(spec: str) -> UdpListenSpec:
    """'udp:[bind:]port:host:hostport' -> UdpListenSpec; IPv6 addresses in [brackets]; bind defaults to
    127.0.0.1; port 0 lets the kernel choose. ValueError naming the spec when malformed."""
    text = spec.strip()
    if not is_udp_target(text):
        raise ValueError(f"-L {spec}: a UDP forward is written udp:[bind:]port:host:hostport")
    try:
        bind, port, host, host_port = split_forward_spec(text[4:])
    except AddressError as exc:
        raise ValueError(f"-L {spec}: {exc.reason}") from None
    return UdpListenSpec(bind or "127.0.0.1", port, host, host_port)


# ---- --expose and --name ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Expose:
    """What to expose: tunnel `address` (None: every address of the interface) and `port`, relayed to
    `target_host`:`target_port` on this machine."""

    address: IPAddress | None
    port: int
    target_host: str
    target_port: int

    def __str__(self) -> str:
        where = f"[{self.address}]" if self.address and self.address.version == 6 else str(self.address or "*")
        return f"{where}:{self.port} -> {self.target_host}:{self.target_port}"


def parse_expose(text: str, *, option: str = "--expose") -> Expose:
    """'5432=127.0.0.1:5432', '198.18.0.1:5432=localhost:5432' or '[fd00::1]:80=127.0.0.1:8080'.

    Raises ValueError naming `option` and the text when it is not [ADDR:]PORT=HOST:PORT.
    """
    listen, sep, target = text.partition("=")
    if not sep:
        raise ValueError(f"{option} {text!r}: expected [ADDR:]PORT=HOST:PORT")
    try:
        if listen.isdigit():
            address, port = None, int(listen)
        else:
            host, port = split_host_port(listen)
            address = ipaddress.ip_address(host)
        target_host, target_port = split_host_port(target)
    except ValueError as exc:
        raise ValueError(f"{option} {text!r}: {exc}") from None
    if not 0 < port < 65536:
        raise ValueError(f"{option} {text!r}: the port must be 1..65535")
    return Expose(address, port, target_host, target_port)


def parse_name(text: str) -> tuple[str, tuple[IPAddress, ...]]:
    """'db.internal=198.18.0.1,fd00::1' -> ('db.internal.', (addresses)); ValueError naming the text."""
    name, sep, addresses = text.partition("=")
    if not sep or not name.strip():
        raise ValueError(f"--name {text!r}: expected NAME=ADDR[,ADDR...]")
    try:
        parsed = tuple(ipaddress.ip_address(a.strip()) for a in addresses.split(",") if a.strip())
    except ValueError as exc:
        raise ValueError(f"--name {text!r}: {exc}") from None
    return name.strip().lower().rstrip(".") + ".", parsed


# ---- a dashboard's time window ------------------------------------------------------------------------------
def parse_window(text: str) -> float:
    """'90', '90s', '5m', '1h' -> seconds (at most the 10 minutes the history holds); ValueError naming the
    text outside 1 s..1 h."""
    value = text.strip().lower()
    units = {"s": 1, "m": 60, "h": 3600}
    factor = units.get(value[-1:])
    number = value[:-1] if factor else value
    try:
        seconds = float(number) * (factor or 1)
    except ValueError:
        raise ValueError(f"window {text!r}: expected seconds, or a number with s, m or h (5m)") from None
    if not 0 < seconds <= 3600:
        raise ValueError(f"window {text!r}: between 1 s and 1 h")
    return min(seconds, 600.0)


# Proxy settings from the environment, read as curl reads them (curl's documentation of NO_PROXY and
# --noproxy, libcurl's CURLOPT_NOPROXY; Go's httpproxy package for the optional port).
_PROXY_VARIABLES = {"https": "https_proxy", "wss": "https_proxy", "http": "http_proxy", "ws": "http_proxy"}


def _env(environ: Mapping[str, str], name: str, *, upper: bool = True) -> str:
    value = environ.get(name.lower(), "")
    if not value and upper:
        value = environ.get(name.upper(), "")
    return value.strip()


def _no_proxy_entry(entry: str) -> tuple[str, int | None]:
    """One NO_PROXY entry as (name or network, port or None): "[v6]:p", "v6", "v6/len", "h:p", "h"."""
    if entry.startswith("["):
        close = entry.find("]")
        if close < 0:
            return entry, None
        host, rest = entry[1:close], entry[close + 1:]
        port_text = rest[1:] if rest.startswith(":") else ""
        return host, int(port_text) if port_text.isascii() and port_text.isdigit() else None
    if entry.count(":") == 1:
        host, port_text = entry.split(":")
        if port_text.isascii() and port_text.isdigit():
            return host, int(port_text)
    return entry, None


def no_proxy_matches(host: str, port: int | None, no_proxy: str) -> bool:
    """Whether `host` (a name or an IP literal, IPv6 with or without brackets) at `port` bypasses the proxy under
    the NO_PROXY text `no_proxy`, as curl reads it: entries separated by commas or spaces, case-insensitive;
    `*` alone matches every host; a name matches itself and every name under it (`example.com` and
    `.example.com` both match `example.com` and `db.example.com`, not `badexample.com`); an IP address or a CIDR
    network (`10.0.0.0/8`, `fd00::/8`, `[::1]`) matches IP literals inside it, never a name; an entry with a port
    (`host:8443`, `[fd00::1]:443`, as Go reads it) matches that port only. Malformed entries are ignored."""
    host = host.strip().strip("[]").rstrip(".").lower()
    address: IPAddress | None
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        address = None
    for raw in no_proxy.replace(",", " ").split():
        entry = raw.lower()
        if entry == "*":
            return True
        name, entry_port = _no_proxy_entry(entry)
        if entry_port is not None and entry_port != port:
            continue
        name = name.rstrip(".")
        if not name:
            continue
        try:
            network = ipaddress.ip_network(name, strict=False)
        except ValueError:
            network = None
        if network is not None:
            if address is not None and address.version == network.version and address in network:
                return True
            continue
        if address is not None:
            continue
        name = name.lstrip("*").lstrip(".")
        if name and (host == name or host.endswith("." + name)):
            return True
    return False


def proxy_from_environment(url: str, environ: Mapping[str, str] | None = None) -> str | None:
    """The proxy URL the environment names for `url` (ws/wss/http/https), or None for a direct connection.
    Read as curl reads it: `https_proxy`/`HTTPS_PROXY` for wss and https, `http_proxy` for ws and http
    (`HTTP_PROXY` too, except under CGI where REQUEST_METHOD is set, the httpoxy rule), then
    `all_proxy`/`ALL_PROXY`; NO_PROXY/no_proxy as `no_proxy_matches` reads it. A proxy written without a scheme
    is taken as http://."""
    import os
    import urllib.parse

    environ = os.environ if environ is None else environ
    parts = urllib.parse.urlsplit(url)
    scheme = parts.scheme.lower()
    variable = _PROXY_VARIABLES.get(scheme)
    if variable is None or not parts.hostname:
        return None
    try:
        port = parts.port or (443 if scheme in ("https", "wss") else 80)
    except ValueError:
        return None
    no_proxy = _env(environ, "no_proxy")
    if no_proxy and no_proxy_matches(parts.hostname, port, no_proxy):
        return None
    upper = not (variable == "http_proxy" and "REQUEST_METHOD" in environ)
    proxy = _env(environ, variable, upper=upper) or _env(environ, "all_proxy")
    if not proxy:
        return None
    return proxy if "://" in proxy else f"http://{proxy}"
