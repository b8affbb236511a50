"""The benchmarks' latest results as one table: :func:`benchmark_summary` reads the JSON files the scripts in
``benchmarks/`` wrote (nothing is re-measured) into the rows notebook 00 shows, each with the key the README cites.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

__all__ = ["benchmark_summary"]


def _ratio(value: float) -> str:
    return f"{value:.2f}x"


def benchmark_summary(results: str | os.PathLike) -> list[dict]:
    """One row per headline figure in ``benchmarks/results/*_cpu.json``: benchmark, measure, result, key.

    Reads what the scripts last wrote (nothing is re-measured); a missing file gives a row saying so. Ratios compare
    contenders at equal resources (1 thread each, or every core each: convlab's threads against as many
    ``DataLoader`` workers), as a user choosing between them would run them; ``key`` is where the figure is in the
    JSON, as the README cites it.
    """
    folder = Path(results)
    rows: list[dict] = []

    def load(name: str) -> dict | None:
        path = folder / name
        if not path.is_file():
            rows.append({"benchmark": name, "measure": "-", "result": f"not run yet ({path} is missing)", "key": "-"})
            return None
        return json.loads(path.read_text())

    aug = load("augment_cpu.json")
    if aug is not None:
        for key, h in aug["ratios"].items():
            setting, size = key.split("@")
            cores = aug["results"][key]["cores"] if setting == "all_cores" else 1
            resources = (
                "1 thread each"
                if setting == "per_core"
                else f"all {cores} cores each: {cores} threads vs {cores} DataLoader workers"
            )
            rows.append(
                {
                    "benchmark": "augmentation (bench_augment.py)",
                    "measure": f"convlab fused pipeline vs {h['best_other']}, {size} px, {resources}",
                    "result": _ratio(h["ratio"]),
                    "key": f"augment_cpu.json: ratios.{key}.ratio",
                }
            )
        slowest = max(v["median_ms"] for v in aug["results"]["widget"].values())
        rows.append(
            {
                "benchmark": "augmentation (bench_augment.py)",
                "measure": "slowest preview re-render",
                "result": f"{slowest:.0f} ms",
                "key": "augment_cpu.json: results.widget",
            }
        )
    tr = load("transfer_cpu.json")
    if tr is not None:
        head = f"head only, {tr['head_only']['epochs']} epochs: cache vs recomputing"
        partial = f"first {tr['partial']['frozen_stages']} stages frozen: boundary cache vs none"
        for part, what in (("head_only", head), ("partial", partial)):
            rows.append(
                {
                    "benchmark": "feature cache (bench_transfer.py)",
                    "measure": f"{what} (speed-up)",
                    "result": _ratio(tr[part]["speedup_cold"]),
                    "key": f"transfer_cpu.json: {part}.speedup_cold",
                }
            )
    tta = load("tta_cpu.json")
    if tta is not None:
        acc = tta["acceptance"]
        same, dense = acc["tencrop_vs_10_single_same_best_batch"], acc["dense_vs_tencrop"]
        for name, what, field in (
            ("crops_vs_pil_tencrop", "building 10 crops vs PIL TenCrop (speed-up)", "speedup"),
            (
                "tencrop_vs_10_single_same_best_batch",
                f"10-crop vs ten single-crop evaluations, forwards of {same['batch']} each (time)",
                "ratio",
            ),
            (
                "dense_vs_tencrop",
                f"dense evaluation (whole image + mirror, Q={dense['scale']}) vs 10-crop (time)",
                "ratio",
            ),
        ):
            rows.append(
                {
                    "benchmark": "multi-crop (bench_tta.py)",
                    "measure": what,
                    "result": _ratio(acc[name][field]),
                    "key": f"tta_cpu.json: acceptance.{name}.{field}",
                }
            )
    shared = load("shared_cpu.json")
    if shared is not None:
        n, cpus = shared["kernels"], shared["machine"]["cpus"]
        for name, what in (("policy", "convlab's thread policy"), ("default", "PyTorch's default threads")):
            rows.append(
                {
                    "benchmark": "shared machine (bench_shared.py)",
                    "measure": f"{n} kernels at once on {cpus} cores, time vs alone: {what}",
                    "result": _ratio(shared["results"][name]["slowdown"]),
                    "key": f"shared_cpu.json: results.{name}.slowdown",
                }
            )
    return rows
