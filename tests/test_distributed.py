"""Data parallel under torchrun: 2 gloo processes follow the same loss curve as 1 process with the same batch.

Why the curves can agree (and what the tolerance covers):

- data order: every rank draws the same permutation (``DistributedSampler``, seed + epoch) and takes every 2nd
  item, so at each step the two per-rank batches of 4 are together exactly the single process's batch of 8;
- gradients: DDP averages the ranks' gradients of their mean losses over 4, which is the gradient of the mean
  loss over the 8 (equal per-rank batch sizes, also in the last, short step: 18 = 8 + 8 + 2 images);
- no other dependence on the split: BatchNorm uses running statistics (frozen stages by ConvLab's default policy,
  the trainable stages by ``--bn-stats frozen``) and ``--dropout 0`` (per-rank random streams would differ);
- metrics: loss sums and correct counts are all-reduced, validation is sharded without padding.

What remains is float rounding: the two halves of a batch are summed in another order, and convolutions of 4
images may take other oneDNN kernels than of 8. Over a few Adam steps that stays below 1e-5 relative (measured
~6e-6), so the test allows rel 1e-4; any real mismatch (a wrong batch split, BatchNorm on per-rank statistics,
unaveraged gradients) moves the losses by 1e-2 or more.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from convlab import distributed as D
from convlab.__main__ import main

from conftest import copy_food_photos, train_argv

# float kernels: CI runs these files again in one process with a thread per core (README)
pytestmark = pytest.mark.numeric

REPO = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------------------------- helpers, no processes
def test_detect_reads_torchrun_environment():
    assert D.detect({}) == D.DistEnv(0, 1, 0)
    env = D.detect({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"})
    assert (env.rank, env.world_size, env.local_rank, env.distributed, env.is_main) == (3, 4, 1, True, False)
    with pytest.raises(ValueError, match="RANK=4, WORLD_SIZE=4"):
        D.detect({"RANK": "4", "WORLD_SIZE": "4"})
    with pytest.raises(ValueError, match="WORLD_SIZE: expected an integer"):
        D.detect({"WORLD_SIZE": "two"})


def test_rank_batches_together_are_the_global_batch():
    """The sampler argument of the module docstring, checked for several sizes (including padding)."""
    for n, world, per_rank in ((18, 2, 4), (20, 4, 2), (7, 2, 3)):
        data = list(range(n))
        single = D.epoch_order(torch.utils.data.DistributedSampler(data, 1, 0, seed=5), epoch=3)
        shares = [
            D.epoch_order(torch.utils.data.DistributedSampler(data, world, r, seed=5), epoch=3) for r in range(world)
        ]
        padded = torch.cat([single, single[: world * len(shares[0]) - n]])  # the sampler's padding
        for start in range(0, len(shares[0]), per_rank):
            together = torch.cat([s[start : start + per_rank] for s in shares]).sort().values
            glob = padded[start * world : (start + per_rank) * world].sort().values
            assert torch.equal(together, glob)
    sampler = torch.utils.data.DistributedSampler(list(range(18)), 1, 0, seed=5)
    assert not torch.equal(D.epoch_order(sampler, 3), D.epoch_order(sampler, 4)), "set_epoch must reshuffle"


def test_shard_indices_cover_each_item_once():
    parts = [D.shard_indices(7, D.DistEnv(r, 3, r)) for r in range(3)]
    assert sorted(torch.cat(parts).tolist()) == list(range(7))


def test_rank_seeds_are_distinct_streams():
    seeds = {D.rank_seed(s, r, stream) for s in range(3) for r in range(4) for stream in ("torch", "augment")}
    assert len(seeds) == 24 and all(0 <= x < 2**63 for x in seeds)
    assert D.rank_seed(0, 1, "torch") != D.rank_seed(1, 0, "torch")  # unlike seed + rank


def test_single_process_helpers_need_no_group():
    assert D.all_reduce_sums([1.5, 2.0], torch.device("cpu")) == [1.5, 2.0]
    assert D.gather_objects({"a": 1}) == [{"a": 1}] and D.broadcast_object(7) == 7
    D.barrier()


# --------------------------------------------------------------------------------------------- 2 processes vs 1
@pytest.fixture(scope="module")
def photo_folder(tmp_path_factory) -> Path:
    """``root/<class>/<photo>``: 10 food photos per class, split 6 / 2 / 2 (18 train images: even for 2 ranks)."""
    return copy_food_photos(tmp_path_factory.mktemp("photos"), slice(10, 20))


REGIMES = {
    # the first 5 stages frozen: their output comes from the feature cache, the rest trains
    "freeze_first_5_cached": ["--regime", "freeze_first", "--freeze-k", "5"],
    # full fine-tuning: every stage trains and preprocessing runs per rank, no cache
    "finetune_uncached": ["--regime", "finetune", "--no-cache"],
}


def _args(out: Path, data: Path, cache: Path, regime: list[str]) -> list[str]:
    options = "--bn-stats frozen --dropout 0 --input-size 64 --epochs 2 --batch-size 8"
    return train_argv(data, out, options, *regime, cache=cache)


@pytest.mark.parametrize("regime", sorted(REGIMES))
def test_two_gloo_processes_follow_one_process(photo_folder, tmp_path, regime):
    cache = tmp_path / "features"
    args = lambda name: _args(tmp_path / name, photo_folder, cache, REGIMES[regime])  # noqa: E731
    # One process: this one (saves an interpreter start). Two: torchrun's launcher starts two workers, gloo.
    assert main(args("one")) == 0
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            "2",
            "--standalone",
            "-m",
            "convlab",
            *args("two"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    one = {"metrics": json.loads((tmp_path / "one" / "metrics.json").read_text())}
    two = {"metrics": json.loads((tmp_path / "two" / "metrics.json").read_text()), "stdout": done.stdout}
    m1, m2 = one["metrics"], two["metrics"]
    assert (m1["world_size"], m1["per_process_batch"]) == (1, 8)
    assert (m2["world_size"], m2["per_process_batch"]) == (2, 4)
    assert m2["bn_stats"] == "frozen" and m2["cached"] == regime.endswith("_cached") == m1["cached"]
    assert len(m1["epochs"]) == len(m2["epochs"]) == 2
    for a, b in zip(m1["epochs"], m2["epochs"]):
        for key in ("train_loss", "val_loss"):
            assert b[key] == pytest.approx(a[key], rel=1e-4), (key, a, b)
        for key in ("train_acc", "val_acc"):  # counts: equal unless a prediction sits on a tie
            assert b[key] == pytest.approx(a[key], abs=1 / 18 + 1e-9)
    assert m2["test"]["loss"] == pytest.approx(m1["test"]["loss"], rel=1e-4)
    # Rank 0 alone logs: each epoch line appears once.
    assert two["stdout"].count("epoch 1/2:") == 1
    # Both wrote a full model: the two-process weights equal the one-process weights up to rounding.
    w1 = torch.load(tmp_path / "one" / "last.pt", weights_only=True)["model"]
    w2 = torch.load(tmp_path / "two" / "last.pt", weights_only=True)["model"]
    assert w1.keys() == w2.keys()
    # Not element by element: Adam divides each gradient by its own running RMS, so an element whose gradient is
    # near zero can move by a visible fraction of the learning rate when rounding flips its sign (seen: one element
    # of 24,576 off by 2.6e-5 on an AMD EPYC). Norms bound what the arithmetic guarantees: the difference of each
    # tensor is a tiny fraction of the tensor, and of all weights together smaller still; a real mismatch (another
    # batch split, per-rank BatchNorm statistics) moves every trained element by about the learning rate.
    total_diff = total_norm = 0.0
    for k in w1:
        a, b = w1[k].double(), w2[k].double()
        diff, norm = float((b - a).norm()), float(a.norm())
        total_diff, total_norm = total_diff + diff**2, total_norm + norm**2
        assert diff <= 1e-3 * norm + 1e-6, (k, diff, norm)
    assert total_diff**0.5 <= 1e-4 * total_norm**0.5, (total_diff**0.5, total_norm**0.5)
    assert len(torch.load(tmp_path / "two" / "last.pt", weights_only=True)["rng"]) == 2
