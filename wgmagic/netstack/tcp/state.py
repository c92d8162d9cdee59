"""The TCP connection states (RFC 9293 section 3.3.2) as a `str` enum.

Each member's value is its name, and the enum mixes in `str`, so `conn.state == "ESTABLISHED"`, dict lookups
keyed by the plain string, `str(state)` and `json.dumps(state)` all keep giving what they gave when the state
was a plain string.
"""

from __future__ import annotations

from enum import Enum


class TcpState(str, Enum):
    """One of the eleven states of RFC 9293 section 3.3.2 (`LISTEN` is a `TcpListener`'s, never a connection's)."""

    __str__ = str.__str__
    __format__ = str.__format__

    CLOSED = "CLOSED"
    LISTEN = "LISTEN"
    SYN_SENT = "SYN_SENT"
    SYN_RECEIVED = "SYN_RECEIVED"
    ESTABLISHED = "ESTABLISHED"
    FIN_WAIT_1 = "FIN_WAIT_1"
    FIN_WAIT_2 = "FIN_WAIT_2"
    CLOSE_WAIT = "CLOSE_WAIT"
    CLOSING = "CLOSING"
    LAST_ACK = "LAST_ACK"
    TIME_WAIT = "TIME_WAIT"


CLOSED = TcpState.CLOSED
LISTEN = TcpState.LISTEN
SYN_SENT = TcpState.SYN_SENT
SYN_RECEIVED = TcpState.SYN_RECEIVED
ESTABLISHED = TcpState.ESTABLISHED
FIN_WAIT_1 = TcpState.FIN_WAIT_1
FIN_WAIT_2 = TcpState.FIN_WAIT_2
CLOSE_WAIT = TcpState.CLOSE_WAIT
CLOSING = TcpState.CLOSING
LAST_ACK = TcpState.LAST_ACK
TIME_WAIT = TcpState.TIME_WAIT

# The states grouped as the connection tests them (tuples: `in` matches a member by identity first).
SYNCHRONIZING = (SYN_SENT, SYN_RECEIVED)
CAN_SEND = (SYN_SENT, SYN_RECEIVED, ESTABLISHED, CLOSE_WAIT)  # send() accepts data (before shutdown_write)
RECEIVING = (ESTABLISHED, FIN_WAIT_1, FIN_WAIT_2)  # data from the peer is accepted (RFC 9293 3.10.7.4)
SENDING = (ESTABLISHED, CLOSE_WAIT, FIN_WAIT_1, CLOSING, LAST_ACK)  # data or our FIN may be (re)sent
