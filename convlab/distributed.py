"""Data-parallel training on PyTorch's own engine: ``torch.distributed`` and ``DistributedDataParallel`` (DDP).

``torchrun --nproc_per_node N -m convlab train ...`` starts N copies of the same program and tells each one who
it is through the environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``/``MASTER_PORT``). This
module holds the pieces that make those N processes train *one* model:

- :func:`detect` reads the environment; :func:`process_group` joins the group (gloo on the CPU, NCCL on CUDA,
  one GPU per process chosen by ``LOCAL_RANK``) and leaves it cleanly, also after an error.
- :func:`epoch_order` is this rank's share of the epoch's shuffled order, from a ``DistributedSampler`` with
  ``set_epoch``: every rank draws the *same* permutation (seeded with ``seed + epoch``) and takes every N-th item,
  so at each step the ranks' batches together are exactly one contiguous slice of the permutation.
- :func:`sharding` hands these pieces to the one training loop, :func:`convlab.engine.fit`: each rank trains on
  its share through DDP, which averages the gradients over ranks during ``backward``. With equal per-rank batches
  that average *is* the gradient of the mean loss over the global batch, so N ranks with ``global_batch / N`` each
  take the same steps as one process with ``global_batch`` (up to float summation order) whenever nothing else
  depends on the batch split: see "BatchNorm" below.
- Validation under :func:`sharding` splits the set over ranks without padding (:func:`shard_indices`) and adds up
  the sums, so its metrics are exactly those of one process (the engine's evaluation loop on each share).
- :func:`all_reduce_sums` (loss sums and correct counts), :func:`main_first` (e.g. rank 0 fills a feature cache,
  the others then read it), :func:`rank_seed` (independent random streams per rank, derived from one seed).

BatchNorm. A BatchNorm layer in ``train()`` mode normalises with the statistics of *its* batch; under DDP that is
the per-rank batch, so N ranks no longer compute what one process computes. Three ways out: BatchNorm in eval
mode (ConvLab's default ``"frozen"`` policy for frozen stages; ``bn_stats="frozen"`` for trainable stages too, where
the affine weights still learn), ``torch.nn.SyncBatchNorm`` (statistics over the global batch; CUDA only in
PyTorch), or accepting per-rank statistics (what most DDP recipes do; results then depend on the world size).

Other random draws (dropout, augmentation) come from per-rank streams (:func:`rank_seed`), so ranks do not
repeat each other's draws; such runs agree with a single process in distribution, not number for number.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from convlab.engine import Sharding

if TYPE_CHECKING:  # annotations only: no import cost or cycle at run time
    from typing import Any


__all__ = [
    "DistEnv",
    "detect",
    "process_group",
    "main_first",
    "barrier",
    "rank_seed",
    "all_reduce_sums",
    "gather_objects",
    "broadcast_object",
    "epoch_order",
    "shard_indices",
    "sharding",
]


@dataclass(frozen=True)
class DistEnv:
    """Who this process is: ``rank`` of ``world_size``, and ``local_rank`` on its machine (its GPU index)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that logs and writes files."""
        return self.rank == 0


def _env_int(environ: Mapping[str, str], name: str, default: int) -> int:
    value = environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"{name}: expected an integer in the environment, got {value!r}") from None


def detect(environ: Mapping[str, str] | None = None) -> DistEnv:
    """Read ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` (set by ``torchrun``); a plain run is rank 0 of 1."""
    environ = os.environ if environ is None else environ
    world = _env_int(environ, "WORLD_SIZE", 1)
    rank = _env_int(environ, "RANK", 0)
    local = _env_int(environ, "LOCAL_RANK", rank)
    if world < 1 or not 0 <= rank < world or local < 0:
        raise ValueError(f"RANK={rank}, WORLD_SIZE={world}, LOCAL_RANK={local}: expected 0 <= RANK < WORLD_SIZE")
    return DistEnv(rank, world, local)


@contextlib.contextmanager
def process_group(env: DistEnv, device: torch.device) -> Iterator[torch.device]:
    """Join the process group for the run and leave it at the end (also after an exception).

    Yields this rank's device: on CUDA the GPU ``LOCAL_RANK`` (made the current device, as NCCL requires), else
    ``device`` unchanged. The backend is NCCL on CUDA and gloo on the CPU. A single process joins nothing.
    """
    if device.type == "cuda":
        if env.local_rank >= torch.cuda.device_count():
            raise ValueError(
                f"LOCAL_RANK={env.local_rank}, but this machine has {torch.cuda.device_count()} CUDA "
                "device(s): start at most that many processes per node (--nproc_per_node)"
            )
        device = torch.device("cuda", env.local_rank if env.distributed else (device.index or 0))
        torch.cuda.set_device(device)
    joined = False
    if env.distributed and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        kwargs = {"device_id": device} if device.type == "cuda" else {}
        dist.init_process_group(backend, rank=env.rank, world_size=env.world_size, **kwargs)
        joined = True
    try:
        yield device
    finally:
        if joined and dist.is_initialized():
            dist.destroy_process_group()


def _active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def barrier() -> None:
    """Wait for every rank (a no-op in a single process)."""
    if _active():
        dist.barrier()


@contextlib.contextmanager
def main_first(env: DistEnv) -> Iterator[None]:
    """Run the block on each machine's local rank 0 first, then on the other ranks.

    For work that writes shared files, e.g. a feature cache: local rank 0 extracts and stores the features, the
    others wait at a barrier and then find them cached. Each machine has its own cache, hence *local* rank 0.
    """
    first = env.local_rank == 0
    if not first:
        barrier()
    yield
    if first:
        barrier()


def rank_seed(seed: int, rank: int, stream: str) -> int:
    """A 63-bit seed for the random ``stream`` (e.g. ``"dropout"``, ``"augment"``) of ``rank``.

    Derived with numpy's ``SeedSequence`` so that ranks and streams get statistically independent generators
    (``seed + rank`` would make rank 1 of seed 0 replay rank 0 of seed 1).
    """
    entropy = [int(seed) % 2**63, int(rank), *stream.encode()]
    return int(np.random.SeedSequence(entropy).generate_state(1, np.uint64)[0] >> np.uint64(1))


def all_reduce_sums(values: list[float], device: torch.device) -> list[float]:
    """Element-wise sums over ranks of ``values`` (loss sums, correct counts, sample counts), in float64."""
    t = torch.tensor(values, dtype=torch.float64, device=device)
    if _active():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.tolist()


def gather_objects(obj: Any) -> list:
    """``[obj of rank 0, obj of rank 1, ...]`` on every rank (picklable objects, e.g. RNG states)."""
    if not _active():
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` on every rank (e.g. a checkpoint that only rank 0 can read from its disk)."""
    if not _active():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def epoch_order(sampler: torch.utils.data.DistributedSampler, epoch: int) -> torch.Tensor:
    """This rank's indices for ``epoch`` (``set_epoch`` reshuffles: the permutation is seeded with seed + epoch).

    When the data set size is not a multiple of the world size the sampler repeats the first few indices of the
    permutation to even out the shares (at most ``world_size - 1`` per epoch), as PyTorch's sampler always does.
    """
    sampler.set_epoch(epoch)
    return torch.as_tensor(list(sampler), dtype=torch.long)


def shard_indices(n: int, env: DistEnv) -> torch.Tensor:
    """Every ``world_size``-th index from ``rank``: an evaluation split with no padding and no repeats."""
    return torch.arange(env.rank, n, env.world_size)


def sharding(
    env: DistEnv,
    sampler: torch.utils.data.DistributedSampler,
    device: torch.device,
    train_module: nn.Module | None = None,
) -> Sharding:
    """How :func:`convlab.engine.fit` shares each epoch over the ranks of ``env``.

    Training takes :func:`epoch_order` of ``sampler`` (this rank's share, reshuffled per epoch) through
    ``train_module`` (e.g. ``DistributedDataParallel``, which averages gradients over ranks during ``backward``;
    with equal per-rank batches that average *is* the gradient of the mean loss over the global batch).
    Evaluation takes :func:`shard_indices`; loss sums and counts are added over ranks (:func:`all_reduce_sums`),
    so every rank sees the metrics of the whole set, exactly those of one process.
    """
    return Sharding(
        order=lambda epoch: epoch_order(sampler, epoch),
        eval_indices=lambda n: shard_indices(n, env),
        reduce=lambda values: all_reduce_sums(values, device),
        train_module=train_module,
    )
