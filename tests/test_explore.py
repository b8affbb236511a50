"""The augmentation explorer (``python -m convlab explore``): its parts without a browser, and the served page in
headless Chromium.

The real-browser test (marked ``browser``; CI runs it with no network but loopback, like tests/test_browser.py:
``bash .ci/offline python3 -m pytest -m browser tests``) starts the command itself, opens the printed address,
uploads a photo and a file that is not one, builds a chain of two augmentations, moves a slider, and reads back the
code under the grid: run here, it must draw the grid the page shows, bit for bit. Its screenshot is README's figure
(``notebooks/figures/explore.jpg``, rewritten with ``CONVLAB_UPDATE_FIGURES=1``).
"""

from __future__ import annotations

import base64
import html
import io
import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest
import skimage.data
import torch
from PIL import Image

from convlab.course_open import free_port
from convlab.explore_open import TEMPLATE, explore_notebook, write_server_folder
from convlab.explorer import MIN_SIDE, UPLOADS, decode_upload, explorer_app

from conftest import CHROMIUM, PageRecord

ROOT = Path(__file__).resolve().parents[1]
SHOTS = ROOT / "tests" / "artifacts" / "screenshots"
ARTIFACTS = ROOT / "test-artifacts" / "browser" / "explore"
#: README's figure of the explorer, made by the browser test below
FIGURE = ROOT / "notebooks" / "figures" / "explore.jpg"


