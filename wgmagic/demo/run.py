"""`wgmagic demo`: everything on this machine, nothing to configure.

A local PostgreSQL with sample data, a `wgmagic gateway` in front of it on loopback (both rootless), a
matching client config, and the quickstart notebook pointed at it: opened in JupyterLab, or with --headless
executed and written out (the executed notebook and an HTML copy), or with --serve no notebook at all: the
database and the gateway keep running, for one's own IPython, script or editor, until Ctrl-C or SIGTERM.
Ctrl-C (or SIGTERM) stops everything it started and removes the database's temporary directory.

Its files go where it says, as `wgmagic.files` writes every file: the output directory (default ./wgmagic-demo,
resolved when given) is made 0700, or tightened to 0700 (it holds the client's private key); the client config,
the notebook and its HTML copy are written whole and mode 0600, replacing whatever was at those paths (a
symlink there is replaced, never followed).
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from wgmagic import files
from wgmagic.wireguard.crypto import generate_keypair

GATEWAY4, GATEWAY6 = "198.18.77.1", "fd77:6d61:6769:7700::1"
CLIENT4, CLIENT6 = "198.18.77.2", "fd77:6d61:6769:7700::2"
NET4, NET6 = "198.18.77.0/24", "fd77:6d61:6769:7700::/64"


class Demo:
    """`wgmagic demo`: a local PostgreSQL and a `wgmagic gateway` in front of it, a client config for it and
    the packaged notebook, all under `workdir` (0700: it holds the client's private key)."""

    def __init__(self, workdir: str | os.PathLike[str]) -> None:
        self.workdir = files.resolve(workdir)
        self.postgres = None
        self.gateway = None
        self.config_path = self.workdir / "wg-demo.conf"

    def make_workdir(self) -> Path:
        """The output directory, private (0700: it holds the client's private key); says so when an existing
        one was looser."""
        before = self.workdir.lstat().st_mode & 0o777 if self.workdir.is_dir() else None
        files.private_directory(self.workdir)
        if before is not None and before != 0o700:
            print(f"demo: made {self.workdir} private (mode {before:04o} -> 0700): it holds a private key",
                  flush=True)
        return self.workdir

    def write_config(self, text: str) -> Path:
        """The client's wg-quick config (with its private key): 0600, written whole."""
        return files.write_text(self.config_path, text, private=True)

    def write_outputs(self, nb: Any, name: str) -> tuple[Path, Path]:
        """The executed notebook `name` and its HTML copy in the output directory (0600: they hold query
        results); returns both absolute paths."""
        import nbformat
        from nbconvert import HTMLExporter

        executed = files.write_text(self.workdir / name, nbformat.writes(nb), private=True)
        body, _ = HTMLExporter().from_notebook_node(nb)
        html_path = files.write_text(executed.with_suffix(".html"), body, private=True)
        return executed, html_path

    def start(self) -> Demo:
        from wgmagic.addresses import parse_expose
        from wgmagic.demo.localdb import LocalPostgres
        from wgmagic.runtime.services.gateway import Gateway

        self.make_workdir()
        print("demo: starting a local PostgreSQL with sample data ...", flush=True)
        self.postgres = LocalPostgres()  # assigned first: stop() removes it even when start() is interrupted
        self.postgres.start()
        gateway_private, gateway_public = generate_keypair()
        client_private, client_public = generate_keypair()
        # No ListenPort: the gateway binds a UDP port the kernel picks, and the client config names it.
        gateway_config = (f"[Interface]\nPrivateKey = {gateway_private}\n"
                          f"Address = {GATEWAY4}/32, {GATEWAY6}/128\n\n"
                          f"[Peer]\nPublicKey = {client_public}\nAllowedIPs = {CLIENT4}/32, {CLIENT6}/128\n")
        self.gateway = Gateway(gateway_config, [parse_expose(f"5432=127.0.0.1:{self.postgres.port}")],
                               {"db.internal.": (ipaddress.ip_address(GATEWAY4), ipaddress.ip_address(GATEWAY6))},
                               name="demo-gateway")
        port = self.gateway.listen_port
        print(f"demo: WireGuard gateway on 127.0.0.1:{port} exposing the database as db.internal:5432", flush=True)
        client_config = (f"[Interface]\nPrivateKey = {client_private}\nAddress = {CLIENT4}/32, {CLIENT6}/128\n"
                         f"DNS = {GATEWAY4}\n\n[Peer]\nPublicKey = {gateway_public}\nEndpoint = 127.0.0.1:{port}\n"
                         f"AllowedIPs = {NET4}, {NET6}\nPersistentKeepalive = 25\n")
        self.write_config(client_config)
        print(f"demo: client config written to {self.config_path}", flush=True)
        pgpass = self.write_pgpass(self.postgres.password)
        print(f"demo: the database's password is in {pgpass} (libpq's .pgpass format; "
              f"export PGPASSFILE={pgpass})", flush=True)
        return self

    def write_pgpass(self, password: str) -> Path:
        """The database's password for use outside the demo's notebook, never printed: libpq's .pgpass format
        (hostname:port:database:username:password; ':' and '\\' escaped), 0600, written whole, read by psql,
        psycopg and %%wgsql through PGPASSFILE.

        Two lines, the first match wins (libpq, "The Password File"): `db.internal:5432:app:app`, the real name
        `%%wgsql` and `hostaddr` connections match; and `*:5432:app:app` for a forward's Unix socket, because
        libpq matches the host field against the `host` parameter, which for a Unix socket is the socket's
        directory (`host=/tmp/wgmagic-xxxx port=5432`, what `%wg forward` prints and `tunnel.url()` returns for
        libpq keywords); a socket connection cannot carry the real name (`hostaddr` is for TCP only). The file
        is the demo's own and holds only this database's password (random, made for this run)."""
        escaped = password.replace("\\", "\\\\").replace(":", "\\:")
        lines = f"db.internal:5432:app:app:{escaped}\n*:5432:app:app:{escaped}\n"
        return files.write_text(self.workdir / "pgpass", lines, private=True)

    def environment(self) -> dict[str, str]:
        assert self.postgres is not None
        return {**os.environ, "WGMAGIC_CONFIG": str(self.config_path),
                "WGMAGIC_DSN": "postgresql://app@db.internal:5432/app", "PGPASSWORD": self.postgres.password,
                "WGMAGIC_DB": "db.internal:5432", "WGMAGIC_BENCH": ""}

    def stop(self) -> None:
        if self.gateway is not None:
            self.gateway.close()
        if self.postgres is not None:
            self.postgres.stop()

    # ---- --serve: the database and the gateway for one's own IPython, script or editor --------------------
    def serve(self, poll: float = 1.0) -> int:
        """Print what to paste, then keep the database and the gateway up until KeyboardInterrupt (Ctrl-C, or
        SIGTERM as `main` maps it); 1 when PostgreSQL exits by itself. The caller stops everything."""
        assert self.postgres is not None and self.postgres.process is not None
        pgpass = self.workdir / "pgpass"
        print(f"demo: serving PostgreSQL (data in {self.postgres.dir}) behind the gateway until Ctrl-C or SIGTERM;"
              f" in another terminal, then IPython or a script:\n"
              f"  export PGPASSFILE={pgpass}\n"
              f"  %load_ext wgmagic\n"
              f"  %wg connect {self.config_path}\n"
              f"  %%wgsql postgresql://app@db.internal:5432/app\n"
              f"  %wg forward db.internal:5432     # then psql with the libpq string it prints\n"
              f"  tunnel = wgmagic.connect(\"{self.config_path}\")\n"
              f"  psycopg.connect(tunnel.url(\"host=db.internal user=app dbname=app\"))", flush=True)
        while self.postgres.process.poll() is None:
            time.sleep(poll)
        print(f"demo: PostgreSQL exited (status {self.postgres.process.returncode}); stopping", flush=True)
        return 1

    # ---- the notebook ----------------------------------------------------------------------------------
    def run_headless(self, notebook: Path) -> tuple[Path, Path]:
        import nbformat
        from nbclient import NotebookClient

        nb = nbformat.read(notebook, as_version=4)
        env_before = dict(os.environ)
        os.environ.update(self.environment())  # the kernel inherits the environment it is started with
        try:
            NotebookClient(nb, timeout=300, kernel_name="python3",
                           resources={"metadata": {"path": str(self.workdir)}}).execute()
        finally:
            os.environ.clear()
            os.environ.update(env_before)
        executed, html_path = self.write_outputs(nb, notebook.name)
        errors = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs
                  if o.output_type == "error"]
        if errors:
            raise RuntimeError(f"the notebook raised: {errors[0].get('ename')}: {errors[0].get('evalue')}")
        return executed, html_path

    def run_jupyterlab(self, notebook: Path) -> int:
        import importlib.util

        if importlib.util.find_spec("jupyterlab") is None:
            print("demo: JupyterLab is not installed: pip install 'wgmagic[demo]', or use --headless", flush=True)
            return 2
        target = files.write_bytes(self.workdir / notebook.name, notebook.read_bytes(), private=True)
        command = [sys.executable, "-m", "jupyterlab", str(target), f"--ServerApp.root_dir={self.workdir}"]
        if os.geteuid() == 0:
            command.append("--allow-root")
        print("demo: opening JupyterLab; Ctrl-C stops the notebook server, the gateway and PostgreSQL", flush=True)
        process = subprocess.Popen(command, env=self.environment(), start_new_session=True)
        try:
            return process.wait()
        except KeyboardInterrupt:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(15)
            return 0


