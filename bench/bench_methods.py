"""Benchmark of the classic denoising candidates and of the SURE-based choice between them (``denoise_methods``).

For each movie the candidates are run on its even frames (half rate) and scored with the tester's held-out score:
the estimate of even frame 2k against the mean of the odd frames 2k - 1 and 2k + 1, which no candidate saw (PSNR,
peak 1, averaged over k, as ``denoise_eval.n2n_psnr``). ``auto`` is ``denoise_methods.choose`` run on the same even
frames, so its pick is scored on the same footing; the table also gives each candidate's SURE score and, for the
synthetic movies, its true PSNR against the clean even frames. The rule checked: auto's held-out score is at most
0.05 dB under the best plain mean of 3, 5 or 7 frames. The pick at full rate (all frames, as the tester makes the
output) is printed too.

Movies: the training movies ``afm_sample/train/sample_0.asd`` and ``sample_1.asd`` (row-levelled: each scan line's
median subtracted; blank frames dropped), and synthetic movies with exact ground truth made here: terraces with
molecules, drift and scan noise correlated along the rows (no levelling; see ``synthetic_movie``). Every movie is
normalised by its 0.5 / 99.5 percentiles without clipping. ``afm_sample/eval/extra_sample.asd`` is never used here.

    .venv/bin/python bench/bench_methods.py [--movies afm_sample/train/sample_0.asd ...] [--skip-synthetic]
"""

import argparse
import os
import sys
import time
from typing import Dict, List, Optional, Tuple

import numpy as np
from scipy.ndimage import gaussian_filter, shift

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import denoise_methods as dm  # noqa: E402
import scans  # noqa: E402
from denoise_eval import held_out_indices, n2n_psnr  # noqa: E402

TRAIN_MOVIES = ("afm_sample/train/sample_0.asd", "afm_sample/train/sample_1.asd")
PLAIN_MEANS = ("mean3", "mean5", "mean7")
RULE_DB = 0.05
SYNTHETIC = ("static", "drift", "molecules", "fast", "scars")


# ----------------------------------------------------------------------------------------------------------------
# Movies


def normalise(frames: np.ndarray) -> Tuple[float, float]:
    """The affine map's 0.5 and 99.5 percentiles (lo, hi) of a movie; applied as (x - lo) / (hi - lo), no clip."""
    lo, hi = np.percentile(frames, [0.5, 99.5])
    return float(lo), float(hi)


def real_movie(path: str) -> np.ndarray:
    """A grey .asd (or any ``scans`` movie) row-levelled and normalised, blank frames dropped; (T, H, W) float64."""
    movie = scans.read_movie(path)
    frames = movie.frames.astype(np.float64).mean(axis=3)
    frames = np.delete(frames, movie.blank, axis=0)
    frames = frames - np.median(frames, axis=2, keepdims=True)
    lo, hi = normalise(frames)
    return (frames - lo) / (hi - lo)


def row_noise(rng: np.random.Generator, shape: Tuple[int, ...], sigma: float, rho: float) -> np.ndarray:
    """Gaussian noise of std ``sigma``, correlated along the rows (AR(1), lag-1 correlation ``rho``)."""
    white = rng.standard_normal(shape)
    out = np.empty(shape)
    out[..., 0] = white[..., 0]
    for x in range(1, shape[-1]):
        out[..., x] = rho * out[..., x - 1] + np.sqrt(1.0 - rho ** 2) * white[..., x]
    return sigma * out


def terraces(rng: np.random.Generator, size: int) -> np.ndarray:
    """A (size, size) terrace landscape: a smooth random field cut into 1 nm steps, edges softened."""
    field = gaussian_filter(rng.standard_normal((size, size)), size / 8, mode="wrap")
    field = 4.0 * field / field.std()
    return gaussian_filter(np.floor(field), 0.7, mode="wrap")


def molecules(rng: np.random.Generator, frames: int, size: int, count: int, speed: float) -> np.ndarray:
    """(frames, size, size): ``count`` Gaussian bumps 3 nm high, 2.5 px wide, each moving in a straight line at
    ``speed`` px per frame (wrapping around)."""
    yy, xx = np.mgrid[:size, :size]
    out = np.zeros((frames, size, size))
    for _ in range(count):
        y0, x0 = rng.uniform(0, size, 2)
        angle = rng.uniform(0, 2 * np.pi)
        for t in range(frames):
            cy = (y0 + speed * t * np.sin(angle)) % size
            cx = (x0 + speed * t * np.cos(angle)) % size
            dy = (yy - cy + size / 2) % size - size / 2
            dx = (xx - cx + size / 2) % size - size / 2
            out[t] += 3.0 * np.exp(-(dy ** 2 + dx ** 2) / (2 * 2.5 ** 2))
    return out


