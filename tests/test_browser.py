"""Real-browser tests: JupyterLab on 127.0.0.1 driven by headless Chromium (Debian's) through Playwright.

For every notebook with widget previews (cells tagged ``widget``), a copy of the notebook is opened in a fresh
JupyterLab, every cell up to the last preview is run (as a learner would: Run > Run All Above Selected Cell; nbval
runs them all), one slider of each preview is moved with the keyboard, and the preview image must change. Element
screenshots land in ``tests/artifacts/screenshots``; with ``CONVLAB_UPDATE_FIGURES=1`` the course's own figures
(``notebooks/figures/preview_*.jpg``, shown in README and notebook 00) are rewritten from them. Deselect locally
with ``-m "not browser"``; CI runs them and sets ``CONVLAB_REQUIRE_BROWSER=1``, which turns a missing Chromium into
a failure instead of a skip, and runs them with no network but loopback
(``bash .ci/offline python3 -m pytest -m browser tests``): the page must make no request beyond the lab, and the
lab server and its kernels no connection beyond loopback (the network guard counts their refused attempts). A failed
wait keeps the page's screenshot, the lab's log and the browser's console, failed requests and step times in
``test-artifacts/browser/<notebook>/`` (git-ignored) and names that folder in its message.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import convlab_netguard
import pytest

from convlab.course_open import OFFLINE_LAB_OPTIONS, free_port
from convlab.slides import slides_server_options

from conftest import CHROMIUM, PageRecord

ROOT = Path(__file__).resolve().parents[1]
SHOTS = ROOT / "tests" / "artifacts" / "screenshots"
#: what a failed browser test leaves for the developer: page screenshot, the lab's log, browser console, requests
ARTIFACTS = ROOT / "test-artifacts" / "browser"


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
FIGURES = {
    ("05_augmentation_geometry", 3): "preview_rotation.jpg",
    ("06_augmentation_color_pca", 1): "preview_pca_explorer.jpg",
}
#: the notebook shown as slides in README (its slide metadata comes from ``convlab.slides``) and its first three slides
SLIDES_NOTEBOOK = "02_transfer_small_data.ipynb"
SLIDES_FIGURES = ("slides_02_1.jpg", "slides_02_2.jpg", "slides_02_3.jpg")
#: what a page must not log (conftest.PageRecord's line kinds)
ERROR_KINDS = ("console.error", "pageerror", "requestfailed")
_REQUIRED = os.environ.get("CONVLAB_REQUIRE_BROWSER") == "1"
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not _REQUIRED and not Path(CHROMIUM).exists(),
        reason=f"needs Debian's chromium at {CHROMIUM} (.ci/install installs it)",
    ),
]


def test_chromium_is_installed_where_required():
    assert Path(CHROMIUM).exists(), f"CONVLAB_REQUIRE_BROWSER=1 but there is no Chromium at {CHROMIUM}"


def test_every_committed_figure_is_made_by_this_test():
    made = set(FIGURES.values()) | set(SLIDES_FIGURES) | {"explore.jpg"}  # explore.jpg: tests/test_explore.py
    committed = {p.name for p in (ROOT / "notebooks" / "figures").glob("*.jpg")}
    assert committed == made, f"figures without a screenshot source: {committed - made}; missing: {made - committed}"


def test_course_has_widget_notebooks():
    assert WIDGET_NOTEBOOKS, "at least one notebook must carry widget previews (cells tagged 'widget')"


@dataclass
class Lab:
    url: str
    log: Path
    pid: int
    netguard_log: Path  # every network call the lab server (or a kernel it started) tried and the guard refused

    def assert_offline(self) -> None:
        """The lab server ran under the network guard and tried no connection beyond loopback."""
        guard = convlab_netguard.read_log(self.netguard_log)
        assert self.pid in guard.installed, "the network guard must run in the lab server (sitecustomize)"
        assert guard.blocked == [], f"the lab server or its kernels tried to reach the network: {guard.blocked}"


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A fresh JupyterLab: its own root, settings, config and runtime folders, no token, off the network and with the
    slides page's own lab extensions as ``convlab open`` starts it (:data:`convlab.course_open.OFFLINE_LAB_OPTIONS`,
    :func:`convlab.slides.slides_server_options`), its refused network calls counted by the network guard
    (``CONVLAB_NETGUARD_LOG``)."""
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
    port = free_port()
    env = dict(
        os.environ,
        JUPYTERLAB_SETTINGS_DIR=str(settings),
        JUPYTER_CONFIG_DIR=str(base / "config"),
        JUPYTER_RUNTIME_DIR=str(base / "runtime"),
        JUPYTER_DATA_DIR=str(base / "data"),
        **{convlab_netguard.LOG_ENV: str(base / "netguard.log")},
    )
    env.pop("JUPYTER_PATH", None)
    cmd = [
        sys.executable,
        "-m",
        "jupyterlab",
        "--no-browser",
        "--ip=127.0.0.1",
        f"--port={port}",
        f"--ServerApp.root_dir={root}",
        "--IdentityProvider.token=",
        "--ServerApp.password=",
        "--ServerApp.disable_check_xsrf=True",
        *OFFLINE_LAB_OPTIONS,
        *slides_server_options(),  # the slides page with its own lab extensions, as convlab open starts it
        "--allow-root",
        # window.jupyterapp: the test asks the page itself whether the notebook's kernel is connected
        "--LabApp.expose_app_in_browser=True",
    ]
    with open(base / "lab.log", "wb") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=root)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"{url}/api", timeout=2).read()
                break
            except OSError as err:
                if proc.poll() is not None:
                    raise RuntimeError(f"JupyterLab exited early:\n{(base / 'lab.log').read_text()[-3000:]}") from err
                time.sleep(0.5)
        else:
            proc.kill()
            raise RuntimeError(f"JupyterLab did not answer on {url}:\n{(base / 'lab.log').read_text()[-3000:]}")
        yield Lab(url, base / "lab.log", proc.pid, base / "netguard.log")
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


