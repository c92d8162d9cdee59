"""Opening a tunnel's WebSocket: the HTTP proxy the environment names, TLS, and one sentence when it fails.

`WebSocketTransport` (websocket.py) connects through `websockets`' asyncio client with what this module says:
`proxy_for(url)` (curl's reading of HTTPS_PROXY/HTTP_PROXY/ALL_PROXY/NO_PROXY, via
`wgmagic.addresses.proxy_from_environment`), `tls_context(ca_file, verify=)` and OPEN_TIMEOUT; a failed attempt
becomes `describe_failure(exc, url, proxy, server=)`, which names the party that failed (the proxy, TLS, the
relay or the Fly gateway) and never shows a password. No socket is opened here.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import urllib.parse

from wgmagic.addresses import proxy_from_environment
from wgmagic.via import VIA_CA_ENV, mask_url, split_framing

OPEN_TIMEOUT = 10.0  # seconds for TCP, proxy CONNECT, TLS and the HTTP upgrade together


def tls_context(ca_file: str | None, *, verify: bool = True) -> ssl.SSLContext:
    """Certificate and host-name verification against the system trust store, or only `ca_file` if given;
    `verify=False` (Fly's framing without a CA file, as flyctl dials its gateways): encryption without
    verification, WireGuard authenticating the peer."""
    if ca_file:
        return ssl.create_default_context(cafile=ca_file)
    context = ssl.create_default_context()
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def proxy_for(url: str) -> str | None:
    """The HTTP proxy the environment names for this URL (a fly+ framing prefix is ignored), read as curl reads
    HTTPS_PROXY/HTTP_PROXY/ALL_PROXY and NO_PROXY (CIDR, .domain, *, ports, IPv6 literals:
    `wgmagic.addresses.proxy_from_environment`), or None for a direct connection."""
    return proxy_from_environment(split_framing(url)[1])


def where(url: str) -> str:
    """A ws(s):// or http(s):// URL's host and port as messages name them ("host:port", "[v6]:port"; the
    scheme's default port when none is given)."""
    parts = urllib.parse.urlsplit(url)
    port = parts.port or (443 if parts.scheme in ("wss", "https") else 80)
    host = parts.hostname or "?"
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


_NOT_TLS = "the server did not speak TLS (is it ws:// rather than wss://?)"
_NOT_TLS_REASONS = ("WRONG_VERSION_NUMBER", "HTTP_REQUEST", "UNEXPECTED_EOF_WHILE_READING", "RECORD_LAYER_FAILURE",
                    "PACKET_LENGTH_TOO_LONG", "UNKNOWN_PROTOCOL")


_SILENT: dict[type[BaseException], str] = {  # what an exception that gives no reason means
    ConnectionResetError: "the connection was reset (ConnectionResetError)",
    ConnectionAbortedError: "the connection was aborted (ConnectionAbortedError)",
    BrokenPipeError: "the connection was closed (BrokenPipeError)",
    EOFError: "the connection was closed (EOFError)"}


def _reason(exc: BaseException) -> str:
    """The reason an exception gives, never empty: its strerror or message, else its class name as a sentence."""
    text = (getattr(exc, "strerror", None) or str(exc)).strip() if isinstance(exc, OSError) else str(exc).strip()
    if text:
        return text
    return _SILENT.get(type(exc), f"{type(exc).__name__} (no further reason given)")


def describe_failure(exc: BaseException, url: str, proxy: str | None, *, server: str = "the relay") -> str:
    """One plain sentence for a failed WebSocket connection that names the party that failed: the HTTP proxy
    (when one was used, a refused or unreachable connection is the proxy's), TLS, or the WebSocket server
    (`server`: "the relay", "the Fly gateway"). Never shows a password (the proxy is named by host and port)."""
    from websockets.exceptions import InvalidProxyMessage, InvalidProxyStatus, InvalidStatus, ProxyError

    url = split_framing(url)[1]
    target = where(url)
    shown = mask_url(url)
    proxy_name = where(proxy) if proxy else None
    if isinstance(exc, InvalidProxyStatus):
        status = exc.response.status_code
        reason = exc.response.reason_phrase
        credentials = ("the proxy wants a user name and password, or refused the ones given: put them in the "
                       "proxy URL (HTTPS_PROXY=http://USER:PASSWORD@proxy:port)")
        hint = {407: credentials, 401: credentials,
                403: "the proxy forbids this destination or port (many proxies allow CONNECT only to port 443)",
                502: f"the proxy could not reach {target}"}.get(status, "")
        return (f"the HTTP proxy {proxy_name} refused to CONNECT to {target}: HTTP {status} {reason}"
                + (f"; {hint}" if hint else ""))
    if isinstance(exc, (InvalidProxyMessage, ProxyError)):
        return f"the HTTP proxy {proxy_name} did not answer as an HTTP proxy ({exc})"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return (f"TLS: the certificate of {target} is not trusted ({exc.verify_message}); give the CA that "
                f"signed it (via_ca=, --via-ca or ${VIA_CA_ENV})")
    tls = urllib.parse.urlsplit(url).scheme.lower() in ("wss", "https")
    if isinstance(exc, ssl.SSLError) and getattr(exc, "reason", None) in _NOT_TLS_REASONS:
        return f"TLS handshake with {target} failed: {_NOT_TLS}"
    if isinstance(exc, ssl.SSLError):
        return f"TLS with {target} failed ({getattr(exc, 'reason', None) or _reason(exc)})"
    if isinstance(exc, InvalidStatus):
        status = exc.response.status_code
        hint = f" (check the URL's path against {server}'s --path)" if status == 404 else ""
        return f"the WebSocket server at {shown} answered HTTP {status} instead of upgrading{hint}"
    via = f" (through the HTTP proxy {proxy_name})" if proxy_name else ""
    if isinstance(exc, (TimeoutError, asyncio.TimeoutError)):
        return f"no WebSocket to {shown} within {OPEN_TIMEOUT:g} s{via}"
    if proxy_name:
        # The library's own connection goes to the proxy; the hop to the server is the proxy's (a refusal there
        # comes back as an HTTP status, above). So a refused or unreachable connection is the proxy's.
        bypass = f"; or, if {target} should be reached directly, list it in NO_PROXY"
        if isinstance(exc, ConnectionRefusedError):
            return (f"the HTTP proxy {proxy_name} refused the connection (nothing listens there): is it running, "
                    f"and is the proxy the environment names (HTTPS_PROXY, HTTP_PROXY, ALL_PROXY) right{bypass}?")
        if isinstance(exc, socket.gaierror):
            return f"the HTTP proxy's name in {proxy_name} does not resolve ({_reason(exc)}){bypass}"
        if isinstance(exc, OSError):
            return f"cannot connect to the HTTP proxy {proxy_name}: {_reason(exc)}{bypass}"
    if isinstance(exc, ConnectionRefusedError):
        return f"nothing accepts connections at {target}: is {server} running?"
    if isinstance(exc, socket.gaierror):
        return f"{server}'s name in {shown} does not resolve ({_reason(exc)})"
    if isinstance(exc, OSError):
        if tls and isinstance(exc, (ConnectionResetError, ConnectionAbortedError, EOFError)):
            return (f"cannot connect to {server} at {target}: the connection was closed during the TLS handshake"
                    f" ({type(exc).__name__}); {_NOT_TLS}")
        return f"cannot connect to {server} at {target}: {_reason(exc)}"
    if tls and isinstance(exc, EOFError):
        return f"the WebSocket to {shown} failed{via}: the connection was closed before it opened; {_NOT_TLS}"
    shown_reason = f"{type(exc).__name__}: {exc}" if str(exc).strip() else _reason(exc)
    text = f"the WebSocket to {shown} failed{via}: {shown_reason}"
    for url_with_secrets in (proxy, url):  # a library's message may quote a URL whole
        if url_with_secrets:
            with contextlib.suppress(ValueError):
                password = urllib.parse.urlsplit(url_with_secrets).password
                if password:
                    text = text.replace(password, "***")
    return text
