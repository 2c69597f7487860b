"""Forward time and peak memory of the full RBPN (x4, nFrames 7) on one LR frame: fp32 vs bf16 autocast.

Each mode runs in a fresh subprocess (so its peak RSS, ``ru_maxrss``, is its own). The same seed gives every mode
the same weights and inputs; the parent reports time and memory as ratios against fp32 (measured in the same run)
and the output difference. ``--train`` adds one training step (forward + backward) without and with
``set_grad_checkpointing(True)``, for the training-memory figure.

    .venv/bin/python bench/bench_model.py --size 64 --repeats 1 --warmup 0 [--train] [--weights netG.pth]
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

MODES = {
    "fp32": "inference, float32, default memory format",
    "bf16-cl": "inference, bfloat16 autocast, channels_last",
    "train": "one training step (forward + backward), float32",
    "train-ckpt": "one training step with activation checkpointing, float32",
}


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def worker(mode: str, size: int, repeats: int, warmup: int, scale: int, threads: int, weights: str,
           out_path: str) -> dict:
    """Time ``repeats`` forwards (after ``warmup`` untimed ones) in this process; save the output to ``out_path``."""
    import torch

    import rbpn
    from checkpoint import build_generator

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    if weights:
        net, _ = build_generator(weights, expect={"scale_factor": scale, "nFrames": 7})
    else:
        net = rbpn.Net(**rbpn.DEFAULT_CONFIG, scale_factor=scale)
    net.eval()
    g = torch.Generator().manual_seed(1)
    n = rbpn.DEFAULT_CONFIG["nFrames"] - 1
    x = torch.rand(1, 3, size, size, generator=g)
    nbs = [torch.rand(1, 3, size, size, generator=g) for _ in range(n)]
    flows = [torch.randn(1, 2, size, size, generator=g) for _ in range(n)]
    if mode == "bf16-cl":
        net = net.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
        nbs = [t.contiguous(memory_format=torch.channels_last) for t in nbs]
        flows = [t.contiguous(memory_format=torch.channels_last) for t in flows]

    if mode.startswith("train"):
        net.train().set_grad_checkpointing(mode == "train-ckpt")

    def forward():
        if mode.startswith("train"):
            net.zero_grad(set_to_none=True)
            y = net(x, nbs, flows)
            torch.nn.functional.mse_loss(y, torch.zeros_like(y)).backward()
            return y.detach()
        with torch.inference_mode():
            if mode == "bf16-cl":
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    return net(x, nbs, flows)
            return net(x, nbs, flows)

    rss_before = _rss_mib()
    for _ in range(warmup):
        forward()  # allocator, oneDNN primitive creation
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        y = forward()
        times.append(time.perf_counter() - t0)
    torch.save(y.float().contiguous(), out_path)
    return {"mode": mode, "median_s": sorted(times)[len(times) // 2], "min_s": min(times),
            "peak_rss_mib": _rss_mib(), "forward_rss_mib": _rss_mib() - rss_before}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=64, help="LR frame height and width (default 64)")
    parser.add_argument("--repeats", type=int, default=3, help="timed forwards per mode after one warm-up")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs per mode before timing (default 1)")
    parser.add_argument("--scale", type=int, default=4, choices=(2, 4, 8))
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--train", action="store_true", help="also measure a training step without/with "
                        "activation checkpointing")
    parser.add_argument("--weights", default="", help="generator checkpoint to use instead of random init")
    parser.add_argument("--worker", choices=sorted(MODES), help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        print(json.dumps(worker(args.worker, args.size, args.repeats, args.warmup, args.scale, args.threads,
                                args.weights, args.out)))
        return 0

    import torch

    import hardware

    torch.set_num_threads(args.threads)  # as in the workers, so that the CPU line shows their thread count
    print(hardware.describe_cpu())
    print(f"RBPN x{args.scale} nFrames 7, LR {args.size}x{args.size}, batch 1, {args.threads} threads, "
          f"{args.warmup} warm-up + {args.repeats} timed run(s) per mode, "
          f"torch {torch.__version__}, CPU capability {torch.backends.cpu.get_cpu_capability()}")
    modes = [m for m in MODES if args.train or not m.startswith("train")]
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for mode in modes:
            out = os.path.join(tmp, f"{mode}.pt")
            cmd = [sys.executable, os.path.abspath(__file__), "--worker", mode, "--out", out, "--size",
                   str(args.size), "--repeats", str(args.repeats), "--warmup", str(args.warmup),
                   "--scale", str(args.scale), "--threads",
                   str(args.threads), "--weights", args.weights]
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if proc.returncode != 0:
                print(f"{mode} failed:\n{proc.stderr}", file=sys.stderr)
                return 1
            results[mode] = json.loads(proc.stdout.strip().splitlines()[-1])
            results[mode]["output"] = torch.load(out, weights_only=True)

    base = results["fp32"]
    print(f"{'mode':<11} {'median s':>9} {'min s':>7} {'time ratio':>10} {'peak RSS MiB':>13} "
          f"{'fwd RSS MiB':>12} {'mem ratio':>9}   (ratios against fp32; train-ckpt against train)")
    for mode, r in results.items():
        b = results["train"] if mode == "train-ckpt" else base
        print(f"{mode:<11} {r['median_s']:>9.2f} {r['min_s']:>7.2f} {r['median_s'] / b['median_s']:>10.2f} "
              f"{r['peak_rss_mib']:>13.0f} {r['forward_rss_mib']:>12.0f} "
              f"{r['forward_rss_mib'] / max(b['forward_rss_mib'], 1e-9):>9.2f}")
    ref = base["output"]
    for mode, r in results.items():
        if mode == "fp32":  # the train modes must match fp32 up to float rounding
            continue
        diff = (r["output"] - ref).abs()
        scale = ref.abs().max().item()
        print(f"{mode} vs fp32: max abs diff {diff.max().item():.4g} ({diff.max().item() / scale:.2%} of max |fp32|), "
              f"mean abs diff {diff.mean().item():.4g} ({diff.mean().item() / ref.abs().mean().item():.2%} of mean "
              f"|fp32|); weights: {args.weights or 'random init'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