def _page_errors(page) -> list[str]:
    """The text of every error or stderr output on the page, to say why a preview did not appear."""
    sel = (
        ".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr'], "
        ".jp-RenderedText[data-mime-type='application/vnd.jupyter.error'], "
        ".jp-OutputArea-output:has-text('Error displaying widget')"
    )
    return [t[-1500:] for t in page.locator(sel).all_inner_texts()]


#: the current notebook's kernel exists, its websocket is connected, and it is idle
_KERNEL_READY = """() => {
    const panel = window.jupyterapp && window.jupyterapp.shell.currentWidget;
    const kernel = panel && panel.sessionContext && panel.sessionContext.session
        && panel.sessionContext.session.kernel;
    return !!kernel && kernel.connectionStatus === 'connected' && kernel.status === 'idle';
}"""
_FIRST_CELL_QUEUED = """() => {
    const prompt = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-CodeCell .jp-InputPrompt');
    return !!prompt && /\\[(\\*|\\d+)\\]/.test(prompt.textContent);
}"""


def _keep_artifacts(page, record: PageRecord, lab: Lab, stem: str) -> Path:
    """Save the page's screenshot, the lab's log and the page's record under test-artifacts/ (git-ignored)."""
    where = ARTIFACTS / stem
    shutil.rmtree(where, ignore_errors=True)
    where.mkdir(parents=True)
    try:
        page.screenshot(path=str(where / "page.png"), full_page=True)
    except Exception as exc:  # a crashed page still leaves the log and the record
        (where / "page.png.error.txt").write_text(repr(exc))
    if lab.log.exists():
        shutil.copy(lab.log, where / "lab.log")
    (where / "browser.log").write_text("\n".join(record.lines) + "\n")
    return where


