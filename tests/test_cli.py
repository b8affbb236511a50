"""``python -m convlab train`` / ``evaluate``: bad arguments, kill-and-resume, 10-crop ensembles of checkpoints.

The runs use a tiny folder of real food photos (10 per class, 3 classes: 18 train / 6 val / 6 test images) at
64 px, freeze_first with the last stage and the head trainable (cached activations), so each run takes seconds.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from convlab.__main__ import main
from convlab.cli.train import TRAIN_LOCK
from convlab.weights import WEIGHTS

from conftest import copy_food_photos, train_argv

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def photo_folder(tmp_path_factory) -> Path:
    """``root/<class>/<photo>``: the first 10 food photos of fruits, other vegetables and marine fish."""
    return copy_food_photos(tmp_path_factory.mktemp("photos"), slice(0, 10))


def _train_args(data: Path, out: Path, cache: Path, epochs: int = 2) -> list[str]:
    options = f"--regime freeze_first --freeze-k 6 --input-size 64 --epochs {epochs} --batch-size 8"
    return train_argv(data, out, options, cache=cache)


def _run(args: list[str], env_extra: dict | None = None) -> subprocess.CompletedProcess:
    """``python -m convlab ARGS`` in a fresh process (the same number of threads as this one, for equal numbers)."""
    env = {**os.environ, **(env_extra or {})}
    return subprocess.run(
        [sys.executable, "-m", "convlab", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )


# ``python -m convlab ARGV...`` that SIGKILLs itself after N optimizer steps (no clean-up, no ``finally``), as an
# out-of-memory killer or a pre-empted machine would: a global optimizer step hook, so the library has no test hook.
_KILL_AFTER_STEPS = """
import os, signal, sys
from torch.optim.optimizer import register_optimizer_step_post_hook
from convlab.__main__ import main
from convlab.cli.train import TRAIN_LOCK
steps = 0
def kill(optimizer, args, kwargs):
    global steps
    steps += 1
    if steps >= int(sys.argv[1]):
        os.kill(os.getpid(), signal.SIGKILL)
register_optimizer_step_post_hook(kill)
sys.exit(main(sys.argv[2:]))
"""


def _run_killed_after(steps: int, args: list[str]) -> subprocess.CompletedProcess:
    """``_run(args)``, killed with SIGKILL right after optimizer step ``steps``."""
    return subprocess.run(
        [sys.executable, "-c", _KILL_AFTER_STEPS, str(steps), *args],
        cwd=REPO,
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=300,
    )


def _main(args: list[str]) -> tuple[int, str]:
    """``main(args)`` in this process (no interpreter start-up): exit code and what it printed."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(args)
    return code, out.getvalue()


@pytest.fixture(scope="module")
def runs(photo_folder, tmp_path_factory) -> dict[str, Path]:
    """One uninterrupted run, and one killed in its second epoch (SIGKILL after an optimizer step) then resumed."""
    base = tmp_path_factory.mktemp("runs")
    cache = base / "features"
    whole, killed = base / "whole", base / "killed"
    assert _main(_train_args(photo_folder, whole, cache))[0] == 0
    # 18 images in batches of 8: 3 steps per epoch, so step 4 is in the middle of the second epoch. The process
    # kills itself with SIGKILL: no exception handler or finally block runs, as with the OOM killer.
    crash = _run_killed_after(4, _train_args(photo_folder, killed, cache))
    assert crash.returncode == -signal.SIGKILL, crash.stderr
    after_crash = json.loads((killed / "metrics.json").read_text())
    # the killed run's lock file stays; the kernel released its lock, so the resumed run takes it
    assert (killed / TRAIN_LOCK).exists()
    (killed / ".last.pt.k1ll3d.tmp").write_bytes(b"half a checkpoint")  # what a kill inside atomic_write leaves
    code, log = _main(_train_args(photo_folder, killed, cache) + ["--resume"])
    assert code == 0
    return {"whole": whole, "killed": killed, "after_crash": after_crash, "resume_log": log}


# ``python -m convlab ARGV...`` that stops after its first optimizer step (it holds --out's lock and is training),
# says PAUSED on stdout, and goes on when a line arrives on stdin.
_PAUSE_AFTER_FIRST_STEP = """
import sys
from torch.optim.optimizer import register_optimizer_step_post_hook
from convlab.__main__ import main
paused = False
def pause(optimizer, args, kwargs):
    global paused
    if not paused:
        paused = True
        print("PAUSED", flush=True)
        sys.stdin.readline()
register_optimizer_step_post_hook(pause)
sys.exit(main(sys.argv[1:]))
"""


def _files(folder: Path) -> list | None:
    return sorted((p.name, p.stat().st_mtime_ns) for p in folder.iterdir()) if folder.is_dir() else None