def _jpeg(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


# ----------------------------------------------------------------------------- uploads
def test_upload_decodes_a_photo():
    photo = decode_upload("coffee.jpg", _jpeg(skimage.data.coffee()))
    assert photo.dtype == torch.uint8 and photo.shape == (3, 400, 600)


@pytest.mark.parametrize(
    ("name", "content", "why"),
    [
        ("notes.txt", b"shopping list: coffee, peppers", r"notes\.txt: not a readable image .*; upload a photo"),
        ("empty.jpg", b"", r"empty\.jpg: the file is empty"),
        ("cut.jpg", _jpeg(skimage.data.coffee())[:300], r"cut\.jpg: not a readable image"),
        ("icon.png", "tiny", rf"icon\.png: 8 x 8 pixels is too small to preview; .* at least {MIN_SIDE} pixels"),
    ],
)
def test_upload_refuses_what_is_not_a_photo_in_one_sentence(name, content, why):
    if content == "tiny":
        content = _jpeg(np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(ValueError, match=why) as info:
        decode_upload(name, content)
    message = str(info.value)
    assert "\n" not in message and "BytesIO" not in message and "0x" not in message


def test_upload_refuses_a_file_over_the_size_limit(monkeypatch):
    import convlab.explorer

    monkeypatch.setattr(convlab.explorer, "MAX_UPLOAD_BYTES", 1000)
    with pytest.raises(ValueError, match=r"big\.jpg: \d+ MB is more than the 0 MB an upload may have"):
        decode_upload("big.jpg", _jpeg(skimage.data.coffee()))


@pytest.fixture(scope="module")
def app():
    return explorer_app(size=160, n=4)


def test_the_page_shows_refusals_and_keeps_the_good_uploads(app):
    before = app.chain.grid
    refused = app.add_uploads([("notes.txt", b"not a photo")])
    assert len(refused) == 1 and "Refused: notes.txt: not a readable image" in app.upload_message.value
    assert UPLOADS not in app.source.options and app.chain.grid is before  # nothing changed
    refused = app.add_uploads([("cat.jpg", _jpeg(skimage.data.chelsea())), ("empty.png", b"")])
    assert [r.split(":")[0] for r in refused] == ["empty.png"]
    assert app.source.value == UPLOADS and app.photo.value == "cat.jpg"
    assert "Added 1 photo: cat.jpg." in app.upload_message.value and "Refused: empty.png" in app.upload_message.value
    assert torch.equal(app.chain.photo, app.sets[UPLOADS]["cat.jpg"])
    assert "your uploads (1 photo)" in html.unescape(app.pca_table.value)  # the PCA panel shows the uploaded set
    app.add_uploads([("cat.jpg", _jpeg(skimage.data.chelsea()))])
    assert list(app.sets[UPLOADS]) == ["cat.jpg", "cat.jpg (2)"]


def test_choosing_a_photo_set_refits_the_pca_panel(app):
    from convlab.explorer import SAMPLES

    app.source.value = SAMPLES
    assert app.photo.options == ("chelsea", "coffee", "astronaut", "rocket")
    assert "scikit-image&#x27;s photos (4 photos)" in app.pca_table.value and "ImageNet" in app.pca_table.value
    assert bytes(app.pca_image.value).startswith(b"\x89PNG")
    app.photo.value = "rocket"
    assert torch.equal(app.chain.photo, app.sets[SAMPLES]["rocket"])


def test_code_line_of_the_app_reproduces_its_grid(app):
    from convlab.widgets import draw_grid

    app.chain.add("PCAColor")
    app.chain.steps[-1].sliders["sigma"].value = 0.5
    app.chain.new_draws()
    namespace: dict = {}
    exec(html.unescape(re.sub(r"<[^>]+>", "", app.chain.code.value)), namespace)
    grid = draw_grid(app.current_photo(), namespace["augment"], app.chain.n, app.chain.ncols, app.chain.size)
    assert torch.equal(grid, app.chain.grid)


def test_a_folder_of_photos_is_a_photo_set(tmp_path):
    from convlab.explorer import FOLDER

    (tmp_path / "cat.jpg").write_bytes(_jpeg(skimage.data.chelsea()))
    (tmp_path / "broken.png").write_bytes(b"not a png")
    folder_app = explorer_app(tmp_path, size=160, n=2)
    assert folder_app.source.value == FOLDER and list(folder_app.sets[FOLDER]) == ["cat.jpg"]
    assert "Refused: broken.png: not a readable image" in folder_app.upload_message.value
    with pytest.raises(ValueError, match="photos: expected a folder of photos"):
        explorer_app(tmp_path / "cat.jpg")


# ----------------------------------------------------------------------------- the command
def test_the_served_folder_is_loopback_with_a_token_and_no_cdn(tmp_path):
    notebook = write_server_folder(tmp_path, Path("/my photos"), 320, 8899, "secret")
    cell = json.loads(notebook.read_text())["cells"][0]["source"]
    assert "explorer_app(photos='/my photos', size=320)" in cell
    settings = json.loads((tmp_path / "voila.json").read_text())
    assert settings["Voila"] == {
        "ip": "127.0.0.1",
        "port": 8899,
        "port_retries": 0,
        "open_browser": False,
        "token": "secret",
    }
    assert (tmp_path / "voila.json").stat().st_mode & 0o077 == 0, "the token is readable by the owner only"
    assert settings["VoilaConfiguration"]["template"] == TEMPLATE
    assert "http" not in (tmp_path / "share" / "voila" / "templates" / TEMPLATE / "index.html.j2").read_text()
    assert "photos" not in explore_notebook(None, 240)["cells"][0]["source"]


def test_explore_help_names_its_options():
    out = subprocess.run(
        [sys.executable, "-m", "convlab", "explore", "--help"], capture_output=True, text=True, check=True
    ).stdout
    for option in ("--port", "--no-browser", "--photos DIR", "--size"):
        assert option in out


def test_explore_refuses_a_missing_photo_folder(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "convlab", "explore", "--photos", str(tmp_path / "nope"), "--no-browser"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2 and done.stderr.count("\n") == 1
    assert "--photos" in done.stderr and "no such folder" in done.stderr


# ----------------------------------------------------------------------------- the page, in a real browser
_REQUIRED = os.environ.get("CONVLAB_REQUIRE_BROWSER") == "1"
needs_chromium = pytest.mark.skipif(
    not _REQUIRED and not Path(CHROMIUM).exists(),
    reason=f"needs Debian's chromium at {CHROMIUM} (.ci/install installs it)",
)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """``python -m convlab explore --no-browser`` as a learner runs it; yields (address with token, log path)."""
    base = tmp_path_factory.mktemp("explore")
    log = base / "explore.log"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    cmd = [sys.executable, "-u", "-m", "convlab", "explore", "--no-browser", "--port", str(free_port())]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=base)
        address, deadline = None, time.monotonic() + 120
        while address is None and time.monotonic() < deadline and proc.poll() is None:
            found = re.search(r"explorer: (http://127\.0\.0\.1:\d+/\?token=\S+)", log.read_text(errors="replace"))
            address = found.group(1) if found else time.sleep(0.3)
        if address is None:
            proc.kill()
            raise RuntimeError(f"python -m convlab explore printed no address:\n{log.read_text()[-3000:]}")
        yield address, log
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


def _blob_bytes(page, image) -> bytes:
    """The bytes behind an <img>'s blob: URL (ipywidgets' Image), read by the page itself."""
    data_url = page.evaluate(
        """async (img) => {
            const blob = await (await fetch(img.src)).blob();
            return await new Promise((ok) => { const r = new FileReader(); r.onload = () => ok(r.result);
                                               r.readAsDataURL(blob); });
        }""",
        image.element_handle(),
    )
    return base64.b64decode(data_url.split(",", 1)[1])


@pytest.mark.browser
@needs_chromium
def test_explorer_page_upload_chain_slider_and_code(served, browser, tmp_path):
    from convlab.widgets import draw_grid

    address, log = served
    server = address.split("?")[0]
    with urllib.request.urlopen(server, timeout=30) as answer:  # no token: the login page, not the explorer
        assert "/login" in answer.geturl() and b"convlab" not in answer.read()

    photo_file, bad_file = tmp_path / "coffee.jpg", tmp_path / "notes.txt"
    photo_file.write_bytes(_jpeg(skimage.data.coffee()))
    bad_file.write_text("not a photo")
    SHOTS.mkdir(parents=True, exist_ok=True)
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    record = PageRecord(page, server)

    def failed(message: str) -> AssertionError:
        record.mark(f"failed: {message}")
        shutil.rmtree(ARTIFACTS, ignore_errors=True)
        ARTIFACTS.mkdir(parents=True)
        try:
            page.screenshot(path=str(ARTIFACTS / "page.png"), full_page=True)
        except Exception as exc:  # a crashed page still leaves the logs
            (ARTIFACTS / "page.png.error.txt").write_text(repr(exc))
        shutil.copy(log, ARTIFACTS / "explore.log")
        (ARTIFACTS / "browser.log").write_text("\n".join(record.lines) + "\n")
        return AssertionError(f"{message}; screenshot, server log and browser console kept in {ARTIFACTS}")

    try:
        page.goto(address, wait_until="commit")  # Voila streams the page while the kernel builds the app
        explorer = page.locator(".convlab-explorer")
        grid = explorer.locator(".convlab-grid")
        try:
            grid.wait_for(timeout=240_000)
        except Exception as exc:
            raise failed("the explorer did not appear") from exc
        record.mark("the explorer is shown")

        # a file that is not a photo is refused with a sentence; the photo is added and shown
        message = explorer.locator(".convlab-upload-message")

        def upload(path: Path) -> None:  # as a person does: click the button, pick the file
            with page.expect_file_chooser() as chooser:
                explorer.locator(".convlab-upload").click()
            chooser.value.set_files(str(path))

        upload(bad_file)
        try:
            message.get_by_text("Refused: notes.txt: not a readable image").wait_for(timeout=30_000)
        except Exception as exc:
            raise failed("the bad upload was not refused in the page") from exc
        upload(photo_file)
        try:
            message.get_by_text("Added 1 photo: coffee.jpg.").wait_for(timeout=30_000)
        except Exception as exc:
            raise failed("the uploaded photo was not added") from exc
        record.mark("uploads answered")

        # a chain of two: the rotation it starts with, and a shear added from the menu
        explorer.locator(".convlab-chain select").select_option("RandomShear")
        explorer.get_by_role("button", name="add to the chain").click()
        steps = explorer.locator(".convlab-chain-step")
        try:
            steps.nth(1).wait_for(timeout=30_000)
        except Exception as exc:
            raise failed("the second step did not appear") from exc
        code = explorer.locator(".convlab-code")  # the widget stays; the <pre> in it is replaced on each update
        try:
            page.wait_for_function(
                "(el) => el.textContent.includes('RandomShear(')", arg=code.element_handle(), timeout=30_000
            )
        except Exception as exc:
            raise failed("the code does not show the added step") from exc

        # move the rotation's slider: the grid must be redrawn within a second
        image = grid.first
        before = image.get_attribute("src")
        handle = steps.nth(0).locator(".widget-slider:has(.widget-label:text-matches('^degrees')) .noUi-handle")
        handle.focus()
        start = time.monotonic()
        handle.press("ArrowRight")
        try:
            page.wait_for_function(
                "([el, old]) => el.getAttribute('src') !== old", arg=[image.element_handle(), before], timeout=30_000
            )
        except Exception as exc:
            raise failed("the grid did not change after the slider moved") from exc
        redraw = time.monotonic() - start
        record.mark(f"grid redrawn {redraw:.2f} s after the key press")
        try:
            page.wait_for_function(
                "(el) => el.textContent.includes('degrees=16.0')", arg=code.element_handle(), timeout=30_000
            )
        except Exception as exc:
            raise failed("the code line does not show the slider's new value") from exc

        # the code under the grid, run here, draws the page's grid bit for bit
        text = code.locator("pre").inner_text()
        assert "RandomRotation(degrees=16.0" in text and "RandomShear(" in text and "manual_seed(0)" in text
        namespace: dict = {}
        exec(text, namespace)
        ours = draw_grid(decode_upload("coffee.jpg", photo_file.read_bytes()), namespace["augment"], 8, 3, 240)
        shown = np.asarray(Image.open(io.BytesIO(_blob_bytes(page, image))).convert("RGB"))
        assert shown.shape == tuple(ours.permute(1, 2, 0).shape), "the page's grid has another size than the code's"
        assert np.array_equal(shown, ours.permute(1, 2, 0).numpy()), "the code line does not reproduce the grid"
        torchvision = explorer.locator(".convlab-torchvision-code pre").inner_text()
        assert "v2.RandomRotation(degrees=16.0" in torchvision and "v2.RandomAffine(degrees=0, shear=" in torchvision
        assert explorer.locator(".convlab-pca").get_by_text("your uploads (1 photo)").count() == 1

        # the whole app in one screenshot: a viewport as tall as the app (an element's part below the viewport
        # would come out blank)
        page.set_viewport_size({"width": 1400, "height": int(explorer.bounding_box()["height"]) + 40})
        explorer.screenshot(path=str(SHOTS / "explore.png"))
        if os.environ.get("CONVLAB_UPDATE_FIGURES") == "1":
            explorer.screenshot(path=str(FIGURE), type="jpeg", quality=80)
        assert not record.outside, f"the page reached beyond the server (it must work offline): {record.outside}"
        assert redraw < 1.0, (
            f"the grid took {redraw:.2f} s to redraw after the slider moved (limit 1 s; load average "
            f"{', '.join(f'{x:.1f}' for x in os.getloadavg())} on {os.cpu_count()} CPUs)"
        )
    finally:
        page.close()
