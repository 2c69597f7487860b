"""Seconds per GAN training step and peak memory of the full x4 iSeeBetter model, per precision / checkpointing mode.

One step = G forward, D step, G step with the four-fold loss (VGG16 perceptual term included, random VGG weights:
same compute as ImageNet ones), batch 1, 64x64 LR patch (256x256 HR), nFrames 7: what ``iSeeBetterTrain.py`` does.
Each mode runs in a fresh subprocess so that peak RSS (CPU) / peak allocated memory (CUDA) is its own. Results are
printed as ratios against fp32 measured in the same run.

    .venv/bin/python bench/bench_train.py                       # fp32, bf16, bf16+ckpt on CPU
    .venv/bin/python bench/bench_train.py --modes fp32,fp32+ckpt --steps 2 --device cuda
    .venv/bin/python bench/bench_train.py --modes fp32,bf16,auto      # auto: what --precision auto picks here
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from options import add_bool  # noqa: E402

MODES = {"fp32": ("fp32", False), "bf16": ("bf16", False), "bf16+ckpt": ("bf16", True),
         "fp32+ckpt": ("fp32", True), "fp16": ("fp16", False), "auto": ("auto", False)}


def run_mode(mode: str, steps: int, warmup: int, patch: int, device_name: str, threads: int,
             channels_last: bool = True) -> dict:
    """Build the full model and time ``steps`` training steps after ``warmup`` ones (runs in the child)."""
    import torch

    import rbpn
    import training
    from SRGAN.loss import GeneratorLoss
    from SRGAN.model import Discriminator

    torch.set_num_threads(threads)
    precision, ckpt = MODES[mode]
    device = torch.device(device_name)
    torch.manual_seed(0)
    netG = rbpn.Net(num_channels=3, base_filter=256, feat=64, num_stages=3, n_resblock=5, nFrames=7, scale_factor=4)
    netG.set_grad_checkpointing(ckpt)
    dist = training.DistInfo(0, 1, 0, device)
    layout = torch.channels_last if channels_last else torch.contiguous_format
    trainer = training.Trainer(netG.to(device, memory_format=layout), Discriminator().to(device, memory_format=layout),
                               GeneratorLoss(vgg="random").to(device), "gan", 1e-4, dist, precision,
                               channels_last=channels_last)
    hr = patch * 4
    batch = (torch.rand(1, 3, patch, patch), torch.rand(1, 3, hr, hr), [torch.rand(1, 3, patch, patch)] * 6,
             [torch.randn(1, 2, patch, patch)] * 6, torch.rand(1, 3, hr, hr))
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for _ in range(warmup):
        trainer.step(batch)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        losses = trainer.step(batch)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = (time.perf_counter() - start) / steps
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB
    out = {"mode": mode if precision != "auto" else f"auto ({trainer.precision})", "s_per_step": seconds,
           "peak_rss_gib": peak_rss,
           "g_loss": float(losses["g_loss"]), "d_loss": float(losses["d_loss"])}
    if device.type == "cuda":
        out["peak_cuda_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--modes", default="fp32,bf16,bf16+ckpt", help=f"comma-separated, from {', '.join(MODES)}")
    p.add_argument("--steps", type=int, default=1, help="timed steps per mode")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    p.add_argument("--patch", type=int, default=64, help="LR patch size")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    add_bool(p, "channels_last", True, "NHWC memory format, as iSeeBetterTrain.py's default")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(run_mode(args.child, args.steps, args.warmup, args.patch, args.device, args.threads,
                                  args.channels_last)))
        return 0
    modes = args.modes.split(",")
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        p.error(f"unknown mode(s) {unknown}; choose from {list(MODES)}")
    results = []
    for mode in modes:
        cmd = [sys.executable, os.path.abspath(__file__), "--child", mode, "--steps", str(args.steps), "--warmup",
               str(args.warmup), "--patch", str(args.patch), "--device", args.device, "--threads", str(args.threads),
               "--channels_last", str(args.channels_last)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            print(f"{mode}: failed\n{proc.stderr[-2000:]}", file=sys.stderr)
            return 1
        results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        print(json.dumps(results[-1]), flush=True)
    base = results[0]
    import torch

    import hardware

    torch.set_num_threads(args.threads)  # as in the children, for the CPU line
    print(f"\n{hardware.describe_cpu()}")
    print(f"full x4 RBPN + SRGAN D + VGG loss, batch 1, {args.patch}x{args.patch} LR, device {args.device}, "
          f"channels_last {args.channels_last}, "
          f"{args.steps} timed step(s) after {args.warmup} warm-up; ratios vs {base['mode']}")
    mem_key = "peak_cuda_gib" if args.device.startswith("cuda") else "peak_rss_gib"
    print(f"| mode | s/step | x {base['mode']} time | peak memory (GiB) | x {base['mode']} memory |")
    print("|---|---|---|---|---|")
    for r in results:
        print(f"| {r['mode']} | {r['s_per_step']:.2f} | {r['s_per_step'] / base['s_per_step']:.2f} | "
              f"{r[mem_key]:.2f} | {r[mem_key] / base[mem_key]:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