def test_a_second_run_into_the_same_out_is_refused_while_the_first_runs(photo_folder, tmp_path):
    out, cache = tmp_path / "run", tmp_path / "features"
    with open(tmp_path / "first.err", "w") as err:
        first = subprocess.Popen(
            [sys.executable, "-c", _PAUSE_AFTER_FIRST_STEP, *_train_args(photo_folder, out, cache)],
            cwd=REPO,
            env=dict(os.environ),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
        )
    try:
        said = [first.stdout.readline()]
        while said[-1] and said[-1].strip() != "PAUSED":  # until the first run is training
            said.append(first.stdout.readline())
        assert said[-1].strip() == "PAUSED", "".join(said) + (tmp_path / "first.err").read_text()
        before = _files(out)
        second = _run(_train_args(photo_folder, out, cache))
        lines = [line for line in second.stderr.splitlines() if not line.startswith("note:")]
        assert second.returncode == 2 and len(lines) == 1 and "Traceback" not in second.stderr, second.stderr
        assert f"--out {out}: another 'python -m convlab train' is writing there" in lines[0]
        assert _files(out) == before, "the refused run wrote to --out"
        rest, _ = first.communicate("\n", timeout=300)
        assert first.returncode == 0 and f"wrote {out / 'metrics.json'}" in rest, rest
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()


