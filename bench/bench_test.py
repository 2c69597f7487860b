"""Inference speed, peak memory and quality of the full x4 RBPN on a 176x144 clip: fp32 vs bf16 vs auto.

One run measures every configuration on the same frames and prints ratios against the fp32 baseline:
frames/s (model only; the flows are computed once up front and shared), peak resident memory above the level
before the first timed frame (sampled from /proc every 5 ms; each configuration runs in its own process, so the
figures are comparable), PSNR-Y of each configuration against the ground truth and the change against fp32, and
PSNR-Y of each output against the fp32 output. It also measures tiled (--tile) against whole-frame fp32 output.
``auto`` is ``--precision auto`` (what ``hardware.resolve_precision`` picks on this machine, with channels_last as
the tester uses it); the run checks that it is within 10% of the faster of fp32 and bf16. Every table is headed by
the CPU line (model, native bf16 or not, AMX, threads).

Clip: frames of the held-out ``bikes.mp4`` (640x272; found like ``DatasetFetcher.py --sample`` finds it, or
``--clip``), resized to a 704x576 "HR" (Vid4/CIF-like), degraded with MATLAB bicubic to 176x144 LR. Without
``--model`` the network is the full-size RBPN with random weights: the absolute PSNR is meaningless but speed,
memory and the fp32-vs-bf16 output difference are measured. With ``--model`` (e.g. the shipped compact
``weights/iSeeBetter_x4_psnr.pth``) the PSNR change is that of a trained network.

    .venv/bin/python bench/bench_test.py --frames 2 [--model weights/iSeeBetter_x4_psnr.pth] [--threads N]
    .venv/bin/python bench/bench_test.py --frames 1 --tile 0 --configs "fp32,bf16 +channels_last,auto +channels_last"
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from typing import Optional

import cv2
import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import hardware  # noqa: E402
import metrics  # noqa: E402
from dataset import degrade, neighbour_offsets  # noqa: E402
from inference import (  # noqa: E402
    check_precision,
    neighbour_index,
    prepare_model,
    sr_image,
    super_resolve,
    window_flows,
)
from video_io import iter_video  # noqa: E402


def find_eval_clip() -> str:
    """bikes.mp4 from DatasetFetcher's clip cache (fetched there by ``DatasetFetcher.py --sample``)."""
    import DatasetFetcher

    path = DatasetFetcher._find_clip("bikes.mp4", DatasetFetcher.DEFAULT_CLIP_CACHE, [])
    if path is None:
        sys.exit(f"bikes.mp4 not found in {DatasetFetcher.DEFAULT_CLIP_CACHE}: run `python DatasetFetcher.py --sample` "
                 "once, or pass --clip PATH")
    return path


class PeakRSS:
    """Peak resident memory (MiB) above the level at entry, sampled in a background thread."""

    def __enter__(self):
        self.base = hardware.resident_mib()
        self.peak = self.base
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, hardware.resident_mib())
            time.sleep(0.005)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, hardware.resident_mib())
        self.extra = self.peak - self.base


def load_clip(n: int, path: str):
    hr = []
    for frame in iter_video(path):
        hr.append(cv2.resize(frame, (704, 576), interpolation=cv2.INTER_CUBIC))
        if len(hr) == n:
            break
    return hr, [degrade(h, 4, "matlab") for h in hr]


CONFIGS = {
    "fp32": ("fp32", False, 0),
    "fp32 +channels_last": ("fp32", True, 0),
    "bf16 +channels_last": ("bf16", True, 0),
    "auto +channels_last": ("auto", True, 0),
    "fp32 +channels_last tiled": ("fp32", True, 1),
}


def build_net(model_path: Optional[str]):
    """(network, residual method) from a checkpoint, or the full-size RBPN with seeded random weights."""
    torch.manual_seed(0)
    if model_path:
        import checkpoint

        net, config = checkpoint.build_generator(model_path, expect={"scale_factor": 4})
        return net, config.get("residual")
    import rbpn

    return rbpn.Net(scale_factor=4, **rbpn.DEFAULT_CONFIG), None


