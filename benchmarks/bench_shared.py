"""A seminar server in miniature: N kernels run the same course workload at once on this machine's cores.

The workload is notebook 02's: a frozen MobileNetV2 extracts the pooled features of the food photos (convolutions,
well threaded), then a softmax head trains on them for many short epochs (tiny ops, where threads mostly wait for
each other). Each contender is N processes started together (a barrier), each timing its own workload:

- ``policy``: convlab's thread policy with ``CONVLAB_SHARED_KERNELS=N`` and ``OMP_WAIT_POLICY=PASSIVE`` (what
  ``python -m convlab open`` and README's server section set up);
- ``default``: PyTorch's defaults (one thread per core in every process, OpenMP's default waiting).

Each is compared with its own solo time: one process with the same settings, alone. Fair sharing of C cores among
N processes gives N / C x the solo time at best for a process that used one core alone; a contender whose threads
fight does worse. Writes ``benchmarks/results/shared_cpu.json`` and prints a markdown table.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import platform
import statistics
import time

from harness import results_path, write_results


def _workload(settings: dict, barrier, queue, photos: int, epochs: int) -> None:
    """One kernel: set up (untimed), wait for the others, then time the workload."""
    os.environ.update(settings)
    import torch

    from convlab.backbones import load_backbone
    from convlab.data import load_food
    from convlab.threads import apply_thread_policy
    from convlab.transfer import Preprocess

    if "CONVLAB_SHARED_KERNELS" in settings:
        apply_thread_policy(verbose=False)
    food = load_food(seed=0)
    model = load_backbone("mobilenet_v2").eval()
    prep = Preprocess.from_spec(model.spec, size=160)
    images = prep(food.train.images[:photos])
    labels = food.train.labels[:photos]
    barrier.wait(timeout=600)
    t0 = time.perf_counter()
    with torch.no_grad():
        feats = torch.cat([model.forward_features(images[i : i + 8]) for i in range(0, len(images), 8)])
    t_extract = time.perf_counter() - t0
    torch.manual_seed(0)
    head = torch.nn.Linear(feats.shape[1], len(food.classes))
    opt = torch.optim.Adam(head.parameters(), lr=1e-3)
    for _ in range(epochs):
        for i in range(0, len(feats), 16):
            loss = torch.nn.functional.cross_entropy(head(feats[i : i + 16]), labels[i : i + 16])
            opt.zero_grad()
            loss.backward()
            opt.step()
    total = time.perf_counter() - t0
    queue.put(
        {"threads": torch.get_num_threads(), "extract_s": t_extract, "train_s": total - t_extract, "total_s": total}
    )


def run(settings: dict, n: int, photos: int, epochs: int) -> list[dict]:
    """Start ``n`` processes with ``settings`` in their environment; return each one's timings."""
    ctx = mp.get_context("spawn")
    barrier, queue = ctx.Barrier(n), ctx.Queue()
    saved = dict(os.environ)
    os.environ.update(settings)  # spawned children read OMP_* when their OpenMP runtime starts
    try:
        procs = [ctx.Process(target=_workload, args=(settings, barrier, queue, photos, epochs)) for _ in range(n)]
        for p in procs:
            p.start()
        out = [queue.get(timeout=1800) for _ in procs]
        for p in procs:
            p.join(timeout=60)
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--kernels", type=int, default=4, help="processes sharing the machine (default 4)")
    ap.add_argument("--photos", type=int, default=96)
    ap.add_argument("--epochs", type=int, default=300)
    ap.add_argument("--repeats", type=int, default=2, help="runs of each contender; medians reported")
    ap.add_argument("--quick", action="store_true", help="a tiny run to check the script")
    args = ap.parse_args()
    if args.quick:
        args.photos, args.epochs, args.repeats = 16, 10, 1
    cpus = len(os.sched_getaffinity(0))
    contenders = {
        "policy": {"CONVLAB_SHARED_KERNELS": str(args.kernels), "OMP_WAIT_POLICY": "PASSIVE"},
        "default": {},
    }
    load_start = os.getloadavg()
    results = {}
    for name, settings in contenders.items():
        solo, shared = [], []
        for _ in range(args.repeats):  # interleaved: solo, then shared, so drift hits both
            solo.append(run(settings, 1, args.photos, args.epochs)[0]["total_s"])
            runs = run(settings, args.kernels, args.photos, args.epochs)
            shared.append(statistics.median(r["total_s"] for r in runs))
            threads = runs[0]["threads"]
        s, m = statistics.median(solo), statistics.median(shared)
        results[name] = {
            "settings": settings,
            "threads_per_process": threads,
            "solo_s": s,
            "shared_median_s": m,
            "slowdown": m / s,
            "solo_runs_s": solo,
            "shared_runs_s": shared,
        }
        print(
            f"{name}: {threads} thread(s) each; solo {s:.2f} s, {args.kernels} at once {m:.2f} s each: {m / s:.2f}x",
            flush=True,
        )
    out = {
        "machine": {
            "python": platform.python_version(),
            "cpus": cpus,
            "processor": platform.processor(),
            "load_avg_at_start": load_start,
            "load_avg_at_end": os.getloadavg(),
        },
        "kernels": args.kernels,
        "photos": args.photos,
        "epochs": args.epochs,
        "repeats": args.repeats,
        "quick": args.quick,
        "fair_share_slowdown": args.kernels / cpus,
        "results": results,
    }
    if not args.quick:
        write_results(results_path("shared", "cpu", quick=False), out)
    print(
        f"\n| contender | threads each | solo s | {args.kernels} at once, s each | slowdown (fair share "
        f"{args.kernels / cpus:.1f}x) |\n|---|---|---|---|---|"
    )
    for name, r in results.items():
        print(
            f"| {name} | {r['threads_per_process']} | {r['solo_s']:.2f} | {r['shared_median_s']:.2f} | "
            f"{r['slowdown']:.2f}x |"
        )


if __name__ == "__main__":
    main()
