"""What the integration modules share: polling (the bed's `poll` and `wait_for`); `magic_shell`, an IPython
shell with wgmagic loaded and, if asked, one of the bed's client identities connected as a named tunnel; a UDP
request/answer with resends; a Python probe run as another local user."""

from __future__ import annotations

import contextlib
import datetime
import socket
import subprocess
from collections.abc import Iterator
from typing import Any

from IPython.core.interactiveshell import InteractiveShell

from tests.testbed.bed import poll, wait_for

__all__ = ["NOBODY", "exchange", "magic_shell", "poll", "python_as_nobody", "wait_for"]

NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]  # run as user nobody: another local user


@contextlib.contextmanager
def magic_shell(testbed: Any, identity: int = 0, *, name: str | None = None,
                **user_ns: Any) -> Iterator[InteractiveShell]:
    """The process's InteractiveShell with `user_ns` set and wgmagic loaded; with `name`, the bed's client
    config for `identity` (in the namespace as `{name}_config`) connected by `%wg connect ... --name NAME`
    (asserted to succeed). On exit wgmagic is unloaded, which closes its tunnels and SQL connections, also when
    the body failed. Two tunnels up at once need two identities (one key, one tunnel)."""
    shell = InteractiveShell.instance()
    shell.user_ns.update(user_ns)
    shell.run_line_magic("load_ext", "wgmagic")
    try:
        if name is not None:
            shell.user_ns[f"{name}_config"] = testbed.client_config(identity=identity)
            result = shell.run_cell(f"%wg connect {{{name}_config}} --name {name}")
            assert result.success, result.error_in_exec
        yield shell
    finally:
        shell.run_line_magic("unload_ext", "wgmagic")


def exchange(sock: socket.socket, address: Any, datagram: bytes, attempts: int = 5) -> bytes:
    """Send `datagram` to `address` and return the first datagram that comes back (sock has a timeout); UDP may
    lose one, so it is sent again up to `attempts` times, as dig does. AssertionError when nothing answers."""
    for _ in range(attempts):
        sock.sendto(datagram, address)
        try:
            return sock.recv(65535)
        except TimeoutError:
            continue
    raise AssertionError(f"no answer to {datagram[:20]!r} from {address}")


def python_as_nobody(script: str) -> str:
    """What a Python `script` run as user nobody (another local user of this machine) prints, stripped;
    AssertionError with its output when it fails."""
    result = subprocess.run([*NOBODY, "/usr/bin/python3", "-c", script], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout.strip()


def big_table_aggregates(testbed: Any) -> list[str]:
    """PostgreSQL's own figures for the bed's `big` table (count, sum(id), sum(x), md5 of the labels, flags),
    taken straight in the peer's namespace: what a client's copy of the table must add up to."""
    testbed.ensure_big_table()
    return testbed.psql_admin(
        "SELECT count(*), sum(id), sum(x), md5(string_agg(label, E'\\n' ORDER BY id)), sum(flag::int) FROM big",
        database="app").strip().split("|")


def assert_big_table_intact(report: dict[str, Any], expected: list[str]) -> None:
    """A wsclient "sql" report of `big` (tests/testbed/wsclient.py) equals `expected` (big_table_aggregates),
    the million rows and the last row's timestamp."""
    assert report["rows"] == int(expected[0]) == 1_000_000
    assert report["sum_id"] == int(expected[1])
    assert report["sum_x"] == float(expected[2])
    assert report["labels_md5"] == expected[3]
    assert report["flags"] == int(expected[4])
    start = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)
    assert report["at_last"] == (start + datetime.timedelta(seconds=1_000_000)).isoformat()
