"""Exceptions a notebook user can act on.

Every message says what failed and what to check; the words come from wgmagic.explain, their one home. None
of them ever carries a private key, a preshared key or a password: callers pass names and addresses, never
secrets.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from wgmagic.explain import Explanation


class WgMagicError(Exception):
    """Base class of every error wgmagic raises on purpose."""


class ConfigError(WgMagicError, ValueError):
    """A wg-quick configuration is malformed; names the source, line and key."""

    def __init__(self, message: str, *, source: str = "<string>", line: int | None = None,
                 key: str | None = None) -> None:
        self.source = source
        self.line = line
        self.key = key
        where = source if line is None else f"{source}, line {line}"
        what = f"{key}: {message}" if key else message
        super().__init__(f"{where}: {what}")


class TunnelError(WgMagicError):
    """Something went wrong with a running tunnel."""


class EndpointUnresolvableError(TunnelError):
    """The peer's Endpoint host name could not be resolved by the host's resolver."""


class HandshakeTimeoutError(TunnelError, TimeoutError):
    """The peer never answered the handshake. `explanation` (wgmagic.explain.Explanation, or None): the fault
    and its likely causes as plain data, for the doctor and `%%wgsql` to show in their own layout."""

    def __init__(self, message: str, *, explanation: Explanation | None = None) -> None:
        super().__init__(message)
        self.explanation = explanation


class PortUnreachableError(HandshakeTimeoutError):
    """Every address of the peer's Endpoint answered the handshake with ICMP port unreachable (RFC 792, RFC 1122
    3.2.2.1), twice in a row: nothing listens on that UDP port. Raised at once, before the handshake timeout."""


class TunnelConflictError(TunnelError):
    """Another open tunnel (in this process or another of this user's) already speaks to the same peer with
    the same private key, or already has the name asked for."""


class PeerNotRespondingError(TunnelError, TimeoutError):
    """The peer stopped answering: data sent into the tunnel gets no reply."""


class TunnelClosedError(TunnelError, ConnectionError):
    """The tunnel was closed while an operation was waiting on it."""


class NoRouteError(TunnelError):
    """No peer's AllowedIPs cover the destination address."""


class NameNotFoundError(TunnelError, OSError):
    """The tunnel's DNS answered that the name does not exist (NXDOMAIN) or has no address."""


class DNSTimeoutError(TunnelError, TimeoutError):
    """The tunnel's DNS servers did not answer in time."""


class MessageTooLongError(TunnelError, OSError):
    """A packet would not fit the tunnel's MTU and nothing fragments it (errno EMSGSIZE, as `ping -M do`)."""


class TransportError(TunnelError, ConnectionError):
    """The way to the peer other than UDP failed: a WebSocket relay, TLS or an HTTP proxy refused."""


class MissingDependencyError(WgMagicError, ModuleNotFoundError):
    """An optional package behind a public API is not installed; the message names the extra that brings it
    (`pip install 'wgmagic[tools]'`). A ModuleNotFoundError too, so `except ImportError` still catches it."""


def import_optional(module: str, extra: str, feature: str) -> ModuleType:
    """`import module` for `feature` (the public API that needs it, e.g. "tunnel.engine()"); when it is not
    installed, MissingDependencyError naming the pip extra of wgmagic that installs it. Raises any other
    ImportError of the module unchanged (a broken install should say what is broken)."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        top = module.partition(".")[0]
        if exc.name is None or exc.name.partition(".")[0] != top:
            raise
        raise MissingDependencyError(
            f"{feature} needs the package {top!r}, which is not installed: pip install 'wgmagic[{extra}]'",
            name=top) from None
