"""How a tunnel reaches its peer: plain UDP, a WebSocket URL, or "auto" (issue 13); parsing only.

The transports themselves live in wgmagic/runtime/ (transport.py, websocket.py); this module sits at the
config layer so that wgmagic/config.py can check a `#@wgmagic Via = ...` comment without importing upward.
"""

from __future__ import annotations

import enum
import os
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass

from wgmagic.errors import ConfigError

VIA_ENV = "WGMAGIC_VIA"
VIA_CA_ENV = "WGMAGIC_VIA_CA"


class ViaMode(str, enum.Enum):
    """How the datagrams travel: UDP only, a WebSocket only, or AUTO (UDP first, the WebSocket if UDP gets no
    handshake; the ladder is wgmagic.runtime.transport.transport_ladder). A str enum: its value is the word
    users write (`--via udp`)."""

    UDP = "udp"
    WEBSOCKET = "websocket"
    AUTO = "auto"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class Via:
    """How the tunnel reaches its peer: `mode` (ViaMode; a plain word is converted, ValueError if unknown),
    `url` (the ws:// or wss:// URL for WEBSOCKET and AUTO), `ca_file` (PEM file to verify wss:// with)."""

    mode: ViaMode = ViaMode.UDP
    url: str | None = None
    ca_file: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.mode, ViaMode):
            object.__setattr__(self, "mode", ViaMode(self.mode))

    def __str__(self) -> str:
        if self.mode is ViaMode.UDP:
            return "udp"
        shown = mask_url(self.url) if self.url else "(no WebSocket URL)"
        return shown if self.mode is ViaMode.WEBSOCKET else f"auto {shown}"

    def __repr__(self) -> str:
        return f"Via({self})"


def mask_url(url: str) -> str:
    """The URL without its password (user:***@host), for messages and reprs."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return "(an unparsable URL)"
    if parts.password is None and parts.username is None:
        return url
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def check_url(url: str) -> str:
    """A ws:// or wss:// URL with a host, else ValueError (the message never repeats a password)."""
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError:
        raise ValueError(f"{mask_url(url)} is not a valid URL") from None
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise ValueError(f"{mask_url(url)!r} is not a WebSocket URL: expected ws://HOST[:PORT]/PATH or "
                         "wss://HOST[:PORT]/PATH")
    del port
    return url


def parse_via(text: str) -> Via:
    """'udp', 'auto', 'auto wss://...', or a ws:// / wss:// URL -> Via. Raises ValueError."""
    words = text.split()
    if not words:
        raise ValueError("empty: expected udp, auto, or a ws:// or wss:// URL")
    head = words[0].lower()
    if head == ViaMode.UDP and len(words) == 1:
        return Via(ViaMode.UDP)
    if head == ViaMode.AUTO and len(words) <= 2:
        return Via(ViaMode.AUTO, check_url(words[1]) if len(words) == 2 else None)
    if len(words) == 1:
        return Via(ViaMode.WEBSOCKET, check_url(words[0]))
    raise ValueError(f"{mask_url(text)!r}: expected udp, auto, 'auto URL', or a ws:// or wss:// URL")


def choose_via(explicit: str | Via | None, config_via: str | None, *, ca_file: str | None = None,
               environ: Mapping[str, str] | None = None) -> Via:
    """The transport to use: the caller's `via` (argument, --via), else $WGMAGIC_VIA, else the config's
    `#@wgmagic Via = ...` comment, else UDP. "auto" without a URL takes one from the next source down.
    The CA file for wss:// comes from `ca_file`, else $WGMAGIC_VIA_CA (else the system trust store).
    Raises ConfigError naming the source."""
    env = os.environ if environ is None else environ
    sources: list[tuple[str, str | Via]] = []
    if explicit:
        sources.append(("via", explicit))
    if env.get(VIA_ENV, "").strip():
        sources.append((VIA_ENV, env[VIA_ENV]))
    if config_via:
        sources.append(("the config's Via", config_via))
    parsed: list[Via] = []
    for name, value in sources:
        if isinstance(value, Via):
            parsed.append(value)
            continue
        try:
            parsed.append(parse_via(value))
        except ValueError as exc:
            raise ConfigError(f"{name}: {exc}") from None
    ca = ca_file or env.get(VIA_CA_ENV) or None
    if not parsed:
        return Via(ViaMode.UDP, None, ca)
    first = parsed[0]
    url = first.url
    if first.mode is ViaMode.AUTO and url is None:
        url = next((v.url for v in parsed[1:] if v.url), None)
    return Via(first.mode, url, ca or first.ca_file)
