"""The real-peer test bed: a wireguard-go peer in a network namespace with PostgreSQL, dnsmasq and TCP
services behind it, a wireguard-go reference client with a TUN in a second namespace, and fault knobs.

Addresses (only these): 198.18.0.0/24 and fd77:6d61:6769:6300::/64.
  198.18.0.1 / ::1  the peer's services (on the namespace's lo, so they survive a peer restart)
  198.18.0.2 / ::2  wgmagic's client;  198.18.0.3 / ::3  the reference client (kernel TCP)
  198.18.0.11.. / ::b..  more client identities, one per tunnel a test keeps up beside another: a WireGuard
                    peer follows only the last sender of a key, so two tunnels never share one

Tip that works on these machines: wireguard-go is started in the root namespace, so its UDP socket listens on
the host's loopback, configured with `wg set`, then only its interface is moved into the namespace.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.testbed.tls import write_ca_and_server_cert
from wgmagic.wireguard.crypto import generate_keypair as keypair

PREFIX = "wgmt"
REPO = Path(__file__).resolve().parents[2]
PG_BIN = Path("/usr/lib/postgresql/15/bin")
MARIADB_PORT = 3306

NET4, NET6 = "198.18.0.0/24", "fd77:6d61:6769:6300::/64"
PEER4, PEER6 = "198.18.0.1", "fd77:6d61:6769:6300::1"
CLIENT4, CLIENT6 = "198.18.0.2", "fd77:6d61:6769:6300::2"
REF4, REF6 = "198.18.0.3", "fd77:6d61:6769:6300::3"
IDENTITIES = 8  # client keys the peer knows; identity 0 has CLIENT4/CLIENT6 (6: test_mariadb, 7: test_every_tool)
# A second peer (TestBed.second_peer(), for tests of several [Peer] sections) guards its own subnet.
NET4_B, NET6_B = "198.18.1.0/24", "fd77:6d61:6769:6301::/64"
PEER4_B, PEER6_B = "198.18.1.1", "fd77:6d61:6769:6301::1"


def client_addresses(identity: int) -> tuple[str, str]:
    if identity == 0:
        return CLIENT4, CLIENT6
    return f"198.18.0.{10 + identity}", f"fd77:6d61:6769:6300::{10 + identity:x}"
MTU = 1420


def run(*args: str, check: bool = True, ns: str | None = None, **kwargs) -> subprocess.CompletedProcess:
    command = (["ip", "netns", "exec", ns] if ns else []) + list(args)
    return subprocess.run(command, check=check, capture_output=True, text=True, **kwargs)


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def poll(predicate, timeout: float, interval: float = 0.05) -> bool:
    """Ask `predicate()` every `interval` seconds until it is true (True) or `timeout` seconds have passed
    (False, after asking once more). The one polling loop of the bed and the tests: never a timing assertion."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


def wait_for(predicate, timeout: float, what: str, *, interval: float = 0.05) -> None:
    """poll(), raising TimeoutError("timed out waiting for {what}") when `predicate` stays false."""
    if not poll(predicate, timeout, interval):
        raise TimeoutError(f"timed out waiting for {what}")


@dataclass
class SecondPeer:
    """A second wireguard-go peer in a namespace of its own, with the bed's TCP services on PEER4_B/PEER6_B
    (fixed ports, as in the first peer's namespace) and every client identity as its peer."""

    ns: str
    interface: str
    public_key: str
    port: int  # its UDP port on the host's loopback

    def peer_section(self) -> str:
        return (f"[Peer]\nPublicKey = {self.public_key}\nEndpoint = 127.0.0.1:{self.port}\n"
                f"AllowedIPs = {NET4_B}, {NET6_B}\n")


@dataclass
class Relay:
    endpoint: str
    process: subprocess.Popen

    def stop(self) -> dict:
        self.process.send_signal(signal.SIGTERM)
        out, _ = self.process.communicate(timeout=10)
        lines = [line for line in out.splitlines() if line.startswith("{")]
        return json.loads(lines[-1]) if lines else {}


