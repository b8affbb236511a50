"""Caches shared by processes started at the same moment: all succeed, and the result equals one lone run.

Each worker is a fresh interpreter (``multiprocessing`` spawn, as on macOS and Windows, and as two ``convlab train``
runs or two nodes would be). A barrier releases them together once they are ready, so they race for the same entry
instead of finishing one after another; every wait is bounded.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import traceback
from pathlib import Path

import pytest
import torch

from convlab.assets import Asset, AssetFile, fetch, local_folder
from convlab.data import decode_image_file

TIMEOUT_S = 300  # per wait; a shared 2-core machine starting 4 interpreters needs well under a minute
PHOTOS = (("E", "fruits"), ("D", "other_vegetables"), ("P", "marine_fish"))


def _food_photos(per_class: int) -> tuple[list[torch.Tensor], list[int], tuple[str, ...]]:
    folder = fetch("food_photos")
    images, labels = [], []
    for label, (letter, _) in enumerate(PHOTOS):
        for path in sorted(folder.glob(f"{letter}*.jpeg"))[:per_class]:
            images.append(decode_image_file(path))
            labels.append(label)
    return images, labels, tuple(name for _, name in PHOTOS)


def _extract(root: Path, images, labels, classes):
    """What every worker runs (and the lone reference run): pooled features of the photos at 32 px."""
    from convlab.backbones import load_backbone
    from convlab.data import ImageSet
    from convlab.featcache import FeatureCache
    from convlab.transfer import Preprocess

    model = load_backbone("mobilenet_v2", num_classes=3)
    data = ImageSet(images, labels, classes)
    # 64 px and 12 shards: an extraction long enough that the four really overlap (the frozen part runs once here)
    return lambda: FeatureCache(root).get(
        model, data, 7, Preprocess(size=64, resize=72), shard_size=2, batch_size=2, progress=False
    )


def _extract_worker(root, images, labels, classes, barrier, results) -> None:
    try:
        torch.set_num_threads(1)  # the same kernels as the reference run, so the features must match bit for bit
        run = _extract(root, images, labels, classes)
        barrier.wait(timeout=TIMEOUT_S)
        feats = run()
        results.put((feats.report.hit, feats.features.numpy().copy(), feats.labels.numpy().copy()))  # plain pickles
    except BaseException:
        results.put(traceback.format_exc())


def _toy_asset(mirror: Path, i: int) -> Asset:
    payload = f"toy asset {i}\n".encode() * 1000
    f = AssetFile("toy.bin", hashlib.sha256(payload).hexdigest(), len(payload))
    return Asset(
        name=f"toy{i}",
        kind="weights",
        files=(f,),
        licence="MIT",
        provenance="test",
        homepage="-",
        sources=(local_folder(str(mirror), "test mirror"),),
        install_hint="-",
    )


def _fill_mirror(mirror: Path, n: int) -> None:
    for i in range(n):  # one folder per asset, each with its own payload
        (mirror / str(i)).mkdir(parents=True)
        (mirror / str(i) / "toy.bin").write_bytes(f"toy asset {i}\n".encode() * 1000)


def _fetch_all(mirror: Path, n: int) -> list[Path]:
    folders = [fetch("mobilenet_v2", allow_network=False)]
    folders += [fetch(_toy_asset(mirror / str(i), i), allow_network=False) for i in range(n)]
    return folders


def _fetch_worker(mirror, n, barrier, results) -> None:
    try:
        barrier.wait(timeout=TIMEOUT_S)
        _fetch_all(mirror, n)
        results.put(None)
    except BaseException:
        results.put(traceback.format_exc())


def _race(target, args: tuple, workers: int) -> list:
    """Start ``workers`` spawned processes of ``target(*args, barrier, results)``; their results (any order)."""
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(workers), ctx.Queue()
    procs = [ctx.Process(target=target, args=(*args, barrier, results)) for _ in range(workers)]
    for p in procs:
        p.start()
    try:
        out = [results.get(timeout=TIMEOUT_S) for _ in procs]
        for p in procs:
            p.join(timeout=TIMEOUT_S)
        assert [p.exitcode for p in procs] == [0] * workers
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join(timeout=10)
    crashes = [r for r in out if isinstance(r, str)]
    assert not crashes, "a worker crashed:\n" + "\n".join(crashes)
    return out


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.mark.slow
def test_four_processes_extracting_one_entry_at_once_all_get_the_lone_runs_features(tmp_path):
    images, labels, classes = _food_photos(per_class=8)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        lone = _extract(tmp_path / "lone", images, labels, classes)()
    finally:
        torch.set_num_threads(before)
    assert not lone.report.hit and lone.report.computed_shards == 12

    out = _race(_extract_worker, (tmp_path / "shared", images, labels, classes), workers=4)
    assert sorted(hit for hit, _, _ in out) == [False, True, True, True], (
        "exactly one process extracts; 3 wait and read"
    )
    for _, features, got_labels in out:
        assert torch.equal(torch.from_numpy(features), lone.features) and torch.equal(
            torch.from_numpy(got_labels), lone.labels
        )
    shared = tmp_path / "shared" / lone.path.name
    assert not (shared / "partial").exists()
    for name in ("features.npy", "labels.npy"):
        assert (shared / name).read_bytes() == (lone.path / name).read_bytes(), name
    assert sorted(_files(shared)) == [".lock", "features.npy", "labels.npy", "manifest.json"], "no temporary file left"


@pytest.mark.slow
def test_two_fetches_at_once_both_succeed_and_leave_what_one_fetch_leaves(tmp_home, tmp_path, monkeypatch):
    n = 12  # a dozen small assets besides the weights: a dozen more chances for the two to collide
    _fill_mirror(tmp_path / "mirror", n)
    assert _race(_fetch_worker, (tmp_path / "mirror", n), workers=2) == [None, None]

    raced = _fetch_all(tmp_path / "mirror", n)  # nothing left to do: verified files and readable records
    monkeypatch.setenv("CONVLAB_HOME", str(tmp_path / "lone_home"))
    lone = _fetch_all(tmp_path / "mirror", n)
    for a, b in zip(raced, lone):
        assert _files(a) == _files(b), f"{a.name}: the two racing fetches left other files than one fetch"
    assert sorted(_files(raced[0])) == [".lock", ".source.json", "mobilenet_v2-b0353104.pth"]


# ----------------------------------------------------------------------------- the lock, checked without a race
def _held_by_another(lock: Path) -> bool:
    """Whether an exclusive ``flock`` on ``lock`` is held elsewhere (another open file counts, even in this process)."""
    fcntl = pytest.importorskip("fcntl")
    if not lock.exists():
        return False
    with open(lock, "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(f, fcntl.LOCK_UN)
        return False


def test_extraction_holds_the_entrys_lock_and_a_hit_needs_none(tmp_path):
    from convlab.backbones import load_backbone
    from convlab.data import ImageSet
    from convlab.featcache import FeatureCache, cache_key
    from convlab.transfer import Preprocess

    prep, model = Preprocess(size=32, resize=36), load_backbone("mobilenet_v2", num_classes=3)
    images, labels, classes = _food_photos(per_class=1)
    cache, seen = FeatureCache(tmp_path), []

    class Watched(ImageSet):  # records, on every read during the extraction, whether the entry is locked
        def __getitem__(self, i):
            seen.append(_held_by_another(cache.path_for(cache_key(model, plain, 7, prep)) / ".lock"))
            return super().__getitem__(i)

    plain = ImageSet(images, labels, classes)
    watched = Watched(images, labels, classes)
    cache.get(model, watched, 7, prep, progress=False)
    assert seen[2:] == [True] * 3, "the entry must be locked while it is extracted (the first 2 reads are the probe)"
    seen.clear()
    assert cache.get(model, watched, 7, prep, progress=False).report.hit
    assert seen[:2] == [False, False], "the lock is released after the extraction"


def test_fetch_installs_under_the_assets_lock(tmp_home, tmp_path):
    mirror, locked = tmp_path / "mirror", []
    _fill_mirror(mirror, 1)
    asset = _toy_asset(mirror / "0", 0)

    class Watching:
        remote = False

        def describe(self):
            return "watching mirror"

        def locate(self, file):
            return asset.sources[0].locate(file)

        def retrieve(self, file, dest, progress):
            locked.append(_held_by_another(asset.folder / ".lock"))
            asset.sources[0].retrieve(file, dest, progress)

    watched = Asset(**{**asset.__dict__, "sources": (Watching(),)})
    fetch(watched, allow_network=False)
    assert locked == [True]
    assert not _held_by_another(asset.folder / ".lock")


def test_atomic_path_renames_on_success_and_leaves_the_old_file_on_error(tmp_path):
    import os

    from convlab.atomicio import atomic_path

    target = tmp_path / "weights.bin"
    target.write_bytes(b"old")
    with pytest.raises(ValueError, match="refused"), atomic_path(target, suffix=".part") as tmp:
        tmp.write_bytes(b"half")
        raise ValueError("refused")  # e.g. a hash mismatch
    assert target.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["weights.bin"]
    old_umask = os.umask(0o027)
    try:
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"new")
    finally:
        os.umask(old_umask)
    assert target.read_bytes() == b"new" and sorted(p.name for p in tmp_path.iterdir()) == ["weights.bin"]
    assert target.stat().st_mode & 0o777 == 0o640  # like open(): the umask, not mkstemp's private 0600


_HOLD_LOCK = """
import sys
from convlab.atomicio import file_lock
with file_lock(sys.argv[1]):
    print("held", flush=True)
    sys.stdin.readline()
"""


def test_a_lock_that_must_not_wait_is_refused_while_held_and_free_once_its_holder_is_killed(tmp_path):
    import os
    import signal
    import subprocess
    import sys

    from convlab.atomicio import LockBusyError, file_lock

    lock = tmp_path / "out" / ".lock"
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join(
            filter(None, [str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH")])
        ),
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD_LOCK, str(lock)], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(LockBusyError, match="locked by another process"), file_lock(lock, wait=False):
            pass
        holder.send_signal(signal.SIGKILL)  # no clean-up runs: the lock file stays, the kernel frees the lock
        holder.wait(timeout=60)
        assert lock.exists()
        # taken now; a second take (another thread of this process, or this one) is refused too
        with file_lock(lock, wait=False), pytest.raises(LockBusyError), file_lock(lock, wait=False):
            pass
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
