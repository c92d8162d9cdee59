"""The test bed's pieces for issue 13 (WireGuard over WebSocket): a client namespace whose outbound UDP is
dropped, `wgmagic relay`, a TLS-terminating nginx and an authenticating tinyproxy, all real programs.

The blocked namespace is joined to this machine's root namespace by a veth pair with a /30 from
198.18.128.0/17 (never used elsewhere by the bed). Inside it nft drops every outbound UDP datagram, so a
client there can reach the host only over TCP: the bed's wireguard-go (listening on all addresses) is
unreachable over UDP, and a relay, nginx or tinyproxy listening on the host end of the veth (always an
ephemeral port; that address is routed to nothing but that namespace) is how it gets through.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.testbed.tls import write_ca_and_server_cert

REPO = Path(__file__).resolve().parents[2]


def _run(*args: str, check: bool = True, ns: str | None = None, **kwargs) -> subprocess.CompletedProcess:
    command = (["ip", "netns", "exec", ns] if ns else []) + list(args)
    return subprocess.run(command, check=check, capture_output=True, text=True, **kwargs)


def free_tcp_port(host: str = "127.0.0.1") -> int:
    """A port free right now, for programs that cannot be told to pick one (nginx, tinyproxy)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def _wait_listening(host: str, port: int, process: subprocess.Popen, what: str, log: Path | None) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if process.poll() is not None:
            detail = log.read_text()[-2000:] if log and log.exists() else ""
            raise RuntimeError(f"test bed: {what} exited: {detail}")
        with contextlib.suppress(OSError):
            socket.create_connection((host, port), timeout=1).close()
            return
        time.sleep(0.05)
    raise RuntimeError(f"test bed: {what} did not listen on {host}:{port}")


@dataclass
class BlockedNamespace:
    """A namespace with a veth to the host and every outbound UDP datagram dropped by nft."""

    name: str
    host_if: str
    host_ip: str
    ns_ip: str

    def command(self, *args: str) -> list[str]:
        return ["ip", "netns", "exec", self.name, *args]

    def run(self, *args: str, check: bool = True, timeout: float = 300, **kwargs) -> subprocess.CompletedProcess:
        return _run(*args, ns=self.name, check=check, timeout=timeout, **kwargs)

    def outer_loss(self, percent: float, port: int | None = None) -> None:
        """Drop this share of the namespace's outbound TCP (to `port` if given) and of what comes back: loss on
        the outer path of a WebSocket. 0 removes it."""
        _run("nft", "delete", "table", "inet", "wgmagic_loss", ns=self.name, check=False)
        if percent <= 0:
            return
        match_out = f"tcp dport {port} " if port else "meta l4proto tcp "
        match_in = f"tcp sport {port} " if port else "meta l4proto tcp "
        per_million = int(percent * 10_000)
        rules = ("table inet wgmagic_loss {\n"
                 f" chain out {{ type filter hook output priority 0; {match_out}"
                 f"numgen random mod 1000000 < {per_million} drop; }}\n"
                 f" chain in {{ type filter hook input priority 0; {match_in}"
                 f"numgen random mod 1000000 < {per_million} drop; }}\n}}\n")
        _run("nft", "-f", "-", ns=self.name, input=rules)


def free_slash30(third_octets: range, what: str) -> tuple[str, str]:
    """Two addresses (.1 and .2 of a /30 in 198.18.<third>.0/24, third in `third_octets`) of a /30 no interface
    of this machine has: for a veth of the suite's own. RuntimeError naming `what` when 50 tries find none."""
    for _ in range(50):
        third, fourth = random.choice(third_octets), random.randrange(0, 64) * 4
        if not _run("ip", "-4", "addr", "show", "to", f"198.18.{third}.{fourth}/30").stdout.strip():
            return f"198.18.{third}.{fourth + 1}", f"198.18.{third}.{fourth + 2}"
    raise RuntimeError(f"test bed: no free /30 in 198.18.{third_octets.start}-{third_octets.stop - 1}.x for {what}")