@pytest.mark.parametrize("path", WIDGET_NOTEBOOKS, ids=lambda p: p.name)
def test_slider_updates_preview(path, lab, browser):
    SHOTS.mkdir(parents=True, exist_ok=True)
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    record = PageRecord(page, lab.url)

    def failed(message: str, exc: Exception) -> AssertionError:
        record.mark(f"failed: {message}")
        where = _keep_artifacts(page, record, lab, path.stem)
        return AssertionError(
            f"{message} after {time.monotonic() - record.t0:.0f} s (load average "
            f"{', '.join(f'{x:.1f}' for x in os.getloadavg())} on {os.cpu_count()} CPUs); cell "
            f"errors on the page: {_page_errors(page)!r}; screenshot, lab log and browser console "
            f"kept in {where}"
        )

    try:
        # A workspace of its own, reset: JupyterLab must not reopen the previous test's notebook beside this one.
        page.goto(f"{lab.url}/lab/workspaces/{path.stem}/tree/{path.name}?reset", wait_until="domcontentloaded")
        try:
            page.wait_for_selector(".jp-NotebookPanel .jp-Cell", timeout=60_000)
            # Not the execution indicator's data-status='idle': it says "idle" before any kernel is attached, and
            # Run All Cells without a kernel silently runs nothing (CodeCell.execute returns when the session has
            # no kernel), so on a slow start the test would wait 240 s for previews that were never asked for.
            page.wait_for_function(_KERNEL_READY, timeout=120_000)
        except Exception as exc:
            raise failed("the notebook's kernel did not connect and become idle", exc) from exc
        record.mark("kernel connected and idle")
        # Run every cell up to the last preview, as a learner would (Run > Run All Above Selected Cell, with the cell
        # after it selected): the cells after it (an accuracy study in 05) are nbval's to run, and only delay the
        # moment the kernel is free for the sliders (on a busy 2-core machine by minutes).
        cells = json.loads(path.read_text())["cells"]
        last_preview = max(i for i, c in enumerate(cells) if "widget" in _tags(c))
        n_code_to_run = sum(c["cell_type"] == "code" for c in cells[: last_preview + 1])
        run_all = last_preview + 1 == len(cells)
        page.click(f".jp-NotebookPanel .jp-Cell >> nth={0 if run_all else last_preview + 1}")
        page.keyboard.press("Escape")
        page.get_by_role("menuitem", name="Run", exact=True).click()
        menu_item = "Run All Cells" if run_all else "Run All Above Selected Cell"
        page.get_by_role("menuitem", name=menu_item, exact=True).click()
        try:  # it must at least queue the first code cell ("[*]:"), or it ran nothing
            page.wait_for_function(_FIRST_CELL_QUEUED, timeout=60_000)
        except Exception as exc:
            raise failed(f"{menu_item} queued no cell", exc) from exc
        n_widget_cells = sum("widget" in _tags(c) for c in cells)
        previews = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .convlab-preview")
        try:
            previews.nth(n_widget_cells - 1).wait_for(state="attached", timeout=240_000)
        except Exception as exc:
            raise failed(f"{n_widget_cells} previews expected, {previews.count()} rendered", exc) from exc
        record.mark(f"{n_widget_cells} previews attached")
        # then wait for those cells to finish: a slider only re-renders once the kernel is free
        try:
            page.wait_for_function(
                """(n) => {
                    const prompts = [...document.querySelectorAll(
                        '.jp-NotebookPanel:not(.lm-mod-hidden) .jp-CodeCell .jp-InputPrompt')].slice(0, n);
                    return prompts.length === n && prompts.every(p => /\\[\\d+\\]/.test(p.textContent));
                }""",
                arg=n_code_to_run,
                timeout=300_000,
            )
        except Exception as exc:
            raise failed(f"not all of the first {n_code_to_run} code cells ran", exc) from exc
        record.mark(f"the first {n_code_to_run} code cells ran")
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
            try:
                page.wait_for_function(
                    "([el, old]) => el.getAttribute('src') !== old",
                    arg=[image.element_handle(), before],
                    timeout=30_000,
                )
            except Exception as exc:
                raise failed(f"preview {i} did not change after its slider moved", exc) from exc
            preview.screenshot(path=str(SHOTS / f"{path.stem}_{i}_after.png"))
            assert image.get_attribute("src") != before
            figure = FIGURES.get((path.stem, i))
            if figure and os.environ.get("CONVLAB_UPDATE_FIGURES") == "1":
                preview.screenshot(path=str(ROOT / "notebooks" / "figures" / figure), type="jpeg", quality=80)
        assert not record.outside, f"the page reached beyond the lab (the course must work offline): {record.outside}"
        lab.assert_offline()
    finally:
        page.close()
        _shut_down_kernels(lab.url)


def _shut_down_kernels(lab: str) -> None:
    """End every kernel the test started, so the next notebook does not share the CPU with an idle-but-alive one."""
    sessions = json.loads(urllib.request.urlopen(f"{lab}/api/sessions", timeout=10).read())
    for session in sessions:
        request = urllib.request.Request(f"{lab}/api/sessions/{session['id']}", method="DELETE")
        urllib.request.urlopen(request, timeout=30).read()


