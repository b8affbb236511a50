"""Real-browser tests: JupyterLab on 127.0.0.1 driven by headless Chromium (Debian's) through Playwright.

For every notebook with widget previews (cells tagged ``widget``), a copy of the notebook is opened in a fresh
JupyterLab, all cells are run (as a learner would: Run > Run All Cells), one slider of each preview is moved with
the keyboard, and the preview image must change. Element screenshots land in ``tests/artifacts/screenshots``;
with ``CONVLAB_UPDATE_FIGURES=1`` the course's own figures (``notebooks/figures/preview_*.jpg``, shown in README
and notebook 00) are rewritten from them. Deselect locally with ``-m "not browser"``; CI runs them and sets
``CONVLAB_REQUIRE_BROWSER=1``, which turns a missing Chromium into a failure instead of a skip.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHOTS = ROOT / "tests" / "artifacts" / "screenshots"
CHROMIUM = os.environ.get("CONVLAB_CHROMIUM", "/usr/bin/chromium")


def _tags(cell) -> list[str]:
    return cell.get("metadata", {}).get("tags", [])


def _widget_notebooks() -> list[Path]:
    found = []
    for path in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        if any("widget" in _tags(c) for c in json.loads(path.read_text())["cells"]):
            found.append(path)
    return found


WIDGET_NOTEBOOKS = _widget_notebooks()
#: (notebook, preview index) -> the committed figure made from its screenshot
FIGURES = {("05_augmentation_geometry", 3): "preview_rotation.jpg",
           ("06_augmentation_color_pca", 1): "preview_pca_explorer.jpg"}
_REQUIRED = os.environ.get("CONVLAB_REQUIRE_BROWSER") == "1"
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not _REQUIRED and not Path(CHROMIUM).exists(),
                       reason=f"needs Debian's chromium at {CHROMIUM} (.ci/install installs it)"),
]


def test_chromium_is_installed_where_required():
    assert Path(CHROMIUM).exists(), f"CONVLAB_REQUIRE_BROWSER=1 but there is no Chromium at {CHROMIUM}"


def test_every_committed_figure_is_made_by_this_test():
    made = set(FIGURES.values())
    committed = {p.name for p in (ROOT / "notebooks" / "figures").glob("preview_*.jpg")}
    assert committed == made, f"figures without a screenshot source: {committed - made}; missing: {made - committed}"


def test_course_has_widget_notebooks():
    assert WIDGET_NOTEBOOKS, "at least one notebook must carry widget previews (cells tagged 'widget')"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A fresh JupyterLab: its own root, settings, config and runtime folders, no token, no news or update checks."""
    base = tmp_path_factory.mktemp("lab")
    root, settings = base / "root", base / "settings"
    root.mkdir()
    notif = settings / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    notif.parent.mkdir(parents=True)
    notif.write_text(json.dumps({"fetchNews": "false", "checkForUpdates": False}))
    # Every cell attached and laid out even when off screen: JupyterLab's default ("contentVisibility") skips the
    # layout of off-screen cells, so a preview pushed below the fold by a late output would never count as visible.
    tracker = settings / "@jupyterlab" / "notebook-extension" / "tracker.jupyterlab-settings"
    tracker.parent.mkdir(parents=True)
    tracker.write_text(json.dumps({"windowingMode": "none"}))
    # a copy of the whole course (the notebooks and their figures): JupyterLab may autosave what it runs
    shutil.copytree(ROOT / "notebooks", root, dirs_exist_ok=True, ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    port = _free_port()
    env = dict(os.environ, JUPYTERLAB_SETTINGS_DIR=str(settings), JUPYTER_CONFIG_DIR=str(base / "config"),
               JUPYTER_RUNTIME_DIR=str(base / "runtime"), JUPYTER_DATA_DIR=str(base / "data"))
    env.pop("JUPYTER_PATH", None)
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
           f"--ServerApp.root_dir={root}", "--IdentityProvider.token=", "--ServerApp.password=",
           "--ServerApp.disable_check_xsrf=True", "--LabApp.news_url=None",
           "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate", "--allow-root"]
    log = open(base / "lab.log", "wb")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=root)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"{url}/api", timeout=2).read()
            break
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(f"JupyterLab exited early:\n{(base / 'lab.log').read_text()[-3000:]}")
            time.sleep(0.5)
    else:
        proc.kill()
        raise RuntimeError(f"JupyterLab did not answer on {url}:\n{(base / 'lab.log').read_text()[-3000:]}")
    yield url
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"],
        )
        yield b
        b.close()


