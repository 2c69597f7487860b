"""The tester's ``--denoise`` job: denoise consecutive SPM/AFM scans (or any movie) with a denoising generator.

``denoise_movies`` finds the movies of ``--input`` and reads each one before any work, loads the model (once per
channel count), then per movie normalises it (``denoise_data.preprocess``), runs the model over nFrames windows
(``inference.denoise_clip``), writes ``<movie>.npy`` (the input's units and shape), 16-bit PNG frames, an mp4 preview
and ``<movie>_compare.png`` (raw | denoised), scores it without a clean frame (``denoise_eval``; with
``--reference`` also against a clean movie) and finally writes ``metrics.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import dataclass
from fractions import Fraction
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

import cv2
import numpy as np
import torch
from tqdm import tqdm

import atomic
import checkpoint
import denoise_eval
import logger
import metrics
import plots
import scans
from clips import Clip, check_output, real_path, unique_stems
from denoise_data import FLOW_METHODS, Normalisation, preprocess
from errors import UserError
from inference import denoise_clip, prepare_model
from options import PROJECT_ROOT
from upscale import BICUBIC, check_model_file, flow_function
from video_io import video_extension, video_info, write_video

DEFAULT_MOVIE_FPS = Fraction(10)  # preview rate when a movie gives no frame time
COMPARE_FRAMES = 3  # frames shown in <movie>_compare.png

Loaded = Tuple[torch.nn.Module, dict]  # (model on its device, config)

# ----------------------------------------------------------------------------------------------------------- model


@dataclass
class DenoiseSettings:
    """How a denoising generator was trained, as far as inference repeats it: read from its checkpoint's
    ``meta["denoise"]``; the fork's plain state_dicts record nothing and get the defaults."""

    warping: bool = False
    flows: str = "pyflow"
    level: bool = True
    channel: Optional[str] = None  # the channel it was trained on (the default for .asd inputs)
    recorded: bool = False  # whether the checkpoint recorded its settings

    def to_dict(self) -> dict:
        return {"warping": self.warping, "flows": self.flows, "level": self.level, "trained_channel": self.channel,
                "from_checkpoint": self.recorded}


def check_denoise_model(path: str, default: str) -> None:
    """A one-line error when ``--model`` is no checkpoint file, including a deleted ``default`` denoiser (the model
    used when no -m is given, relative to the project)."""
    if path.lower() == BICUBIC:
        raise UserError("--model bicubic is the upscaling baseline; with --denoise, metrics.json scores the raw frames "
                        "and temporal means as baselines: pass -m CHECKPOINT of a denoising generator")
    if not os.path.exists(path) and real_path(path) == real_path(os.path.join(PROJECT_ROOT, default)):
        raise UserError(f"no -m given and the default denoising model {default} is missing: restore "
                        "it (git checkout weights/), pass -m CHECKPOINT, or train one with iSeeBetterTrain.py "
                        "--denoise (see README)")
    check_model_file(path, "pass -m PATH.pth of a generator trained with iSeeBetterTrain.py --denoise")


def denoise_settings(args: argparse.Namespace) -> DenoiseSettings:
    """The checkpoint's recorded warping, flows, levelling and channel (``--level/--no-level`` overrides
    levelling)."""
    _, meta = checkpoint.read_checkpoint(args.model)
    recorded = (meta or {}).get("denoise")
    values = recorded if isinstance(recorded, dict) else {}
    flows = values.get("flows", "pyflow")
    if flows not in FLOW_METHODS:
        raise UserError(f"checkpoint {args.model} records flows {flows!r}, which this tester does not know "
                        f"({', '.join(FLOW_METHODS)})")
    level = bool(values.get("level", True)) if args.level is None else args.level
    channel = values.get("channel")
    return DenoiseSettings(warping=bool(values.get("warping", False)), flows=flows, level=level,
                           channel=str(channel) if channel else None, recorded=bool(values))


def load_denoiser(args: argparse.Namespace, channels: int) -> Tuple[torch.nn.Module, dict]:
    """(model, config) of the denoising checkpoint ``--model`` for data with ``channels`` channels; an upscaling
    checkpoint, or one for other channels, is the one-line error of ``checkpoint.build_generator``."""
    expect = {"task": "denoise", "num_channels": channels}
    if args.nFrames is not None:
        expect["nFrames"] = args.nFrames
    model, config = checkpoint.build_generator(args.model, expect=expect)
    logger.info(f"loaded {args.model}: {checkpoint.describe_generator(config)}, nFrames={config['nFrames']}, "
                f"{sum(p.numel() for p in model.parameters()):,} parameters")
    return model, config


