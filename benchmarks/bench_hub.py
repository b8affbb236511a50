"""A class on one hub: N learners' kernels run the course's heaviest notebook at once, through JupyterHub.

``python -m convlab hub`` starts a hub for N learners on this machine (on ``--cores`` of its CPUs: the hub, its servers
and their kernels inherit the CPU affinity set here), exactly as a teacher starts it: no thread setting, no
environment variable. Each learner's server is started through the hub's REST API, and the benchmark runs the
learner's own copy of the notebook in a kernel of that server, cell after cell, over the kernel's websocket behind the
hub's proxy (what JupyterLab's Run All does; a check cell of an unsolved exercise fails and the run goes on).

First each learner runs it alone (one after the other: their *solo* times), then all N at once. Fair sharing of C
cores among N kernels that each used one core alone gives N / C x the solo time; a kernel passes when its time in
company is within ``--tolerance`` (1.25) x that fair share. Writes ``benchmarks/results/hub_cpu.json`` (with
``--quick``: 2 learners, notebook 00, ``hub_cpu_quick.json``, to prove the set-up works).

    python benchmarks/bench_hub.py                 # 4 learners, the heaviest notebook, 2 cores, idle machine
    python benchmarks/bench_hub.py --quick
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import datetime
import json
import os
import platform
import secrets
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

from harness import RESULTS, write_results

from convlab.course_open import free_port

ROOT = Path(__file__).resolve().parents[1]


def _api(url: str, token: str, method: str = "GET", body: dict | None = None) -> dict | list | None:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers={"Authorization": f"token {token}"})
    with urllib.request.urlopen(request, timeout=60) as answer:
        text = answer.read()
    return json.loads(text) if text else None


class Hub:
    """``python -m convlab hub`` in a temporary class folder, with a benchmark service allowed to start servers."""

    def __init__(self, folder: Path, learners: list[str], cores: list[int]):
        self.folder, self.learners = folder, learners
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.token = secrets.token_hex(16)
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
        for name in ("CONVLAB_SHARED_KERNELS", "CONVLAB_THREADS", "OMP_WAIT_POLICY", "OMP_NUM_THREADS"):
            env.pop(name, None)  # no teacher setting: the hub decides
        base = [sys.executable, "-m", "convlab", "hub", "--class-dir", str(folder / "class"), "--port", str(self.port)]
        self._config()
        self.log = open(folder / "hub.log", "wb")  # noqa: SIM115 (closed in stop)
        self.proc = subprocess.Popen(
            [*base, "--learners", ",".join(learners), "--cull-idle", "0"],
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            preexec_fn=lambda: os.sched_setaffinity(0, cores),
        )
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(f"{self.url}/hub/api", timeout=2).read()
                break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the hub did not start; see {folder / 'hub.log'}") from None
                time.sleep(0.5)

    def _config(self) -> None:
        """Make the class folder (the command's set-up, without starting JupyterHub) and add the service."""
        from convlab.hub import prepare_class

        prepare_class(self.folder / "class", ",".join(self.learners), "teacher", self.port, None, 0)
        config = self.folder / "class" / "hub" / "jupyterhub_config.py"
        scopes = ["admin:users", "admin:servers", "access:servers", "list:users", "read:users", "read:servers"]
        config.write_text(
            config.read_text()
            + f'\nc.JupyterHub.services.append({{"name": "bench", "api_token": "{self.token}"}})\n'
            + f'c.JupyterHub.load_roles.append({{"name": "bench", "scopes": {scopes!r}, "services": ["bench"]}})\n'
        )

    def start_server(self, user: str) -> None:
        """Add the user to the hub (as their first login would) and start their server."""
        _api(f"{self.url}/hub/api/users", self.token, "POST", {"usernames": [user]})
        _api(f"{self.url}/hub/api/users/{user}/server", self.token, "POST", {})
        deadline = time.monotonic() + 300
        while True:
            info = _api(f"{self.url}/hub/api/users/{user}", self.token)
            if (info.get("servers") or {}).get("", {}).get("ready"):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"{user}'s server did not start within 300 s")
            time.sleep(1)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=90)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


