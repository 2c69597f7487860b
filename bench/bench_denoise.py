"""Denoising benchmark for ``--denoise``: quality against exact ground truth, the no-reference score on a real movie,
and the denoiser's speed and peak memory at fp32 vs the fastest precision of this CPU.

1. Synthetic movies with exact ground truth: the clean STM topographs shipped in the ``SPIEPy==0.2.1`` wheel
   (``spiepy/demo/*.dat``, heights in metres), row-levelled, moved by a seeded sub-pixel drift (0.3-1 px/frame,
   bicubic resampling, centre crop of ``--size``) and given scan noise: Gaussian noise, per-row offsets (line noise)
   and scars (short horizontal streaks). The wheel is downloaded once with pip into the clip cache
   (``$ISEEBETTER_CLIP_CACHE``, default ``~/.cache/iseebetter/clips``). Every method is scored (PSNR, peak 1, and
   SSIM) against the clean frames on the clean movie's [0, 1] scale (``denoise_data.preprocess`` of the clean movie),
   next to the no-reference ``n2n_psnr`` of ``denoise_eval`` computed from the noisy movie alone.
2. The real movie (``--movie``, default ``afm_sample/eval/extra_sample.asd``): the same methods, scored with the
   tester's no-reference ``n2n_psnr`` and the fork's SSIM to the cleanest frame (``denoise_eval``). With ``--image``
   a PNG shows two frames side by side: levelled input, mean of 5 and each model, exactly as scored.
3. Speed: frames/s of ``inference.denoise_clip`` (model only: zero flows, each configuration in its own process) and
   peak resident memory (``ru_maxrss``) at ``--size`` (default 256) for fp32 and for what
   ``hardware.resolve_precision("auto")`` picks, with ``--model`` or a random-init compact RBPN.

Rows of the quality tables: raw input (no levelling), row levelling only, the other baselines of
``denoise_eval.BASELINE_TABLE`` (the best temporal mean of 3/5/7, mean of 3 + Gaussian blur 1 px, triangular-weighted
mean of 5 (weights 1, 2, 3, 2, 1) + Gaussian blur 0.5 px), the single-frame model (``--single-model``, a denoising
checkpoint with nFrames 1) and the multi-frame model (``--model``). Both checkpoints are loaded as the tester loads
them, and each runs with its own recorded settings (flows, warping).

    .venv/bin/python bench/bench_denoise.py --size 128 [--model runs/denoise/netG_epoch_1_40.pth]
        [--single-model runs/denoise_single/netG_epoch_1_40.pth] [--image bench_real.png] [--skip-real]
"""

import argparse
import hashlib
import json
import math
import os
import resource
import shlex
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import atomic  # noqa: E402
import denoise_eval  # noqa: E402
import denoise_job  # noqa: E402
import hardware  # noqa: E402
import iSeeBetterTest as tester  # noqa: E402
from denoise_data import Normalisation, compute_flows, level_rows, preprocess  # noqa: E402

SPIEPY_REQUIREMENT = "SPIEPy==0.2.1"
SPIEPY_WHEEL = "SPIEPy-0.2.1-py3-none-any.whl"
SPIEPY_SHA256 = "d7149766915440165518a3e9312cc219bcc7c7f6c29239017fbf20b21052b2e7"
TOPOGRAPHS = {"defects": "image_with_defects", "step": "image_with_step_edge",
              "step+atoms": "image_with_step_edge_and_atoms"}
CLIP_CACHE = os.environ.get("ISEEBETTER_CLIP_CACHE",
                            os.path.join(os.path.expanduser("~"), ".cache", "iseebetter", "clips"))
DEFAULT_MOVIE = os.path.join(ROOT, "afm_sample", "eval", "extra_sample.asd")

# Scan noise, as fractions of the clean topograph's robust range (its 0.5-99.5 percentile span).
DRIFT_PX = (0.3, 1.0)  # drift speed per frame, px
DRIFT_JITTER_PX = 0.1  # per-frame random position error on top of the drift, px
GAUSS_SIGMA = 0.06
LINE_SIGMA = 0.04
SCARS_PER_ROW = 0.04  # scars per frame = this x rows
SCAR_LENGTH = (4, 32)  # px
SCAR_HEIGHT = (0.15, 0.4)  # |height|, sign random
COMPACT = dict(num_channels=1, base_filter=32, feat=16, num_stages=3, n_resblock=2, nFrames=5, scale_factor=1)
IMAGE_TITLE_HEIGHT = 30  # px of title text above each panel of --image
IMAGE_GAP = 4  # px between the panels of a row of --image
IMAGE_MIN_SIDE = 200  # frames smaller than this (px) are shown 2x (nearest neighbour)