def load_models(jobs: List[MovieJob], args: argparse.Namespace, device: torch.device) -> Dict[int, Loaded]:
    """The denoiser on ``device``, loaded once per channel count among the movies."""
    loaded: Dict[int, Loaded] = {}
    for job in jobs:
        channels = job.shape[3]
        if channels not in loaded:
            model, config = load_denoiser(args, channels)
            loaded[channels] = (prepare_model(model, device), config)
    return loaded


# ---------------------------------------------------------------------------------------------------------- movies


@dataclass
class MovieJob:
    """One movie to denoise, as found before any work."""

    path: str
    name: str
    shape: Tuple[int, int, int, int]  # (T, H, W, C)
    squeeze: bool  # the output .npy is (T, H, W), like the input


class Prepared(NamedTuple):
    """A movie read and normalised for the network."""

    movie: scans.Movie
    data: np.ndarray  # (T, H, W, C) in [0, 1]
    norm: Normalisation
    blank: List[int]  # indices of blank (constant) frames


def prepare_movie(path: str, args: argparse.Namespace, settings: DenoiseSettings) -> Prepared:
    """Read a movie (``scans.read_movie``) and normalise it (``denoise_data.preprocess``). An .asd file is read in
    ``--channel``, else in the channel the checkpoint was trained on."""
    if args.channel is None and settings.channel and path.lower().endswith(scans.ASD_EXTENSION):
        try:
            movie = scans.read_movie(path, settings.channel)
        except scans.ScanError as exc:
            raise UserError(f"{exc} (the checkpoint was trained on channel {settings.channel}; pass --channel to "
                            "choose one)") from None
    else:
        movie = scans.read_movie(path, args.channel)
    try:
        data, norm, blank = preprocess(movie.frames, level=settings.level, unit=movie.unit, extra_blank=movie.blank)
    except UserError as exc:
        raise UserError(f"{path}: {exc}") from None
    return Prepared(movie, data, norm, blank)


def _movie_job(path: str, name: str, prepared: Prepared, args: argparse.Namespace) -> MovieJob:
    """The job of a prepared movie, after the checks that need its size."""
    t, h, w, c = prepared.data.shape
    if args.eval and min(h, w) < 11:
        raise UserError(f"{path}: frames of {w}x{h} px are too small to evaluate (SSIM needs 11x11 px); pass --no-eval")
    squeeze = c == 1
    if path.lower().endswith(".npy"):
        squeeze = np.load(path, mmap_mode="r").ndim == 3
    return MovieJob(path, name, (t, h, w, c), squeeze)


def find_movies(args: argparse.Namespace, settings: DenoiseSettings) -> Tuple[List[MovieJob], Prepared]:
    """Every movie of ``--input``, read and checked before any work: (jobs, the last movie prepared, for reuse)."""
    paths = scans.find_movies(args.input)
    if args.reference and len(paths) > 1:
        raise UserError(f"--reference is the clean version of one movie, but --input {args.input} holds "
                        f"{len(paths)}; pass that one movie")
    jobs: List[MovieJob] = []
    prepared = None
    for path, name in zip(paths, unique_stems(paths)):
        prepared = prepare_movie(path, args, settings)
        jobs.append(_movie_job(path, name, prepared, args))
    return jobs, prepared


def _read_reference(args: argparse.Namespace, job: MovieJob) -> scans.Movie:
    """The ``--reference`` movie, which must have the input's shape."""
    channel = args.channel if args.reference.lower().endswith(".asd") else None
    reference = scans.read_movie(args.reference, channel)
    if reference.frames.shape != job.shape:
        raise UserError(f"--reference {args.reference} has shape {reference.frames.shape} but the input {job.path} "
                        f"has {job.shape} (T, H, W, C); pass the clean version of the same movie")
    return reference


def _frame_list(indices: Sequence[int], shown: int = 8) -> str:
    """'3, 7, 9' (1-based frame numbers, as the PNG names) or '3, 7, ... (12 in all)'."""
    numbers = [str(t + 1) for t in indices]
    if len(numbers) <= shown:
        return ", ".join(numbers)
    return f"{', '.join(numbers[:shown])}, ... ({len(numbers)} in all)"


# ------------------------------------------------------------------------------------------------------------- run


