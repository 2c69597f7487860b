"""The held-out-frame score of ``--denoise`` methods on one real movie, through the tester as a user runs it.

Protocol (issue 20): the tester gets only the even frames of the movie (``<work>/even.npy``, in the input's units);
each output frame 2k is scored against the mean of the odd frames 2k-1 and 2k+1, which it never saw (their noise is
independent), after row levelling, on the even movie's normalised scale (its 0.5/99.5 percentiles -> 0/1, never
clipped). PSNR with peak 1, averaged over frames. The reference is itself a mean of two scans, so where the scene
changes between scans it favours temporal means (see docs/denoise.md).

This is an evaluation: run it on a movie to report, never to choose a method or a setting.

    python bench/bench_heldout.py --movie afm_sample/eval/extra_sample.asd --work /tmp/heldout \
        --methods mean3,mean5,mean7,mean3+blur1.0,mean3+tv,model,auto
"""

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import denoise_data  # noqa: E402
import denoise_eval  # noqa: E402
import scans  # noqa: E402


def held_out_references(frames: np.ndarray, norm: denoise_data.Normalisation) -> dict:
    """{k: (levelled frame 2k-1, levelled frame 2k+1) on ``norm``'s scale} for every even frame 2k that has both
    (``denoise_eval.held_out_indices``)."""
    levelled = np.stack([denoise_data.level_rows(f) for f in frames])
    return {k: (norm.forward(levelled[2 * k - 1]), norm.forward(levelled[2 * k + 1]))
            for k in denoise_eval.held_out_indices(len(frames))}


def held_out_psnr(output: np.ndarray, refs: dict, norm: denoise_data.Normalisation) -> float:
    """Mean ``denoise_eval.n2n_psnr`` (peak 1) of the levelled even-frame ``output`` (T, H, W) against ``refs``."""
    levelled = np.stack([denoise_data.level_rows(f) for f in output])
    return float(np.mean([denoise_eval.n2n_psnr(norm.forward(levelled[k]), *pair) for k, pair in refs.items()]))


def calibration(output: np.ndarray, refs: dict, norm: denoise_data.Normalisation) -> tuple:
    """(slope, tall ratio): the least-squares slope of the held-out references on the levelled output (1: where the
    output says h, the sample is h on average), and the references' mean over the output's tallest 0.1 % pixels
    divided by the output's mean there (1: the tallest features are neither dimmed nor inflated)."""
    levelled = np.stack([denoise_data.level_rows(f) for f in output])
    out = np.concatenate([norm.forward(levelled[k]).ravel() for k in refs])
    ref = np.concatenate([((before + after) / 2).ravel() for before, after in refs.values()])
    centred = out - out.mean()
    slope = float(np.dot(centred, ref - ref.mean()) / np.dot(centred, centred))
    tall = out >= np.percentile(out, 99.9)
    return slope, float(ref[tall].mean() / out[tall].mean())


def run_tester(even: str, out: str, method: str, model: str) -> float:
    """Run ``iSeeBetterTest.py --denoise --method method`` on ``even``; returns its wall-clock seconds."""
    argv = [sys.executable, os.path.join(ROOT, "iSeeBetterTest.py"), "--denoise", "-i", even, "-o", out, "--method",
            method, "--no-eval", "--no-progress"] + (["-m", model] if model else [])
    start = time.time()
    done = subprocess.run(argv, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{method}: the tester failed: {done.stderr.strip().splitlines()[-1]}")
    return time.time() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--movie", required=True, help="a grey movie (.asd, .npy, ...)")
    parser.add_argument("--work", required=True, help="folder for the even-frame movie and the tester's outputs")
    parser.add_argument("--methods", default="mean3,mean5,mean7,mean3+blur1.0,mean3+tv,model,auto")
    parser.add_argument("-m", "--model", default="", help="denoising checkpoint (default: the tester's)")
    args = parser.parse_args()
    frames = scans.read_movie(args.movie).frames[..., 0].astype(np.float64)
    os.makedirs(args.work, exist_ok=True)
    even = os.path.join(args.work, "even.npy")
    np.save(even, frames[0::2].astype(np.float32))
    _, norm, _ = denoise_data.preprocess(frames[0::2, ..., None].astype(np.float32))
    refs = held_out_references(frames, norm)
    rows = {"raw": (held_out_psnr(frames[0::2], refs, norm), 0.0, "", calibration(frames[0::2], refs, norm))}
    for method in args.methods.split(","):
        out = os.path.join(args.work, method)
        seconds = run_tester(even, out, method, args.model)
        with open(os.path.join(out, "metrics.json")) as f:
            picked = json.load(f)["movies"]["even"].get("method", method)
        output = np.load(os.path.join(out, "even.npy"))
        rows[method] = (held_out_psnr(output, refs, norm), seconds, picked, calibration(output, refs, norm))
    print(f"held-out score of {args.movie}, even frames in ({len(frames[0::2])}), odd frames as references")
    print("| method | held-out PSNR (dB) | written | tester s | slope | tallest 0.1 % |\n|---|---|---|---|---|---|")
    for method, (score, seconds, picked, (slope, tall)) in rows.items():
        print(f"| {method} | {score:.2f} | {picked or method} | {seconds:.0f} | {slope:.3f} | {tall:.3f} |")


if __name__ == "__main__":
    main()