def synthetic_movie(kind: str, frames: int = 64, size: int = 96, seed: int = 0) -> Tuple[np.ndarray, np.ndarray]:
    """(noisy, clean), both (frames, size, size) and normalised by the noisy movie's map. Kinds: ``static``
    (terraces), ``drift`` (terraces drifting 0.4 px/frame), ``molecules`` (still terraces, 6 molecules at 1.5
    px/frame), ``fast`` (a scene changing fast: smooth new content added every frame, a random walk), ``scars``
    (static, plus heavy-tailed scan scars: short bright streaks along the rows). Noise: std 0.3 nm, row correlation
    0.7."""
    rng = np.random.default_rng(seed)
    base = terraces(rng, size)
    clean = np.repeat(base[None], frames, axis=0)
    if kind == "drift":
        clean = np.stack([shift(base, (0.15 * t, 0.4 * t), order=3, mode="wrap") for t in range(frames)])
    elif kind == "molecules":
        clean = clean + molecules(rng, frames, size, 6, 1.5)
    elif kind == "fast":
        steps = np.stack([gaussian_filter(rng.standard_normal((size, size)), 3.0, mode="wrap") for _ in range(frames)])
        clean = clean + 0.6 * np.cumsum(steps / steps.std(), axis=0)
    noisy = clean + row_noise(rng, clean.shape, 0.3, 0.7)
    if kind == "scars":
        for _ in range(frames * 3):
            t, y, x = rng.integers(frames), rng.integers(size), rng.integers(size - 12)
            noisy[t, y, x:x + rng.integers(3, 12)] += rng.choice([-1.0, 1.0]) * rng.exponential(2.0)
    lo, hi = normalise(noisy)
    return (noisy - lo) / (hi - lo), (clean - lo) / (hi - lo)


# ----------------------------------------------------------------------------------------------------------------
# Scores


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR with peak 1 (``dm.risk_db`` of the mean squared difference)."""
    return dm.risk_db(float(np.mean((a - b) ** 2)))


def score_candidates(frames: np.ndarray, candidates: List[dm.Candidate],
                     clean: Optional[np.ndarray]) -> Dict[str, Tuple[float, Optional[float]]]:
    """{name: (held-out dB, true dB or None)} of every candidate run on the even frames."""
    even = frames[0::2]
    ks = held_out_indices(len(frames))
    result = {}
    for candidate in candidates:
        outs = {k: candidate.fn(even, k) for k in ks}
        ho = float(np.mean([n2n_psnr(outs[k], frames[2 * k - 1], frames[2 * k + 1]) for k in ks]))
        true = None if clean is None else float(np.mean([psnr(outs[k], clean[2 * k]) for k in ks]))
        result[candidate.name] = (ho, true)
    return result


def report(name: str, frames: np.ndarray, clean: Optional[np.ndarray] = None) -> bool:
    """Score one movie, print its table and the rule's verdict; True when the rule holds."""
    start = time.time()
    even = np.array(frames[0::2])
    covs, levels, candidates = dm.movie_candidates(even)
    pick, sure = dm.choose(even, candidates, covs, levels)
    chose = time.time() - start
    scores = score_candidates(frames, candidates, clean)
    full_covs, full_levels, full_candidates = dm.movie_candidates(frames)
    full_pick, _ = dm.choose(frames, full_candidates, full_covs, full_levels)
    cov = np.median(covs, axis=0)
    r = cov.shape[0] // 2
    sigma = dm.noise_sigma(cov)
    print(f"\n{name}: {frames.shape[0]} frames of {frames.shape[1]}x{frames.shape[2]}, half-rate noise sigma "
          f"{sigma:.4f}, row corr {cov[r, r + 1] / sigma ** 2:.2f} / {cov[r, r + 2] / sigma ** 2:.2f}, column corr "
          f"{cov[r + 1, r] / sigma ** 2:.2f}; choice on the even frames {chose:.1f}s")
    print(f"  {'candidate':16s} {'held-out':>8s} {'SURE':>7s}" + ("" if clean is None else f" {'true':>7s}"))
    best_ho = max(scores, key=lambda n: scores[n][0])
    for cand in candidates:
        ho, true = scores[cand.name]
        mark = (" <- auto" if cand.name == pick else "") + (" <- best held-out" if cand.name == best_ho else "")
        extra = "" if true is None else f" {true:7.2f}"
        print(f"  {cand.name:16s} {ho:8.2f} {sure[cand.name]:7.2f}{extra}{mark}")
    plain = max(PLAIN_MEANS, key=lambda n: scores[n][0])
    margin = scores[pick][0] - scores[plain][0]
    ok = margin >= -RULE_DB
    print(f"  auto (half rate) picks {pick}: held-out {scores[pick][0]:.2f} dB, best plain mean {plain} "
          f"{scores[plain][0]:.2f} dB, margin {margin:+.2f} dB -> {'ok' if ok else 'RULE BROKEN'}; best held-out "
          f"{best_ho} {scores[best_ho][0]:.2f} dB; auto at full rate picks {full_pick}")
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--movies", nargs="*", default=list(TRAIN_MOVIES),
                        help="training movies (default: %(default)s)")
    parser.add_argument("--skip-synthetic", action="store_true")
    args = parser.parse_args()
    results = {}
    for path in args.movies:
        if "extra_sample" in os.path.basename(path):
            raise SystemExit("extra_sample.asd is the held-out evaluation movie: never choose anything on it")
        results[os.path.basename(path)] = report(os.path.basename(path), real_movie(path))
    if not args.skip_synthetic:
        for kind in SYNTHETIC:
            noisy, clean = synthetic_movie(kind)
            results[f"synthetic {kind}"] = report(f"synthetic {kind}", noisy, clean)
    print("\nrule (auto >= best of mean3/5/7 - 0.05 dB, held-out):",
          ", ".join(f"{name} {'ok' if ok else 'BROKEN'}" for name, ok in results.items()))
    return 0 if all(results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