async def run_notebook(hub: Hub, user: str, path: str, cells: list[str]) -> dict:
    """Start a kernel for ``path`` in the user's server (a session, as JupyterLab opens one), run every cell in order
    over the kernel's websocket behind the proxy, and return the wall time and each cell's status."""
    from tornado.httpclient import HTTPRequest
    from tornado.websocket import websocket_connect

    server = f"{hub.url}/user/{user}"
    session = await asyncio.to_thread(
        _api,
        f"{server}/api/sessions",
        hub.token,
        "POST",
        {"path": path, "type": "notebook", "name": Path(path).name, "kernel": {"name": "python3"}},
    )
    kernel = session["kernel"]["id"]
    ws_url = f"ws://127.0.0.1:{hub.port}/user/{user}/api/kernels/{kernel}/channels"
    ws = await websocket_connect(HTTPRequest(ws_url, headers={"Authorization": f"token {hub.token}"}))
    statuses = []
    try:
        t0 = time.perf_counter()
        for code in cells:
            msg_id = uuid.uuid4().hex
            request = {
                "header": {"msg_id": msg_id, "msg_type": "execute_request", "username": user, "session": kernel,
                           "version": "5.3", "date": datetime.datetime.now(datetime.UTC).isoformat()},
                "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
                "content": {"code": code, "silent": False, "store_history": True, "user_expressions": {},
                            "allow_stdin": False, "stop_on_error": False},
            }  # fmt: skip
            await ws.write_message(json.dumps(request))
            while True:
                raw = await ws.read_message()
                if raw is None:
                    raise RuntimeError(f"{user}: the kernel's websocket closed")
                if isinstance(raw, bytes):
                    continue
                msg = json.loads(raw)
                if msg.get("parent_header", {}).get("msg_id") == msg_id and msg["msg_type"] == "execute_reply":
                    statuses.append(msg["content"]["status"])
                    break
        seconds = time.perf_counter() - t0
    finally:
        ws.close()
        await asyncio.to_thread(_api, f"{server}/api/sessions/{session['id']}", hub.token, "DELETE")
    return {"user": user, "seconds": seconds, "cells": len(cells), "errors": statuses.count("error")}


def _heaviest() -> str:
    from convlab.course import COURSE

    return max(COURSE, key=lambda lesson: lesson.cpu_s).notebook


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--learners", type=int, default=4, help="learners whose kernels run at once (default 4)")
    parser.add_argument("--cores", type=int, default=2, help="CPUs the hub and its kernels may use (default 2)")
    parser.add_argument("--notebook", default=None, help="notebook stem (default: the course's heaviest)")
    parser.add_argument("--tolerance", type=float, default=1.25, help="pass: company time <= this x fair share")
    parser.add_argument("--quick", action="store_true", help="2 learners, notebook 00: proves the set-up works")
    parser.add_argument("--out", type=Path, default=None, help="the JSON (default: benchmarks/results/hub_cpu.json)")
    args = parser.parse_args(argv)
    if args.quick:
        args.learners, args.notebook = 2, args.notebook or "00_start_here"
    notebook = args.notebook or _heaviest()
    available = sorted(os.sched_getaffinity(0))
    if not 0 < args.cores <= len(available):
        parser.error(f"--cores: expected 1..{len(available)}, got {args.cores}")
    cores = available[: args.cores]
    learners = [f"learner{i + 1:02d}" for i in range(args.learners)]
    out = args.out or RESULTS / ("hub_cpu_quick.json" if args.quick else "hub_cpu.json")
    load_at_start = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench_hub_") as tmp:
        hub = Hub(Path(tmp), learners, cores)
        try:
            for user in learners:
                hub.start_server(user)
            copy = Path(tmp) / "class" / "home" / learners[0] / "course" / f"{notebook}.ipynb"
            cells = ["".join(c["source"]) for c in json.loads(copy.read_text())["cells"] if c["cell_type"] == "code"]
            path = f"course/{notebook}.ipynb"
            solo = {}
            for user in learners:
                print(f"{user} alone: {notebook} ...", flush=True)
                solo[user] = asyncio.run(run_notebook(hub, user, path, cells))
                print(f"  {solo[user]['seconds']:.1f} s", flush=True)
            print(f"{len(learners)} learners at once ...", flush=True)

            async def together():
                return await asyncio.gather(*(run_notebook(hub, user, path, cells) for user in learners))

            company = {r["user"]: r for r in asyncio.run(together())}
            with (Path(tmp) / "class" / "roster.csv").open() as f:
                seats = len(list(csv.DictReader(f)))
        finally:
            hub.stop()
    fair = max(1.0, len(learners) / len(cores))
    rows = []
    for user in learners:
        slowdown = company[user]["seconds"] / solo[user]["seconds"]
        rows.append(
            {
                "user": user,
                "solo_s": round(solo[user]["seconds"], 2),
                "company_s": round(company[user]["seconds"], 2),
                "slowdown": round(slowdown, 3),
                "vs_fair_share": round(slowdown / fair, 3),
                "cell_errors": [solo[user]["errors"], company[user]["errors"]],
            }
        )
    passed = all(r["vs_fair_share"] <= args.tolerance for r in rows)
    result = {
        "benchmark": "bench_hub.py",
        "command": " ".join([sys.executable, *sys.argv]),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "quick": args.quick,
        "machine": {"platform": platform.platform(), "cpus_used": cores, "load_average_at_start": load_at_start},
        "settings": {"notebook": notebook, "learners": len(learners), "seats": seats, "teacher_settings": "none"},
        "fair_share": fair,
        "tolerance": args.tolerance,
        "passed": passed,
        "results": rows,
    }
    write_results(out, result)
    print(f"\n| learner | alone | {len(learners)} at once | slowdown | x fair share ({fair:g}x) |")
    print("|---|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['user']} | {r['solo_s']} s | {r['company_s']} s | {r['slowdown']:.2f}x | {r['vs_fair_share']:.2f} |"
        )
    print(f"\n{'PASS' if passed else 'FAIL'}: each within {args.tolerance}x of fair share; wrote {out}")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