# ----------------------------------------------------------------------------------------------------------------
# Clean topographs


def fetch_spiepy_wheel(cache: str = CLIP_CACHE) -> str:
    """Path of the checked SPIEPy 0.2.1 wheel in ``cache``; downloaded once with pip if missing (exit if offline)."""
    path = os.path.join(cache, SPIEPY_WHEEL)
    if not os.path.isfile(path):
        os.makedirs(cache, exist_ok=True)
        print(f"downloading {SPIEPY_REQUIREMENT} (4.4 MB) from PyPI into {cache} ...", file=sys.stderr)
        tmp = tempfile.mkdtemp(prefix=".spiepy_download_", dir=cache)
        try:
            cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "--retries",
                   "1", "--timeout", "30", SPIEPY_REQUIREMENT, "-d", tmp]
            res = subprocess.run(cmd, capture_output=True, text=True)
            downloaded = os.path.join(tmp, SPIEPY_WHEEL)
            if res.returncode != 0 or not os.path.isfile(downloaded):
                tail = ((res.stderr or res.stdout).strip().splitlines() or ["(no output)"])[-1]
                sys.exit(f"could not download {SPIEPY_REQUIREMENT} with pip ({tail.strip()}); offline? Put "
                         f"{SPIEPY_WHEEL} from PyPI into {cache} and rerun")
            os.replace(downloaded, path)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    with open(path, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    if digest != SPIEPY_SHA256:
        sys.exit(f"{path} has SHA-256 {digest}, not the PyPI file's {SPIEPY_SHA256}; delete it and rerun")
    return path


def read_topograph(data: bytes) -> np.ndarray:
    """A square SPIEPy demo image: a small little-endian header, then float64 heights (the header's length follows
    from the file size; when 8 bytes or more it starts with the two uint32 sides)."""
    side = math.isqrt(len(data) // 8)
    header = len(data) - 8 * side * side
    if side < 2 or not 0 <= header < 64:
        raise ValueError(f"{len(data)} bytes are not a small header plus a square float64 image")
    if header >= 8 and struct.unpack("<II", data[:8]) != (side, side):
        raise ValueError(f"header {struct.unpack('<II', data[:8])} does not match a {side}x{side} image")
    return np.frombuffer(data, "<f8", count=side * side, offset=header).reshape(side, side).astype(np.float64)


def load_topographs(wheel: str) -> Dict[str, np.ndarray]:
    """The three demo topographs of the wheel, in nm, by short name."""
    with zipfile.ZipFile(wheel) as z:
        return {name: read_topograph(z.read(f"spiepy/demo/{stem}.dat")) * 1e9 for name, stem in TOPOGRAPHS.items()}


# ----------------------------------------------------------------------------------------------------------------
# Synthetic movies


def drift_path(frames: int, rng: np.random.Generator) -> np.ndarray:
    """(frames, 2) sub-pixel positions (x, y): a straight drift of 0.3-1 px/frame in a random direction, centred on
    0, plus a small jitter."""
    speed = rng.uniform(*DRIFT_PX)
    angle = rng.uniform(0.0, 2.0 * np.pi)
    t = np.arange(frames, dtype=np.float64) - (frames - 1) / 2.0
    path = np.stack([t * speed * np.cos(angle), t * speed * np.sin(angle)], axis=1)
    return path + rng.normal(0.0, DRIFT_JITTER_PX, size=path.shape)


def drifting_sequence(topograph: np.ndarray, frames: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """(frames, size, size) float64 clean movie: the row-levelled topograph resampled (bicubic, mirrored borders) at
    the drift path's positions, centre crop of ``size``."""
    source = level_rows(np.asarray(topograph, np.float64)).astype(np.float32)
    h, w = source.shape
    if size > min(h, w):
        raise ValueError(f"--size {size} is larger than the {w}x{h} topograph")
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
    x0, y0 = (w - size) / 2.0, (h - size) / 2.0
    movie = []
    for dx, dy in drift_path(frames, rng):
        map_x = xs + np.float32(x0 + dx)
        map_y = ys + np.float32(y0 + dy)
        movie.append(cv2.remap(source, map_x, map_y, cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT_101))
    return np.stack(movie).astype(np.float64)


def robust_range(values: np.ndarray) -> float:
    """The 0.5-99.5 percentile span (the project's normalisation span)."""
    lo, hi = np.percentile(values, [0.5, 99.5])
    return float(hi - lo)


def add_scan_noise(clean: np.ndarray, rng: np.random.Generator, scale: float) -> np.ndarray:
    """Noisy copy of a (T, H, W) movie: Gaussian noise, a random offset per scan line and scars (short horizontal
    streaks of constant height), all in units of ``scale`` (the clean movie's robust range)."""
    noisy = np.array(clean, dtype=np.float64)
    frames, h, w = noisy.shape
    for t in range(frames):
        noisy[t] += rng.normal(0.0, GAUSS_SIGMA * scale, size=(h, w))
        noisy[t] += rng.normal(0.0, LINE_SIGMA * scale, size=(h, 1))
        for _ in range(max(1, round(SCARS_PER_ROW * h))):
            row = int(rng.integers(0, h))
            length = int(rng.integers(SCAR_LENGTH[0], SCAR_LENGTH[1] + 1))
            start = int(rng.integers(0, max(1, w - length)))
            height = rng.uniform(*SCAR_HEIGHT) * rng.choice((-1.0, 1.0)) * scale
            noisy[t, row, start:start + length] += height
    return noisy


def make_sequences(topographs: Dict[str, np.ndarray], frames: int, size: int,
                   seed: int) -> List[Tuple[str, np.ndarray, np.ndarray]]:
    """``(name, clean, noisy)`` per topograph, each (T, size, size) float64 in nm; seeded."""
    rng = np.random.default_rng(seed)
    sequences = []
    for name, topo in topographs.items():
        clean = drifting_sequence(topo, frames, min(size, min(topo.shape)), rng)
        sequences.append((name, clean, add_scan_noise(clean, rng, robust_range(clean))))
    return sequences


# ----------------------------------------------------------------------------------------------------------------
# Methods and scores


def bench_key(method: str) -> str:
    """The benchmark's row key of a ``denoise_eval`` method: its ``raw`` (the levelled frame) is ``levelled`` here,
    ``raw`` being the input before levelling."""
    return "levelled" if method == "raw" else method


def extra_baselines() -> List[str]:
    """The baselines of ``denoise_eval.BASELINE_TABLE`` that the tester does not score (the benchmark scores them
    itself)."""
    return [m for m, baseline in denoise_eval.BASELINE_TABLE.items() if not baseline.tester]


def baseline_outputs(data: np.ndarray) -> Dict[str, np.ndarray]:
    """Every baseline of ``denoise_eval.BASELINE_TABLE`` on a normalised (T, H, W, C) movie, each frame estimated
    from the movie around it (``denoise_eval.estimate``), by ``bench_key``."""
    return {bench_key(m): denoise_eval.estimate_movie(data, m) for m in denoise_eval.BASELINE_TABLE}


def n2n_of(data: np.ndarray, blank: Sequence[int], sub_estimates: np.ndarray) -> Optional[float]:
    """``denoise_eval``'s no-reference n2n PSNR of one method's estimates for the subsampled movie."""
    return denoise_eval.no_reference_scores(data, blank, sub_estimates)["n2n_psnr"]["model"]


def ssim_to_cleanest_of(data: np.ndarray, blank: Sequence[int], sub_estimates: np.ndarray) -> Optional[float]:
    """``denoise_eval``'s SSIM to the cleanest frame of one method's estimates for the subsampled movie."""
    return denoise_eval.ssim_to_cleanest(data, blank, sub_estimates)["ssim"]["model"]


def reference_psnr_ssim(estimate: np.ndarray, reference: np.ndarray) -> Tuple[float, float]:
    """Mean PSNR (peak 1) and SSIM over the frames of two (T, H, W, C) movies on one [0, 1] scale."""
    psnr = [denoise_eval.psnr01(e, r) for e, r in zip(estimate, reference)]
    ssim = [denoise_eval.ssim01(e, r) for e, r in zip(estimate, reference)]
    return float(np.mean(psnr)), float(np.mean(ssim))


def to_scale(frames01: np.ndarray, norm: Normalisation, ref_norm: Normalisation) -> np.ndarray:
    """A movie on one normalisation's [0, 1] scale mapped onto another's (clipped)."""
    return ref_norm.forward(norm.inverse(np.asarray(frames01, np.float32)))


def best_mean(scores: Dict[str, float]) -> str:
    """The best of ``denoise_eval.TEMPORAL_MEANS`` (mean3/mean5/mean7) by a score (higher is better)."""
    return max(denoise_eval.TEMPORAL_MEANS, key=lambda m: scores[m])


def all_means(scores: Dict[str, float]) -> str:
    """The line listing every temporal mean's score."""
    return "all means: " + ", ".join(f"{m} {scores[m]:.2f} dB" for m in denoise_eval.TEMPORAL_MEANS)


# ----------------------------------------------------------------------------------------------------------------
# The model, through the tester's own functions


@dataclass
class Denoiser:
    """A denoising checkpoint loaded through the tester, with its own tester options and recorded settings."""

    path: str
    loaded: Tuple[torch.nn.Module, dict]  # (model, config)
    args: argparse.Namespace
    settings: denoise_job.DenoiseSettings


MODEL_ROWS = (("single", "single-frame model (--single-model)", "--single-model"),
              ("model", "multi-frame model (--model)", "--model"))  # (key, table label, option)
IMAGE_MODELS = (("model", "multi-frame model"), ("single", "single-frame model"))  # (key, panel title), in order


def tester_args(model: Optional[str], movie: str, precision: str) -> argparse.Namespace:
    """The tester's options for ``--denoise`` on ``movie`` with ``model`` (no output is written)."""
    argv = ["--denoise", "--input", movie, "--precision", precision] + (["-m", model] if model else [])
    args = tester.build_parser().parse_args(argv)
    if model is None:
        args.model = None
    return args


def load_model(args: argparse.Namespace):
    """(loaded (model, config), DenoiseSettings) of the tester for ``args.model`` (grey data)."""
    from inference import prepare_model

    denoise_job.check_denoise_model(args.model, tester.DEFAULT_DENOISE_WEIGHTS)
    settings = denoise_job.denoise_settings(args)
    model, config = denoise_job.load_denoiser(args, 1)
    return (prepare_model(model, torch.device("cpu")), config), settings


def load_denoiser(path: str, movie: str, precision: str) -> Denoiser:
    """The checkpoint ``path`` loaded as ``--model`` is (``tester_args``, ``load_model``)."""
    args = tester_args(path, movie, precision)
    loaded, settings = load_model(args)
    return Denoiser(path, loaded, args, settings)


def describe_denoiser(name: str, den: Denoiser) -> str:
    """One line: the checkpoint and the settings it runs with."""
    config = den.loaded[1]
    return (f"{name} {den.path}: nFrames {config['nFrames']}, flows {den.settings.flows}, warping "
            f"{den.settings.warping}, levelling {den.settings.level}, residual {config.get('residual')}")


def model_output(data: np.ndarray, blank: List[int], loaded, args, settings, desc: str) -> np.ndarray:
    """The tester's denoised movie (clipped to [0, 1]) of a normalised (T, H, W, 1) movie."""
    return denoise_job.denoise_array(data, blank, loaded, args, settings, torch.device("cpu"), desc)


def denoise_with(den: Denoiser, data: np.ndarray, blank: List[int], desc: str) -> np.ndarray:
    """``model_output`` of one denoiser, with its own options and settings."""
    return model_output(data, blank, den.loaded, den.args, den.settings, desc)


def not_run_note(key: str) -> str:
    """The table cell of a model row whose checkpoint was not given."""
    option = {k: o for k, _, o in MODEL_ROWS}[key]
    return f"not run: no {option} given"


# ----------------------------------------------------------------------------------------------------------------
# 1. synthetic movies


def mean_or_none(values: Sequence[Optional[float]]) -> Optional[float]:
    """The mean, or None when a value is None (no scorable frame)."""
    return None if any(v is None for v in values) else float(np.mean(values))


def quality_rows(best: str) -> List[Tuple[str, str]]:
    """(label, key) of the rows of both quality tables, in order: the input, then every baseline of
    ``denoise_eval.BASELINE_TABLE`` (the temporal means as one row, the best of them), then the models."""
    sizes = "/".join(m[4:] for m in denoise_eval.TEMPORAL_MEANS)
    rows = [("raw input (no levelling)", "raw"), ("row levelling only", "levelled"),
            (f"temporal mean, best of {sizes}: {best[4:]}", best)]
    rows += [(baseline.label, m) for m, baseline in denoise_eval.BASELINE_TABLE.items()
             if m != "raw" and m not in denoise_eval.TEMPORAL_MEANS]
    return rows + [(label, key) for key, label, _ in MODEL_ROWS]


def synthetic_table(sequences, models: Dict[str, Denoiser]) -> List[str]:
    """Markdown rows of the synthetic benchmark: PSNR/SSIM against the clean frames, and the n2n proxy; ``models``
    by row key ("model", "single")."""
    per_seq: Dict[str, Dict[str, Tuple[float, float]]] = {}
    n2n: Dict[str, Dict[str, Optional[float]]] = {}
    for name, clean, noisy in sequences:
        ref01, ref_norm, _ = preprocess(clean, level=True)
        data, norm, blank = preprocess(noisy, level=True)
        sub, sub_blank = denoise_eval.subsample(data, blank)
        estimates = {"raw": ref_norm.forward(noisy[..., None].astype(np.float32))}
        estimates.update({m: to_scale(v, norm, ref_norm) for m, v in baseline_outputs(data).items()})
        scores = denoise_eval.no_reference_scores(data, blank)["n2n_psnr"]
        n2n[name] = {bench_key(m): v for m, v in scores.items()}
        for m in extra_baselines():
            n2n[name][m] = n2n_of(data, blank, denoise_eval.estimate_movie(sub, m, sub_blank))
        for key, den in models.items():
            out = denoise_with(den, data, blank, f"{name} ({key})")
            estimates[key] = to_scale(out, norm, ref_norm)
            n2n[name][key] = n2n_of(data, blank, denoise_with(den, sub, sub_blank, f"{name} ({key}, n2n)"))
        per_seq[name] = {m: reference_psnr_ssim(v, ref01) for m, v in estimates.items()}
    names = [s[0] for s in sequences]
    mean_psnr = {m: float(np.mean([per_seq[n][m][0] for n in names])) for m in per_seq[names[0]]}
    mean_ssim = {m: float(np.mean([per_seq[n][m][1] for n in names])) for m in per_seq[names[0]]}
    mean_n2n = {m: mean_or_none([n2n[n][m] for n in names]) for m in n2n[names[0]]}
    best = best_mean(mean_psnr)
    base = mean_psnr["levelled"]
    lines = ["| method | PSNR (dB) | vs levelling (dB) | SSIM | n2n proxy (dB) | "
             + " | ".join(f"PSNR {n}" for n in names) + " |",
             "|---" * (5 + len(names)) + "|"]
    for label, key in quality_rows(best):
        if key not in mean_psnr:
            lines.append(f"| {label} | {not_run_note(key)} |" + " |" * (3 + len(names)))
            continue
        proxy = f"{mean_n2n[key]:.2f}" if mean_n2n.get(key) is not None else "n/a"
        lines.append(f"| {label} | {mean_psnr[key]:.2f} | {mean_psnr[key] - base:+.2f} | {mean_ssim[key]:.4f} | "
                     f"{proxy} | " + " | ".join(f"{per_seq[n][key][0]:.2f}" for n in names) + " |")
    lines.append("")
    lines.append(all_means(mean_psnr))
    return lines


# ----------------------------------------------------------------------------------------------------------------
# 2. the real movie


def real_table(args, settings, models: Dict[str, Denoiser], real_frames: int,
               image: Optional[str] = None) -> List[str]:
    """Markdown rows of the real movie: the tester's no-reference n2n PSNR and the fork's SSIM to the cleanest
    frame. The movie is prepared with ``args`` and ``settings``; each of ``models`` runs with its own. With ``image``
    the side-by-side PNG of two frames is written there (``write_side_by_side``)."""
    prepared = denoise_job.prepare(args.input, args, settings)
    movie, data, norm, blank = prepared.movie, prepared.data, prepared.norm, prepared.blank
    raw_units = np.asarray(movie.frames, np.float64)
    if real_frames and real_frames < len(data):
        data, raw_units = data[:real_frames], raw_units[:real_frames]
        blank = [t for t in blank if t < real_frames]
    sub, sub_blank = denoise_eval.subsample(data, blank)
    raw_sub = norm.forward(raw_units[0::2]).astype(np.float32)  # not levelled, on the levelled movie's scale
    n2n = denoise_eval.no_reference_scores(data, blank)
    ssim = denoise_eval.ssim_to_cleanest(data, blank)["ssim"]
    scores = {bench_key(m): v for m, v in n2n["n2n_psnr"].items()}
    ssims = {bench_key(m): v for m, v in ssim.items()}
    subs = {"raw": raw_sub}
    subs.update({m: denoise_eval.estimate_movie(sub, m, sub_blank) for m in extra_baselines()})
    for key, den in models.items():
        subs[key] = denoise_with(den, sub, sub_blank, f"real movie ({key}, n2n)")
    for key, estimates in subs.items():
        scores[key], ssims[key] = n2n_of(data, blank, estimates), ssim_to_cleanest_of(data, blank, estimates)
    best = best_mean(scores)
    lines = [f"movie {os.path.relpath(args.input, ROOT)}: {len(data)} frames of {data.shape[2]}x{data.shape[1]}, "
             f"{n2n['frames']} scored frames, blank {blank}"]
    options = {k: o for k, _, o in MODEL_ROWS}
    for key, den in models.items():
        if (den.settings.level, den.settings.channel) != (settings.level, settings.channel):
            lines.append(f"note: {options[key]} records levelling {den.settings.level}, channel "
                         f"{den.settings.channel}; the movie is prepared with levelling {settings.level}, channel "
                         f"{settings.channel} for every row")
    lines += ["", "| method | n2n PSNR (dB) | vs levelling (dB) | SSIM to cleanest |", "|---|---|---|---|"]
    for label, key in quality_rows(best):
        if key not in scores:
            lines.append(f"| {label} | {not_run_note(key)} | | |")
        else:
            lines.append(f"| {label} | {scores[key]:.2f} | {scores[key] - scores['levelled']:+.2f} | "
                         f"{ssims[key]:.4f} |")
    lines.append("")
    lines.append(all_means(scores))
    if image:
        ks = image_frames(len(sub), sub_blank)
        rows = []
        for k in ks:
            panels = [("levelled input", sub[k]), ("mean of 5", denoise_eval.estimate(sub, k, "mean5", sub_blank))]
            panels += [(title, subs[key][k]) for key, title in IMAGE_MODELS if key in subs]
            rows.append((2 * k, panels))
        write_side_by_side(image, rows)
        lines.append(f"image: {image} (movie frames {', '.join(str(2 * k) for k in ks)}, counted from 0; the "
                     "subsampled movie's estimates, as scored)")
    return lines


# ----------------------------------------------------------------------------------------------------------------
# The side-by-side image of real frames

def image_frames(count: int, blank: Sequence[int] = ()) -> List[int]:
    """Two frames of a movie of ``count`` frames: the non-blank frames nearest to 1/3 and 2/3 of it (distinct)."""
    skip = {int(t) for t in blank}
    chosen: List[int] = []
    for target in (count // 3, (2 * count) // 3):
        for d in range(count):
            near = [t for t in (target + d, target - d) if 0 <= t < count and t not in skip and t not in chosen]
            if near:
                chosen.append(near[0])
                break
    return chosen


def render_panel(frame: np.ndarray, lo: float, hi: float, title: str, index: int, scale: int) -> np.ndarray:
    """uint8 grey panel: two lines of title text (``title``, frame ``index``) above the frame shown from ``lo``
    (black) to ``hi`` (white), enlarged ``scale`` times (nearest neighbour)."""
    grey = denoise_eval.grey(frame)
    pixels = np.clip(np.round((grey - lo) / max(hi - lo, 1e-12) * 255.0), 0, 255).astype(np.uint8)
    if scale > 1:
        pixels = np.repeat(np.repeat(pixels, scale, axis=0), scale, axis=1)
    band = np.full((IMAGE_TITLE_HEIGHT, pixels.shape[1]), 255, np.uint8)
    for line, text in enumerate((title, f"frame {index}")):
        cv2.putText(band, text, (3, 12 + 13 * line), cv2.FONT_HERSHEY_SIMPLEX, 0.38, 0, 1, cv2.LINE_AA)
    return np.concatenate([band, pixels], axis=0)


def side_by_side(rows: List[Tuple[int, List[Tuple[str, np.ndarray]]]]) -> np.ndarray:
    """uint8 grey image: per row ``(frame index, [(title, (H, W, C) frame on [0, 1]), ...])`` its panels left to
    right, ``IMAGE_GAP`` px apart, all at the 1st-99th percentile range of the row's first panel (the input); frames
    under ``IMAGE_MIN_SIDE`` px are shown 2x."""
    strips = []
    for index, panels in rows:
        lo, hi = np.percentile(denoise_eval.grey(panels[0][1]), [1, 99])
        scale = 2 if min(panels[0][1].shape[:2]) < IMAGE_MIN_SIDE else 1
        rendered = [render_panel(frame, float(lo), float(hi), title, index, scale) for title, frame in panels]
        gap = np.full((rendered[0].shape[0], IMAGE_GAP), 255, np.uint8)
        parts = [rendered[0]]
        for panel in rendered[1:]:
            parts += [gap, panel]
        strips.append(np.concatenate(parts, axis=1))
    return np.concatenate(strips, axis=0)


def write_side_by_side(path: str, rows: List[Tuple[int, List[Tuple[str, np.ndarray]]]]) -> None:
    """Write ``side_by_side(rows)`` as a PNG, atomically."""
    ok, encoded = cv2.imencode(".png", side_by_side(rows))
    if not ok:
        raise RuntimeError(f"could not encode the image for {path}")
    atomic.write_bytes(path, encoded.tobytes())


# ----------------------------------------------------------------------------------------------------------------
# 3. speed and memory, one process per configuration


def build_speed_model(model_path: Optional[str]):
    """(model, nFrames, warping, residual): the checkpoint's, or the compact RBPN with seeded random weights."""
    import rbpn

    if model_path:
        import checkpoint

        net, config = checkpoint.build_generator(model_path, expect={"task": "denoise", "num_channels": 1})
        _, meta = checkpoint.read_checkpoint(model_path)
        warping = bool(((meta or {}).get("denoise") or {}).get("warping", False))
        return net, config["nFrames"], warping, bool(config.get("residual"))
    torch.manual_seed(0)
    return rbpn.Net(**COMPACT), COMPACT["nFrames"], True, True


def speed_child(precision: str, inputs: str, output: str, model_path: Optional[str]) -> None:
    """One configuration in a fresh process: denoise the frames of ``inputs`` (zero flows), print a JSON line."""
    from inference import denoise_clip, prepare_model

    net, nframes, warping, residual = build_speed_model(model_path)
    model = prepare_model(net, torch.device("cpu"))
    frames = np.load(inputs)
    warm = frames[:, :32, :32]
    for _ in denoise_clip(model, ((f, None) for f in warm[:1]), nframes, precision=precision, flows="zero",
                          warping=warping, residual=residual, prefetch=False):
        pass
    before = hardware.resident_mib()
    outs = []
    start, cpu_start = time.perf_counter(), time.process_time()
    for _, _, _, out in denoise_clip(model, ((f, None) for f in frames), nframes, precision=precision, flows="zero",
                                     warping=warping, residual=residual, prefetch=False):
        outs.append(out)
    seconds = time.perf_counter() - start
    cpu_seconds = time.process_time() - cpu_start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    np.save(output, np.stack(outs))
    print(json.dumps({"fps": len(frames) / seconds, "cpu_s": cpu_seconds / len(frames), "peak": peak,
                      "before": before}))


def speed_table(model_path: Optional[str], size: int, count: int, topograph: np.ndarray, seed: int) -> List[str]:
    """Markdown rows: frames/s, CPU-s/frame and peak memory for fp32 and the auto precision, with ratios to fp32."""
    auto = hardware.resolve_precision("auto", "cpu")
    configs = ["fp32"] + ([auto] if auto != "fp32" else [])
    net, nframes, warping, residual = build_speed_model(model_path)
    params = sum(p.numel() for p in net.parameters())
    del net
    rng = np.random.default_rng(seed)
    clean = drifting_sequence(topograph, count, min(size, min(topograph.shape)), rng)
    data, _, _ = preprocess(add_scan_noise(clean, rng, robust_range(clean)), level=True)
    start = time.perf_counter()
    compute_flows(data[0], [data[min(i, len(data) - 1)] for i in range(1, nframes)])
    flow_s = time.perf_counter() - start
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        inputs = os.path.join(tmp, "frames.npy")
        np.save(inputs, data)
        for precision in configs:
            output = os.path.join(tmp, f"out_{precision}.npy")
            cmd = [sys.executable, os.path.abspath(__file__), "--child", precision, "--inputs", inputs, "--out", output]
            cmd += ["--model", model_path] if model_path else []
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                sys.exit(f"speed run {precision} failed:\n{proc.stderr[-2000:]}")
            results[precision] = json.loads(proc.stdout.strip().splitlines()[-1])
            results[precision]["out"] = np.load(output)
    what = f"--model {model_path}" if model_path else "random-init compact RBPN (base_filter 32, feat 16, n_resblock 2)"
    lines = [f"{what}, {params:,} parameters, nFrames {nframes}, warping {'on' if warping else 'off'}; "
             f"{len(data)} frames of {data.shape[2]}x{data.shape[1]} per configuration, each in its own process; "
             f"model only (zero flows). pyflow for one frame's {nframes - 1} flows: {flow_s:.2f} s",
             f"precision auto -> {auto} on this CPU", "",
             "| precision | frames/s | speed vs fp32 | CPU-s/frame | peak RSS (MiB) | rise over pre-loop RSS (MiB) | "
             "output vs fp32 (PSNR dB) |", "|---|---|---|---|---|---|---|"]
    base = results["fp32"]
    for precision, r in results.items():
        agree = denoise_eval.psnr01(np.clip(r["out"], 0, 1), np.clip(base["out"], 0, 1))
        lines.append(f"| {precision} | {r['fps']:.3f} | {r['fps'] / base['fps']:.2f}x | {r['cpu_s']:.2f} | "
                     f"{r['peak']:.0f} | {r['peak'] - r['before']:+.0f} | "
                     f"{'(baseline)' if precision == 'fp32' else f'{agree:.2f}'} |")
    if len(configs) == 1:
        lines.append("(auto is fp32 on this CPU: no faster precision to compare)")
    return lines


# ----------------------------------------------------------------------------------------------------------------
# main


def main(argv: Optional[List[str]] = None) -> None:
    """Run the benchmark and print its report (``argv``: the options, default the command line's)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None, help="denoising generator checkpoint (default: baselines only)")
    p.add_argument("--single-model", default=None,
                   help="single-frame denoising checkpoint (trained with --nFrames 1) for the single-frame model row")
    p.add_argument("--movie", default=DEFAULT_MOVIE, help="real movie for the no-reference score")
    p.add_argument("--image", default=None,
                   help="write a PNG of two real frames here: levelled input, mean of 5 and the models side by side")
    p.add_argument("--frames", type=int, default=10, help="frames per synthetic movie")
    p.add_argument("--size", type=int, default=256, help="synthetic frame size (px, square; 256 at most)")
    p.add_argument("--real-frames", type=int, default=0, help="use only the first N frames of --movie (0 = all)")
    p.add_argument("--speed-frames", type=int, default=4, help="frames per speed configuration")
    p.add_argument("--speed-size", type=int, default=256, help="frame size of the speed runs")
    p.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"),
                   help="precision of the quality runs (the tester's default: auto)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--skip-real", action="store_true", help="skip the real movie")
    p.add_argument("--skip-speed", action="store_true", help="skip the speed and memory runs")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--inputs", default=None, help=argparse.SUPPRESS)
    p.add_argument("--out", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        speed_child(args.child, args.inputs, args.out, args.model)
        return
    if args.frames < 3 or args.size < 16:
        p.error("--frames must be at least 3 and --size at least 16")
    shown = sys.argv if argv is None else [os.path.relpath(os.path.abspath(__file__), ROOT)] + list(argv)
    command = " ".join(shlex.quote(a) for a in [os.path.relpath(sys.executable, ROOT)] + shown)
    topographs = load_topographs(fetch_spiepy_wheel())
    movie = os.path.abspath(args.movie)
    models: Dict[str, Denoiser] = {}
    if args.model:
        models["model"] = load_denoiser(args.model, movie, args.precision)
    if args.single_model:
        models["single"] = load_denoiser(args.single_model, movie, args.precision)
    # the real movie is prepared as the tester prepares it for --model (else --single-model)
    first = models.get("model") or models.get("single")
    targs = first.args if first else tester_args(None, movie, args.precision)
    settings = first.settings if first else denoise_job.DenoiseSettings()

    sequences = make_sequences(topographs, args.frames, args.size, args.seed)
    quality_precision = hardware.resolve_precision(args.precision, "cpu")
    output = [f"command: {command}", hardware.describe_cpu(),
              f"torch {torch.__version__}, {torch.get_num_threads()} thread(s); quality runs at precision "
              f"{args.precision} (-> {quality_precision})"]
    if "model" in models:
        output.append(describe_denoiser("model", models["model"]))
    if "single" in models:
        single_frames = models["single"].loaded[1]["nFrames"]
        output.append(describe_denoiser("single model", models["single"])
                      + ("" if single_frames == 1 else " (not a single-frame checkpoint)"))
    output += ["", f"## Synthetic STM movies ({SPIEPY_REQUIREMENT} demo topographs), {args.frames} frames of "
               f"{args.size}x{args.size}, seed {args.seed}",
               f"drift {DRIFT_PX[0]}-{DRIFT_PX[1]} px/frame; noise in units of each clean movie's robust range: "
               f"Gaussian {GAUSS_SIGMA}, line offsets {LINE_SIGMA}, {SCARS_PER_ROW} scars per row of "
               f"{SCAR_LENGTH[0]}-{SCAR_LENGTH[1]} px, height {SCAR_HEIGHT[0]}-{SCAR_HEIGHT[1]}",
               "PSNR (peak 1) / SSIM against the clean frames on the clean movie's [0, 1] scale (levelled, 0.5/99.5 "
               "percentiles); n2n proxy: denoise_eval's no-reference score from the noisy movie alone", ""]
    output += synthetic_table(sequences, models)
    image_note = "not written: --skip-real" if args.image else None
    if not args.skip_real:
        output += ["", "## Real movie: no-reference n2n PSNR (denoise_eval, as the tester's metrics.json)", ""]
        if os.path.isfile(args.movie):
            output += real_table(targs, settings, models, args.real_frames, args.image)
            image_note = None
        else:
            output.append(f"skipped: {args.movie} not found (python DatasetFetcher.py --afm_sample --dest afm_sample)")
            image_note = "not written: no real movie" if args.image else None
    if image_note:
        output.append(f"image: {image_note}")
    if not args.skip_speed:
        output += ["", f"## Speed and peak memory at {args.speed_size}x{args.speed_size}", hardware.describe_cpu(), ""]
        output += speed_table(args.model, args.speed_size, args.speed_frames, topographs["step"], args.seed)
    print("\n".join(output))


if __name__ == "__main__":
    main()