def denoise_array(frames: np.ndarray, blank: Sequence[int], loaded: Loaded, args: argparse.Namespace,
                  settings: DenoiseSettings, device: torch.device, desc: str) -> np.ndarray:
    """The model's output for every frame of a normalised movie, clipped to [0, 1]; blank frames are the input."""
    model, config = loaded
    skip = set(blank)
    out = np.empty_like(frames)
    stream = denoise_clip(model, ((frame, None) for frame in frames), config["nFrames"],
                          future_frame=args.future_frame, edge=args.edge, tile=args.tile, overlap=args.tile_overlap,
                          precision=args.precision, device=device, flows=settings.flows, warping=settings.warping,
                          residual=config.get("residual") or args.residual, blank=skip,
                          flow_threads=args.threads,
                          flow_fn=flow_function(args, device) if settings.flows == "pyflow" else None)
    with tqdm(total=len(frames), unit="frame", desc=desc, dynamic_ncols=True, leave=True,
              disable=not args.progress) as bar:
        for t, _, _, result in stream:
            out[t] = result if t in skip else np.clip(result, 0.0, 1.0)
            bar.update(1)
    return out


# ----------------------------------------------------------------------------------------------------------- write


def _to_rgb8(frame: np.ndarray) -> np.ndarray:
    """An (H, W, C) frame on [0, 1] as RGB uint8 (grey repeated)."""
    img = metrics.to_uint8(frame * 255.0)
    return np.ascontiguousarray(np.repeat(img, 3, axis=2) if img.shape[2] == 1 else img)


def save_png16(path: str, frame: np.ndarray) -> None:
    """Write an (H, W, C) frame on [0, 1] as a 16-bit grey or RGB PNG (0..65535), atomically."""
    values = np.round(np.clip(frame, 0.0, 1.0) * 65535.0).astype(np.uint16)
    values = values[:, :, 0] if values.shape[2] == 1 else values[:, :, ::-1]  # RGB -> OpenCV's BGR
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(values), [cv2.IMWRITE_PNG_COMPRESSION, 3])
    if not ok:
        raise UserError(f"cannot encode {path} as a 16-bit PNG")
    atomic.write_bytes(path, buf.tobytes())


def save_npy(path: str, array: np.ndarray) -> None:
    """``numpy.save`` atomically."""
    with atomic.atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, array)


def _movie_rate(movie: scans.Movie) -> Fraction:
    """Preview frame rate: the scan's frame time (.asd), a video's rate, else ``DEFAULT_MOVIE_FPS``."""
    ms = movie.info.get("frame_time_ms")
    if isinstance(ms, (int, float)) and np.isfinite(ms) and ms > 0:
        return Fraction(round(1000.0 / ms, 3)).limit_denominator(1000)
    if movie.info.get("format") == "video":
        return video_info(movie.source)["rate"]
    return DEFAULT_MOVIE_FPS


