"""Every notebook in notebooks/ runs headless (nbclient, a real kernel) against the test bed."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

pytestmark = pytest.mark.integration

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"

# Appended to diagnostics.ipynb for the test only: read the live widgets twice while traffic flows.
PROBE = """
import json, threading, time
import wgmagic
tunnel = wgmagic.get_tunnel("diag")
first = dash.rx_bytes.value
%wg bench {bench_target} --seconds 1
time.sleep(2 * dash.interval + 0.5)
second = dash.rx_bytes.value
actual = tunnel.stats()["totals"]["udp_rx_bytes"]
print("PROBE " + json.dumps({"first": first, "second": second, "actual": actual, "redraws": dash.redraws,
                              "alive": dash.alive}))
"""


def _run(path: Path, tmp_path: Path, extra: str | None = None):
    notebook = nbformat.read(path, as_version=4)
    if extra:
        notebook.cells.append(nbformat.v4.new_code_cell(extra))
    NotebookClient(notebook, timeout=180, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    return notebook


@pytest.fixture
def environment(testbed, tmp_path, monkeypatch):
    config = tmp_path / "wg0.conf"
    config.write_text(testbed.client_config())
    config.chmod(0o600)
    monkeypatch.setenv("WGMAGIC_CONFIG", str(config))
    monkeypatch.setenv("WGMAGIC_DSN", "postgresql://app@db.internal:5432/app")
    monkeypatch.setenv("WGMAGIC_BENCH", "198.18.0.1:9000")
    monkeypatch.setenv("PGPASSWORD", testbed.db_password)
    config6 = tmp_path / "fly-6pn.conf"
    config6.write_text(testbed.client_config(ipv6_only=True))
    config6.chmod(0o600)
    monkeypatch.setenv("WGMAGIC_CONFIG6", str(config6))
    monkeypatch.setenv("WGMAGIC_CA", str(testbed.ca_file))
    return testbed


def _outputs(notebook):
    return [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]


def _no_errors_no_secrets(notebook, testbed):
    outputs = _outputs(notebook)
    errors = [o for o in outputs if o.output_type == "error"]
    assert not errors, errors
    text = json.dumps(outputs) + json.dumps(notebook.metadata)
    for secret in (testbed.db_password, testbed.client_private):
        assert secret not in text
    return outputs


@pytest.mark.parametrize("name", sorted(p.name for p in NOTEBOOKS.glob("*.ipynb")))
def test_every_notebook_runs_headless(environment, tmp_path, name):
    notebook = _run(NOTEBOOKS / name, tmp_path)
    outputs = _no_errors_no_secrets(notebook, environment)
    if name == "fly-style-private-network.ipynb":
        text = json.dumps(outputs)
        assert "fd77:6d61:6769:6300::1" in text and "198.18.0.1" not in text  # IPv6 only
        assert "TLSv1.3" in text or "TLSv1.2" in text  # TLS, verified (verify-full would have refused)
        assert "Hello" in text or "hello" in text  # curl through the SOCKS proxy
    if name == "every-tool.ipynb":
        text = json.dumps(outputs)
        assert text.count("from the private network") == 2  # httpx, and requests through SOCKS
        assert "TLS: True" in text and "mean_value" in text and "0 forwards before close" not in text
        assert "by_url" in text  # %sql $url from tunnel.url
    if name == "quickstart.ipynb":
        assert any("image/png" in o.get("data", {}) for o in outputs), "the chart was not drawn"
        assert any("text/html" in o.get("data", {}) and "mean_value" in o["data"]["text/html"] for o in outputs)


def test_diagnostics_widgets_hold_live_numbers(environment, tmp_path):
    notebook = _run(NOTEBOOKS / "diagnostics.ipynb", tmp_path, PROBE)
    outputs = _no_errors_no_secrets(notebook, environment)
    line = next(o["text"] for o in outputs if o.get("name") == "stdout" and "PROBE " in o.get("text", ""))
    probe = json.loads(line.split("PROBE ", 1)[1].splitlines()[0])
    print(probe)
    assert probe["alive"] and probe["redraws"] >= 3
    assert probe["second"] > probe["first"] + 1_000_000  # the bench's bytes arrived in the widget
    assert probe["second"] <= probe["actual"] <= probe["second"] + 200_000  # and match the tunnel's counter
    state = notebook.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    # The headline tiles (issue 26: figures in words and units, no counters in text boxes) in the saved state.
    tiles = [m["state"].get("value", "") for m in state.values() if m.get("model_name") == "HTMLModel"
             and "wgmagic-tile" in m["state"].get("value", "")]
    assert tiles and "in now" in tiles[0] and "s ago" in tiles[0]
    assert not [m for m in state.values() if m.get("model_name") == "IntTextModel"]
    images = [m for m in state.values() if m.get("model_name") == "ImageModel"]
    assert len(images) == 3  # latency, throughput, the query waterfall
    assert any("doctor" in json.dumps(o) for o in outputs)
