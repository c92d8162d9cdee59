"""Short, actionable messages for SQL errors and connection failures, shared by every dialect.

A server error reads the way the database's own client prints it (each dialect's module lays it out: psql's
in dialects/postgres.py, the mysql client's in dialects/mysql.py). A connection failure names the stage that
failed (handshake, DNS, TCP connect, TLS, authentication) and what to check (wgmagic.explain's words), instead
of a driver traceback. No message ever carries a password.
"""

from __future__ import annotations

from wgmagic.connstr import mask_secrets
from wgmagic.errors import WgMagicError
from wgmagic.explain import stage_advice


class SqlError(WgMagicError):
    """The server rejected a statement; the message is the server's, laid out like psql's."""

    def __init__(self, message: str, *, sqlstate: str | None = None) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate

    def _render_traceback_(self) -> list[str]:  # IPython shows these lines instead of a traceback
        return str(self).splitlines()


class QueryCancelledError(SqlError):
    """The query was cancelled on the server (Ctrl-C / interrupt kernel, or statement_timeout), or interrupted
    when the cancel could not be confirmed: then the message says the query may still run and `sqlstate` is
    None (only a confirmed cancel carries 57014)."""


class ConnectionStageError(WgMagicError, ConnectionError):
    """Opening a database connection through the tunnel failed at one named stage."""

    STAGES = ("handshake", "DNS", "TCP connect", "TLS", "authentication", "server")

    def __init__(self, stage: str, message: str, advice: str) -> None:
        self.stage = stage
        self.advice = advice
        super().__init__(f"connection failed at the {stage} stage: {message}\n  check: {advice}")

    def _render_traceback_(self) -> list[str]:
        return [f"{type(self).__name__}: {self}"]


def classify_connection_failure(exc: BaseException, *, host: str, port: int) -> ConnectionStageError:
    """Which stage a driver's connection error comes from, judged by the error and its message."""
    from wgmagic.errors import (
        DNSTimeoutError,
        EndpointUnresolvableError,
        HandshakeTimeoutError,
        NameNotFoundError,
        PeerNotRespondingError,
        TunnelClosedError,
    )

    text = mask_secrets(str(exc).strip()) or type(exc).__name__
    lower = text.lower()
    sqlstate = getattr(exc, "sqlstate", None)

    def stage(name: str, *, peer_silent: bool = False) -> ConnectionStageError:
        return ConnectionStageError(name, text, stage_advice(name, host, port, peer_silent=peer_silent))

    if isinstance(exc, (HandshakeTimeoutError, EndpointUnresolvableError, TunnelClosedError)):
        return stage("handshake")
    if isinstance(exc, (NameNotFoundError, DNSTimeoutError)):
        return stage("DNS")
    # A peer that stopped answering fails the TCP connect (its handshake was done once), though the words
    # mention handshakes: checked before the text test for a handshake failure.
    if isinstance(exc, PeerNotRespondingError) or "not answering" in lower:
        return stage("TCP connect", peer_silent=True)
    if "handshake" in lower:
        return stage("handshake")
    if "refused" in lower or "timed out" in lower or "timeout expired" in lower or "no route" in lower \
            or isinstance(exc, (ConnectionRefusedError, TimeoutError)):
        return stage("TCP connect")
    if sqlstate in ("28P01", "28000") or "password" in lower or "authentication" in lower \
            or "no pg_hba.conf entry" in lower:
        return stage("authentication")
    if "ssl" in lower or "certificate" in lower or "tls" in lower:
        return stage("TLS")
    return stage("server")