def make_blocked_namespace(bed_id: str, index: int) -> BlockedNamespace:
    name = f"wgmtc-{bed_id}{index}"
    host_if, ns_if = f"wgmtv{bed_id}{index}", f"wgmtn{bed_id}{index}"
    host_ip, ns_ip = free_slash30(range(128, 255), "the blocked namespace")
    _run("ip", "netns", "add", name)
    try:
        _run("ip", "link", "add", host_if, "type", "veth", "peer", "name", ns_if)
        _run("ip", "link", "set", ns_if, "netns", name)
        _run("ip", "addr", "add", f"{host_ip}/30", "dev", host_if)
        _run("ip", "link", "set", host_if, "up")
        _run("ip", "link", "set", "lo", "up", ns=name)
        _run("ip", "addr", "add", f"{ns_ip}/30", "dev", ns_if, ns=name)
        _run("ip", "link", "set", ns_if, "up", ns=name)
        _run("ip", "route", "add", "default", "via", host_ip, ns=name)
        rules = ("table inet wgmagic_block {\n chain out {\n  type filter hook output priority 0;\n"
                 "  meta l4proto udp drop\n }\n}\n")
        _run("nft", "-f", "-", ns=name, input=rules)
    except BaseException:
        _run("ip", "netns", "del", name, check=False)
        _run("ip", "link", "del", host_if, check=False)
        raise
    return BlockedNamespace(name, host_if, host_ip, ns_ip)


def remove_blocked_namespace(namespace: BlockedNamespace) -> None:
    for pid in _run("ip", "netns", "pids", namespace.name, check=False).stdout.split():
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid), signal.SIGKILL)
    _run("ip", "netns", "del", namespace.name, check=False)
    _run("ip", "link", "del", namespace.host_if, check=False)


