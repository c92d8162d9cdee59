"""notebooks/quickstart.ipynb runs headless (nbclient, a real kernel) against the test bed (issue 5)."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

pytestmark = pytest.mark.integration

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "quickstart.ipynb"


def test_quickstart_runs_against_the_test_bed(testbed, tmp_path, monkeypatch):
    config = tmp_path / "wg0.conf"
    config.write_text(testbed.client_config())
    config.chmod(0o600)
    monkeypatch.setenv("WGMAGIC_CONFIG", str(config))
    monkeypatch.setenv("WGMAGIC_DSN", "postgresql://app@db.internal:5432/app")
    monkeypatch.setenv("PGPASSWORD", testbed.db_password)
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(notebook, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
                   ).execute()
    outputs = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert any("image/png" in o.get("data", {}) for o in outputs), "the chart was not drawn"
    assert any("text/html" in o.get("data", {}) and "mean_value" in o["data"]["text/html"] for o in outputs)
    text = json.dumps(outputs)
    for secret in (testbed.db_password, testbed.client_private):
        assert secret not in text