def _write_compare(job: MovieJob, prepared: Prepared, out: np.ndarray, args: argparse.Namespace) -> str:
    """``<movie>_compare.png``: raw | denoised of ``COMPARE_FRAMES`` frames spread over the movie (not blank)."""
    data, blank = prepared.data, prepared.blank
    usable = [t for t in range(len(out)) if t not in set(blank)] or list(range(len(out)))
    shown = sorted({usable[(len(usable) * k) // (COMPARE_FRAMES + 1)] for k in range(1, COMPARE_FRAMES + 1)})
    rows = [[(f"raw {t + 1}", _to_rgb8(data[t])), (f"denoised {t + 1}", _to_rgb8(out[t]))] for t in shown]
    zoom = max(1, min(4, 128 // max(1, min(data.shape[1:3]))))
    compare = os.path.join(args.output, job.name + "_compare.png")
    plots.panel_grid(compare, rows, crop_size=192, zoom=zoom)
    return compare


def write_movie(job: MovieJob, prepared: Prepared, out: np.ndarray, args: argparse.Namespace) -> None:
    """The outputs of one denoised movie: ``<movie>.npy`` in the input's units and shape (blank frames as read),
    ``<movie>/00001.png ...`` (16-bit), the preview video and ``<movie>_compare.png``."""
    movie, _, norm, blank = prepared
    units = norm.inverse(out)
    for t in blank:
        units[t] = movie.frames[t]
    npy = os.path.join(args.output, job.name + ".npy")
    save_npy(npy, units[..., 0] if job.squeeze else units)
    folder = os.path.join(args.output, job.name)
    for t in range(len(out)):
        save_png16(os.path.join(folder, f"{t + 1:05d}.png"), out[t])
    video = os.path.join(args.output, job.name + video_extension(args.codec))
    rate = _movie_rate(movie)
    write_video(video, (_to_rgb8(f) for f in out), rate, codec=args.codec, crf=args.crf, preset=args.preset,
                log=logger.warning)
    compare = _write_compare(job, prepared, out, args)
    logger.info(f"{job.name}: {len(out)} frames -> {npy} ({movie.unit or 'input units'}), {folder}/ (16-bit PNG), "
                f"{video} ({float(rate):g} fps) and {compare}")


# ----------------------------------------------------------------------------------------------------------- score


def score_movie(job: MovieJob, prepared: Prepared, out: np.ndarray, reference: Optional[scans.Movie],
                loaded: Loaded, args: argparse.Namespace, settings: DenoiseSettings, device: torch.device) -> dict:
    """metrics.json entries of one movie: the no-reference scores (an extra pass of the model over the even frames),
    the fork's scores, and with ``reference`` PSNR/SSIM against it."""
    _, data, norm, blank = prepared
    scores: dict = {}
    if len(data) >= 3:
        sub, sub_blank = denoise_eval.subsample(data, blank)
        model_sub = denoise_array(sub, sub_blank, loaded, args, settings, device, f"{job.name} (eval)")
        scores["no_reference"] = denoise_eval.no_reference_scores(data, blank, model_sub)
        scores["ssim_to_cleanest"] = denoise_eval.ssim_to_cleanest(data, blank, model_sub)
    else:
        logger.warning(f"{job.name}: {len(data)} frame(s) are too few for the no-reference scores (they need 3)")
    scores["noise_blur"] = denoise_eval.noise_blur_scores(data, out, blank)
    if reference is not None:
        try:
            ref01, ref_norm, ref_blank = preprocess(reference.frames, level=settings.level, unit=reference.unit,
                                                    extra_blank=reference.blank)
        except UserError as exc:
            raise UserError(f"--reference {args.reference}: {exc}") from None
        output = ref_norm.forward(norm.inverse(out))
        raw = ref_norm.forward(norm.inverse(data))  # the input as the network saw it: levelled, clipped
        skip = sorted(set(blank) | set(ref_blank))
        scores["reference"] = denoise_eval.reference_scores(output, raw, ref01, skip)
    return scores


def _log_scores(name: str, result: dict) -> None:
    """The headline scores of one movie: no-reference PSNR per method, and the scores against --reference."""
    n2n = result.get("no_reference", {}).get("n2n_psnr", {})
    if n2n and n2n.get("raw") is not None:
        parts = ", ".join(f"{m} {v:.2f}" for m, v in n2n.items() if v is not None)
        logger.info(f"{name}: no-reference PSNR against held-out frames (dB): {parts}")
    ref = result.get("reference")
    if ref:
        logger.info(f"{name}: against --reference: PSNR raw {ref['psnr']['raw']:.2f} dB -> model "
                    f"{ref['psnr']['model']:.2f} dB, SSIM raw {ref['ssim']['raw']:.4f} -> model "
                    f"{ref['ssim']['model']:.4f}")


def denoise_movie(job: MovieJob, prepared: Prepared, reference: Optional[scans.Movie], loaded: Loaded,
                  args: argparse.Namespace, settings: DenoiseSettings, device: torch.device) -> dict:
    """Denoise one movie, write its outputs and score it; returns its metrics.json entry."""
    movie, data, norm, blank = prepared
    if blank:
        logger.warning(f"{job.name}: blank (constant) frame(s) {_frame_list(blank)}: passed through unchanged, never "
                       "used as neighbours")
    out = denoise_array(data, blank, loaded, args, settings, device, job.name)
    write_movie(job, prepared, out, args)
    result = {"source": job.path, "frames": job.shape[0], "height": job.shape[1], "width": job.shape[2],
              "channels": job.shape[3], "channel": movie.channel, "unit": movie.unit,
              "blank_frames": [int(t) for t in blank], "normalisation": norm.to_dict()}
    if args.eval:
        result.update(score_movie(job, prepared, out, reference, loaded, args, settings, device))
        _log_scores(job.name, result)
    return result


# --------------------------------------------------------------------------------------------------------- summary


PROTOCOL = {
    "scale": "each movie's [0, 1] scale: its 0.5 and 99.5 percentiles (after levelling) map to 0 and 1",
    "n2n_psnr": "PSNR (peak 1) of each method's estimate of frame 2k, made from the even frames only, against "
                "the mean of frames 2k-1 and 2k+1, which no method saw; mean over frames (denoise_eval)",
    "baselines": "raw: the frame; meanN: mean of N even frames centred on it; mean3_blur: mean3 then a Gaussian "
                 "blur (sigma 1 px)",
    "ssim_to_cleanest": "the fork's SSIM (grey, Gaussian 11x11) against the cleanest frame by streak score of "
                        "each 10-frame block: the cleanest odd frame, estimated from the cleanest even frame",
    "noise_blur": "means of metrics.streak_score (noise, lower = fewer streaks) and metrics.laplacian_variance "
                  "(blur, lower = smoother) of the raw and the denoised frames",
    "reference": "PSNR (peak 1) and SSIM of the output and of the raw input (as the network saw it: levelled "
                 "when levelling is on, clipped to its 0.5/99.5 percentiles) against --reference, all mapped "
                 "with the reference's own normalisation (its 0.5/99.5 percentiles to 0/1, clipped)",
}  # how metrics.json's scores are made (its "protocol" entry, after the run's settings)


def denoise_summary(results: Dict[str, dict], args: argparse.Namespace, settings: DenoiseSettings,
                    config: dict) -> dict:
    """metrics.json content of a --denoise run: per movie, the average over movies, and the protocol."""
    average: Dict[str, dict] = {}
    for section, key in (("no_reference", "n2n_psnr"), ("ssim_to_cleanest", "ssim")):
        values: Dict[str, List[float]] = {}
        for result in results.values():
            for method, value in result.get(section, {}).get(key, {}).items():
                if value is not None:
                    values.setdefault(method, []).append(value)
        if values:
            average[key] = {m: float(np.mean(v)) for m, v in values.items()}
    protocol = {
        "model": args.model, "arch": config.get("arch", "Net"), "nFrames": config["nFrames"],
        "settings": settings.to_dict(), "edge": args.edge, "future_frame": args.future_frame,
        "tile": args.tile, "tile_overlap": args.tile_overlap if args.tile else None, "precision": args.precision,
        **PROTOCOL, "psnr_cap_db": metrics.PSNR_MAX_DB,
    }
    return {"movies": results, "average": average, "protocol": protocol}


# ------------------------------------------------------------------------------------------------------------- job


def _log_run(jobs: List[MovieJob], config: dict, settings: DenoiseSettings, args: argparse.Namespace,
             device: torch.device) -> None:
    """One line: the movies, the model and the settings of the run."""
    logger.info(f"{len(jobs)} movie(s), {checkpoint.describe_generator(config)}, flows {settings.flows}, warping "
                f"{'on' if settings.warping else 'off'}, levelling {'on' if settings.level else 'off'}"
                f"{'' if settings.recorded else ' (defaults: the checkpoint records no denoise settings)'}, edge "
                f"{args.edge}, device {device}, precision {args.precision}"
                + (f", tile {args.tile}/{args.tile_overlap} (blended)" if args.tile else ""))


def _warn_other_channel(job: MovieJob, prepared: Prepared, settings: DenoiseSettings) -> None:
    """A warning when a movie's channel is not the one the model was trained on."""
    channel = prepared.movie.channel
    if settings.channel and channel and settings.channel.lower() != str(channel).lower():
        logger.warning(f"{job.name}: the model was trained on channel {settings.channel}, this is {channel}")


def denoise_movies(args: argparse.Namespace, device: torch.device) -> int:
    """``--denoise``: every movie of ``--input`` is checked before any work, then denoised, written and scored;
    ``metrics.json`` sums them up. ``--model`` is checked already (``check_denoise_model``)."""
    settings = denoise_settings(args)
    jobs, last = find_movies(args, settings)
    reference = _read_reference(args, jobs[0]) if args.reference else None
    loaded = load_models(jobs, args, device)
    clips = [Clip(job.name, video=job.path, frame_count=job.shape[0]) for job in jobs]
    check_output(clips, args, extra_inputs=[p for p in (args.reference, args.input) if p])
    config = next(iter(loaded.values()))[1]
    _log_run(jobs, config, settings, args, device)

    start = time.time()
    results = {}
    for job in jobs:
        prepared = last if job is jobs[-1] else prepare_movie(job.path, args, settings)  # one movie in memory
        _warn_other_channel(job, prepared, settings)
        results[job.name] = denoise_movie(job, prepared, reference, loaded[job.shape[3]], args, settings, device)
    summary = denoise_summary(results, args, settings, config)
    path = os.path.join(args.output, "metrics.json")
    atomic.write_text(path, json.dumps(summary, indent=2) + "\n")
    logger.info(f"done in {time.time() - start:.1f} s -> {path}")
    return 0