def main(headless: bool, output_dir: str | None, notebook: str = "quickstart.ipynb", *, serve: bool = False) -> int:
    """Run the demo: `headless` executes `notebook` (package data of wgmagic.demo) and writes it out with an
    HTML copy under `output_dir` (default ./wgmagic-demo); `serve` runs no notebook and keeps the database and
    the gateway up until Ctrl-C or SIGTERM (exit status 0 then); otherwise opens it in JupyterLab. Returns an
    exit status."""
    from importlib.resources import as_file
    from importlib.resources import files as package_files

    workdir = files.resolve(output_dir or "wgmagic-demo")

    demo = Demo(workdir)
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    if serve:  # Ctrl-C ends --serve even when started with SIGINT ignored (a shell's background job)
        signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        demo.start()
        if serve:
            try:
                return demo.serve()
            except KeyboardInterrupt:
                return 0
        with as_file(package_files("wgmagic.demo") / notebook) as path:
            if headless:
                started = time.monotonic()
                executed, html_path = demo.run_headless(path)
                print(f"demo: executed {notebook} in {time.monotonic() - started:.1f} s: {executed} and "
                      f"{html_path}", flush=True)
                return 0
            return demo.run_jupyterlab(path)
    except KeyboardInterrupt:
        return 130
    finally:
        # A second Ctrl-C or SIGTERM must not cut the clean-up short (it would leave PostgreSQL running).
        handlers = {number: signal.signal(number, signal.SIG_IGN) for number in (signal.SIGINT, signal.SIGTERM)}
        try:
            demo.stop()
        finally:
            for number, handler in handlers.items():
                signal.signal(number, handler)
        print("demo: stopped the gateway and PostgreSQL", flush=True)