def _shape(obj):
    """The structure of a JSON value: keys and list lengths, not the numbers."""
    if isinstance(obj, dict):
        return {k: _shape(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_shape(v) for v in obj]
    return type(obj).__name__ if obj is not None else "null"


# --------------------------------------------------------------------------------------------- train
def test_train_writes_metrics_and_checkpoints(runs):
    out = runs["whole"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["finished"] and metrics["cached"] and metrics["world_size"] == 1
    assert [row["epoch"] for row in metrics["epochs"]] == [0, 1]
    assert metrics["sizes"] == {"train": 18, "val": 6, "test": 6}
    assert 0.0 <= metrics["test"]["accuracy"] <= 1.0 and metrics["test"]["num_samples"] == 6
    with open(out / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [float(r["train_loss"]) for r in rows] == [r["train_loss"] for r in metrics["epochs"]]
    last = torch.load(out / "last.pt", weights_only=True)
    assert {"model", "optimizer", "epoch", "history", "rng", "config", "classes"} <= set(last)
    assert last["epoch"] == 1 and len(last["rng"]) == 1 and "torch" in last["rng"][0]
    assert not list(out.glob(".*.tmp")), "temporary files must be renamed or removed"


def test_killed_run_resumes_to_the_same_result(runs):
    assert len(runs["after_crash"]["epochs"]) == 1, "the crash came after the first epoch's checkpoint"
    assert not runs["after_crash"]["finished"]
    assert "resuming after epoch 0" in runs["resume_log"]
    assert not list(runs["killed"].glob(".*.tmp")), "--resume removes the half-written file a kill left"
    whole = json.loads((runs["whole"] / "metrics.json").read_text())
    resumed = json.loads((runs["killed"] / "metrics.json").read_text())
    assert resumed["resumed_at"] == [1] and whole["resumed_at"] == []
    for m in (whole, resumed):  # only these may differ: wall-clock times and where the run was resumed
        m.pop("resumed_at")
        for row in m["epochs"]:
            row.pop("seconds")
    assert _shape(resumed) == _shape(whole)
    # Model, optimizer, history and RNG state (dropout) are restored, and shuffling is a function of (seed, epoch):
    # the resumed run repeats the uninterrupted one's numbers.
    for a, b in zip(resumed["epochs"], whole["epochs"]):
        for key in ("train_loss", "train_acc", "val_loss", "val_acc"):
            assert a[key] == pytest.approx(b[key], rel=1e-5, abs=1e-7), (key, a, b)
    assert resumed["test"] == pytest.approx(whole["test"], rel=1e-5)
    with open(runs["killed"] / "metrics.csv") as f_a, open(runs["whole"] / "metrics.csv") as f_b:
        header_a, header_b = next(csv.reader(f_a)), next(csv.reader(f_b))
        assert header_a == header_b and len(list(f_a)) == len(list(f_b)) == 2


def test_existing_run_needs_resume(runs, photo_folder, capsys):
    code = main(_train_args(photo_folder, runs["whole"], runs["whole"].parent / "features"))
    err = capsys.readouterr().err
    assert code == 2 and "--resume" in err and err.count("\n") == 1


# --------------------------------------------------------------------------------------------- evaluate
def test_evaluate_ten_crop_ensemble(runs, tmp_path):
    report = tmp_path / "eval.json"
    code, printed = _main(
        [
            "evaluate",
            "--checkpoint",
            str(runs["whole"] / "best.pt"),
            "--checkpoint",
            str(runs["killed"] / "best.pt"),
            "--ten-crop",
            "--json",
            str(report),
        ]
    )
    assert code == 0 and "ensemble of 2" in printed
    results = json.loads(report.read_text())["results"]
    assert [r["views"] for r in results] == ["10-crop"] * 3
    assert results[2]["model"] == "ensemble of 2" and all(r["num_samples"] == 6 for r in results)
    assert all(0.0 <= r["accuracy"] <= 1.0 and r["loss"] > 0 for r in results)
    # Both members hold the same weights (the resumed run equals the uninterrupted one), so the ensemble of the
    # two is that model: an oracle for the averaging.
    assert results[2]["accuracy"] == results[0]["accuracy"]
    assert results[2]["loss"] == pytest.approx(results[0]["loss"], rel=1e-5)


def test_evaluate_centre_view_agrees_with_the_training_run(runs, tmp_path):
    """Without --ten-crop, evaluate's numbers are those train reported for the same checkpoint and split."""
    report = tmp_path / "centre.json"
    code, _ = _main(["evaluate", "--checkpoint", str(runs["whole"] / "best.pt"), "--json", str(report)])
    assert code == 0
    (result,) = json.loads(report.read_text())["results"]
    trained = json.loads((runs["whole"] / "metrics.json").read_text())["test"]
    assert result["views"] == "centre" and result["num_samples"] == trained["num_samples"]
    assert result["accuracy"] == trained["accuracy"]
    assert result["loss"] == pytest.approx(trained["loss"], rel=1e-4)


def test_evaluate_refuses_different_class_orders(runs, tmp_path, capsys):
    state = torch.load(runs["whole"] / "best.pt", weights_only=True)
    state["classes"] = state["classes"][::-1]
    other = tmp_path / "reversed.pt"
    torch.save(state, other)
    code = main(["evaluate", "--checkpoint", str(runs["whole"] / "best.pt"), "--checkpoint", str(other)])
    err = capsys.readouterr().err
    assert code == 2 and "classes" in err and err.count("\n") == 1


# --------------------------------------------------------------------------------------------- bad arguments
@pytest.mark.parametrize(
    "args, expect",
    [
        (["--backbone", "resnet50"], "invalid choice: 'resnet50'"),
        (["--epochs", "-1"], "--epochs: expected an integer >= 1, got '-1'"),
        (["--epochs", "0"], "--epochs: expected an integer >= 1, got '0'"),
        (["--data", "{missing}"], "no such folder"),
        (["--regime", "freeze_first"], "needs --freeze-k"),
        (["--regime", "head_only", "--freeze-k", "3"], "applies to --regime freeze_first only"),
        (["--batch-size", "0"], "--batch-size: expected an integer >= 1"),
        (["--lr", "-0.1"], "--lr: expected a positive number"),
    ],
)
def test_bad_train_arguments(args, expect, tmp_path, capsys):
    args = [a.replace("{missing}", str(tmp_path / "missing")) for a in args]
    try:
        code = main(["train", "--out", str(tmp_path / "out")] + args)
    except SystemExit as exc:  # argparse errors
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2, err
    assert expect in err and err.count("\n") == 1, err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("backbone", sorted(WEIGHTS))
def test_freeze_k_runs_to_the_chosen_backbones_stage_count(backbone, tmp_path, capsys):
    """--freeze-k's range is the chosen backbone's, read from its weights record."""
    n = WEIGHTS[backbone].num_stages
    args = ["train", "--out", str(tmp_path / "out"), "--backbone", backbone, "--regime", "freeze_first"]
    code = main(args + ["--freeze-k", str(n + 1)])
    err = capsys.readouterr().err
    assert code == 2 and f"K in 0..{n}, got {n + 1}" in err and err.count("\n") == 1, err
    assert not (tmp_path / "out").exists()


def test_empty_folder_is_a_usage_error(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    code = main(["train", "--out", str(tmp_path / "out"), "--data", str(tmp_path / "empty")])
    err = capsys.readouterr().err
    assert code == 2 and "found none" in err and err.count("\n") == 1, err


def test_missing_checkpoint_is_a_usage_error(tmp_path, capsys):
    code = main(["evaluate", "--checkpoint", str(tmp_path / "missing.pt")])
    err = capsys.readouterr().err
    assert code == 2 and "no such file" in err and err.count("\n") == 1, err


def test_bad_data_from_the_shell_exits_without_traceback(tmp_path):
    """The whole path of a real run (imports, data loading) ends in one line and status 2, not a traceback."""
    (tmp_path / "no_images" / "cats").mkdir(parents=True)
    (tmp_path / "no_images" / "dogs").mkdir(parents=True)
    done = _run(["train", "--out", str(tmp_path / "o"), "--data", str(tmp_path / "no_images")])
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith("python -m convlab train: error: --data ") and "no images" in done.stderr


def test_existing_commands_still_parse(capsys):
    assert main(["assets"]) == 0
    assert "mobilenet_v2" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exc:
        main(["fetch", "--no-such-option"])
    assert exc.value.code == 2
    assert "usage:" in capsys.readouterr().err  # unchanged argparse behaviour outside train/evaluate
