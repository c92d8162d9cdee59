"""`wgmagic demo`: everything on this machine, nothing to configure.

A local PostgreSQL with sample data, a `wgmagic gateway` in front of it on loopback (both rootless), a
matching client config, and the quickstart notebook pointed at it: opened in JupyterLab, or with --headless
executed and written out (the executed notebook and an HTML copy). Ctrl-C stops everything it started.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from wgmagic.wireguard.crypto import generate_keypair

GATEWAY4, GATEWAY6 = "198.18.77.1", "fd77:6d61:6769:7700::1"
CLIENT4, CLIENT6 = "198.18.77.2", "fd77:6d61:6769:7700::2"
NET4, NET6 = "198.18.77.0/24", "fd77:6d61:6769:7700::/64"


class Demo:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.postgres = None
        self.gateway = None
        self.config_path = workdir / "wg-demo.conf"

    def start(self) -> Demo:
        from wgmagic.addresses import parse_expose
        from wgmagic.demo.localdb import LocalPostgres
        from wgmagic.runtime.services.gateway import Gateway

        self.workdir.mkdir(parents=True, exist_ok=True)
        print("demo: starting a local PostgreSQL with sample data ...", flush=True)
        self.postgres = LocalPostgres().start()
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
        fd = os.open(self.config_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(client_config)
        print(f"demo: client config written to {self.config_path}", flush=True)
        return self

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

    # ---- the notebook ----------------------------------------------------------------------------------
    def run_headless(self, notebook: Path) -> tuple[Path, Path]:
        import nbformat
        from nbclient import NotebookClient
        from nbconvert import HTMLExporter

        nb = nbformat.read(notebook, as_version=4)
        env_before = dict(os.environ)
        os.environ.update(self.environment())  # the kernel inherits the environment it is started with
        try:
            NotebookClient(nb, timeout=300, kernel_name="python3",
                           resources={"metadata": {"path": str(self.workdir)}}).execute()
        finally:
            os.environ.clear()
            os.environ.update(env_before)
        executed = self.workdir / notebook.name
        nbformat.write(nb, executed)
        body, _ = HTMLExporter().from_notebook_node(nb)
        html_path = executed.with_suffix(".html")
        html_path.write_text(body)
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
        target = self.workdir / notebook.name
        shutil.copy(notebook, target)
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


def main(headless: bool, output_dir: str | None, notebook: str = "quickstart.ipynb") -> int:
    """Run the demo: `headless` executes `notebook` (package data of wgmagic.demo) and writes it out with an
    HTML copy under `output_dir` (default ./wgmagic-demo); otherwise opens it in JupyterLab. Returns an exit
    status."""
    from importlib.resources import as_file, files

    workdir = Path(output_dir or "wgmagic-demo").resolve()

    demo = Demo(workdir)
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        demo.start()
        with as_file(files("wgmagic.demo") / notebook) as path:
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
        demo.stop()
        print("demo: stopped the gateway and PostgreSQL", flush=True)
