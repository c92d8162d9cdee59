"""Things the suite runs on this machine's own loopback, which other programs share: never a fixed port.

Every listener here binds port 0 and reports the port the kernel chose; a bind that fails is an error that
says which address and why, not a silent conversation with whatever program already listens there.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator

from tests.testbed.bed import REPO


class ServicesError(RuntimeError):
    """The bed's services could not start (a bind failed, or the process died): the message says why."""


@contextlib.contextmanager
def loopback_services(address: str = "127.0.0.1", timeout: float = 20.0) -> Iterator[dict[str, int]]:
    """Run tests.testbed.services on `address` with kernel-chosen ports; yields {"bulk": PORT, "echo": ...}.

    Raises ServicesError with the services' own error (e.g. "cannot listen on 127.0.0.1:0 (bulk): ...") when
    they do not come up. The process is stopped on exit, whatever happened.
    """
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen([sys.executable, "-m", "tests.testbed.services", "--ephemeral", address],
                               env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        ports = read_ready_line(process, timeout)[address]
        yield ports
    finally:
        if process.poll() is None:
            process.terminate()
        process.communicate(timeout=10)


def read_ready_line(process: subprocess.Popen, timeout: float) -> dict[str, dict[str, int]]:
    """The ports a services process reports on its first line, or ServicesError with its stderr."""
    assert process.stdout is not None
    ready = process.stdout.readline() if _readable(process.stdout, timeout) else ""
    word, _, payload = ready.partition(" ")
    if word.strip() != "ready" or not payload.strip():
        if process.poll() is None:
            process.kill()
        _, stderr = process.communicate(timeout=10)
        raise ServicesError(f"the test bed's services did not start (exit status {process.returncode}): "
                            f"{(stderr or ready).strip() or 'no output'}")
    return json.loads(payload)


def _readable(stream: object, timeout: float) -> bool:
    import select

    readable, _, _ = select.select([stream], [], [], timeout)
    return bool(readable)


@contextlib.contextmanager
def closed_tcp_port(address: str = "127.0.0.1") -> Iterator[int]:
    """A TCP port on `address` that is ours and refuses connections: bound (so no other program can take it)
    but never listening, so the kernel answers a SYN with a reset."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as holder:
        holder.bind((address, 0))
        yield holder.getsockname()[1]


@contextlib.contextmanager
def silent_udp_port(address: str = "127.0.0.1") -> Iterator[int]:
    """A UDP port on `address` that is ours and never answers: datagrams sent there are read by nobody."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as holder:
        holder.bind((address, 0))
        yield holder.getsockname()[1]