#: the present slide: its visible cells, whether any code line runs past its editor or the screen, font sizes
_SLIDE_STATE = """() => {
    const stack = document.querySelector('.reveal .slides > section.present');
    if (!stack) return null;
    const present = stack.querySelector(':scope > section.present') || stack;  // the sub-slide shown, if any
    const visible = (e) => { const r = e.getBoundingClientRect(); return r.width > 0 && r.height > 0; };
    const cells = [...present.querySelectorAll('.jp-Cell')].filter(visible);
    const code = cells.filter((c) => c.classList.contains('jp-CodeCell'));
    const cut = [];
    for (const cell of code) {
        const scroller = cell.querySelector('.cm-scroller');
        if (!scroller) continue;
        const edge = Math.min(scroller.getBoundingClientRect().right, window.innerWidth) + 1;
        for (const line of cell.querySelectorAll('.cm-line')) {
            const range = document.createRange();
            range.selectNodeContents(line);
            if (range.getBoundingClientRect().right > edge) cut.push(line.textContent.slice(0, 80));
        }
        if (scroller.scrollWidth > scroller.clientWidth + 1) cut.push('(scrolls) ' + cell.textContent.slice(0, 60));
    }
    const px = (sel) => {
        const e = [...present.querySelectorAll(sel)].find(visible);
        return e ? parseFloat(getComputedStyle(e).fontSize) : null;
    };
    return {cells: cells.length, code: code.length, h1: !!present.querySelector('h1'), cut,
            text_px: px('.jp-RenderedMarkdown p, .jp-RenderedMarkdown li'), code_px: px('.cm-line')};
}"""


def test_notebook_presents_as_slides(lab, browser):
    """jupyterlab-rise opens notebook 02 as reveal.js slides on a 1024 x 768 projector: one slide per section, the title
    slide shows only the title and the idea, text and code are large, no code line is cut off, and the page logs no
    error at all (its own lab extensions: :mod:`convlab.slides`). Saves the first three slides."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    page = browser.new_page(viewport={"width": 1024, "height": 768})
    record = PageRecord(page, lab.url)
    cells = json.loads((ROOT / "notebooks" / SLIDES_NOTEBOOK).read_text())["cells"]
    expected = sum(c.get("metadata", {}).get("slideshow", {}).get("slide_type") == "slide" for c in cells)
    assert expected >= 3, (
        f"{SLIDES_NOTEBOOK}: expected slide metadata (python -m convlab.slides), found {expected} slides"
    )
    try:
        page.goto(f"{lab.url}/rise/{SLIDES_NOTEBOOK}", wait_until="domcontentloaded")
        page.wait_for_function(
            "(n) => document.querySelectorAll('.reveal .slides > section').length >= n", arg=expected, timeout=120_000
        )
        page.wait_for_function("() => !!document.querySelector('.reveal .slides > section.present h1')", timeout=60_000)
    except Exception as exc:
        where = _keep_artifacts(page, record, lab, "slides")
        raise AssertionError(f"{SLIDES_NOTEBOOK} did not open as {expected} slides; artifacts in {where}") from exc
    shown = page.locator(".reveal .slides > section").count()
    assert shown == expected, f"{expected} slides expected (one per '## ' section and the title), got {shown}"
    for i, figure in enumerate(SLIDES_FIGURES):
        if i:
            page.keyboard.press("ArrowRight")
        page.wait_for_function(
            "(i) => [...document.querySelectorAll('.reveal .slides > section')].findIndex("
            "(s) => s.classList.contains('present')) === i",
            arg=i,
            timeout=30_000,
        )
        page.wait_for_timeout(1500)  # reveal.js's slide transition
        state = page.evaluate(_SLIDE_STATE)
        page.screenshot(path=str(SHOTS / figure.replace(".jpg", ".png")))
        if os.environ.get("CONVLAB_UPDATE_FIGURES") == "1":
            page.screenshot(path=str(ROOT / "notebooks" / "figures" / figure), type="jpeg", quality=80)
        if i == 0:
            assert state["h1"] and state["code"] == 0 and state["cells"] == 1, f"title slide: {state}"
        else:
            assert state["code"] >= 1, f"slide {i + 1} shows no code: {state}"
            assert state["code_px"] >= 17, f"slide {i + 1}: code at {state['code_px']} px"
        assert state["text_px"] is None or state["text_px"] >= 20, f"slide {i + 1}: text at {state['text_px']} px"
        assert not state["cut"], f"slide {i + 1}: code lines cut off at 1024 x 768: {state['cut']}"
    errors = [line for line in record.lines if any(f"] {kind}: " in line for kind in ERROR_KINDS)]
    assert not errors, f"the slides page logged errors: {errors}"
    assert not record.outside, f"the slides reached beyond the lab: {record.outside}"
    lab.assert_offline()


def test_the_extension_manager_lists_without_a_package_index(lab):
    """What the extension manager's panel asks when opened and searched: answered from what is installed, with no
    network call (the default manager asks a package index)."""
    for query in ("", "widgets"):
        url = f"{lab.url}/lab/api/extensions?query={query}&page=1&per_page=30"
        assert urllib.request.urlopen(url, timeout=60).status == 200
    lab.assert_offline()
