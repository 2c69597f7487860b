"""The tester's ``--denoise`` job: denoise consecutive SPM/AFM scans (or any movie) with a denoising generator.

``denoise_movies`` finds the movies of ``--input`` and reads and checks each one before any work
(``frame_check.check_frames``: blank and corrupt frames, outlier pixels, each finding one warning), loads the model
(once per channel count), then per movie normalises it (``denoise_data.preprocess``), runs the model over nFrames
windows (``inference.denoise_clip``), writes ``<movie>.npy`` (the input's units and shape), 16-bit PNG frames
``<movie>/00000.png ...``, an mp4 preview and ``<movie>_compare.png`` (raw | denoised) as soon as that movie is done,
scores it without a clean frame (``denoise_eval``; with ``--reference`` also against a clean movie) and rewrites
``metrics.json`` with the movies done so far. Frames count from 0 everywhere (log lines, metrics.json, PNG names).
A movie whose frames are all blank is passed through unchanged. A grey model reads a video whose three channels are
equal (grey content) as grey.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import os
import time
from dataclasses import dataclass
from fractions import Fraction
from typing import Callable, Dict, Iterator, List, NamedTuple, Optional, Tuple

import cv2
import numpy as np
import torch
from tqdm import tqdm

import atomic
import checkpoint
import denoise_eval
import denoise_methods as dm
import logger
import metrics
import plots
import scans
from clips import Clip, check_output, real_path, unique_stems
from denoise_data import FLOW_METHODS, Normalisation, preprocess
from errors import UserError, describe_os_error, free_bytes
from frame_check import PASS_ACTION, FrameCheck, check_frames, describe_findings, frame_span
from inference import denoise_clip, prepare_model
from options import PROJECT_ROOT
from upscale import BICUBIC, check_model_file, flow_function
from video_io import video_extension, video_info, write_video

DEFAULT_MOVIE_FPS = Fraction(10)  # preview rate when a movie gives no frame time
COMPARE_FRAMES = 3  # frames shown in <movie>_compare.png
GREY_FORMATS = ("video", "frames", "tiff")  # decoded formats that store grey content as RGB
MIN_FRAMES_TO_SCORE = 8  # usable frames --method auto needs to score the methods
SHORT_MOVIE_METHOD = "mean3"  # what a movie too short to score gets: the shortest mean
MODEL_SCORED_FRAMES = 12  # frames auto scores (each costs the model one more pass)
FINETUNED = "model-finetuned"  # --method of the model fine-tuned on the movie (--finetune)

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
    model_channels: Optional[int] = None  # the generator's input channels (1 grey, 3 colour), None if unknown

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
    sd, meta = checkpoint.read_checkpoint(args.model)
    recorded = (meta or {}).get("denoise")
    values = recorded if isinstance(recorded, dict) else {}
    flows = values.get("flows", "pyflow")
    if flows not in FLOW_METHODS:
        raise UserError(f"checkpoint {args.model} records flows {flows!r}, which this tester does not know "
                        f"({', '.join(FLOW_METHODS)})")
    level = bool(values.get("level", True)) if args.level is None else args.level
    channel = values.get("channel")
    first = sd.get("feat0.conv.weight")  # (base_filter, channels, 3, 3) of any RBPN (checkpoint.infer_rbpn_config)
    model_channels = int(first.shape[1]) if first is not None and first.dim() == 4 else None
    return DenoiseSettings(warping=bool(values.get("warping", False)), flows=flows, level=level,
                           channel=str(channel) if channel else None, recorded=bool(values),
                           model_channels=model_channels)


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


class MovieClip(Clip):
    """A movie as ``clips.check_output`` plans its outputs: PNG frames named from 00000 (frames count from 0)."""

    def frame_name(self, t: int) -> str:
        return f"{t:05d}"


class Prepared(NamedTuple):
    """A movie read, checked and normalised for the network."""

    movie: scans.Movie
    data: np.ndarray  # (T, H, W, C) in [0, 1]
    norm: Normalisation
    blank: List[int]  # indices of the skipped frames: blank (constant) or corrupt, never denoised
    check: FrameCheck
    passthrough: bool = False  # every frame is skipped: the movie is passed through unchanged

    def blank_frames(self) -> List[int]:
        """The blank (constant) frames, for metrics.json (the skipped ones that are not corrupt)."""
        return sorted((set(self.check.blank) | set(self.movie.blank)) - set(self.check.corrupt))


def _read(path: str, args: argparse.Namespace, settings: DenoiseSettings) -> scans.Movie:
    """``scans.read_movie``: an .asd file in ``--channel``, else in the channel the checkpoint was trained on."""
    if args.channel is None and settings.channel and path.lower().endswith(scans.ASD_EXTENSION):
        try:
            return scans.read_movie(path, settings.channel, keep_truncated=args.keep_truncated)
        except scans.ScanError as exc:
            raise UserError(f"{exc} (the checkpoint was trained on channel {settings.channel}; pass --channel to "
                            "choose one)") from None
    return scans.read_movie(path, args.channel, keep_truncated=args.keep_truncated)


def match_model_channels(movie: scans.Movie, args: argparse.Namespace, settings: DenoiseSettings, name: str,
                         log: bool) -> scans.Movie:
    """For a grey model, a colour video (or frame movie) whose channels are equal within codec error becomes grey,
    with a one-line note; one that is really colour is a one-line error that says so. Other movies are unchanged
    (the checkpoint's channel check judges them)."""
    if settings.model_channels != 1 or movie.frames.shape[3] != 3 or movie.info.get("format") not in GREY_FORMATS:
        return movie
    what = "video" if movie.info.get("format") == "video" else "movie"
    mean, p99 = scans.channel_spread(movie)
    spread = f"its colour channels differ by {100 * mean:.2g} % of the full range on average, {100 * p99:.2g} % " \
             "at the 99th percentile"
    if not scans.is_grey_content(movie):
        raise UserError(f"{movie.source} is a colour {what} ({spread}) but the model {args.model} is grey (1 "
                        f"channel): convert the {what} to grey first, or pass a model trained on colour data")
    if log:
        logger.info(f"{name}: the {what} is grey content stored as RGB ({spread}): read as one grey channel for the "
                    "grey model")
    return scans.to_grey(movie)


def _passthrough(movie: scans.Movie, check: FrameCheck, skipped: List[int]) -> Prepared:
    """A movie whose frames are all skipped: shown on its own min..max (mid grey if constant), never denoised."""
    lo, hi = float(movie.frames.min()), float(movie.frames.max())
    lo, hi = (lo, hi) if hi > lo else (lo - 0.5, hi + 0.5)
    norm = Normalisation(lo, hi, unit=movie.unit, levelled=False)
    return Prepared(movie, norm.forward(movie.frames), norm, skipped, check, passthrough=True)


def prepare(path: str, args: argparse.Namespace, settings: DenoiseSettings, name: str = "",
            log: bool = False) -> Prepared:
    """Read a movie (``_read``; grey content for a grey model: ``match_model_channels``), check its frames
    (``frame_check.check_frames``) and normalise it (``denoise_data.preprocess``). With ``log`` each finding is one
    warning. A movie whose frames are all blank (or corrupt) is prepared to be passed through unchanged."""
    movie = match_model_channels(_read(path, args, settings), args, settings, name, log)
    check = check_frames(movie.frames, unit=movie.unit)
    skipped = sorted(set(check.skipped) | set(movie.blank))
    if len(skipped) == len(movie.frames):
        if log:
            what = "blank (constant) or corrupt" if check.corrupt else "blank (constant)"
            logger.warning(f"{name}: all {len(skipped)} frames ({frame_span(len(skipped))}) are {what}: the movie is "
                           "passed through unchanged (outputs written as read, no scores)")
        return _passthrough(movie, check, skipped)
    if log:
        for line in describe_findings(check, name, extra_blank=movie.blank, skip_action=PASS_ACTION):
            logger.warning(line)
    try:
        data, norm, blank = preprocess(movie.frames, level=settings.level, unit=movie.unit, extra_blank=movie.blank,
                                       check=check)
    except UserError as exc:
        raise UserError(f"{path}: {exc}") from None
    return Prepared(movie, data, norm, blank, check)


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
    """Every movie of ``--input``, read and checked before any work (the findings logged once, here): (jobs, the
    last movie prepared, for reuse)."""
    paths = scans.find_movies(args.input)
    if args.reference and len(paths) > 1:
        raise UserError(f"--reference is the clean version of one movie, but --input {args.input} holds "
                        f"{len(paths)}; pass that one movie")
    jobs: List[MovieJob] = []
    prepared = None
    for path, name in zip(paths, unique_stems(paths)):
        prepared = prepare(path, args, settings, name, log=True)
        jobs.append(_movie_job(path, name, prepared, args))
    return jobs, prepared


def _read_reference(args: argparse.Namespace, job: MovieJob, settings: DenoiseSettings) -> scans.Movie:
    """The ``--reference`` movie, which must have the input's shape (grey content read as grey, as the input)."""
    channel = args.channel if args.reference.lower().endswith(".asd") else None
    reference = scans.read_movie(args.reference, channel)
    if job.shape[3] == 1:
        reference = match_model_channels(reference, args, settings, "--reference", log=False)
    if reference.frames.shape != job.shape:
        raise UserError(f"--reference {args.reference} has shape {reference.frames.shape} but the input {job.path} "
                        f"has {job.shape} (T, H, W, C); pass the clean version of the same movie")
    return reference


# ------------------------------------------------------------------------------------------------------------- run


def denoise_array(frames: np.ndarray, blank: List[int], loaded: Loaded, args: argparse.Namespace,
                  settings: DenoiseSettings, device: torch.device, desc: str,
                  keep: Optional[Callable[[int], bool]] = None) -> np.ndarray:
    """The model's output for every frame of a normalised movie (not clipped: heights above the normalisation's
    range stay there); blank frames are the input."""
    model, config = loaded
    skip = set(blank)
    out = np.empty_like(frames)
    stream = denoise_clip(model, ((frame, None) for frame in frames), config["nFrames"],
                          future_frame=args.future_frame, edge=args.edge, tile=args.tile, overlap=args.tile_overlap,
                          precision=args.precision, device=device, flows=settings.flows, warping=settings.warping,
                          residual=config.get("residual") or args.residual, blank=skip,
                          flow_threads=args.threads, keep=keep,
                          flow_fn=flow_function(args, device) if settings.flows == "pyflow" else None)
    with tqdm(total=len(frames), unit="frame", desc=desc, dynamic_ncols=True, leave=True,
              disable=not args.progress or keep is not None) as bar:
        for t, _, _, result in stream:
            out[t] = result
            bar.update(1)
    return out


# ----------------------------------------------------------------------------------------------------------- write


def _to_rgb8(frame: np.ndarray) -> np.ndarray:
    """An (H, W, C) frame on [0, 1] as RGB uint8 (grey repeated)."""
    img = metrics.to_uint8(frame * 255.0)
    return np.ascontiguousarray(np.repeat(img, 3, axis=2) if img.shape[2] == 1 else img)


def _size(count: int) -> str:
    """'3.9 MB', or '32 KB' under 1 MB."""
    return f"{count / 1e6:.1f} MB" if count >= 1e6 else f"{count / 1e3:.0f} KB"


def write_error(exc: OSError, path: str, needed: Optional[int] = None) -> UserError:
    """One line for a failed write of the output ``path``: for a full disk (or numpy's short write, an OSError
    without errno) it names the file, its folder, the space it needs (``needed`` bytes, when known) and the free
    space there."""
    folder = os.path.dirname(path) or "."
    short_write = exc.errno is None and "requested and" in str(exc)
    if exc.errno in (errno.ENOSPC, errno.EDQUOT) or short_write:
        free = free_bytes(folder)
        parts = ([f"needs about {_size(needed)}"] if needed else []) + \
            ([f"{_size(free)} free there"] if free is not None else [])
        there = f" ({', '.join(parts)})" if parts else ""
        what = "the disk quota is exceeded" if exc.errno == errno.EDQUOT else "no space left"
        return UserError(f"{what} writing {os.path.basename(path)} in {folder}{there}: free some space or choose "
                         "another --output")
    return UserError(describe_os_error(OSError(exc.errno, exc.strerror or str(exc), path), "cannot write"))


@contextlib.contextmanager
def writing(path: str, needed: Optional[int] = None) -> Iterator[None]:
    """Turn an ``OSError`` while writing the output ``path`` into ``write_error``'s one line (the atomic writers
    leave nothing under the name)."""
    try:
        yield
    except OSError as exc:
        raise write_error(exc, path, needed) from exc


def png_range(out: np.ndarray) -> Tuple[float, float]:
    """The values that the 16-bit PNGs' 0 and 65535 stand for: [0, 1], widened to the output's finite extremes so
    that no PNG clips a height."""
    finite = out[np.isfinite(out)]
    if finite.size == 0:
        return 0.0, 1.0
    return min(0.0, float(finite.min())), max(1.0, float(finite.max()))


def save_png16(path: str, frame: np.ndarray, value_range: Tuple[float, float] = (0.0, 1.0)) -> None:
    """Write an (H, W, C) frame as a 16-bit grey or RGB PNG, ``value_range`` mapped to 0..65535, atomically."""
    lo, hi = value_range
    values = np.round(np.clip((frame - lo) / (hi - lo), 0.0, 1.0) * 65535.0).astype(np.uint16)
    values = values[:, :, 0] if values.shape[2] == 1 else values[:, :, ::-1]  # RGB -> OpenCV's BGR
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(values), [cv2.IMWRITE_PNG_COMPRESSION, 3])
    if not ok:
        raise UserError(f"cannot encode {path} as a 16-bit PNG")
    with writing(path, buf.nbytes):
        atomic.write_bytes(path, buf.tobytes())


