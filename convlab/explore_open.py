"""``python -m convlab explore``: the augmentation explorer (:mod:`convlab.explorer`) as a page served by Voila.

Voila runs a one-cell notebook that builds :func:`convlab.explorer.explorer_app` in a kernel and shows only its
widgets: no code, no notebook. The server listens on the loopback interface only and asks for a token (printed in
the address); the page loads nothing from the internet. Voila's ``lab`` template links Font Awesome's stylesheet
from a CDN, so the page is rendered with a template of our own that drops those links (the explorer's buttons use
no icons), and MathJax is never loaded (no widget text holds ``$``). Everything else, the widgets' JavaScript
included, is served by Voila from the installed packages.

The notebook, the template and Voila's settings (``voila.json``, which holds the token, readable by the owner
only) are written to a fresh temporary folder, removed when the server stops. This module imports only the
standard library at the top, so ``python -m convlab explore --help`` answers at once.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import webbrowser
from collections.abc import Sequence
from pathlib import Path

from convlab.course_open import free_port, port_argument

__all__ = [
    "TEMPLATE",
    "add_explore_arguments",
    "explore_notebook",
    "write_server_folder",
    "run_explore",
    "main",
]

#: the Voila template the explorer is served with: Voila's ``lab`` template without its CDN stylesheet links
TEMPLATE = "convlab-offline"
_TEMPLATE_CONF = {"base_template": "lab"}
# Voila's lab template adds two <link> tags to Font Awesome on a CDN inside its notebook_css block; the block is
# kept whole (spinner, theme, margins) and only lines that link a stylesheet from another host are left out.
_TEMPLATE_INDEX = """{%- extends 'lab/index.html.j2' -%}
{%- block notebook_css -%}
{%- for line in super().split('\\n') -%}
{%- if not ('<link' in line and '://' in line) %}
{{ line }}
{%- endif -%}
{%- endfor -%}
{%- endblock notebook_css -%}
"""
_SIZES = (160, 240, 320)


def explore_notebook(photos: Path | None, size: int) -> dict:
    """The one-cell notebook Voila runs: build the explorer and show its widget (nbformat 4, as a dict)."""
    args = [f"photos={str(photos)!r}"] if photos is not None else []
    args.append(f"size={size}")
    source = f"from convlab.explorer import explorer_app\n\napp = explorer_app({', '.join(args)})\napp.widget"
    cell = {
        "cell_type": "code",
        "execution_count": None,
        "id": "explorer",
        "metadata": {},
        "outputs": [],
        "source": source,
    }
    return {
        "cells": [cell],
        "metadata": {
            "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
            "title": "ConvLab augmentation explorer",
        },
        "nbformat": 4,
        "nbformat_minor": 5,
    }


def write_server_folder(folder: Path, photos: Path | None, size: int, port: int, token: str) -> Path:
    """Write the notebook, the template and ``voila.json`` (loopback, ``port``, ``token``, no browser, the
    offline template) into ``folder``; returns the notebook's path. ``voila.json`` is readable by the owner only."""
    folder = Path(folder)
    template = folder / "share" / "voila" / "templates" / TEMPLATE
    template.mkdir(parents=True, exist_ok=True)
    (template / "conf.json").write_text(json.dumps(_TEMPLATE_CONF))
    (template / "index.html.j2").write_text(_TEMPLATE_INDEX)
    notebook = folder / "explorer.ipynb"
    notebook.write_text(json.dumps(explore_notebook(photos, size), indent=1))
    settings = {
        "Voila": {"ip": "127.0.0.1", "port": port, "port_retries": 0, "open_browser": False, "token": token},
        "VoilaConfiguration": {"template": TEMPLATE, "show_tracebacks": True},
    }
    config = folder / "voila.json"
    config.touch(mode=0o600)
    config.write_text(json.dumps(settings, indent=1))
    return notebook


def _size(text: str) -> int:
    try:
        size = int(text)
    except ValueError:
        size = -1
    if size not in _SIZES:
        raise argparse.ArgumentTypeError(f"expected one of {', '.join(map(str, _SIZES))} (pixels), got {text!r}")
    return size


def add_explore_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--port", type=port_argument, default=None, help="the server's port on 127.0.0.1 (default: a free one, printed)"
    )
    parser.add_argument("--no-browser", action="store_true", help="do not open a browser; print the address")
    parser.add_argument(
        "--photos",
        type=Path,
        default=None,
        metavar="DIR",
        help="a folder of your own photos (JPEG, PNG, ...) offered as a photo set beside the course's; "
        "photos can also be uploaded in the page",
    )
    parser.add_argument(
        "--size",
        type=_size,
        default=240,
        help="preview size in pixels at start: 160, 240 or 320 (for a projector); the page can change it",
    )


def _error(message: str) -> int:
    print(f"python -m convlab explore: error: {message}", file=sys.stderr)
    return 2


def _wait_until_serving(url: str, proc: subprocess.Popen, timeout: float = 120.0) -> bool:
    """True once Voila answers on ``url`` (any HTTP status), False if it exits or ``timeout`` passes first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            urllib.request.urlopen(url, timeout=2).close()
            return True
        except urllib.error.HTTPError:
            return True  # 403 without the token: it is serving
        except OSError:
            time.sleep(0.3)
    return False


def run_explore(args: argparse.Namespace) -> int:
    photos = args.photos
    if photos is not None:
        photos = photos.expanduser().resolve()
        if not photos.is_dir():
            return _error(f"--photos {args.photos}: no such folder; pass a folder that holds your photos")
    if importlib.util.find_spec("voila") is None:
        return _error("Voila is not installed; install the course's packages: pip install -e '.[course]'")
    port = args.port if args.port is not None else free_port()
    token = secrets.token_urlsafe(24)
    folder = Path(tempfile.mkdtemp(prefix="convlab-explore-"))
    try:
        notebook = write_server_folder(folder, photos, args.size, port, token)
        env = dict(os.environ)
        # Voila finds the template in <folder>/share/voila/templates (JUPYTER_PATH comes before the system paths)
        env["JUPYTER_PATH"] = os.pathsep.join(filter(None, [str(folder / "share"), env.get("JUPYTER_PATH")]))
        # kernels inherit this: OpenMP threads that wait sleep instead of spinning (see convlab.threads)
        env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        cmd = [sys.executable, "-m", "voila", notebook.name]
        proc = subprocess.Popen(cmd, cwd=folder, env=env)  # cwd: Voila reads voila.json from there
        try:
            url = f"http://127.0.0.1:{port}/"
            if not _wait_until_serving(url, proc):
                proc.terminate()
                return _error(f"Voila did not start on {url} (is the port taken? try --port)")
            address = f"{url}?token={token}"
            print(f"the augmentation explorer: {address}\n(Ctrl-C to stop)", flush=True)
            if not args.no_browser:
                webbrowser.open(address)
            return proc.wait()
        except KeyboardInterrupt:
            return 0
        finally:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m convlab explore", description=__doc__.split("\n\n")[0])
    add_explore_arguments(parser)
    return run_explore(parser.parse_args(argv))
