"""A throw-away local PostgreSQL for the demo (and the gateway's tests): initdb in a temp dir, loopback only.

Uses the server binaries of Debian's postgresql package. PostgreSQL refuses to run as root, so as root the
server runs as the `postgres` user the package created; as anyone else it runs as that user.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from wgmagic import files
from wgmagic.errors import WgMagicError

SAMPLE = """
CREATE TABLE measurements (id int PRIMARY KEY, sensor text, value float8, taken timestamptz);
INSERT INTO measurements
SELECT i, 's' || (i % 5), round((20 + 8 * sin(i / 24.0 * 2 * pi()) + (i % 5) * 1.5 + random() * 2)::numeric, 2),
       '2026-01-01'::timestamptz + i * interval '1 hour'
FROM generate_series(1, 2000) i;
"""


class LocalPostgresError(WgMagicError):
    """The local PostgreSQL could not be set up (missing binaries, or it would not start)."""


def find_pg_bin() -> Path:
    override = os.environ.get("WGMAGIC_PG_BIN")
    candidates = [Path(override)] if override else sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
    for candidate in candidates:
        if (candidate / "initdb").exists() and (candidate / "postgres").exists():
            return candidate
    raise LocalPostgresError("no PostgreSQL server binaries found: install Debian's postgresql package "
                             "(apt-get install postgresql) or set WGMAGIC_PG_BIN")


def _free_tcp_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LocalPostgres:
    """A throwaway PostgreSQL server for the demo: a fresh data directory in a temporary directory, a random
    password, a free loopback port and a Unix socket; `start()`, `stop()` (removes it all)."""

    def __init__(self, *, database: str = "app", user: str = "app", sample: bool = True) -> None:
        self.bin = find_pg_bin()
        self.database, self.user = database, user
        self.password = secrets.token_urlsafe(16)
        self.port = _free_tcp_port()
        self.dir = Path(tempfile.mkdtemp(prefix="wgmagic-pg-"))
        self.data = self.dir / "data"
        self.process: subprocess.Popen | None = None
        self.sample = sample
        self._as: list[str] = []
        if os.geteuid() == 0:
            try:
                shutil.chown(self.dir, "postgres", "postgres")
            except (LookupError, OSError):
                raise LocalPostgresError("running as root, and there is no `postgres` user to run the server as "
                                         "(install Debian's postgresql package)") from None
            self._as = ["runuser", "-u", "postgres", "--"]

    def __repr__(self) -> str:
        return f"<LocalPostgres 127.0.0.1:{self.port} db={self.database}>"

    def _run(self, *args: str, input: str | None = None) -> str:
        done = subprocess.run([*self._as, *args], capture_output=True, text=True, input=input, cwd="/")
        if done.returncode:
            raise LocalPostgresError(f"{Path(args[0]).name} failed: {done.stderr.strip()[-800:]}")
        return done.stdout

    def start(self, timeout: float = 30.0) -> LocalPostgres:
        owner = self.dir.owner()
        pwfile = files.write_text(self.dir / "pw", self.password + "\n", private=True)
        with contextlib.suppress(OSError):
            shutil.chown(pwfile, owner)
        self._run(str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth-local=trust",
                  "--auth-host=scram-sha-256", f"--pwfile={pwfile}", "-E", "UTF8", "--locale=C")
        pwfile.unlink()
        log = files.create_new(self.dir / "postgres.log", private=True)  # the server's stdout, closed in stop
        with contextlib.suppress(OSError):
            shutil.chown(self.dir / "postgres.log", owner)
        self.process = subprocess.Popen(
            [*self._as, str(self.bin / "postgres"), "-D", str(self.data), "-c", "listen_addresses=127.0.0.1",
             "-c", f"port={self.port}", "-c", f"unix_socket_directories={self.dir}", "-c", "fsync=off"],
            stdout=log, stderr=subprocess.STDOUT, cwd="/", start_new_session=True)
        self._log = log
        deadline = time.monotonic() + timeout
        while not (self.dir / f".s.PGSQL.{self.port}").exists():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise LocalPostgresError(f"postgres did not start: {(self.dir / 'postgres.log').read_text()[-800:]}")
            time.sleep(0.1)
        setup = (f"CREATE ROLE {self.user} LOGIN PASSWORD '{self.password}';"
                 f"CREATE DATABASE {self.database} OWNER {self.user};")
        for statement in setup.split(";")[:-1]:
            self.psql(statement, database="postgres")
        if self.sample:
            self.psql(SAMPLE + f"ALTER TABLE measurements OWNER TO {self.user};")
        return self

    def psql(self, sql: str, database: str | None = None) -> str:
        return self._run("psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", str(self.dir), "-p", str(self.port),
                         "-U", "postgres", "-d", database or self.database, "-At", "-f", "-", input=sql)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, 15)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, 9)
        if getattr(self, "_log", None):
            self._log.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> LocalPostgres:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
