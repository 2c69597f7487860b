"""Benchmark pyflow against the reference Coarse2Fine timings and outputs.

For every reference pair (tests/data/flow_ref plus, when present, the larger ones in ../shared/reference/flow_ref):
single-thread time of pyflow.coarse2fine_flow (median of --repeats, wall and thread CPU time), the speed-up
versus the reference's recorded median time (manifest.json, same kind of 2-core machine), and the exactness
(mean/max endpoint error, im2W max difference). Then the batch call's throughput: the 6 flows of one 7-frame
sample with 2 threads versus 6 sequential calls, measured in the same run.

    .venv/bin/python bench/bench_flow.py [--repeats 5] [--skip-large]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import pyflow  # noqa: E402

DIRS = [os.path.join(ROOT, "tests", "data", "flow_ref"), os.path.join(ROOT, "..", "shared", "reference", "flow_ref")]


def find_pairs() -> list[tuple[dict, str]]:
    found: dict[str, tuple[dict, str]] = {}
    for d in DIRS:
        manifest = os.path.join(d, "manifest.json")
        if not os.path.exists(manifest):
            continue
        for entry in json.load(open(manifest))["pairs"]:
            path = os.path.join(d, entry["file"])
            if entry["name"] not in found and os.path.exists(path):
                found[entry["name"]] = (entry, path)
    return [found[k] for k in sorted(found)]


def timed(fn, repeats: int) -> tuple[float, float]:
    """Median wall seconds and median thread CPU seconds of fn()."""
    walls, cpus = [], []
    for _ in range(repeats):
        w, c = time.perf_counter(), time.thread_time()
        fn()
        cpus.append(time.thread_time() - c)
        walls.append(time.perf_counter() - w)
    return statistics.median(walls), statistics.median(cpus)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--skip-large", action="store_true", help="skip pairs larger than 200x200")
    args = ap.parse_args()

    print(f"{'pair':26s} {'size':>9s} {'ref s':>7s} {'wall s':>7s} {'cpu s':>7s} {'x wall':>7s} {'x cpu':>6s}"
          f" {'EPE mean':>9s} {'EPE max':>8s} {'im2W max':>8s}")
    for entry, path in find_pairs():
        h, w = entry["height"], entry["width"]
        if args.skip_large and h * w > 200 * 200:
            continue
        d = np.load(path)
        im1 = np.ascontiguousarray(d["im1"].astype(np.float64) / 255.0)
        im2 = np.ascontiguousarray(d["im2"].astype(np.float64) / 255.0)
        params = entry["params"]
        u, v, im2w = pyflow.coarse2fine_flow(im1, im2, **params)
        epe = np.sqrt((u - d["u"]) ** 2 + (v - d["v"]) ** 2)
        wdiff = np.abs(im2w.reshape(d["im2W"].shape) - d["im2W"]).max()
        wall, cpu = timed(lambda im1=im1, im2=im2, params=params: pyflow.coarse2fine_flow(im1, im2, **params),
                          args.repeats if h * w <= 200 * 200 else max(1, args.repeats // 2))
        ref = entry["median_seconds"]
        print(f"{entry['name']:26s} {w:>4d}x{h:<4d} {ref:7.4f} {wall:7.4f} {cpu:7.4f} {ref / wall:7.2f}"
              f" {ref / cpu:6.2f} {epe.mean():9.2e} {epe.max():8.1e} {wdiff:8.1e}")

    # Batch: one centre frame and its 6 neighbours (nFrames = 7), 64x64 LR patches and 112x64 Vimeo frames.
    for entry, path in find_pairs():
        if entry["name"] not in ("p01_vtest_lr64crop", "p04_bikes_vimeo112x64"):
            continue
        d = np.load(path)
        centre = d["im1"]
        neighbours = [np.roll(d["im2"], k, axis=1) for k in range(6)]
        seq, _ = timed(lambda c=centre, n=neighbours: [pyflow.coarse2fine_flow(c, x, **pyflow.RBPN_PARAMS) for x in n],
                       args.repeats)
        par, _ = timed(lambda c=centre, n=neighbours: pyflow.rbpn_flows(c, n, threads=2), args.repeats)
        print(f"batch {entry['name']}: 6 flows sequential {seq:.4f} s, rbpn_flows(threads=2) {par:.4f} s -> "
              f"{6 / par:.1f} flows/s, x{seq / par:.2f} vs sequential (reference 6 calls: "
              f"{6 * entry['median_seconds']:.4f} s, x{6 * entry['median_seconds'] / par:.2f})")
    print(f"load average during the run: {os.getloadavg()} on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
