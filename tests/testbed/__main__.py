"""python -m tests.testbed up | down | status: the test bed by hand."""

from __future__ import annotations

import json
import signal
import sys
import tempfile
from pathlib import Path

from tests.testbed.bed import TestBed, _owner_alive, clean_leftovers

# Each bed keeps its state in its own directory, so two beds up at once (two shells, two CI jobs) never
# overwrite or delete each other's, as one fixed file in /run did.
STATE_NAME = "state.json"


def _states() -> list[str]:
    found = []
    for path in sorted(Path(tempfile.gettempdir()).glob(f"wgmagic-bed-*/{STATE_NAME}")):
        if _owner_alive(path.parent.name.split("-")[2]):
            found.append(path.read_text())
    return found


def main(argv: list[str]) -> int:
    command = argv[0] if argv else "status"
    if command == "up":
        bed = TestBed().up()
        config = bed.dir / "client.conf"
        config.write_text(bed.client_config())
        config.chmod(0o600)
        (bed.dir / STATE_NAME).write_text(json.dumps({"namespace": bed.ns, "reference": bed.ref_ns,
                                                      "config": str(config)}))
        print(f"test bed up: peer namespace {bed.ns}, reference client namespace {bed.ref_ns}")
        print(f"client config: {config}")
        print(f"database: postgresql://app:<password in {bed.dir}/dsn>@db.internal:5432/app")
        (bed.dir / "dsn").write_text(bed.dsn() + "\n")
        print("Ctrl-C (or `python -m tests.testbed down` elsewhere) tears it down")
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        try:
            signal.pause()
        except (KeyboardInterrupt, SystemExit):
            pass
        finally:
            bed.down()
        return 0
    if command == "down":
        removed = clean_leftovers()
        print("removed: " + (", ".join(removed) or "nothing"))
        return 0
    if command == "status":
        print("\n".join(_states()) or "no test bed is up")
        return 0
    print("usage: python -m tests.testbed up|down|status", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
