"""python -m tests.testbed up | down | status: the test bed by hand (`--help` for the details)."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

from tests.testbed.bed import TestBed, _owner_alive, clean_leftovers, write_private

# Each bed keeps its state in its own directory, so two beds up at once (two shells, two CI jobs) never
# overwrite or delete each other's, as one fixed file in /run did. Only `up` writes it: `down` stops the beds
# that have one (started by hand), never a bed a test run owns.
STATE_NAME = "state.json"


def _states() -> list[Path]:
    return [path for path in sorted(Path(tempfile.gettempdir()).glob(f"wgmagic-bed-*/{STATE_NAME}"))
            if _owner_alive(path.parent.name.split("-")[2])]


def write_state(bed: TestBed) -> Path:
    """The files `up` leaves for the user: client.conf and dsn (secrets: 0600) and state.json. Returns the
    client config's path."""
    config = write_private(bed.dir / "client.conf", bed.client_config())
    write_private(bed.dir / "dsn", bed.dsn() + "\n")
    (bed.dir / STATE_NAME).write_text(json.dumps({"namespace": bed.ns, "reference": bed.ref_ns,
                                                  "config": str(config), "owner": os.getpid()}))
    return config


def stop_beds_started_by_hand(timeout: float = 30.0) -> list[str]:
    """SIGTERM to each `python -m tests.testbed up` still running (its bed tears itself down), waiting for it;
    then whatever crashed runs left behind. Returns what was stopped or removed."""
    stopped = []
    for state in _states():
        with contextlib.suppress(OSError, ValueError, KeyError):
            info = json.loads(state.read_text())
            pid = int(info.get("owner") or (state.parent / "owner.pid").read_text())
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
                time.sleep(0.1)
            stopped.append(f"{info['namespace']} (process {pid})")
    return stopped + clean_leftovers()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tests.testbed", description="The integration tests' bed by hand (root): a wireguard-go "
        "peer with PostgreSQL, dnsmasq and test services in network namespaces, and a reference client.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.add_parser("up", help="bring a bed up and keep it until Ctrl-C, SIGTERM or `down` (prints the client "
                   "config's path and where the database password is)")
    sub.add_parser("down", help="stop every bed `up` started (from any shell) and remove what crashed runs "
                   "left behind; beds of running test sessions are left alone")
    sub.add_parser("status", help="the beds `up` started that are still up (the default)")
    return parser


def main(argv: list[str]) -> int:
    command = _parser().parse_args(argv).command or "status"
    if command == "up":
        bed = TestBed().up()
        config = write_state(bed)
        print(f"test bed up: peer namespace {bed.ns}, reference client namespace {bed.ref_ns}")
        print(f"client config: {config}")
        print(f"database: postgresql://app:<password in {bed.dir}/dsn>@db.internal:5432/app")
        print("Ctrl-C (or `python -m tests.testbed down` elsewhere) tears it down", flush=True)
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        try:
            signal.pause()
        except (KeyboardInterrupt, SystemExit):
            pass
        finally:
            bed.down()
        return 0
    if command == "down":
        removed = stop_beds_started_by_hand()
        print("removed: " + (", ".join(removed) or "nothing"))
        return 0
    print("\n".join(path.read_text() for path in _states()) or "no test bed is up")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
