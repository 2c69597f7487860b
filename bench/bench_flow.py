"""Benchmark pyflow against the reference Coarse2Fine timings and outputs.

For every reference pair (tests/data/flow_ref plus, when present, the larger ones in ../shared/reference/flow_ref):
single-thread time of pyflow.coarse2fine_flow (median of --repeats, wall and thread CPU time), the speed-up
versus the reference's recorded median time (manifest.json, same kind of 2-core machine), and the exactness
(mean/max endpoint error, im2W max difference). Then the batch call's throughput: the 6 flows of one 7-frame
sample with 2 threads versus 6 sequential calls, measured in the same run.

Then pyflow.torch_flow.flow_batch (RBPN_PARAMS, uint8 RGB pairs of a moving texture): flows/s on the CPU (torch
threads = --torch-threads, default all cores) and, where CUDA exists, on the GPU (inputs already on the device,
synchronised), each as a ratio to the C++ batch call (coarse2fine_flow_batch, all cores) on the same pairs in the
same run, with the mean end-point error between the two. --sizes / --batches / --torch-devices choose the rows.

    .venv/bin/python bench/bench_flow.py [--repeats 5] [--skip-large]
    .venv/bin/python bench/bench_flow.py --torch-only --sizes 112x64,180x144 --batches 6 --torch-devices cpu
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

import hardware  # noqa: E402
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


def moving_texture(height: int, width: int, n: int, seed: int = 0) -> tuple[np.ndarray, list[np.ndarray]]:
    """A centre frame and n neighbours of a smooth random texture shifted by up to 3 px: uint8 RGB (H, W, 3)."""
    rng = np.random.default_rng(seed)
    big = rng.random((height + 8, width + 8, 3))
    for _ in range(3):
        big = (big + np.roll(big, 1, 0) + np.roll(big, -1, 0) + np.roll(big, 1, 1) + np.roll(big, -1, 1)) / 5
    big = np.round((big - big.min()) / (big.max() - big.min()) * 255).astype(np.uint8)
    shifts = [(k % 7 - 3, (k // 7) % 7 - 3) for k in range(n)]
    return big[4 : 4 + height, 4 : 4 + width], [big[4 + dy : 4 + dy + height, 4 + dx : 4 + dx + width]
                                                for dx, dy in shifts]


def bench_torch(args) -> None:
    """flows/s of torch_flow.flow_batch on CPU / CUDA against the C++ batch call on all cores, same pairs."""
    import torch

    from pyflow import torch_flow

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    torch.set_num_threads(args.torch_threads or cores)
    devices = [d for d in args.torch_devices.split(",") if d == "cpu" or (d == "cuda" and torch.cuda.is_available())]
    big = torch.cuda.is_available()  # the large rows take many minutes on a small CPU
    sizes = args.sizes or ("112x64,180x144,448x256,1280x720" if big else "112x64,180x144")
    batches = args.batches or ("6,48" if big else "6")
    gpu = f", GPU {torch.cuda.get_device_name(0)}" if "cuda" in devices else ", no CUDA GPU"
    print(f"torch flow_batch (RBPN_PARAMS), flows/s, x = versus the C++ batch call on {cores} cores in this run;"
          f" torch {torch.__version__}, {torch.get_num_threads()} torch thread(s){gpu}")
    print(f"{'size':>9s} {'batch':>5s} {'C++':>8s} " + " ".join(f"{'torch-' + d:>11s} {'x':>6s} {'EPE':>7s}"
                                                             for d in devices))
    for size in sizes.split(","):
        width, height = (int(x) for x in size.lower().split("x"))
        for batch in (int(b) for b in batches.split(",")):
            centre, neighbours = moving_texture(height, width, batch)
            cpp = pyflow.coarse2fine_flow_batch(centre, neighbours, threads=0, **pyflow.RBPN_PARAMS)
            t_cpp, _ = timed(lambda c=centre, n=neighbours: pyflow.coarse2fine_flow_batch(
                c, n, threads=0, **pyflow.RBPN_PARAMS), args.torch_repeats)
            row = f"{width:>4d}x{height:<4d} {batch:>5d} {batch / t_cpp:8.2f} "
            for dev in devices:
                c_t = torch.from_numpy(centre).permute(2, 0, 1)[None].to(dev)
                n_t = torch.from_numpy(np.stack(neighbours)).permute(0, 3, 1, 2).to(dev)

                def run(c_t=c_t, n_t=n_t, dev=dev):
                    flow = torch_flow.flow_batch(c_t, n_t, **pyflow.RBPN_PARAMS)
                    if dev == "cuda":
                        torch.cuda.synchronize()
                    return flow

                flow = run().double().cpu().numpy()  # also the warm-up
                t_dev, _ = timed(run, args.torch_repeats)
                epe = np.mean([np.hypot(f[0] - u, f[1] - v).mean() for f, (u, v, _) in zip(flow, cpp)])
                row += f"{batch / t_dev:11.2f} {t_cpp / t_dev:6.2f} {epe:7.4f} "
            print(row, flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--skip-large", action="store_true", help="skip pairs larger than 200x200")
    ap.add_argument("--sizes", help="torch rows: WxH list (default 112x64,180x144,448x256,1280x720 with CUDA, "
                    "else 112x64,180x144)")
    ap.add_argument("--batches", help="torch rows: pairs per batch, a list (default 6,48 with CUDA, else 6)")
    ap.add_argument("--torch-devices", default="cpu,cuda", help="torch rows: cpu and/or cuda (if available)")
    ap.add_argument("--torch-threads", type=int, default=0, help="torch CPU threads (0 = all cores)")
    ap.add_argument("--torch-repeats", type=int, default=3, help="timed runs per torch row (median)")
    ap.add_argument("--torch-only", action="store_true", help="only the torch rows")
    ap.add_argument("--no-torch", action="store_true", help="skip the torch rows")
    args = ap.parse_args()

    print(f"{hardware.describe_cpu()} (pyflow threads as listed below)")
    if args.torch_only:
        bench_torch(args)
        print(f"load average during the run: {os.getloadavg()} on {os.cpu_count()} cores")
        return
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
    if not args.no_torch:
        bench_torch(args)
    print(f"load average during the run: {os.getloadavg()} on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
