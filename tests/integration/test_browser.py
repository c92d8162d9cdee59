"""A real browser: JupyterLab and Notebook 7, driven by Playwright (Debian's chromium), run
diagnostics.ipynb (issue 6) with two %%wgsql cells appended (issue 26).

It waits until the dashboard's plots are drawn and then redrawn with new data, its headline tiles are drawn and
their figures change, and the query waterfall is redrawn once the appended statements ran; then it saves
screenshots as test artifacts (tests/artifacts/dashboard.png, dashboard-notebook7.png; README's
docs/dashboard.png and docs/dashboard-notebook7.png are copies of them).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = REPO / "tests" / "artifacts"


@pytest.fixture(params=["jupyterlab", "notebook"])
def jupyterlab(request, testbed, tmp_path):
    frontend = request.param
    if not os.path.exists(CHROMIUM):
        pytest.fail("Debian's chromium is missing: run scripts/install-system-deps")
    root = tmp_path / "lab"
    root.mkdir()
    notebook = json.loads((REPO / "notebooks" / "diagnostics.ipynb").read_text())
    notebook["cells"].extend(_cell(source) for source in QUERY_CELLS)
    (root / "diagnostics.ipynb").write_text(json.dumps(notebook))
    config = tmp_path / "wg0.conf"
    config.write_text(testbed.client_config())
    config.chmod(0o600)
    settings = tmp_path / "lab-settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)
    (settings / "notification.jupyterlab-settings").write_text('{"fetchNews": "false", "checkForUpdates": false}')
    # The kernel picker, raised late, swallowed clicks and restarted the kernel mid-run: start the notebook's own.
    tracker = tmp_path / "lab-settings" / "@jupyterlab" / "notebook-extension"
    tracker.mkdir(parents=True)
    (tracker / "tracker.jupyterlab-settings").write_text('{"autoStartDefaultKernel": true}')
    token = secrets.token_hex(16)
    env = {**os.environ, "WGMAGIC_CONFIG": str(config), "WGMAGIC_BENCH": "198.18.0.1:9000",
           "WGMAGIC_TEST_DSN": testbed.dsn(),
           "JUPYTER_CONFIG_DIR": str(tmp_path / "jupyter-config"), "JUPYTER_DATA_DIR": str(tmp_path / "jupyter-data"),
           "JUPYTER_RUNTIME_DIR": str(tmp_path / "jupyter-runtime"), "PYTHONPATH": str(REPO),
           "JUPYTERLAB_SETTINGS_DIR": str(tmp_path / "lab-settings")}
    log = open(tmp_path / "lab.log", "w")  # noqa: SIM115 (closed below)
    server = subprocess.Popen(
        # --port=0: the kernel picks the port; the server writes the one it got into its runtime directory (ours,
        # under tmp_path). A probed port could be taken meanwhile, and the server would move to another one.
        [sys.executable, "-m", frontend, "--no-browser", "--allow-root", "--port=0", "--ServerApp.port_retries=0",
         "--ip=127.0.0.1",
         f"--ServerApp.token={token}", f"--ServerApp.root_dir={root}", "--LabApp.news_url=",
         "--ServerApp.disable_check_xsrf=True"],
        env=env, stdout=log, stderr=subprocess.STDOUT, cwd=root)
    info = tmp_path / "jupyter-runtime" / f"jpserver-{server.pid}.json"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            base = f"http://127.0.0.1:{json.loads(info.read_text())['port']}"
            urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2)
            break
        except (OSError, ValueError, KeyError):
            if server.poll() is not None:
                break
            time.sleep(0.5)
    else:
        server.kill()
        pytest.fail(f"JupyterLab did not start: {(tmp_path / 'lab.log').read_text()[-2000:]}")
    try:
        path = "lab/tree" if frontend == "jupyterlab" else "notebooks"
        yield frontend, f"{base}/{path}/diagnostics.ipynb?token={token}"
    finally:
        server.terminate()
        try:
            server.wait(15)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


# Appended to the copied notebook: statements for the dashboard's query waterfall (its third image).
QUERY_CELLS = [
    "import os\ntest_dsn = os.environ['WGMAGIC_TEST_DSN']",
    "%%wgsql {test_dsn} --alias bed --timing\nSELECT pg_sleep(0.3) AS slept",
    "%%wgsql bed --timing\nSELECT g, md5(g::text) FROM generate_series(1, 200000) AS g",
    "%wg queries",
]


def _cell(source: str) -> dict:
    return {"cell_type": "code", "execution_count": None, "id": secrets.token_hex(4), "metadata": {},
            "outputs": [], "source": source}


def _dashboard_image_sources(page) -> list[str]:
    return page.eval_on_selector_all("img.widget-image", "els => els.map(e => e.src)")


def _tiles(page) -> list[str]:
    return page.eval_on_selector_all(".wgmagic-tile", "els => els.map(e => e.innerText)")


def _accept_dialogs(page) -> None:
    """A modal the front end raised while the kernel was starting (a kernel choice, a "kernel busy" notice)
    would swallow the next click: accept each, saying what it was."""
    for dialog in page.query_selector_all(".jp-Dialog"):
        print("dismissing a dialog:", " ".join(dialog.inner_text().split())[:200])
        button = dialog.query_selector(".jp-Dialog-button.jp-mod-accept") or dialog.query_selector("button")
        if button is not None:
            button.click()
        else:
            page.keyboard.press("Escape")
        page.wait_for_timeout(500)


def test_dashboard_draws_and_redraws_in_the_browser(jupyterlab):
    from playwright.sync_api import sync_playwright

    frontend, url = jupyterlab
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1600})
            page.goto(url)
            page.wait_for_selector(".jp-Notebook", timeout=60_000)
            page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle'], "
                                   ".jp-Toolbar-kernelStatus:has-text('Idle')", timeout=60_000, state="attached")
            # Run All can land before the kernel is ready (then nothing runs), and a modal the front end raises
            # late (the kernel picker) swallows the menu click: dismiss it and try again, up to four times.
            for attempt in range(4):
                _accept_dialogs(page)
                try:
                    page.get_by_role("menuitem", name="Run", exact=True).click(timeout=15_000)
                    page.get_by_text("Run All Cells", exact=True).click(timeout=15_000)
                    page.wait_for_selector("img.widget-image", timeout=40_000)
                    break
                except Exception:
                    page.keyboard.press("Escape")  # a menu left open
                    if attempt == 3:
                        page.screenshot(path=str(ARTIFACTS / f"{frontend}-failed.png"), full_page=True)
                        raise
            deadline = time.monotonic() + 60
            first: list[str] = []
            while time.monotonic() < deadline and not any(src.startswith("blob:") for src in first):
                first = _dashboard_image_sources(page)
                time.sleep(0.5)
            assert any(src.startswith("blob:") for src in first), "the dashboard's plots were never drawn"
            redrawn = False
            while time.monotonic() < deadline:
                time.sleep(0.5)
                now = _dashboard_image_sources(page)
                if now and now != first:
                    redrawn = True
                    break
            assert redrawn, "the dashboard's plots were never redrawn"
            def complete(tiles: list[str]) -> bool:
                return len(tiles) >= 7 and any("round trip" in t for t in tiles) and any("drops" in t for t in tiles)

            tiles = _tiles(page)  # the tiles' HTML arrives in its own widget message, maybe after the plots'
            while not complete(tiles) and time.monotonic() < deadline + 30:
                time.sleep(0.5)
                tiles = _tiles(page)
            assert complete(tiles), tiles
            updated = False
            while time.monotonic() < deadline + 30:
                time.sleep(0.5)
                if _tiles(page) != tiles:
                    updated = True
                    break
            assert updated, "the dashboard's tiles were never updated"
            # The waterfall (the third image) is redrawn when the appended statements have run.
            waterfall = first[2] if len(first) > 2 else ""
            drawn = False
            while time.monotonic() < deadline + 120:
                sources = _dashboard_image_sources(page)
                if len(sources) > 2 and sources[2].startswith("blob:") and sources[2] != waterfall and \
                        page.locator("text=timing:").count() >= 2:
                    drawn = True
                    break
                time.sleep(0.5)
            assert drawn, "the query waterfall was never drawn with the cells' statements"
            time.sleep(2 * 0.5 + 1)  # the next redraw picks up the last statement
            page.locator(".jupyter-widgets.widget-vbox").first.scroll_into_view_if_needed()
            time.sleep(1.5)  # let the throughput test's traffic show up in a redraw
            suffix = "" if frontend == "jupyterlab" else "-notebook7"
            page.locator(".jupyter-widgets.widget-vbox").first.screenshot(
                path=str(ARTIFACTS / f"dashboard{suffix}.png"))
            if os.environ.get("WGMAGIC_UPDATE_DOCS"):  # the README's screenshots: docs/dashboard*.png
                shutil.copy(ARTIFACTS / f"dashboard{suffix}.png", REPO / "docs" / f"dashboard{suffix}.png")
            page.screenshot(path=str(ARTIFACTS / f"{frontend}.png"), full_page=True)
        finally:
            browser.close()
    assert (ARTIFACTS / f"dashboard{suffix}.png").stat().st_size > 10_000