def child(name: str, inputs_path: str, out_path: str, model_path: Optional[str], tile: int, overlap: int) -> None:
    """One configuration in a fresh process: time the frames, sample peak RSS, save the outputs."""
    precision, cl, tiled = CONFIGS[name]
    net, _ = build_net(model_path)
    model = prepare_model(net, torch.device("cpu"), channels_last=cl)
    if not cl:
        model = model.to(memory_format=torch.contiguous_format)
    windows = torch.load(inputs_path, weights_only=False)["windows"]
    _, lr0, nbs0, flows0 = windows[0]
    # Warm-up on a small crop (oneDNN kernel selection), not timed.
    super_resolve(model, lr0[:32, :32], [n[:32, :32] for n in nbs0], [f[:, :32, :32] for f in flows0],
                  precision=precision, channels_last=cl)
    outs = []
    with PeakRSS() as mem:
        start, cpu_start = time.perf_counter(), time.process_time()
        for lr, nbs, flows in (w[1:] for w in windows):
            outs.append(super_resolve(model, lr, nbs, flows, precision=precision, channels_last=cl,
                                      tile=tile if tiled else 0, overlap=overlap))
        seconds = time.perf_counter() - start
        cpu_share = (time.process_time() - cpu_start) / seconds
    torch.save(outs, out_path)
    print(json.dumps({"fps": len(windows) / seconds, "mem": mem.extra,
                      "precision": check_precision(precision, torch.device("cpu")), "load": os.getloadavg()[0],
                      "cpu_share": cpu_share}))


