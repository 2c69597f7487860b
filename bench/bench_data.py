"""Data-pipeline throughput and fidelity figures (CPU, one worker).

  .venv/bin/python bench/bench_data.py [--data_dir sample_data/sequences] [--samples 24]

Prints, for nFrames 7 and a 64x64 LR patch (x4):
* training samples per second with per-patch flow computed one flow after another (threads=1, like the original),
  with the batch flow call (``--flow_threads`` threads), and with a warm flow cache;
* each as a ratio to the reference's per-sample flow cost: 6 flows x the reference pyflow time for a 64x64 LR pair
  (``flow_ref/manifest.json``, pair p01, measured on the project's 2-core VM);
* the flow cache's end-point error against per-patch flow on the same real patches (no augmentation);
* the PSNR between Pillow-bicubic and MATLAB-imresize LR frames of the same real HR frames.
"""

import argparse
import json
import os
import random
import sys
import tempfile
import time

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import dataset  # noqa: E402
import hardware  # noqa: E402
from dataset import DatasetFromFolder, degrade, modcrop  # noqa: E402
from flow_cache import crop_and_augment  # noqa: E402
from video_io import list_frames, load_rgb  # noqa: E402

REF_MANIFEST = os.path.join(ROOT, "tests", "data", "flow_ref", "manifest.json")
REF_MANIFEST_SHARED = "/work/shared/reference/flow_ref/manifest.json"


def reference_patch_seconds() -> float:
    for path in (REF_MANIFEST, REF_MANIFEST_SHARED):
        if os.path.exists(path):
            with open(path) as f:
                pairs = json.load(f)["pairs"]
            return next(p["median_seconds"] for p in pairs if p["category"] == "64x64 LR patch")
    raise SystemExit("flow_ref/manifest.json not found")


def make_ds(args, **kw) -> DatasetFromFolder:
    return DatasetFromFolder(args.data_dir, 7, 4, kw.pop("aug", True), "sep_trainlist.txt", False, 64, True, **kw)


def samples_per_second(ds, n: int, seed: int = 0) -> float:
    ds._rng = random.Random(seed)
    idx = [i % len(ds) for i in range(n)]
    start = time.perf_counter()
    for i in idx:
        ds[i]
    return n / (time.perf_counter() - start)


def epe(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sqrt(((a - b) ** 2).sum(axis=0))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data_dir", default=os.path.join(ROOT, "sample_data", "sequences"))
    p.add_argument("--eval_dir", default=os.path.join(ROOT, "sample_data", "eval", "bikes"))
    p.add_argument("--samples", type=int, default=24)
    p.add_argument("--flow_threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(1)
    print(hardware.describe_cpu())
    ref = 6 * reference_patch_seconds()
    print(f"reference flow cost per sample: 6 x {ref / 6:.4f} s = {ref:.3f} s  ({1 / ref:.2f} samples/s)")

    rows = []
    rows.append(("per-patch flow, threads=1", samples_per_second(make_ds(args, flow_threads=1), args.samples)))
    rows.append((f"per-patch flow, batch call threads={args.flow_threads}",
                 samples_per_second(make_ds(args, flow_threads=args.flow_threads), args.samples)))
    with tempfile.TemporaryDirectory() as cache:
        ds = make_ds(args, flow_threads=args.flow_threads, flow_cache=cache)
        t0 = time.perf_counter()
        for i in range(len(ds)):
            ds.full_frame_flows(i)
        fill = (time.perf_counter() - t0) / len(ds)
        rows.append(("flow cache (warm)", samples_per_second(ds, args.samples)))

        # Fidelity of the cache: whole-frame flow cropped vs flow computed on the patch (no augmentation).
        plain = make_ds(args, flow_threads=args.flow_threads, aug=False)
        rng = random.Random(1)
        errs, errs16 = [], []
        for i in range(len(plain)):
            _, lr, nbs, _ = plain.lr_frames(i)
            full = ds.full_frame_flows(i)
            exact_full = dataset.compute_flows(lr, nbs, args.flow_threads)
            for _ in range(2):
                y, x = rng.randrange(0, lr.shape[0] - 63), rng.randrange(0, lr.shape[1] - 63)
                patch = dataset.compute_flows(lr[y : y + 64, x : x + 64], [n[y : y + 64, x : x + 64] for n in nbs],
                                              args.flow_threads)
                cached = crop_and_augment(full, y, x, 64, 64, {})
                for a, b, c in zip(patch, cached, exact_full):
                    errs.append(epe(a, b))
                    errs16.append(epe(c[:, y : y + 64, x : x + 64], b))
        errs = np.concatenate([e.ravel() for e in errs])
        errs16 = np.concatenate([e.ravel() for e in errs16])
    print(f"\n{hardware.describe_cpu()}\n{'configuration':44s} {'samples/s':>10s} {'x reference':>12s}")
    for name, sps in rows:
        print(f"{name:44s} {sps:10.2f} {sps * ref:12.2f}")
    print(f"flow cache fill: {fill:.3f} s per sequence (6 whole-frame flows of {lr.shape[1]}x{lr.shape[0]} LR)")
    print(f"flow cache vs per-patch flow, EPE over {len(plain)} sequences x 2 patches x 6 flows: mean {errs.mean():.3f}"
          f" px, median {np.median(errs):.3f} px, 95th pct {np.percentile(errs, 95):.3f} px"
          f" (float16 storage alone: max {errs16.max():.4f} px)")
    print(f"   (for scale: mean flow magnitude of the last sequence "
          f"{float(np.sqrt((full.astype(np.float32) ** 2).sum(axis=1)).mean()):.3f} px)")

    # PIL vs MATLAB bicubic degradation on real HR frames.
    frames = []
    for line in open(os.path.join(args.data_dir, "sep_trainlist.txt")).read().split():
        frames.append(os.path.join(args.data_dir, line, "im4.png"))
    if os.path.isdir(args.eval_dir):
        frames += list_frames(args.eval_dir)[:10]
    psnrs, means = [], []
    for path in frames:
        hr = modcrop(load_rgb(path), 4)
        a = degrade(hr, 4, "pil").astype(np.float64)
        b = degrade(hr, 4, "matlab").astype(np.float64)
        mse = ((a - b) ** 2).mean()
        psnrs.append(10 * np.log10(255 ** 2 / mse) if mse > 0 else float("inf"))
        means.append(np.abs(a - b).mean())
    print(hardware.describe_cpu())
    print(f"PIL vs MATLAB x4 LR on {len(frames)} real frames: PSNR mean {np.mean(psnrs):.2f} dB "
          f"(min {np.min(psnrs):.2f}, max {np.max(psnrs):.2f}), mean |diff| {np.mean(means):.2f} grey levels")


if __name__ == "__main__":
    main()
