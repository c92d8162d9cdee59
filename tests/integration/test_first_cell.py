"""The notebook's first cells in a fresh interpreter: `%wg connect` loads the tunnel's modules before it starts the
prefetch thread and loads no other `%wg` command's module; what moved still happens and its errors still reach
the user in the cell that caused them (a failed handshake fails the connect cell, not a later one). Client
identity 5 of the bed (one key, one tunnel, beside other modules' tunnels)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.testbed.local import silent_udp_port

pytestmark = pytest.mark.integration

IDENTITY = 5

# Reads {"good": config, "dead": config, "dsn": dsn} on stdin (the keys never go on a command line); prints one
# JSON line of what each cell did.
SCRIPT = r"""
import contextlib, io, json, sys
from IPython.core.interactiveshell import InteractiveShell
shell = InteractiveShell.instance()
shell.user_ns.update(json.loads(sys.stdin.read()))
shell.run_line_magic("load_ext", "wgmagic")
from wgmagic.notebook.prefetch import PREFETCH

def cell(source):
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        result = shell.run_cell(source)
    return result.success, out.getvalue()

facts = {}
facts["dead_ok"], facts["dead_out"] = cell("%wg connect {dead} --name dead --timeout 2")
facts["after_dead"] = {"prefetch_started": PREFETCH._started,
                       "tunnel_loaded": "wgmagic.runtime.tunnel" in sys.modules}
facts["good_ok"], facts["good_out"] = cell("%wg connect {good} --name first")
facts["commands_after_connect"] = sorted(m for m in sys.modules if m.startswith("wgmagic.notebook.cmd."))
facts["driver_ready"] = PREFETCH.driver.wait(60.0)
facts["driver_loaded"] = [m in sys.modules for m in PREFETCH.DRIVER]
facts["sql_ok"], facts["sql_out"] = cell("%%wgsql {dsn} -o frame\nSELECT 41 + 1 AS answer")
facts["answer"] = int(shell.user_ns["frame"]["answer"][0]) if facts["sql_ok"] else None
facts["status_ok"], facts["status_out"] = cell("%wg status")
facts["bad_command_ok"], facts["bad_command_out"] = cell("%wg no-such-command")
facts["disconnect_ok"], _ = cell("%wg disconnect --all")
print("FACTS " + json.dumps(facts))
"""


@pytest.fixture(scope="module")
def facts(testbed):
    with silent_udp_port("127.0.0.1") as port:  # ours, read by nobody: the handshake gets no answer
        configs = {"good": testbed.client_config(identity=IDENTITY),
                   "dead": testbed.client_config(endpoint=f"127.0.0.1:{port}", identity=IDENTITY),
                   "dsn": testbed.dsn()}
        done = subprocess.run([sys.executable, "-c", SCRIPT], input=json.dumps(configs), capture_output=True,
                              text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    line = next(x for x in done.stdout.splitlines() if x.startswith("FACTS "))
    result: dict = json.loads(line[len("FACTS "):])
    result["private_key"] = testbed.clients[IDENTITY][0]
    return result


def test_a_failed_handshake_fails_the_connect_cell(facts):
    assert not facts["dead_ok"]
    assert "HandshakeTimeoutError" in facts["dead_out"] and "Traceback" not in facts["dead_out"]
    assert facts["private_key"] not in facts["dead_out"]
    # the tunnel's modules were loaded and the prefetch started in that cell, before the handshake was waited for
    assert facts["after_dead"] == {"prefetch_started": True, "tunnel_loaded": True}


def test_the_next_connect_and_the_first_query_work(facts):
    assert facts["good_ok"], facts["good_out"]
    assert "is up" in facts["good_out"]
    assert facts["driver_ready"] and all(facts["driver_loaded"]), facts["driver_loaded"]
    assert facts["sql_ok"], facts["sql_out"]
    assert facts["answer"] == 42
    assert facts["status_ok"] and "first" in facts["status_out"], facts["status_out"]
    assert facts["disconnect_ok"]


def test_connect_loads_no_other_command(facts):
    assert facts["commands_after_connect"] == ["wgmagic.notebook.cmd.tunnels"]


def test_an_unknown_command_is_a_usage_error(facts):
    assert not facts["bad_command_ok"]
    assert "invalid choice" in facts["bad_command_out"] and "Traceback" not in facts["bad_command_out"]