def auto_check(results: dict, threads: int) -> None:
    """Print how ``auto`` compares with the faster of the (untiled) fp32 and bf16 configurations, and with fp32, by
    wall time and by CPU time per frame (the latter holds up when other processes share the CPUs)."""
    if "auto +channels_last" not in results:
        return
    auto = results["auto +channels_last"]
    others = {n: r for n, r in results.items() if not CONFIGS[n][2] and CONFIGS[n][0] in ("fp32", "bf16")}
    if not others:
        return

    def cpu_s(r: dict) -> float:
        return r["cpu_share"] / r["fps"]

    def verdict(ratio: float) -> str:
        return "OK" if ratio >= 0.9 else "NOT OK: more than 10% slower"

    best = max(others, key=lambda n: others[n]["fps"])
    ratio = auto["fps"] / others[best]["fps"]
    line = f"\nauto (runs {auto['precision']}): wall time {ratio:.2f}x the speed of the fastest of fp32/bf16 ({best})"
    line += f" -> {verdict(ratio)}"
    if "fp32" in results:
        line += f"; {auto['fps'] / results['fp32']['fps']:.2f}x fp32"
    print(line)
    best_cpu = min(others, key=lambda n: cpu_s(others[n]))
    ratio = cpu_s(others[best_cpu]) / cpu_s(auto)
    line = (f"auto by CPU time per frame ({cpu_s(auto):.1f} s): {ratio:.2f}x the speed of the fastest of fp32/bf16 "
            f"({best_cpu}, {cpu_s(others[best_cpu]):.1f} s) -> {verdict(ratio)}")
    if "fp32" in results:
        line += f"; {cpu_s(results['fp32']) / cpu_s(auto):.2f}x fp32"
    print(line)
    busy = min(r["cpu_share"] for r in results.values())
    if busy < 0.8 * threads:
        print(f"note: some configurations had only {busy:.2f} of {threads} CPUs (other processes were running); "
              "their wall-time ratios are unreliable, the CPU-time ones much less so")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--frames", type=int, default=2, help="frames to super-resolve per configuration")
    p.add_argument("--model", default=None, help="x4 generator checkpoint (default: full-size RBPN, random weights)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")
    p.add_argument("--tile", type=int, default=96, help="LR tile for the tiled-vs-whole check (0 = skip)")
    p.add_argument("--tile_overlap", type=int, default=16)
    p.add_argument("--clip", default=None, help="evaluation video (default: bikes.mp4 from the clip cache)")
    p.add_argument("--configs", default=",".join(CONFIGS),
                   help=f"comma-separated configurations to measure (default: all of {', '.join(CONFIGS)}); "
                        "the first is the baseline of the ratios")
    p.add_argument("--rounds", type=int, default=1,
                   help="measure the configurations this many times, interleaved, and keep each one's fastest "
                        "(evens out other load on the machine)")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--inputs", default=None, help=argparse.SUPPRESS)
    p.add_argument("--out", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    names = [n.strip() for n in args.configs.split(",") if n.strip()]
    unknown = [n for n in names if n not in CONFIGS]
    if unknown or not names:
        p.error(f"unknown configuration(s) {unknown}; choose from {', '.join(CONFIGS)}")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.child:
        child(args.child, args.inputs, args.out, args.model, args.tile, args.tile_overlap)
        return
    net, residual = build_net(args.model)
    nF = net.nFrames
    del net
    offsets = neighbour_offsets(nF, True)
    count = args.frames + max(offsets)  # enough frames that every measured frame has real neighbours where possible
    hr, lr = load_clip(count, args.clip or find_eval_clip())
    targets = list(range(min(args.frames, len(lr))))
    windows = []
    for t in targets:
        idx = [neighbour_index(t, o, len(lr), "centre") for o in offsets]
        flows = window_flows(lr[t], [lr[i] for i in idx], [i == t for i in idx])
        windows.append((t, lr[t], [lr[i] for i in idx], flows))
    print(hardware.describe_cpu())
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU; RBPN x4 nFrames={nF} "
          f"({'weights ' + args.model if args.model else 'random weights'}); LR {lr[0].shape[1]}x{lr[0].shape[0]}, "
          f"{len(targets)} frame(s) per configuration, each configuration in its own process")

    names = [n for n in names if args.tile or not CONFIGS[n][2]]
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        inputs = os.path.join(tmp, "inputs.pt")
        torch.save({"windows": windows}, inputs)
        for round_ in range(1, args.rounds + 1):
            for name in names:
                out = os.path.join(tmp, "out.pt")
                cmd = [sys.executable, os.path.abspath(__file__), "--child", name, "--inputs", inputs, "--out", out,
                       "--threads", str(torch.get_num_threads()), "--tile", str(args.tile), "--tile_overlap",
                       str(args.tile_overlap)] + (["--model", args.model] if args.model else [])
                proc = subprocess.run(cmd, capture_output=True, text=True)
                if proc.returncode != 0:
                    sys.exit(f"{name}: failed\n{proc.stderr[-2000:]}")
                r = json.loads(proc.stdout.strip().splitlines()[-1])
                r["raw"] = torch.load(out, weights_only=True)
                r["srs"] = [metrics.to_uint8(sr_image(o, lr[t], 4, residual)) for o, t in zip(r["raw"], targets)]
                r["psnr"] = float(np.mean([metrics.psnr_y(s, hr[t]) for s, t in zip(r["srs"], targets)]))
                if name not in results or r["fps"] > results[name]["fps"]:  # best of the rounds
                    results[name] = r
                print(f"  {name:26s} {r['fps']:.4f} frames/s  peak +{r['mem']:.0f} MiB  PSNR-Y {r['psnr']:.3f} dB"
                      f"  (round {round_}, runs {r['precision']}; {r['cpu_share'] / r['fps']:.1f} CPU-s/frame, "
                      f"{r['cpu_share']:.2f} CPUs busy of "
                      f"{torch.get_num_threads()} threads, 1-min load average after it {r['load']:.2f} on "
                      f"{os.cpu_count()} CPUs)", flush=True)

    base_name = names[0]
    base = results[base_name]
    print(f"\n{hardware.describe_cpu()}")
    rounds = f", best of {args.rounds} rounds" if args.rounds > 1 else ""
    print(f"ratios and changes against {base_name}{rounds}")
    print(f"  {'configuration':26s} {'speed':>9s} {'peak memory':>15s} {'PSNR-Y change':>17s} "
          f"{'PSNR-Y vs base output':>21s}")
    for name, r in results.items():
        vs_ref = np.mean([metrics.psnr_y(a, b) for a, b in zip(r["srs"], base["srs"])])
        print(f"  {name:26s} {r['fps'] / base['fps']:8.2f}x {r['mem'] / max(base['mem'], 1e-9):14.2f}x "
              f"{r['psnr'] - base['psnr']:+14.3f} dB {vs_ref:18.2f} dB")
    auto_check(results, torch.get_num_threads())
    if "fp32 +channels_last tiled" in results and "fp32 +channels_last" in results:
        tiled, whole = results["fp32 +channels_last tiled"], results["fp32 +channels_last"]
        diff = max(float((a - b).abs().max()) for a, b in zip(tiled["raw"], whole["raw"])) * 255
        print(f"\ntiled (tile {args.tile}, overlap {args.tile_overlap}) vs whole frame, fp32: max |diff| of the raw "
              f"output {diff:.4f} (8-bit levels); PSNR-Y of tiled vs whole "
              f"{np.mean([metrics.psnr_y(a, b) for a, b in zip(tiled['srs'], whole['srs'])]):.2f} dB")


if __name__ == "__main__":
    main()