class TestBed:
    __test__ = False  # not a pytest class

    def __init__(self, identities: int = IDENTITIES) -> None:
        self.identities = identities  # client keys the peer knows (each tunnel up at once needs its own)
        self.id = secrets.token_hex(3)
        self.ns = f"{PREFIX}-{self.id}"
        self.ref_ns = f"{PREFIX}r-{self.id}"
        self.peer_if = f"{PREFIX}p{self.id}"
        self.ref_if = f"{PREFIX}r{self.id}"
        self.dir = Path(tempfile.mkdtemp(prefix=f"wgmagic-bed-{self.id}-"))
        # 0711: postgres and mysql (their own users) must reach their files in here, but nobody else may list
        # it; every file holding a secret is 0600 from its creation (write_private).
        os.chmod(self.dir, 0o711)
        (self.dir / "owner.pid").write_text(str(os.getpid()))  # clean_leftovers() spares beds in use
        self.port = 0  # the peer's UDP port on the host's loopback: the kernel's choice, read back once it is up
        self.peer_private, self.peer_public = keypair()
        self.clients = [keypair() for _ in range(identities)]  # (private, public) per identity
        self.client_private, self.client_public = self.clients[0]
        self.ref_private, self.ref_public = keypair()
        self.db_password = secrets.token_urlsafe(16)
        self.processes: list[subprocess.Popen] = []
        self.peer_process: subprocess.Popen | None = None
        self.postgres: subprocess.Popen | None = None
        self.mariadb: subprocess.Popen | None = None  # started on first use: ensure_mariadb()
        self._mariadb_lock = threading.Lock()
        self.mariadb_ca_file: Path | None = None
        self.ca_file: Path | None = None
        self.second: SecondPeer | None = None
        self.blocked: list = []  # wsbed.BlockedNamespace: client namespaces whose outbound UDP is dropped
        self.server_cert: Path | None = None  # names db.internal, v6only.internal, api.internal
        self.server_key: Path | None = None
        self.up_ = False

    # ---- bring up ----------------------------------------------------------------------------------
    def up(self) -> TestBed:
        try:
            self._write_keys()
            run("ip", "netns", "add", self.ns)
            run("ip", "netns", "add", self.ref_ns)
            for ns in (self.ns, self.ref_ns):
                run("ip", "link", "set", "lo", "up", ns=ns)
            # This kernel has no dummy interfaces: the services' addresses live on the namespace's loopback.
            run("ip", "addr", "add", f"{PEER4}/32", "dev", "lo", ns=self.ns)
            run("ip", "addr", "add", f"{PEER6}/128", "dev", "lo", ns=self.ns)
            self._start_peer()
            self._start_reference()
            self._start_services()
            self._start_dns()
            self._start_postgres()
            self._start_https()
            self.up_ = True
            return self
        except BaseException:
            self.down()
            raise

    def _write_keys(self) -> None:
        for name, value in (("peer.key", self.peer_private), ("ref.key", self.ref_private)):
            write_private(self.dir / name, value + "\n")

    def _start_wireguard_go(self, interface: str) -> subprocess.Popen:
        # A killed wireguard-go leaves its control socket behind; a stale one would look like a ready daemon.
        Path(f"/var/run/wireguard/{interface}.sock").unlink(missing_ok=True)
        env = {**os.environ, "WG_PROCESS_FOREGROUND": "1", "LOG_LEVEL": "error"}
        log = open(self.dir / f"{interface}.log", "w")  # noqa: SIM115 (lives as long as the process)
        process = subprocess.Popen(["wireguard-go", "-f", interface], env=env, stdout=log, stderr=log,
                                   start_new_session=True)
        wait_for(lambda: Path(f"/var/run/wireguard/{interface}.sock").exists() or process.poll() is not None,
                 10, f"wireguard-go {interface}")
        if process.poll() is not None:
            raise RuntimeError(f"wireguard-go {interface} exited: {(self.dir / f'{interface}.log').read_text()}")
        return process

    def _start_peer(self) -> None:
        self.peer_process = self._start_wireguard_go(self.peer_if)
        peers: list[str] = []
        addresses = [client_addresses(k) for k in range(self.identities)]
        for (_, public), (v4, v6) in zip(self.clients, addresses, strict=True):
            peers += ["peer", public, "allowed-ips", f"{v4}/32,{v6}/128"]
        # First start: listen-port 0, wireguard-go binds a port the kernel picks when the link comes up. A restart
        # must listen where the clients already send (the port is ours until the old process died).
        run("wg", "set", self.peer_if, "listen-port", str(self.port), "private-key", str(self.dir / "peer.key"),
            *peers, "peer", self.ref_public, "allowed-ips", f"{REF4}/32,{REF6}/128")
        run("ip", "link", "set", self.peer_if, "netns", self.ns)
        run("ip", "link", "set", self.peer_if, "mtu", str(MTU), "up", ns=self.ns)
        wanted = self.port
        wait_for(lambda: self._listen_port() not in (0, None) and (not wanted or self._listen_port() == wanted),
                 10, f"wireguard-go {self.peer_if} to listen on UDP port {wanted or '(any)'} of 127.0.0.1")
        self.port = self._listen_port() or 0
        for v4, _ in [*addresses, (REF4, REF6)]:
            run("ip", "route", "add", f"{v4}/32", "dev", self.peer_if, ns=self.ns)
        for _, v6 in [*addresses, (REF4, REF6)]:
            run("ip", "-6", "route", "add", f"{v6}/128", "dev", self.peer_if, "src", PEER6, ns=self.ns)

    def _listen_port(self) -> int | None:
        out = run("wg", "show", self.peer_if, "listen-port", ns=self.ns, check=False).stdout.strip()
        return int(out) if out.isdigit() else None

    def _start_reference(self) -> None:
        process = self._start_wireguard_go(self.ref_if)
        self.processes.append(process)
        run("wg", "set", self.ref_if, "private-key", str(self.dir / "ref.key"), "peer", self.peer_public,
            "endpoint", f"127.0.0.1:{self.port}", "allowed-ips", f"{NET4},{NET6}")
        run("ip", "link", "set", self.ref_if, "netns", self.ref_ns)
        run("ip", "addr", "add", f"{REF4}/32", "dev", self.ref_if, ns=self.ref_ns)
        run("ip", "addr", "add", f"{REF6}/128", "dev", self.ref_if, "nodad", ns=self.ref_ns)
        run("ip", "link", "set", self.ref_if, "mtu", str(MTU), "up", ns=self.ref_ns)
        run("ip", "route", "add", NET4, "dev", self.ref_if, ns=self.ref_ns)
        run("ip", "-6", "route", "add", NET6, "dev", self.ref_if, ns=self.ref_ns)

    def _spawn(self, args: list[str], name: str, ns: str | None = None, ready: str | None = None,
               **kwargs) -> subprocess.Popen:
        command = (["ip", "netns", "exec", ns] if ns else []) + args
        log = open(self.dir / f"{name}.log", "w")  # noqa: SIM115
        process = subprocess.Popen(command, stdout=subprocess.PIPE if ready else log, stderr=log, text=True,
                                   start_new_session=True, **kwargs)
        self.processes.append(process)
        if ready:
            assert process.stdout is not None
            line = process.stdout.readline()
            if ready not in line:
                raise RuntimeError(f"test bed: {name} did not start: {(self.dir / f'{name}.log').read_text()}")
        return process

    def _start_services(self) -> None:
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        self._spawn([sys.executable, "-m", "tests.testbed.services", PEER4, PEER6], "services", ns=self.ns,
                    ready="ready", env=env, cwd=REPO)

    def _start_dns(self) -> None:
        big = ",".join(f'"{c * 200}"' for c in "abcd")  # > 512 bytes: forces truncation over UDP
        self._spawn(["dnsmasq", "-k", "--conf-file=/dev/null", "--no-resolv", "--no-hosts", "--bind-interfaces",
                     f"--listen-address={PEER4}", f"--listen-address={PEER6}", "--port=53", "--user=root",
                     f"--pid-file={self.dir / 'dnsmasq.pid'}", "--local=/internal/",
                     f"--host-record=db.internal,{PEER4},{PEER6}", f"--host-record=bulk.internal,{PEER4}",
                     f"--host-record=mariadb.internal,{PEER4},{PEER6}", f"--host-record=v6only.internal,{PEER6}",
                     f"--host-record=api.internal,{PEER4},{PEER6}", f"--host-record=wrong.internal,{PEER4}",
                     f"--txt-record=big.internal,{big}"],
                    "dnsmasq", ns=self.ns)
        wait_for(lambda: (self.dir / "dnsmasq.pid").exists() or self.processes[-1].poll() is not None, 10,
                 "dnsmasq")
        if self.processes[-1].poll() is not None:
            raise RuntimeError(f"dnsmasq exited: {(self.dir / 'dnsmasq.log').read_text()}")

    def _start_postgres(self) -> None:
        data = self.dir / "pgdata"
        data.mkdir()
        shutil.chown(data, "postgres", "postgres")
        pwfile = self.dir / "pgpass.txt"
        pwfile.write_text("postgres-setup\n")
        shutil.chown(pwfile, "postgres", "postgres")
        pwfile.chmod(0o600)
        run("runuser", "-u", "postgres", "--", str(PG_BIN / "initdb"), "-D", str(data), "-U", "postgres",
            "--auth-local=trust", "--auth-host=scram-sha-256", f"--pwfile={pwfile}", cwd="/")
        # TLS with a certificate for the private name, signed by a CA only the tests trust (verify-full).
        self.ca_file, cert, key = write_ca_and_server_cert(self.dir, ["db.internal", "v6only.internal",
                                                                       "api.internal"],
                                                           [PEER4, PEER6])
        self.server_cert, self.server_key = cert, key
        for path in (cert, key):
            shutil.chown(path, "postgres", "postgres")
        with open(data / "pg_hba.conf", "a") as hba:
            hba.write("host all all 0.0.0.0/0 scram-sha-256\nhost all all ::/0 scram-sha-256\n")
        self.postgres = self._spawn(
            ["runuser", "-u", "postgres", "--", str(PG_BIN / "postgres"), "-D", str(data),
             "-c", f"listen_addresses={PEER4},{PEER6}", "-c", f"unix_socket_directories={data}", "-c", "port=5432",
             "-c", "ssl=on", "-c", f"ssl_cert_file={cert}", "-c", f"ssl_key_file={key}",
             "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"],
            "postgres", ns=self.ns, cwd="/")
        wait_for(lambda: (data / ".s.PGSQL.5432").exists() or self.postgres.poll() is not None, 30, "postgres")
        if self.postgres.poll() is not None:
            raise RuntimeError(f"postgres exited: {(self.dir / 'postgres.log').read_text()[-2000:]}")
        self.psql_admin(f"CREATE ROLE app LOGIN PASSWORD '{self.db_password}'")
        self.psql_admin("CREATE DATABASE app OWNER app")  # not inside the role's transaction: psql -c makes one
        self.psql_admin("CREATE TABLE measurements (id int PRIMARY KEY, sensor text, value float8, "
                        "taken timestamptz); INSERT INTO measurements SELECT i, 's' || (i % 5), i * 1.5, "
                        "'2026-01-01'::timestamptz + i * interval '1 hour' FROM generate_series(1, 100) i; "
                        "ALTER TABLE measurements OWNER TO app;", database="app")

    def _start_https(self) -> None:
        """api.internal: an HTTPS JSON service whose certificate (the bed's server certificate, which names
        api.internal but not wrong.internal) is signed by the bed's CA (tests/testbed/https.py)."""
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        self._spawn([sys.executable, "-m", "tests.testbed.https", str(self.server_cert), str(self.server_key),
                     PEER4, PEER6], "https", ns=self.ns, ready="ready", env=env, cwd=REPO)

    def psql_admin(self, sql: str, database: str = "postgres") -> str:
        result = run("runuser", "-u", "postgres", "--", "psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h",
                     str(self.dir / "pgdata"), "-d", database, "-At", "-c", sql, cwd="/")
        return result.stdout

    def ensure_big_table(self, rows: int = 1_000_000) -> None:
        self.psql_admin(
            "CREATE TABLE IF NOT EXISTS big (id int, x float8, label text, at timestamptz, flag bool); "
            f"INSERT INTO big SELECT i, i * 0.5, 'row ' || i, '2026-01-01'::timestamptz + i * interval '1 second', "
            f"i % 2 = 0 FROM generate_series(1, {rows}) i WHERE NOT EXISTS (SELECT 1 FROM big LIMIT 1); "
            "ALTER TABLE big OWNER TO app;", database="app")

    # ---- MariaDB (lazily: only the tests that use it pay its few seconds) ----------------------------
    @property
    def mariadb_socket(self) -> Path:
        return self.dir / "mariadb" / "mysqld.sock"

    def ensure_mariadb(self) -> None:
        """Start Debian's MariaDB in the peer's namespace, listening only on the private addresses (port 3306),
        with database `app` and user `app` (password db_password), once; reachable as mariadb.internal."""
        with self._mariadb_lock:
            if self.mariadb is not None and self.mariadb.poll() is None:
                return
            base = self.dir / "mariadb"
            fresh = not (base / "data").exists()
            if fresh:
                base.mkdir(exist_ok=True)
                shutil.chown(base, "mysql", "mysql")
                # TLS with its own CA and a certificate for mariadb.internal only (another name is refused).
                self.mariadb_ca_file, cert, key = write_ca_and_server_cert(base, ["mariadb.internal"], [])
                for path in (cert, key):
                    shutil.chown(path, "mysql", "mysql")
                run("mariadb-install-db", "--no-defaults", "--user=mysql", f"--datadir={base / 'data'}",
                    "--auth-root-authentication-method=socket", "--skip-test-db", "--skip-name-resolve", cwd="/")
            self._start_mariadbd()
            if fresh:
                password = self.db_password.replace("'", "''")
                self.mariadb_admin(
                    "CREATE DATABASE app; "
                    f"CREATE USER 'app'@'%' IDENTIFIED BY '{password}'; GRANT ALL ON app.* TO 'app'@'%';")

    def _start_mariadbd(self) -> None:
        base = self.dir / "mariadb"
        (base / "mysqld.pid").unlink(missing_ok=True)
        self.mariadb = self._spawn(
            ["mariadbd", "--no-defaults", "--user=mysql", f"--datadir={base / 'data'}",
             f"--socket={self.mariadb_socket}", f"--pid-file={base / 'mysqld.pid'}",
             f"--bind-address={PEER4},{PEER6}", f"--port={MARIADB_PORT}", "--skip-name-resolve", "--skip-log-bin",
             "--innodb-buffer-pool-size=32M", "--innodb-flush-log-at-trx-commit=0", f"--tmpdir={base}",
             f"--ssl-cert={base / 'server.crt'}", f"--ssl-key={base / 'server.key'}",
             f"--log-error={self.dir / 'mariadb.log'}"],
            "mariadbd", ns=self.ns, cwd="/")
        wait_for(lambda: self.mariadb.poll() is not None or run(
            "mariadb-admin", f"--socket={self.mariadb_socket}", "-uroot", "ping", check=False).returncode == 0,
            60, "mariadbd")
        if self.mariadb.poll() is not None:
            log = self.dir / "mariadb.log"
            raise RuntimeError(f"mariadbd exited: {log.read_text()[-2000:] if log.exists() else ''}")

    def restart_mariadb(self) -> None:
        """Stop the server (every client connection dies) and start it again on the same data."""
        with self._mariadb_lock:
            if self.mariadb is not None and self.mariadb.poll() is None:
                os.killpg(self.mariadb.pid, signal.SIGTERM)
                self.mariadb.wait(60)
            self._start_mariadbd()

    def mariadb_admin(self, sql: str, database: str | None = None) -> str:
        """Run SQL as MariaDB's root (over its Unix socket); tab-separated rows without headers."""
        result = run("mariadb", f"--socket={self.mariadb_socket}", "-uroot", "-N", "-B", "-e", sql,
                     *([database] if database else []), cwd="/")
        return result.stdout

    def mariadb_url(self, host: str = "mariadb.internal", *, password: bool = True) -> str:
        secret = f":{self.db_password}" if password else ""
        return f"mysql+pymysql://app{secret}@{host}:{MARIADB_PORT}/app"

    def second_peer(self) -> SecondPeer:
        """Start (once) a second wireguard-go peer guarding NET4_B/NET6_B in its own namespace, with the bed's
        services on PEER4_B (echo 9001, http 8080...); torn down with the bed."""
        if self.second is not None:
            return self.second
        ns, interface = f"{PREFIX}b-{self.id}", f"{PREFIX}b{self.id}"
        private, public = keypair()
        key_file = write_private(self.dir / "second.key", private + "\n")
        run("ip", "netns", "add", ns)
        self.second = SecondPeer(ns, interface, public, 0)
        run("ip", "link", "set", "lo", "up", ns=ns)
        run("ip", "addr", "add", f"{PEER4_B}/32", "dev", "lo", ns=ns)
        run("ip", "addr", "add", f"{PEER6_B}/128", "dev", "lo", ns=ns)
        self.processes.append(self._start_wireguard_go(interface))
        addresses = [client_addresses(k) for k in range(IDENTITIES)]
        peers: list[str] = []
        for (_, client_public), (v4, v6) in zip(self.clients, addresses, strict=True):
            peers += ["peer", client_public, "allowed-ips", f"{v4}/32,{v6}/128"]
        run("wg", "set", interface, "listen-port", "0", "private-key", str(key_file), *peers)
        run("ip", "link", "set", interface, "netns", ns)
        run("ip", "link", "set", interface, "mtu", str(MTU), "up", ns=ns)

        def port() -> int:
            out = run("wg", "show", interface, "listen-port", ns=ns, check=False).stdout.strip()
            return int(out) if out.isdigit() else 0

        wait_for(lambda: port() != 0, 10, f"wireguard-go {interface} to listen")
        self.second.port = port()
        for v4, v6 in addresses:
            run("ip", "route", "add", f"{v4}/32", "dev", interface, ns=ns)
            run("ip", "-6", "route", "add", f"{v6}/128", "dev", interface, "src", PEER6_B, ns=ns)
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        self._spawn([sys.executable, "-m", "tests.testbed.services", PEER4_B, PEER6_B], "services-b", ns=ns,
                    ready="ready", env=env, cwd=REPO)
        return self.second

    # ---- what tests use ----------------------------------------------------------------------------
    def client_config(self, endpoint: str | None = None, *, ipv6_only: bool = False, identity: int = 0) -> str:
        """wg-quick text for client `identity`; tunnels that are up at the same time need different ones."""
        private = self.clients[identity][0]
        v4, v6 = client_addresses(identity)
        if ipv6_only:  # a Fly.io-style 6PN: IPv6 addresses, routes and DNS only
            return (f"[Interface]\nPrivateKey = {private}\nAddress = {v6}/128\n"
                    f"DNS = {PEER6}, internal\nMTU = {MTU}\n\n"
                    f"[Peer]\nPublicKey = {self.peer_public}\nEndpoint = {endpoint or f'127.0.0.1:{self.port}'}\n"
                    f"AllowedIPs = {NET6}\n")
        return (f"[Interface]\nPrivateKey = {private}\nAddress = {v4}/32, {v6}/128\n"
                f"DNS = {PEER4}, internal\nMTU = {MTU}\n\n"
                f"[Peer]\nPublicKey = {self.peer_public}\nEndpoint = {endpoint or f'127.0.0.1:{self.port}'}\n"
                f"AllowedIPs = {NET4}, {NET6}\n")

    def dsn(self, host: str = "db.internal") -> str:
        return f"postgresql://app:{self.db_password}@{host}:5432/app"

    def peer_transfer(self, identity: int = 0) -> tuple[int, int]:
        """(bytes the peer received from our client, bytes it sent to it), as `wg show` reports them."""
        out = run("wg", "show", self.peer_if, "transfer", ns=self.ns).stdout
        for line in out.splitlines():
            key, rx, tx = line.split("\t")
            if key == self.clients[identity][1]:
                return int(rx), int(tx)
        return 0, 0

    def peer_latest_handshake_age(self, identity: int = 0) -> float:
        out = run("wg", "show", self.peer_if, "latest-handshakes", ns=self.ns).stdout
        for line in out.splitlines():
            key, stamp = line.split("\t")
            if key == self.clients[identity][1] and int(stamp):
                return time.time() - int(stamp)
        return float("inf")

    def run_in_reference(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
        return run(*args, ns=self.ref_ns, check=check, timeout=timeout)

    def run_in_peer(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
        return run(*args, ns=self.ns, check=check, timeout=timeout)

    def kill_peer(self) -> None:
        if self.peer_process and self.peer_process.poll() is None:
            self.peer_process.kill()
            self.peer_process.wait(10)
        wait_for(lambda: run("ip", "link", "show", self.peer_if, ns=self.ns, check=False).returncode != 0, 10,
                 "the peer interface to vanish")

    def restart_peer(self) -> None:
        self._start_peer()

    @contextlib.contextmanager
    def forwarding(self) -> Iterator[None]:
        """While inside, the peer's namespace routes between its WireGuard peers (the reference client at REF4
        then reaches a client's tunnel address, as another machine on the private network would). Restored on
        exit: with forwarding on, the namespace answers packets to unused addresses with ICMP unreachable
        instead of dropping them, which other tests rely on."""
        keys = ("net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding")
        before = {key: run("sysctl", "-n", key, ns=self.ns).stdout.strip() for key in keys}
        try:
            for key in keys:
                run("sysctl", "-qw", f"{key}=1", ns=self.ns)
            yield
        finally:
            for key, value in before.items():
                run("sysctl", "-qw", f"{key}={value}", ns=self.ns, check=False)

    def set_peer_mtu(self, mtu: int) -> None:
        run("ip", "link", "set", self.peer_if, "mtu", str(mtu), ns=self.ns)

    def suppress_icmp_too_big(self, on: bool = True) -> None:
        """Drop the peer side's ICMP 'fragmentation needed' / 'packet too big': an MTU black hole."""
        run("nft", "delete", "table", "inet", "wgmagic_bed", ns=self.ns, check=False)
        if on:
            rules = ("table inet wgmagic_bed {\n chain out {\n  type filter hook output priority 0;\n"
                     "  icmp type destination-unreachable icmp code frag-needed drop\n"
                     "  icmpv6 type packet-too-big drop\n }\n}\n")
            run("nft", "-f", "-", ns=self.ns, input=rules)

    @contextlib.contextmanager
    def relay(self, *, seed: int = 1, up: dict | None = None, down: dict | None = None,
              target_port: int | None = None, listen: str = "127.0.0.1", listen_port: int = 0,
              **both: float) -> Iterator[Relay]:
        """A UDP impairment relay in front of the peer; settings apply to both directions unless given apart.
        It listens on `listen`:`listen_port` (a loopback address; 0: a port the kernel picks)."""
        settings = {"seed": seed, "up": {**both, **(up or {})}, "down": {**both, **(down or {})}, "listen": listen}
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        process = subprocess.Popen([sys.executable, "-m", "tests.testbed.relay", str(listen_port),
                                    str(target_port or self.port), json.dumps(settings)],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO)
        assert process.stdout is not None
        word, _, port = process.stdout.readline().partition(" ")
        if word != "ready" or not port.strip().isdigit():
            process.kill()
            _, stderr = process.communicate(timeout=10)
            raise RuntimeError(f"the impairment relay did not start: {stderr.strip() or 'no output'}")
        relay = Relay(f"{listen}:{port.strip()}", process)
        try:
            yield relay
        finally:
            relay.stop()

    def blocked_namespace(self):
        """A fresh namespace joined to the host by a veth, every outbound UDP datagram dropped by nft (issue 13):
        wsbed.BlockedNamespace (.name, .host_ip, .run(...), .command(...)); removed by down()."""
        from tests.testbed.wsbed import make_blocked_namespace

        namespace = make_blocked_namespace(self.id, len(self.blocked))
        self.blocked.append(namespace)
        return namespace

    # ---- tear down ---------------------------------------------------------------------------------
    def down(self) -> None:
        from tests.testbed.wsbed import remove_blocked_namespace

        for namespace in self.blocked:
            remove_blocked_namespace(namespace)
        self.blocked = []
        for process in [*self.processes, self.peer_process]:
            if process is not None and process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                with contextlib.suppress(Exception):
                    process.wait(5)
        second = [self.second] if self.second else []
        for ns in (self.ns, self.ref_ns, *(s.ns for s in second)):
            run("ip", "netns", "del", ns, check=False)
        for interface in (self.peer_if, self.ref_if, *(s.interface for s in second)):
            run("ip", "link", "del", interface, check=False)
        self.second = None
        shutil.rmtree(self.dir, ignore_errors=True)
        self.up_ = False


def write_private(path: Path, text: str) -> Path:
    """Write `text` to a file readable by its owner only (0600 from creation: no moment at the umask's 0644)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    os.fchmod(fd, 0o600)  # an existing file keeps its mode through O_CREAT
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    return path


def _owner_alive(bed_id: str) -> bool:
    """Whether the process that built bed `bed_id` still runs (then the bed is in use, not a leftover)."""
    for owner in Path(tempfile.gettempdir()).glob(f"wgmagic-bed-{bed_id}-*/owner.pid"):
        with contextlib.suppress(OSError, ValueError):
            pid = int(owner.read_text())
            if pid != os.getpid() and Path(f"/proc/{pid}").exists():
                return True
    return False


def clean_leftovers() -> list[str]:
    """Remove whatever earlier (crashed) runs left behind, found by name prefix; beds in use are kept."""
    removed = []
    for line in run("ip", "netns", "list", check=False).stdout.splitlines():
        name = line.split()[0] if line.strip() else ""
        if not name.startswith((f"{PREFIX}-", f"{PREFIX}r-", f"{PREFIX}b-", f"{PREFIX}c-")):
            continue
        bed_id = name.split("-", 1)[1][:6]
        if _owner_alive(bed_id):
            continue
        for pid in run("ip", "netns", "pids", name, check=False).stdout.split():
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid), signal.SIGKILL)
        run("ip", "netns", "del", name, check=False)
        run("ip", "link", "del", f"{PREFIX}v{name.split('-', 1)[1]}", check=False)  # a blocked namespace's veth
        run("pkill", "-KILL", "-f", f"wireguard-go -f {PREFIX}[prb]{bed_id}", check=False)
        removed.append(name)
    for path in Path(tempfile.gettempdir()).glob("wgmagic-bed-*"):
        if not _owner_alive(path.name.split("-")[2]):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(str(path))
    return removed