def save_npy(path: str, array: np.ndarray) -> None:
    """``numpy.save`` atomically; a full disk is ``write_error``'s one line and leaves nothing behind."""
    with writing(path, array.nbytes), atomic.atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, array)


def check_free_space(jobs: List[MovieJob], args: argparse.Namespace) -> None:
    """Before any work: ``--output`` has room for the movies' ``.npy`` files at least (float32, exact), so a full
    disk does not lose the denoising of a movie; the PNGs and previews need more."""
    needed = sum(4 * int(np.prod(job.shape)) for job in jobs)
    free = free_bytes(args.output)
    if free is not None and free < needed:
        raise UserError(f"not enough space in {args.output} for the outputs: the .npy files alone need "
                        f"{needed / 1e6:.1f} MB, {free / 1e6:.1f} MB are free there: free some space or choose "
                        "another --output")


def _movie_rate(movie: scans.Movie, fps: Optional[float] = None) -> Fraction:
    """Preview frame rate: ``--fps``, else the scan's frame time (.asd), a video's rate, else ``DEFAULT_MOVIE_FPS``."""
    if fps:
        return Fraction(fps).limit_denominator(1000)
    ms = movie.info.get("frame_time_ms")
    if isinstance(ms, (int, float)) and np.isfinite(ms) and ms > 0:
        return Fraction(round(1000.0 / ms, 3)).limit_denominator(1000)
    if movie.info.get("format") == "video":
        return video_info(movie.source)["rate"]
    return DEFAULT_MOVIE_FPS