def _page_errors(page) -> list[str]:
    """The text of every error or stderr output on the page, to say why a preview did not appear."""
    sel = (".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr'], "
           ".jp-RenderedText[data-mime-type='application/vnd.jupyter.error']")
    return [t[-1500:] for t in page.locator(sel).all_inner_texts()]


@pytest.mark.parametrize("path", WIDGET_NOTEBOOKS, ids=lambda p: p.name)
def test_slider_updates_preview(path, lab, browser):
    SHOTS.mkdir(parents=True, exist_ok=True)
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    try:
        # A workspace of its own, reset: JupyterLab must not reopen the previous test's notebook beside this one.
        page.goto(f"{lab}/lab/workspaces/{path.stem}/tree/{path.name}?reset", wait_until="domcontentloaded")
        page.wait_for_selector(".jp-NotebookPanel .jp-Cell", timeout=60_000)
        page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=60_000)
        page.click(".jp-NotebookPanel .jp-Cell >> nth=0")
        page.keyboard.press("Escape")
        page.get_by_role("menuitem", name="Run", exact=True).click()
        page.get_by_role("menuitem", name="Run All Cells", exact=True).click()
        n_widget_cells = sum("widget" in _tags(c) for c in json.loads(path.read_text())["cells"])
        previews = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .convlab-preview")
        try:
            previews.nth(n_widget_cells - 1).wait_for(state="attached", timeout=240_000)
        except Exception as exc:
            page.screenshot(path=str(SHOTS / f"{path.stem}_timeout.png"), full_page=True)
            raise AssertionError(f"{n_widget_cells} previews expected, {previews.count()} rendered; "
                                 f"cell errors on the page: {_page_errors(page)!r}") from exc
        # then wait for the whole notebook to finish: a slider only re-renders once the kernel is free
        try:
            page.wait_for_function(
                """() => {
                    const prompts = [...document.querySelectorAll(
                        '.jp-NotebookPanel:not(.lm-mod-hidden) .jp-CodeCell .jp-InputPrompt')];
                    return prompts.length > 0 && prompts.every(p => /\\[\\d+\\]/.test(p.textContent));
                }""", timeout=300_000)
        except Exception as exc:
            page.screenshot(path=str(SHOTS / f"{path.stem}_timeout.png"), full_page=True)
            raise AssertionError(f"not every cell ran; cell errors on the page: {_page_errors(page)!r}") from exc
        count = previews.count()
        assert count == n_widget_cells, f"{n_widget_cells} previews expected, {count} rendered"
        for i in range(count):
            preview = previews.nth(i)
            preview.scroll_into_view_if_needed()
            image = preview.locator("img.widget-image").first
            image.wait_for(timeout=30_000)
            before = image.get_attribute("src")
            preview.screenshot(path=str(SHOTS / f"{path.stem}_{i}_before.png"))
            # the seed slider always changes the draw; previews without one (PCA) move their first slider
            seed = preview.locator(".widget-slider:has(.widget-label:text-is('seed')) .noUi-handle")
            handle = seed.first if seed.count() else preview.locator(".widget-slider .noUi-handle").first
            handle.focus()
            for _ in range(3):
                handle.press("ArrowRight")
            page.wait_for_function(
                "([el, old]) => el.getAttribute('src') !== old", arg=[image.element_handle(), before], timeout=30_000
            )
            preview.screenshot(path=str(SHOTS / f"{path.stem}_{i}_after.png"))
            assert image.get_attribute("src") != before
            figure = FIGURES.get((path.stem, i))
            if figure and os.environ.get("CONVLAB_UPDATE_FIGURES") == "1":
                preview.screenshot(path=str(ROOT / "notebooks" / "figures" / figure), type="jpeg", quality=80)
    finally:
        page.close()
        _shut_down_kernels(lab)


def _shut_down_kernels(lab: str) -> None:
    """End every kernel the test started, so the next notebook does not share the CPU with an idle-but-alive one."""
    sessions = json.loads(urllib.request.urlopen(f"{lab}/api/sessions", timeout=10).read())
    for session in sessions:
        request = urllib.request.Request(f"{lab}/api/sessions/{session['id']}", method="DELETE")
        urllib.request.urlopen(request, timeout=30).read()