@dataclass
class RelayProcess:
    """`wgmagic relay` as its own process; `url` is what clients use; restart() comes back on the same port."""

    args: list[str]
    log: Path
    process: subprocess.Popen | None = None
    url: str = ""
    host: str = ""
    port: int = 0
    tls: bool = False
    stats: dict = field(default_factory=dict)

    def start(self) -> RelayProcess:
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        with open(self.log, "a") as log:
            self.process = subprocess.Popen(self.args, stdout=subprocess.PIPE, stderr=log, text=True, env=env,
                                            cwd=REPO, start_new_session=True)
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if "relay listening on" not in line:
            self.process.kill()
            raise RuntimeError(f"test bed: wgmagic relay did not start: {line!r} {self.log.read_text()[-2000:]}")
        self.url = line.split()[3]
        host_port = self.url.split("://", 1)[1].split("/", 1)[0]
        self.host, _, port = host_port.rpartition(":")
        self.port = int(port)
        return self

    def kill(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def restart(self) -> None:
        """Start again on the same port (after kill())."""
        # only the --listen value: `--to` may name the same host (a relay on 127.0.0.1 to a peer on 127.0.0.1)
        at = self.args.index("--listen") + 1
        self.args = [*self.args[:at], f"{self.host}:{self.port}", *self.args[at + 1:]]
        self.start()

    def stop(self) -> dict:
        import json

        if self.process is None or self.process.poll() is not None:
            return self.stats
        self.process.send_signal(signal.SIGTERM)
        out, _ = self.process.communicate(timeout=15)
        lines = [line for line in out.splitlines() if line.startswith("{")]
        self.stats = json.loads(lines[-1]) if lines else {}
        return self.stats


def relay_process(directory: Path, listen_host: str, target_port: int, *, tls: tuple[Path, Path] | None = None,
                  path: str = "/wg", extra: tuple[str, ...] = ()) -> RelayProcess:
    args = [sys.executable, "-m", "wgmagic", "relay", "--listen", f"{listen_host}:0", "--to",
            f"127.0.0.1:{target_port}", "--path", path, *extra]
    if tls:
        args += ["--tls-cert", str(tls[0]), "--tls-key", str(tls[1])]
    return RelayProcess(args, directory / f"relay-{time.monotonic_ns()}.log", tls=tls is not None).start()


def start_nginx(directory: Path, listen_host: str, upstream_port: int) -> tuple[subprocess.Popen, int, Path]:
    """nginx terminating TLS on listen_host (a certificate for that IP and relay.wgmagic.test, signed by a fresh
    CA) and proxying the WebSocket upgrade on /wg to the relay at 127.0.0.1:upstream_port.
    Returns (process, port, CA file)."""
    home = directory / f"nginx-{time.monotonic_ns()}"
    home.mkdir()
    ca, cert, key = write_ca_and_server_cert(home, ["relay.wgmagic.test"], [listen_host])
    port = free_tcp_port(listen_host)
    temp = "".join(f"{kind}_temp_path {home}/{kind};\n" for kind in ("client_body", "proxy", "fastcgi", "uwsgi",
                                                                    "scgi"))
    conf = home / "nginx.conf"
    conf.write_text(f"""
daemon off;
master_process off;
worker_processes 1;
pid {home}/nginx.pid;
error_log {home}/error.log warn;
events {{ worker_connections 256; }}
http {{
  access_log off;
  {temp}
  map $http_upgrade $connection_upgrade {{ default upgrade; '' close; }}
  server {{
    listen {listen_host}:{port} ssl;
    ssl_certificate {cert};
    ssl_certificate_key {key};
    location /wg {{
      proxy_pass http://127.0.0.1:{upstream_port};
      proxy_http_version 1.1;
      proxy_set_header Upgrade $http_upgrade;
      proxy_set_header Connection $connection_upgrade;
      proxy_read_timeout 3600s;
      proxy_buffering off;
    }}
  }}
}}
""")
    log = home / "stderr.log"
    with open(log, "w") as stderr:
        process = subprocess.Popen(["nginx", "-c", str(conf), "-p", str(home), "-e", str(home / "error.log")],
                                   stdout=stderr, stderr=stderr, start_new_session=True)
    _wait_listening(listen_host, port, process, "nginx", home / "error.log")
    return process, port, ca


def start_tinyproxy(directory: Path, listen_host: str, user: str, password: str) -> tuple[subprocess.Popen, int]:
    """tinyproxy on listen_host with Basic authentication, allowing CONNECT to any port."""
    home = directory / f"tinyproxy-{time.monotonic_ns()}"
    home.mkdir()
    port = free_tcp_port(listen_host)
    conf = home / "tinyproxy.conf"
    conf.write_text(f"Port {port}\nListen {listen_host}\nTimeout 600\nMaxClients 100\nLogLevel Info\n"
                    f"LogFile \"{home}/tinyproxy.log\"\nPidFile \"{home}/tinyproxy.pid\"\n"
                    f"BasicAuth {user} {password}\nDisableViaHeader Yes\n")
    log = home / "stderr.log"
    with open(log, "w") as stderr:
        process = subprocess.Popen(["tinyproxy", "-d", "-c", str(conf)], stdout=stderr, stderr=stderr,
                                   start_new_session=True)
    _wait_listening(listen_host, port, process, "tinyproxy", home / "tinyproxy.log")
    return process, port


def rss_kib(pid: int) -> int:
    """A process's resident set size now, in KiB (VmRSS)."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def udp_socket_drops(port: int, ns: str | None = None) -> int:
    """Datagrams the kernel dropped at the UDP sockets bound to `port` (the `drops` column of /proc/net/udp and
    udp6: receive buffer full), summed; in namespace `ns` if given. Where wireguard-go loses what a burst
    brings."""
    total = 0
    for table in ("/proc/net/udp", "/proc/net/udp6"):
        text = _run("cat", table, ns=ns, check=False).stdout
        for line in text.splitlines()[1:]:
            fields = line.split()
            if len(fields) > 12 and int(fields[1].rsplit(":", 1)[1], 16) == port:
                total += int(fields[-1])
    return total


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used so far (/proc/PID/stat utime and stime), 0.0 once gone."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