def nice_length(longest: float) -> float:
    """The largest 1, 2 or 5 times a power of ten that is at most ``longest`` (a scale bar's length)."""
    power = 10.0 ** np.floor(np.log10(longest))
    return max(step * power for step in (1.0, 2.0, 5.0) if step * power <= longest)


def annotate(img: np.ndarray, t: int, rate: Fraction, pixel: Optional[float], unit: str) -> np.ndarray:
    """A preview frame with its index and time (``t 12  1.20 s``) and, when the pixel size is known, a scale bar
    of a round length (about a fifth of the width) in the corner; frames under 96 px wide are left as they are."""
    h, w = img.shape[:2]
    if w < 96:
        return img
    out = np.ascontiguousarray(img.copy())
    scale = max(0.35, w / 700.0)
    thick = max(1, int(round(scale * 2)))
    label = f"t {t}  {t / float(rate):.2f} s"
    cv2.putText(out, label, (4, int(18 * scale) + 4), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 0), thick,
                cv2.LINE_AA)
    if pixel:
        length = nice_length(w * pixel / 5.0)
        bar = int(round(length / pixel))
        y = h - 6 - thick
        cv2.rectangle(out, (w - 6 - bar, y - thick), (w - 6, y + thick), (255, 255, 255), -1)
        cv2.putText(out, f"{length:g} {unit}", (w - 6 - bar, y - 2 * thick - 3), cv2.FONT_HERSHEY_SIMPLEX, scale,
                    (255, 255, 255), thick, cv2.LINE_AA)
    return out


def _pixel_size(prepared: Prepared, args: argparse.Namespace) -> Tuple[Optional[float], str]:
    """(lateral pixel size, its unit): ``--pixel_size``/``--pixel_unit``, else the .asd header's (nm), else None."""
    if args.pixel_size:
        return args.pixel_size, args.pixel_unit
    return (prepared.movie.info.get("pixel_size_nm") or (None,))[0], "nm"


def _write_compare(job: MovieJob, prepared: Prepared, out: np.ndarray, args: argparse.Namespace) -> str:
    """``<movie>_compare.png``: raw | denoised | removed (raw minus denoised, grey = nothing removed) of
    ``COMPARE_FRAMES`` frames spread over the movie (not skipped), labelled with their frame indices (from 0)."""
    data, blank = prepared.data, prepared.blank
    usable = [t for t in range(len(out)) if t not in set(blank)] or list(range(len(out)))
    shown = sorted({usable[(len(usable) * k) // (COMPARE_FRAMES + 1)] for k in range(1, COMPARE_FRAMES + 1)})
    rows = [[(f"raw {t}", _to_rgb8(data[t])), (f"denoised {t}", _to_rgb8(out[t])),
             (f"removed {t}", _to_rgb8(0.5 + data[t] - out[t]))] for t in shown]
    zoom = max(1, min(4, 128 // max(1, min(data.shape[1:3]))))
    box = plots.pick_crop(rows[len(rows) // 2][1][1], 192)  # where the denoised frame has the most detail
    compare = os.path.join(args.output, job.name + "_compare.png")
    with writing(compare):
        plots.panel_grid(compare, rows, crop_size=192, box=box, zoom=zoom)
    return compare


def output_record(args: argparse.Namespace, choice: dict) -> dict:
    """What made a movie's outputs, for metrics.json and the TIFF and .gwy files: the method, the model file and its
    SHA-256, the options that change the output, and the method scores."""
    from run_record import model_identity

    options = {key: getattr(args, key) for key in ("method", "nFrames", "tile", "tile_overlap", "edge", "precision",
                                                   "level", "channel", "flow_backend")}
    return {"software": "iSeeBetter --denoise", "method": choice.get("method"), "model": model_identity(args.model),
            "options": options, "method_scores": choice.get("method_scores", {})}


def _write_stacks(job: MovieJob, prepared: Prepared, units: np.ndarray, args: argparse.Namespace, record: dict,
                  rate: Fraction, pixel: Optional[float], pixel_unit: str) -> List[str]:
    """``--tiff``/``--gwy``: the movie as a float32 ImageJ TIFF stack and a Gwyddion file, with its height unit
    (``--units`` when the input has none), pixel size (``_pixel_size``), frame ``rate`` and ``record``."""
    import scan_writers

    if units.shape[3] != 1:
        logger.warning(f"{job.name}: --tiff/--gwy hold one channel of heights; this movie is colour: skipped")
        return []
    unit = prepared.movie.unit or args.units or ""
    written = []
    if args.tiff:
        written.append(os.path.join(args.output, job.name + ".tif"))
        with writing(written[-1]):
            scan_writers.write_tiff_stack(written[-1], units, unit, pixel, pixel_unit, fps=float(rate),
                                          record=record)
    if args.gwy:
        written.append(os.path.join(args.output, job.name + ".gwy"))
        with writing(written[-1]):
            scan_writers.write_gwy(written[-1], units, unit, pixel, pixel_unit, record=record)
    return written


def write_movie(job: MovieJob, prepared: Prepared, out: np.ndarray, args: argparse.Namespace,
                record: dict) -> Tuple[float, float]:
    """The outputs of one denoised movie: ``<movie>.npy`` in the input's units and shape (skipped frames as read),
    ``<movie>/00000.png ...`` (16-bit, named by frame index from 0), the preview video and ``<movie>_compare.png``;
    with ``--tiff``/``--gwy`` also ``<movie>.tif``/``<movie>.gwy`` with units and ``record`` (``output_record``).
    Returns the PNGs' value range (``png_range``)."""
    movie, norm = prepared.movie, prepared.norm
    rate = _movie_rate(movie, args.fps)
    pixel, pixel_unit = _pixel_size(prepared, args)
    units = norm.inverse(out)
    for t in prepared.blank:
        units[t] = movie.frames[t]
    npy = os.path.join(args.output, job.name + ".npy")
    save_npy(npy, units[..., 0] if job.squeeze else units)
    if args.tiff or args.gwy:
        stacks = _write_stacks(job, prepared, units, args, record, rate, pixel, pixel_unit)
        logger.info(f"{job.name}: {', '.join(stacks)}" if stacks else f"{job.name}: no TIFF/.gwy written")
    folder = os.path.join(args.output, job.name)
    value_range = png_range(out)
    for t in range(len(out)):
        save_png16(os.path.join(folder, f"{t:05d}.png"), out[t], value_range)
    video = os.path.join(args.output, job.name + video_extension(args.codec))
    frames = (annotate(_to_rgb8(f), t, rate, pixel, pixel_unit) for t, f in enumerate(out))
    write_video(video, frames, rate, codec=args.codec, crf=args.crf, preset=args.preset, log=logger.warning)
    compare = _write_compare(job, prepared, out, args)
    logger.info(f"{job.name}: {len(out)} frames -> {npy} ({movie.unit or 'input units'}), {folder}/ (16-bit PNG), "
                f"{video} ({float(rate):g} fps) and {compare}")
    return value_range


# ----------------------------------------------------------------------------------------------------------- score


def score_movie(job: MovieJob, prepared: Prepared, out: np.ndarray, reference: Optional[scans.Movie],
                loaded: Loaded, args: argparse.Namespace, settings: DenoiseSettings, device: torch.device) -> dict:
    """metrics.json entries of one movie: the no-reference scores (an extra pass of the model over the even frames),
    the fork's scores, and with ``reference`` PSNR/SSIM against it."""
    data, norm, blank = prepared.data, prepared.norm, prepared.blank
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


def method_names(finetune: bool = False) -> List[str]:
    """What ``--method`` accepts: auto, model (and model-finetuned with ``finetune``) and every classic candidate of
    ``denoise_methods``."""
    r = dm.NOISE_RADIUS
    unit = np.zeros((2 * r + 1, 2 * r + 1))
    unit[r, r] = 1.0
    models = ["model", FINETUNED] if finetune else ["model"]
    return ["auto"] + models + [c.name for c in dm.classic_candidates(unit)]


def check_method(method: str, finetune: float = 0.0) -> None:
    """A one-line error for an unknown ``--method``, before any movie is read."""
    if method == FINETUNED and not finetune > 0:
        raise UserError(f"--method {FINETUNED} needs --finetune MINUTES (the time to fine-tune the model on each "
                        "movie)")
    names = method_names(finetune > 0)
    if method not in names:
        raise UserError(f"unknown --method {method!r}: use {', '.join(names)}")


def _filled(grey: np.ndarray, skipped: List[int]) -> np.ndarray:
    """The movie with each skipped (blank or corrupt) frame replaced by the nearest usable one, so that temporal
    windows do not average them in (their output is the input anyway)."""
    usable = [t for t in range(len(grey)) if t not in set(skipped)]
    filled = grey.copy()
    for t in skipped:
        filled[t] = grey[min(usable, key=lambda u: abs(u - t))]
    return filled


def _model_candidate(data: np.ndarray, model_out: np.ndarray, run_one: Callable,
                     name: str = "model") -> dm.Candidate:
    """The model as a ``denoise_methods`` candidate: its output on the movie as given is ``model_out``; a movie whose
    frame t was moved (the SURE divergence) is run again for frame t alone (``run_one(frames, t)``)."""
    def fn(frames: np.ndarray, t: int) -> np.ndarray:
        if np.array_equal(frames[t], data[t, ..., 0]):
            return model_out[t, ..., 0]
        return run_one(frames, t)

    return dm.Candidate(name, dm.NONLINEAR, fn)


def run_finetune(data: np.ndarray, blank: List[int], loaded: Loaded, args: argparse.Namespace,
                 settings: DenoiseSettings, device: torch.device, name: str) -> Tuple[Optional[Loaded], dict]:
    """``--finetune``: a copy of the model fine-tuned on this movie (``finetune.finetune``) and its metrics.json
    entry; (None, entry) when the movie is too short (a warning) or fine-tuning never beat the start."""
    import finetune

    model, config = loaded
    reason = finetune.too_short(data, blank, config["nFrames"])
    if reason:
        logger.warning(f"{name}: not fine-tuned: {reason}; the shipped model is used")
        return None, {"skipped": reason}
    residual = config.get("residual") or args.residual
    logger.info(f"{name}: fine-tuning the model on the movie for up to {args.finetune:g} min")
    tuned, info = finetune.finetune(model, config, data, blank, args.finetune, device, "auto", settings,
                                    residual=residual, seed=args.seed, log=logger.debug)
    logger.info(f"{name}: finetune: {info['steps']} steps in {info['minutes']:.2f} min, held-out score "
                f"{info['score_before']:.3f} -> {info['score_after']:.3f} dB "
                f"({'kept' if tuned is not None else 'not kept: no better than the shipped model'})")
    return (None if tuned is None else (tuned, config)), info


def _add_finetuned(candidates: List[dm.Candidate], data: np.ndarray, blank: List[int], tuned: Loaded,
                   tuned_out: np.ndarray, args: argparse.Namespace, settings: DenoiseSettings,
                   device: torch.device, name: str) -> None:
    """Append the fine-tuned model to the auto choice's candidates."""
    def run_one(frames_t: np.ndarray, t: int) -> np.ndarray:
        moved = frames_t[..., None].astype(np.float32)
        return denoise_array(moved, blank, tuned, args, settings, device, name, keep=lambda k: k == t)[t, ..., 0]

    candidates.append(_model_candidate(data, tuned_out, run_one, FINETUNED))


def run_method(data: np.ndarray, blank: List[int], loaded: Loaded, args: argparse.Namespace,
               settings: DenoiseSettings, device: torch.device, name: str) -> Tuple[np.ndarray, dict]:
    """The output of ``--method`` on a normalised movie, and its metrics.json entries: with auto, every candidate's
    SURE score (dB on the movie's normalised range, ``denoise_methods``) and the best one's output."""
    method = args.method
    grey = data.shape[3] == 1
    if not grey and method not in ("auto", "model", FINETUNED):
        raise UserError(f"--method {method} works on grey movies; {name} has {data.shape[3]} channels: use --method "
                        "model (or auto)")
    usable = len(data) - len(blank)
    if method == "auto" and grey and usable < MIN_FRAMES_TO_SCORE:
        logger.warning(f"{name}: {usable} usable frames are too few to score the methods (at least "
                       f"{MIN_FRAMES_TO_SCORE}): using {SHORT_MOVIE_METHOD} without a score")
        method = SHORT_MOVIE_METHOD
    tuned, tuning = None, {}
    if args.finetune > 0 and method in ("auto", "model", FINETUNED):
        tuned, info = run_finetune(data, blank, loaded, args, settings, device, name)
        tuning = {"finetune": info}
    model_out = None
    if method in ("auto", "model") or (method == FINETUNED and tuned is None):
        model_out = denoise_array(data, blank, loaded, args, settings, device, name)
    if method == FINETUNED and tuned is None:
        logger.warning(f"{name}: no fine-tuned model (see above): --method {FINETUNED} writes the shipped model's "
                       "output")
        return model_out, {"method": "model", **tuning}
    tuned_out = None if tuned is None else denoise_array(data, blank, tuned, args, settings, device,
                                                         f"{name} ({FINETUNED})")
    if method == FINETUNED or (method == "auto" and not grey and tuned_out is not None):
        return tuned_out, {"method": FINETUNED, **tuning}
    if method == "model" or (method == "auto" and not grey):
        return model_out, {"method": "model", **tuning}
    frames = _filled(data[..., 0].astype(np.float64), blank)
    covs, levels, candidates = dm.movie_candidates(frames)
    scores: Dict[str, float] = {}
    if method == "auto":
        def run_one(frames_t: np.ndarray, t: int) -> np.ndarray:
            moved = frames_t[..., None].astype(np.float32)
            return denoise_array(moved, blank, loaded, args, settings, device, name, keep=lambda k: k == t)[t, ..., 0]

        candidates.append(_model_candidate(data, model_out, run_one))
        if tuned_out is not None:
            _add_finetuned(candidates, data, blank, tuned, tuned_out, args, settings, device, name)
        method, scores = dm.choose(frames, candidates, covs, levels,
                                   frames_to_score=dm.score_frames(len(frames), MODEL_SCORED_FRAMES))
        _log_methods(name, method, scores)
    if method in ("model", FINETUNED):
        return model_out if method == "model" else tuned_out, {"method": method, "method_scores": scores, **tuning}
    out = dm.apply(frames, dm.find_candidate(candidates, method))[..., None].astype(np.float32)
    for t in blank:
        out[t] = data[t]
    return out, {"method": method, "method_scores": scores, **tuning}


def _log_methods(name: str, best: str, scores: Dict[str, float]) -> None:
    """One line: the chosen method and every candidate's score, best first."""
    ranked = sorted(scores.items(), key=lambda item: -item[1])
    listed = ", ".join(f"{n} {v:.2f}" for n, v in ranked)
    logger.info(f"{name}: method {best} (SURE score, dB on the movie's normalised range: {listed})")


def shielded(data: np.ndarray, outliers: Optional[np.ndarray]) -> np.ndarray:
    """The network's input: ``data`` with its outlier pixels (``frame_check``: spikes, garbage) replaced by their
    frame's median, so that one spike cannot smear over its neighbourhood; the caller puts them back."""
    if outliers is None:
        return data
    safe = data.copy()
    for t in np.flatnonzero(outliers.reshape(len(data), -1).any(axis=1)):
        safe[t][outliers[t]] = np.median(data[t][~outliers[t]]) if (~outliers[t]).any() else 0.0
    return safe


def denoise_movie(job: MovieJob, prepared: Prepared, reference: Optional[scans.Movie], loaded: Loaded,
                  args: argparse.Namespace, settings: DenoiseSettings, device: torch.device) -> dict:
    """Denoise one movie (a pass-through movie as it is), write its outputs at once and score it; returns its
    metrics.json entry (frame indices from 0)."""
    movie, data, check = prepared.movie, prepared.data, prepared.check
    choice: dict = {"method": "none (passed through)"}
    if prepared.passthrough:
        out = data.copy()
    else:
        outliers = check.outlier_mask(movie.frames) if check.outliers else None
        out, choice = run_method(shielded(data, outliers), prepared.blank, loaded, args, settings, device, job.name)
        if outliers is not None:
            out[outliers] = data[outliers]  # reported, never changed
    record = output_record(args, choice)
    value_range = write_movie(job, prepared, out, args, record)
    result = {"source": job.path, "frames": job.shape[0], "height": job.shape[1], "width": job.shape[2],
              "channels": job.shape[3], "channel": movie.channel, "unit": movie.unit,
              "blank_frames": prepared.blank_frames(), "corrupt_frames": [int(t) for t in check.corrupt],
              "outlier_pixels": {str(t): int(n) for t, n in sorted(check.outliers.items())},
              "normalisation": prepared.norm.to_dict(),
              "png_range": [float(v) for v in prepared.norm.inverse(np.array(value_range, np.float64))],
              "record": record}
    if prepared.passthrough:
        result["passed_through"] = True
    else:
        result.update(choice)
    if not prepared.passthrough and args.eval:
        result.update(score_movie(job, prepared, out, reference, loaded, args, settings, device))
        _log_scores(job.name, result)
    return result


# --------------------------------------------------------------------------------------------------------- summary


PROTOCOL = {
    "scale": "each movie's [0, 1] scale: its 0.5 and 99.5 percentiles (after levelling) map to 0 and 1; nothing is "
             "clipped (taller features lie above 1)",
    "n2n_psnr": "PSNR (peak 1) of each method's estimate of frame 2k, made from the even frames only, against "
                "the mean of frames 2k-1 and 2k+1, which no method saw; mean over frames (denoise_eval)",
    "baselines": "raw: the frame; meanN: mean of N even frames centred on it; mean3_blur: mean3 then a Gaussian "
                 "blur (sigma 1 px)",
    "ssim_to_cleanest": "the fork's SSIM (grey, Gaussian 11x11) against the cleanest frame by streak score of "
                        "each 10-frame block: the cleanest odd frame, estimated from the cleanest even frame",
    "noise_blur": "means of metrics.streak_score (noise, lower = fewer streaks) and metrics.laplacian_variance "
                  "(blur, lower = smoother) of the raw and the denoised frames",
    "reference": "PSNR (peak 1) and SSIM of the output and of the raw input (as the network saw it: levelled "
                 "when levelling is on) against --reference, all mapped with the reference's own normalisation "
                 "(its 0.5/99.5 percentiles to 0/1, not clipped)",
    "method": "the method written (--method; auto: the best SURE score); method_scores: each candidate's SURE "
              "score in dB on the movie's normalised range (denoise_methods: the estimated error against the clean "
              "movie at its own frame rate, from the movie alone)",
    "finetune": "--finetune: steps, minutes, the held-out score (N2N loss on held-out frame pairs, dB) before and "
                "after, and whether the tuned model was kept; it is then the candidate model-finetuned",
    "record": "what made the movie's outputs: method, model file and SHA-256, the options that change them",
    "png_range": "the values (input units) that the 16-bit PNGs' 0 and 65535 stand for; the .npy is exact",
}  # how metrics.json's scores are made (its "protocol" entry, after the run's settings)


def denoise_summary(results: Dict[str, dict], args: argparse.Namespace, settings: DenoiseSettings,
                    config: dict, pending: Optional[List[str]] = None) -> dict:
    """metrics.json content of a --denoise run: per movie, the average over movies, the movies not done yet
    (``pending``, empty at the end) and the protocol."""
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
    return {"movies": results, "average": average, "movies_pending": list(pending or []), "protocol": protocol}


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
    check_method(args.method, args.finetune)
    settings = denoise_settings(args)
    jobs, last = find_movies(args, settings)
    reference = _read_reference(args, jobs[0], settings) if args.reference else None
    loaded = load_models(jobs, args, device)
    clips = [MovieClip(job.name, video=job.path, frame_count=job.shape[0]) for job in jobs]
    check_output(clips, args, extra_inputs=[p for p in (args.reference, args.input) if p])
    check_free_space(jobs, args)
    config = next(iter(loaded.values()))[1]
    _log_run(jobs, config, settings, args, device)

    start = time.time()
    results: Dict[str, dict] = {}
    path = os.path.join(args.output, "metrics.json")
    for k, job in enumerate(tqdm(jobs, unit="movie", desc="movies", dynamic_ncols=True,
                                 disable=not args.progress or len(jobs) < 2)):
        prepared = last if job is jobs[-1] else prepare(job.path, args, settings)  # one movie in memory
        _warn_other_channel(job, prepared, settings)
        results[job.name] = denoise_movie(job, prepared, reference, loaded[job.shape[3]], args, settings, device)
        summary = denoise_summary(results, args, settings, config, [j.name for j in jobs[k + 1 :]])
        with writing(path):  # after every movie: a later failure keeps the scores of the movies done
            atomic.write_text(path, json.dumps(summary, indent=2) + "\n")
    logger.info(f"done in {time.time() - start:.1f} s -> {path}")
    return 0
