"""Training data for ``--denoise``: consecutive SPM/AFM scans of one area, cleaned with their neighbouring scans.

There is no clean ground truth, so every training target is made from other noisy scans of the same movie, and the
frames that make the target are never among the frames the network sees (``make_sample``).

Steps, each a function of its own:

1. ``preprocess`` (per movie, physical units -> [0, 1]): ``frame_check.check_frames`` finds blank (constant) and
   corrupt frames (they are skipped everywhere) and outlier pixels from robust per-frame statistics,
   ``level_rows`` subtracts each scan line's median (SPM line levelling), and ``Normalisation`` maps the 0.5 and 99.5
   percentiles of the other frames (outlier pixels left out) to 0 and 1 (clipped); ``Normalisation.inverse`` maps
   network outputs back to the levelled data's units.
2. ``make_sample`` splits a window of consecutive frames into the network's input, its neighbours and a target
   (``TARGETS``: ``n2n``, ``select``, ``median``), aligning the target onto the input with the optical flow.
3. ``DenoiseDataset`` serves every window without a blank frame as a sample, with random patches, flips and the
   fork's gamma, in the SR datasets' order ``(input, target, neighbours, flows, input)``.

Flow convention (pyflow's): ``Im1(x, y) ~ Im2(x + u, y + v)`` with ``flow[0] = u`` (horizontal, + = right) and
``flow[1] = v`` (vertical, + = down); flows go from the input frame to each other frame.
"""

import hashlib
import random
import warnings
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

import metrics
from dataset import DataError, apply_augment, random_augment
from denoise_record import BASES, FLOW_METHODS, TARGETS  # noqa: F401  (their one home: torch-free, for the parsers)
from errors import UserError
from flow_cache import CACHE_VERSION, FlowCache, crop_and_augment
from frame_check import BLANK_TOL, FrameCheck, check_frames

MEMORY = ":memory:"  # ``flow_cache`` value for an in-process cache instead of a folder
DEFAULT_GAMMA = (0.8, 1.1)

# flow_fn(src, dsts): float32 (2, H, W) flows from window frame ``src`` to each window frame in ``dsts``.
FlowFn = Callable[[int, Sequence[int]], List[np.ndarray]]


# ----------------------------------------------------------------------------------------------------------------
# Preprocessing


def _as_movie(frames: np.ndarray, what: str = "movie") -> np.ndarray:
    """A (T, H, W, C) float array with C in {1, 3}; (T, H, W) gets C = 1. UserError otherwise."""
    frames = np.asarray(frames)
    if frames.ndim == 3:
        frames = frames[..., None]
    if frames.ndim != 4 or frames.shape[3] not in (1, 3):
        raise UserError(f"{what} must be an array (T, H, W, C) with C = 1 or 3, got shape {frames.shape}")
    if min(frames.shape[:3]) < 1:
        raise UserError(f"{what} is empty (shape {frames.shape})")
    if not np.issubdtype(frames.dtype, np.number) or np.issubdtype(frames.dtype, np.complexfloating):
        raise UserError(f"{what} has dtype {frames.dtype}; pass real numbers")
    if not np.all(np.isfinite(frames)):
        raise UserError(f"{what} contains NaN or infinite values; replace or drop those frames first")
    return frames


def blank_frames(frames: np.ndarray, tol: float = BLANK_TOL) -> List[int]:
    """Indices of blank frames (``frame_check.check_frames``): constant, or with a robust spread (99th - 1st
    percentile) at most ``tol`` times the movie's median frame spread. A constant movie is all blank; corrupt frames
    are not counted here (``check_frames(...).skipped`` has both)."""
    return check_frames(_as_movie(frames), tol).blank


def level_rows(frame: np.ndarray) -> np.ndarray:
    """SPM line levelling: subtract each row's median, per channel, from an (H, W) or (H, W, C) frame.

    Float input keeps its dtype; other dtypes become float32.
    """
    frame = np.asarray(frame)
    if frame.ndim not in (2, 3):
        raise UserError(f"level_rows expects an (H, W) or (H, W, C) frame, got shape {frame.shape}")
    dtype = frame.dtype if np.issubdtype(frame.dtype, np.floating) else np.float32
    values = frame.astype(np.float64)
    return (values - np.median(values, axis=1, keepdims=True)).astype(dtype)


@dataclass
class Normalisation:
    """Linear map of one movie's values (after levelling, in ``unit``) to the network's [0, 1].

    ``lo`` and ``hi`` are the ``low_pct`` and ``high_pct`` percentiles of the non-blank frames; ``forward`` maps them
    to 0 and 1 and ``inverse`` maps network outputs back to the movie's units. The map is affine and never clips
    (``clip=True`` only where a [0, 1] picture is wanted): a feature taller than ``hi`` keeps its height through
    the network and back.
    """

    lo: float
    hi: float
    low_pct: float = 0.5
    high_pct: float = 99.5
    unit: str = ""
    levelled: bool = False

    def __post_init__(self):
        self.lo, self.hi = float(self.lo), float(self.hi)
        if not (np.isfinite(self.lo) and np.isfinite(self.hi) and self.hi > self.lo):
            raise UserError(f"normalisation needs finite lo < hi, got lo={self.lo!r}, hi={self.hi!r}")
        if not 0.0 <= self.low_pct < self.high_pct <= 100.0:
            raise UserError(f"normalisation percentiles must satisfy 0 <= low < high <= 100, got "
                            f"{self.low_pct!r} and {self.high_pct!r}")

    @classmethod
    def fit(cls, frames: np.ndarray, blank: Sequence[int] = (), low_pct: float = 0.5, high_pct: float = 99.5,
            unit: str = "", levelled: bool = False, ignore: Optional[np.ndarray] = None) -> "Normalisation":
        """Percentiles over the frames not in ``blank`` and the values not marked in ``ignore`` (a boolean mask of
        ``frames``' shape, e.g. outlier pixels); min/max if they coincide; UserError for no contrast."""
        frames = _as_movie(frames)
        keep = [t for t in range(frames.shape[0]) if t not in set(blank)]
        if not keep:
            raise UserError("every frame of the movie is blank (constant); nothing to normalise")
        if not 0.0 <= low_pct < high_pct <= 100.0:
            raise UserError(f"percentiles must satisfy 0 <= low < high <= 100, got {low_pct} and {high_pct}")
        values = frames[keep].astype(np.float64)
        if ignore is not None:
            if np.shape(ignore) != frames.shape:
                raise UserError(f"the ignore mask has shape {np.shape(ignore)} but the movie {frames.shape}")
            chosen = ~np.asarray(ignore, dtype=bool)[keep]
            values = values[chosen] if chosen.any() else values
        values = values.ravel()
        lo, hi = np.percentile(values, [low_pct, high_pct])
        if not hi > lo:
            lo, hi = values.min(), values.max()
        if not hi > lo:
            raise UserError("the movie's non-blank frames have no contrast (all values equal); nothing to normalise")
        return cls(float(lo), float(hi), float(low_pct), float(high_pct), unit, levelled)

    def forward(self, x, clip: bool = False):
        """Movie units -> [0, 1] (numpy array or torch tensor; float64 stays float64, anything else float32)."""
        if isinstance(x, torch.Tensor):
            y = (x.double() - self.lo) / (self.hi - self.lo)
            y = y.clamp(0.0, 1.0) if clip else y
            return y if x.dtype == torch.float64 else y.float()
        x = np.asarray(x)
        y = (x.astype(np.float64) - self.lo) / (self.hi - self.lo)
        if clip:
            y = np.clip(y, 0.0, 1.0)
        return y if x.dtype == np.float64 else y.astype(np.float32)

    def inverse(self, y):
        """[0, 1] -> movie units (numpy array or torch tensor; float64 stays float64, anything else float32)."""
        if isinstance(y, torch.Tensor):
            x = y.double() * (self.hi - self.lo) + self.lo
            return x if y.dtype == torch.float64 else x.float()
        y = np.asarray(y)
        x = y.astype(np.float64) * (self.hi - self.lo) + self.lo
        return x if y.dtype == np.float64 else x.astype(np.float32)

    def to_dict(self) -> Dict[str, object]:
        """Plain JSON-able values, for checkpoints and metrics files."""
        return {"lo": self.lo, "hi": self.hi, "low_pct": self.low_pct, "high_pct": self.high_pct,
                "unit": self.unit, "levelled": self.levelled}

    @classmethod
    def from_dict(cls, d: Dict[str, object]) -> "Normalisation":
        """Inverse of ``to_dict``; UserError when ``lo`` or ``hi`` is missing or invalid."""
        if not isinstance(d, dict) or "lo" not in d or "hi" not in d:
            raise UserError(f"a normalisation record needs 'lo' and 'hi', got {d!r}")
        try:
            return cls(float(d["lo"]), float(d["hi"]), float(d.get("low_pct", 0.5)), float(d.get("high_pct", 99.5)),
                       str(d.get("unit", "")), bool(d.get("levelled", False)))
        except (TypeError, ValueError) as exc:
            raise UserError(f"invalid normalisation record {d!r}: {exc}") from None


def preprocess(frames: np.ndarray, level: bool = True, blank_tol: float = BLANK_TOL, low_pct: float = 0.5,
               high_pct: float = 99.5, unit: str = "", extra_blank: Sequence[int] = (),
               check: Optional[FrameCheck] = None) -> Tuple[np.ndarray, Normalisation, List[int]]:
    """One movie in physical units -> (float32 (T, H, W, C) with its bulk on [0, 1] (not clipped: tall features lie
    above 1), its Normalisation, skipped frame indices).

    The skipped frames are the blank and corrupt ones of ``check`` (``frame_check.check_frames(frames, blank_tol)``
    when not given; pass it to log its findings with ``frame_check.describe_findings``), plus ``extra_blank``, e.g.
    a reader's ``Movie.blank``. They and the check's outlier pixels are left out of the statistics (they are still
    in the output, and the dataset skips those frames). ``level`` (SPM data) subtracts each row's median first; turn
    it off for photographs or renderings such as the fork's 8-bit PNGs. (T, H, W) input is taken as C = 1.
    """
    frames = _as_movie(frames)
    count = frames.shape[0]
    if any(not 0 <= int(t) < count for t in extra_blank):
        raise UserError(f"blank frame indices must lie in 0..{count - 1}, got {sorted(extra_blank)}")
    check = check_frames(frames, blank_tol, unit=unit) if check is None else check
    if check.count != count:
        raise UserError(f"the frame check covers {check.count} frames but the movie has {count}")
    blank = sorted(set(check.skipped) | {int(t) for t in extra_blank})
    if len(blank) == count:
        what = "blank (constant) or corrupt" if check.corrupt else "blank (constant)"
        raise UserError(f"all {count} frames of the movie are {what}; nothing to denoise or train on")
    data = np.stack([level_rows(f.astype(np.float64)) for f in frames]) if level else frames.astype(np.float64)
    ignore = check.outlier_mask(frames) if check.outliers else None
    norm = Normalisation.fit(data, blank, low_pct, high_pct, unit, levelled=level, ignore=ignore)
    return norm.forward(data).astype(np.float32), norm, blank


def temporal_bin(frames: np.ndarray, blank: Sequence[int], factor: int) -> Tuple[np.ndarray, List[int]]:
    """A movie binned in time: frame i is the mean of frames ``factor*i .. factor*i + factor - 1`` (a leftover
    short group is dropped); blank where any of its frames is. Independent noise drops by sqrt(factor) and the
    scene moves ``factor`` times as far per frame: a training movie at another noise level and speed."""
    if factor < 1:
        raise UserError(f"a temporal bin must be at least 1 frame, got {factor}")
    frames = _as_movie(frames)
    count = frames.shape[0] // factor
    if factor == 1:
        return frames, sorted(int(t) for t in blank)
    binned = frames[: count * factor].reshape((count, factor) + frames.shape[1:]).astype(np.float64).mean(axis=1)
    skip = {int(t) for t in blank}
    binned_blank = [i for i in range(count) if skip & set(range(factor * i, factor * i + factor))]
    return binned.astype(np.float32), binned_blank


def spatial_scale(frames: np.ndarray, factor: float) -> np.ndarray:
    """A movie resized by ``factor`` <= 1 with area averaging (``cv2.INTER_AREA``): features get smaller in pixels and
    independent pixel noise drops by about 1 / factor. ``factor`` 1 returns the movie as it is."""
    import cv2

    if not 0 < factor <= 1:
        raise UserError(f"a spatial scale must be in (0, 1], got {factor}")
    frames = _as_movie(frames)
    if factor == 1:
        return frames
    h, w = frames.shape[1:3]
    size = (max(1, round(w * factor)), max(1, round(h * factor)))
    out = [cv2.resize(f.astype(np.float32), size, interpolation=cv2.INTER_AREA) for f in frames]
    return np.stack([o if o.ndim == 3 else o[..., None] for o in out]).astype(np.float32)


# ----------------------------------------------------------------------------------------------------------------
# Optical flow and warping


def warp_backward(image: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """Bilinear backward warp: ``out(x, y) = image(x + u, y + v)`` with ``flow = (u, v)`` of shape (2, H, W).

    Warping Im2 with the flow from Im1 to Im2 aligns it onto Im1. Sample points outside the image are clamped to the
    border (edge pixels repeat). ``image`` is (H, W) or (H, W, C); float images keep their dtype, others become
    float32.
    """
    image = np.asarray(image)
    flow = np.asarray(flow)
    h, w = image.shape[:2]
    if image.ndim not in (2, 3) or flow.shape != (2, h, w):
        raise ValueError(f"warp_backward needs an (H, W[, C]) image and a (2, H, W) flow, got {image.shape} and "
                         f"{flow.shape}")
    dtype = image.dtype if np.issubdtype(image.dtype, np.floating) else np.float32
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    sx = np.clip(xs + flow[0], 0, w - 1)
    sy = np.clip(ys + flow[1], 0, h - 1)
    x0 = np.floor(sx).astype(np.intp)
    y0 = np.floor(sy).astype(np.intp)
    x1 = np.minimum(x0 + 1, w - 1)
    y1 = np.minimum(y0 + 1, h - 1)
    wx = sx - x0
    wy = sy - y0
    img = image.astype(np.float64)
    if img.ndim == 3:
        wx, wy = wx[..., None], wy[..., None]
    top = (1 - wx) * img[y0, x0] + wx * img[y0, x1]
    bottom = (1 - wx) * img[y1, x0] + wx * img[y1, x1]
    return ((1 - wy) * top + wy * bottom).astype(dtype)


def warp_backward_batch(images: torch.Tensor, flows: torch.Tensor) -> torch.Tensor:
    """``warp_backward`` for tensors on any device: images (N, C, H, W), flows (N, 2, H, W) -> (N, C, H, W), same
    sampling (bilinear, sample points clamped to the border); used when the training step computes the flows."""
    n, _, h, w = images.shape
    if flows.shape != (n, 2, h, w):
        raise ValueError(f"warp_backward_batch needs (N, 2, H, W) flows for {tuple(images.shape)} images, got "
                         f"{tuple(flows.shape)}")
    ys, xs = torch.meshgrid(torch.arange(h, device=images.device, dtype=torch.float32),
                            torch.arange(w, device=images.device, dtype=torch.float32), indexing="ij")
    sx = (xs + flows[:, 0].float()).clamp(0, w - 1)
    sy = (ys + flows[:, 1].float()).clamp(0, h - 1)
    grid = torch.stack((2 * sx / max(w - 1, 1) - 1, 2 * sy / max(h - 1, 1) - 1), dim=-1)
    warped = torch.nn.functional.grid_sample(images.float(), grid, mode="bilinear", padding_mode="border",
                                             align_corners=True)
    return warped.to(images.dtype)


def mean_base(inp: torch.Tensor, neighbours: Sequence[torch.Tensor]) -> torch.Tensor:
    """The ``base="mean"`` residual base: the mean of the input and the neighbours as the network sees them."""
    return torch.stack([inp, *neighbours]).mean(dim=0)


def _flow_image(frame: np.ndarray) -> np.ndarray:
    """A normalised (H, W, C) frame as pyflow input: float64 in [0, 1], grey as (H, W)."""
    img = np.clip(np.asarray(frame, dtype=np.float64), 0.0, 1.0)
    return img[:, :, 0] if img.ndim == 3 and img.shape[2] == 1 else img


def compute_flows(center: np.ndarray, others: Sequence[np.ndarray], threads: int = 0) -> List[np.ndarray]:
    """pyflow (RBPN's parameters) from ``center`` to each of ``others``: float32 (2, H, W), normalised frames."""
    try:
        import pyflow
    except ImportError as exc:
        raise UserError(f"the pyflow extension is not built ({exc}); run `make setup` or "
                        "`.venv/bin/python setup.py build_ext --inplace`") from exc
    if not others:
        return []
    flows = pyflow.rbpn_flows(_flow_image(center), [_flow_image(o) for o in others], threads=threads)
    return [np.ascontiguousarray(f, dtype=np.float32) for f in flows]


def frame_flow_fn(frames: Sequence[np.ndarray], method: str = "pyflow", threads: int = 0) -> FlowFn:
    """A ``FlowFn`` over a list of frames, without caching: pyflow, or zero flows with ``method="zero"``."""
    if method not in FLOW_METHODS:
        raise UserError(f"unknown flow method {method!r}; use one of {', '.join(FLOW_METHODS)}")

    def flow_fn(src: int, dsts: Sequence[int]) -> List[np.ndarray]:
        if method == "zero":
            h, w = frames[src].shape[:2]
            return [np.zeros((2, h, w), np.float32) for _ in dsts]
        return compute_flows(frames[src], [frames[d] for d in dsts], threads)

    return flow_fn


# ----------------------------------------------------------------------------------------------------------------
# Training targets


def window_length(mode: str, n_frames: int) -> int:
    """Frames a window needs to give the network ``n_frames`` frames (input + n_frames - 1 neighbours) and a target.

    ``n2n`` and ``select``: n_frames + 1 (the target frame is not a neighbour); ``median``: 2 * n_frames;
    ``interleaved`` (odd n_frames only): 2 * n_frames - 1 (the network's frames 2 apart, the target between), 3 for
    n_frames 1. n_frames 1 is the single-frame model (no neighbours).
    """
    if mode not in TARGETS:
        raise UserError(f"unknown target {mode!r}; use one of {', '.join(TARGETS)}")
    if n_frames < 1:
        raise UserError(f"nFrames must be at least 1 for --denoise, got {n_frames}")
    if mode == "interleaved":
        if n_frames % 2 == 0:
            raise UserError(f"--target interleaved needs an odd nFrames (the neighbours sit symmetrically at +-2, "
                            f"+-4, ... scans), got {n_frames}")
        return max(3, 2 * n_frames - 1)
    return 2 * n_frames if mode == "median" else n_frames + 1


def network_frames(mode: str, length: int) -> int:
    """Inverse of ``window_length``: the n_frames a window of ``length`` frames serves; UserError if none."""
    if mode == "interleaved":
        n = 1 if length == 3 else (length + 1) // 2
    else:
        n = length // 2 if mode == "median" else length - 1
    if n < 1 or window_length(mode, n) != length:
        smallest = window_length(mode, 1)
        rule = {"median": "an even number of frames", "interleaved": "an odd number of frames (2 * nFrames - 1)"}.get(
            mode, "nFrames + 1 frames")
        raise UserError(f"a {mode!r} window needs {rule}, at least {smallest}; got {length}")
    return n


def split_window(mode: str, length: int, rng: random.Random,
                 scores: Optional[Sequence[float]] = None) -> Dict[str, object]:
    """Window positions of the input, the target frame(s) and the neighbours (disjoint), without touching pixels.

    ``scores`` (noise score per frame, lower = cleaner) are needed for ``select``.
    Returns ``{"mode", "input": int, "target": [int, ...], "neighbours": [int, ...]}``.
    """
    network_frames(mode, length)
    centre = length // 2
    if mode == "n2n":
        target = [rng.choice([centre + d for d in (-1, 1) if 0 <= centre + d < length])]
        inp = centre
        neighbours = [i for i in range(length) if i not in (inp, target[0])]
    elif mode == "interleaved":  # the network sees offsets 0, +-2, +-4, ...; the target is the two frames at +-1
        inp = centre
        target = [centre - 1, centre + 1]
        neighbours = [i for i in range(length) if (i - centre) % 2 == 0 and i != centre]
    elif mode == "select":
        if scores is None or len(scores) != length:
            raise ValueError("select needs one noise score per window frame")
        ranked = sorted(range(length), key=lambda i: (scores[i], i))
        target, inp = [ranked[0]], ranked[1]
        neighbours = sorted(ranked[2:])
        rng.shuffle(neighbours)  # the fork shuffled the neighbours
    else:  # median: even offsets from the centre go to the network, odd ones make the target
        inp = centre
        neighbours = [i for i in range(length) if (i - centre) % 2 == 0 and i != centre]
        target = [i for i in range(length) if (i - centre) % 2 == 1]
    return {"mode": mode, "input": inp, "target": target, "neighbours": neighbours}


def make_sample(window_frames: Sequence[np.ndarray], mode: str, rng: random.Random, flow_fn: FlowFn,
                align_target: bool = True, score_range: Optional[Tuple[float, float]] = (0.0, 1.0),
                neighbour_flows: bool = True,
                ) -> Tuple[np.ndarray, np.ndarray, List[np.ndarray], List[np.ndarray], Dict[str, object]]:
    """Split a window of consecutive (H, W, C) frames of one movie into (input, target, neighbours, flows, indices).

    Input, target frame(s) and neighbours are always distinct frames of the window, so the target's noise is
    independent of everything the network sees. ``n_frames`` follows from the window's length (``window_length``):

    - ``n2n`` (Noise2Noise, n_frames + 1 frames): input = the centre frame ``c = len // 2``; target = frame c - 1 or
      c + 1 (drawn with ``rng``); neighbours = the other n_frames - 1 frames, in time order.
    - ``select`` (the fork's, n_frames + 1 frames): target = the frame with the lowest ``metrics.streak_score``
      (computed with ``score_range``, i.e. on the normalised [0, 1] scale), input = the second lowest, neighbours =
      the rest, shuffled as the fork did.
    - ``median`` (2 * n_frames frames): the window is split by parity of the offset from the centre ``c = len // 2``:
      the input (offset 0) and n_frames - 1 neighbours at even offsets (+-2, +-4, ...) go to the network, and the
      n_frames frames at odd offsets (+-1, +-3, ...) are warped onto the input and their per-pixel median is the
      target. The target frames are interleaved with the network's frames, so they are as close in time to the input
      as its neighbours (the sample moves and the scanner drifts between scans), yet none of them is a network
      input. The network's neighbours are 2 scans apart in training (1 at inference); the flow covers the difference.
    - ``interleaved`` (2 * n_frames - 1 frames, odd n_frames): the input (the centre) and neighbours at offsets +-2,
      +-4, ... go to the network; the target is the mean of the two frames at offsets -1 and +1, *not* warped: the
      pair is symmetric in time around the input, so a steady drift or change cancels in their mean, and no flow error
      (flows on raw noisy scans can be poor) enters the target. Its noise is independent of the network's frames, so
      the loss is the true error plus a constant (Noise2Noise). This is exactly the no-reference score's setting
      (``denoise_eval``: every other frame seen, the frames between held out).

    ``flows`` are float32 (2, H, W) from the input to each neighbour (``flow_fn(input, neighbours)``; zeros without
    ``neighbour_flows``, when the training step computes them). With ``align_target`` each target frame is
    backward-warped onto the input with the flow from the input to it (never for ``interleaved``).
    ``indices`` is ``split_window``'s dict of window positions.
    """
    frames = [np.asarray(f) for f in window_frames]
    length = len(frames)
    network_frames(mode, length)
    shape = frames[0].shape
    if any(f.shape != shape for f in frames):
        raise DataError(f"all frames of a window must have one shape, got {sorted({f.shape for f in frames})}")
    scores = [metrics.streak_score(f, score_range) for f in frames] if mode == "select" else None
    idx = split_window(mode, length, rng, scores)
    inp = frames[idx["input"]]
    if neighbour_flows:
        flows = flow_fn(idx["input"], idx["neighbours"])
    else:
        flows = [np.zeros((2,) + shape[:2], np.float32) for _ in idx["neighbours"]]
    neighbours = [frames[i] for i in idx["neighbours"]]
    targets = [frames[i] for i in idx["target"]]
    if align_target and mode != "interleaved":
        target_flows = flow_fn(idx["input"], idx["target"])
        targets = [warp_backward(t, f) for t, f in zip(targets, target_flows)]
    if len(targets) == 1:
        target = targets[0].astype(np.float32)
    else:  # the median of interleaved's two frames is their mean
        target = np.median(np.stack(targets).astype(np.float64), axis=0).astype(np.float32)
    return inp.astype(np.float32), target, [n.astype(np.float32) for n in neighbours], flows, idx


# ----------------------------------------------------------------------------------------------------------------
# Dataset


def _check_movie(movie: np.ndarray, name: str) -> np.ndarray:
    movie = _as_movie(movie, name)
    if not np.isfinite(movie).all():
        raise UserError(f"{name} has NaN or infinite values; DenoiseDataset takes movies normalised by "
                        "denoise_data.preprocess (finite, not clipped)")
    return np.ascontiguousarray(movie, dtype=np.float32)


def _to_tensor(img: np.ndarray) -> torch.Tensor:
    """(H, W, C) float -> float32 tensor [C, H, W]."""
    return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1), dtype=np.float32))


class DenoiseDataset(torch.utils.data.Dataset):
    """Denoising samples from normalised movies: every window of ``window_length(target, n_frames)`` consecutive
    frames without a blank frame is one sample.

    ``__getitem__`` returns ``(input, target, neighbours, flows, input)`` like the SR datasets: float32 tensors
    ``input`` and ``target`` [C, h, w] in [0, 1], ``neighbours`` a list of n_frames - 1 tensors [C, h, w], ``flows`` a
    list of n_frames - 1 tensors [2, h, w] (input -> each neighbour, u then v, pixels), and in the SR datasets'
    ``bicubic`` slot the frame ``--residual`` adds G's correction to (there is no upscale): the input itself with
    ``base="frame"``, or with ``base="mean"`` the mean of the input and its neighbours as the network sees them
    (warped with ``warping``), so that a generator whose correction is zero is the plain temporal mean.
    With ``warping`` the neighbours are backward-warped onto the input (the flows are still the input -> original
    neighbour flows). h = w = ``patch_size`` in training (0 = whole frames); whole frames when ``training`` is off.

    Per training sample: a random patch, flips (``dataset.random_augment``) and one gamma in ``gamma`` for the whole
    group (input, target, neighbours), as the fork; flows follow the flips. When not training, a sample is the
    same every time (its random choices are seeded by its index).

    Flows (``flows="pyflow"``) are computed on the normalised frames. Without ``flow_cache`` they are computed on
    each patch (as the SR datasets). With ``flow_cache`` (a folder, or ``MEMORY`` for an in-process dict) they are
    computed once per (movie, frame pair) on whole frames, stored as float16 and cropped/flipped per sample; the
    memory cache is per process, so with DataLoader workers call ``precompute_flows()`` before the loader starts
    (workers inherit it) or use a folder.
    """

    def __init__(self, movies: Sequence[np.ndarray], blanks: Optional[Sequence[Sequence[int]]] = None,
                 names: Optional[Sequence[str]] = None, n_frames: int = 7, target: str = "n2n", patch_size: int = 64,
                 training: bool = True, data_augmentation: bool = True,
                 gamma: Optional[Tuple[float, float]] = DEFAULT_GAMMA, warping: bool = False, flows: str = "pyflow",
                 flow_cache: Optional[str] = None, flow_threads: int = 0, base: str = "frame"):
        if base not in BASES:
            raise UserError(f"unknown residual base {base!r}; use one of {', '.join(BASES)}")
        if flows not in FLOW_METHODS:
            raise UserError(f"unknown flow method {flows!r}; use one of {', '.join(FLOW_METHODS)}")
        if patch_size < 0:
            raise UserError(f"patch_size must be >= 0 (0 = whole frames), got {patch_size}")
        if gamma is not None and not 0 < gamma[0] <= gamma[1]:
            raise UserError(f"gamma must be a range (low, high) with 0 < low <= high, got {gamma}")
        if not movies:
            raise DataError("no movies given for --denoise training")
        names = list(names) if names is not None else [f"movie{i}" for i in range(len(movies))]
        if len(names) != len(movies) or (blanks is not None and len(blanks) != len(movies)):
            raise UserError("give one name and one list of blank frames per movie")
        self.n_frames = n_frames
        self.target = target
        self.length = window_length(target, n_frames)
        self.patch_size = patch_size
        self.training = training
        self.data_augmentation = data_augmentation
        self.gamma = gamma
        self.warping = warping
        self.base = base
        self.flows = flows
        self.flow_threads = flow_threads
        self.movies = [_check_movie(m, name) for m, name in zip(movies, names)]
        self.names = names
        channels = {m.shape[3] for m in self.movies}
        if len(channels) > 1:
            raise UserError(f"all movies must have the same number of channels, got {sorted(channels)}")
        self.blanks = [sorted(set(int(t) for t in b)) for b in blanks] if blanks is not None else \
            [check_frames(m).skipped for m in self.movies]
        self.samples: List[Tuple[int, int]] = []  # (movie index, first frame of the window)
        for m, movie in enumerate(self.movies):
            count, (h, w) = movie.shape[0], movie.shape[1:3]
            if training and patch_size > 0 and (h < patch_size or w < patch_size):
                raise DataError(f"{names[m]}: frames of {w}x{h} are smaller than patch_size {patch_size}")
            blank = set(self.blanks[m])
            starts = [s for s in range(count - self.length + 1) if not blank & set(range(s, s + self.length))]
            if not starts:
                warnings.warn(f"{names[m]}: no run of {self.length} consecutive non-blank frames (needed for "
                              f"--target {target} with nFrames={n_frames}); skipped", stacklevel=2)
            self.samples.extend((m, s) for s in starts)
        if not self.samples:
            raise DataError(f"no movie has {self.length} consecutive non-blank frames (needed for --target {target} "
                            f"with nFrames={n_frames})")
        self._memory: Dict[Tuple[int, int, int], np.ndarray] = {}
        self._disk = FlowCache(flow_cache) if flow_cache and flow_cache != MEMORY else None
        self.cached = bool(flow_cache) and flows == "pyflow"
        self._digests: Dict[int, str] = {}
        self._rng = random.Random()
        # True: zero neighbour flows and unwarped neighbours here; the training step computes the flows (and warps)
        # with --flow_backend torch. Targets that are aligned (n2n, select, median) still take their flows here.
        self.skip_flows = False

    def __len__(self) -> int:
        return len(self.samples)

    def reseed(self, seed: int) -> None:
        """Reseed the generator of patch corners, flips, gamma and target choices (DataLoader workers)."""
        self._rng.seed(seed)

    def window(self, index: int) -> Tuple[int, List[int]]:
        """(movie index, frame indices of the window) of a sample."""
        m, start = self.samples[index]
        return m, list(range(start, start + self.length))

    def describe(self, index: int) -> str:
        m, frames = self.window(index)
        return f"{self.names[m]}#frames{frames[0]}-{frames[-1]}"

    # -- flows ---------------------------------------------------------------------------------------------------
    def _digest(self, m: int) -> str:
        if m not in self._digests:
            movie = self.movies[m]
            h = hashlib.sha1(f"{CACHE_VERSION}:denoise:{self.names[m]}:{movie.shape}".encode())
            h.update(movie.tobytes())
            self._digests[m] = h.hexdigest()
        return self._digests[m]

    def _pair_key(self, m: int, src: int, dst: int) -> str:
        return hashlib.sha1(f"{self._digest(m)}:{src}->{dst}".encode()).hexdigest()

    def _cached_pair(self, m: int, src: int, dst: int) -> Optional[np.ndarray]:
        flow = self._memory.get((m, src, dst))
        if flow is None and self._disk is not None:
            h, w = self.movies[m].shape[1:3]
            stored = self._disk.load(self._pair_key(m, src, dst), 1, h, w)
            flow = None if stored is None else stored[0]
        return flow

    def _store_pair(self, m: int, src: int, dst: int, flow: np.ndarray) -> np.ndarray:
        if self._disk is not None:
            return self._disk.store(self._pair_key(m, src, dst), [flow])[0]
        stored = flow.astype(np.float16)
        self._memory[(m, src, dst)] = stored
        return stored

    def movie_flows(self, m: int, src: int, dsts: Sequence[int]) -> List[np.ndarray]:
        """Whole-frame float32 flows from frame ``src`` of movie ``m`` to each frame in ``dsts``, via the cache."""
        flows: Dict[int, np.ndarray] = {}
        missing = []
        for d in dsts:
            cached = self._cached_pair(m, src, d)
            if cached is None:
                missing.append(d)
            else:
                flows[d] = cached
        if missing:
            movie = self.movies[m]
            computed = compute_flows(movie[src], [movie[d] for d in missing], self.flow_threads)
            for d, flow in zip(missing, computed):
                flows[d] = self._store_pair(m, src, d, flow)
        return [flows[d].astype(np.float32) for d in dsts]

    def needed_pairs(self, m: int) -> Dict[int, List[int]]:
        """Frame pairs (src -> sorted dsts) of movie ``m`` whose flows the samples can ask for.

        ``n2n`` and ``median`` take flows from each window's centre only; ``select`` from any frame of a window;
        ``interleaved`` from the centre to its neighbours only (its target is not warped).
        """
        pairs: Dict[int, set] = {}
        for mm, start in self.samples:
            if mm != m:
                continue
            window = range(start, start + self.length)
            centre = start + self.length // 2
            sources = window if self.target == "select" else [centre]
            for src in sources:
                if self.target == "interleaved":
                    pairs.setdefault(src, set()).update(d for d in window if (d - src) % 2 == 0 and d != src)
                else:
                    pairs.setdefault(src, set()).update(d for d in window if d != src)
        return {src: sorted(dsts) for src, dsts in sorted(pairs.items())}

    def precompute_flows(self) -> int:
        """Compute every flow the samples can need into the cache; returns how many pairs were computed."""
        if not self.cached:
            raise UserError("precompute_flows needs flow_cache (a folder or MEMORY) and flows='pyflow'")
        done = 0
        for m in range(len(self.movies)):
            for src, dsts in self.needed_pairs(m).items():
                missing = [d for d in dsts if self._cached_pair(m, src, d) is None]
                if missing:
                    self.movie_flows(m, src, missing)
                    done += len(missing)
        return done

    def _flow_fn(self, m: int, start: int, frames: List[np.ndarray]) -> FlowFn:
        if self.flows == "zero" or not self.cached:
            return frame_flow_fn(frames, self.flows, self.flow_threads)

        def flow_fn(src: int, dsts: Sequence[int]) -> List[np.ndarray]:
            return self.movie_flows(m, start + src, [start + d for d in dsts])

        return flow_fn

    # -- samples -------------------------------------------------------------------------------------------------
    def make_item(self, index: int):
        """The sample tuple (see the class docstring)."""
        m, start = self.samples[index]
        movie = self.movies[m]
        rng = self._rng if self.training else random.Random(index)
        h, w = movie.shape[1:3]
        y = x = 0
        size_h, size_w = h, w
        if self.training and self.patch_size > 0:
            size_h = size_w = self.patch_size
            y, x = rng.randrange(0, h - size_h + 1), rng.randrange(0, w - size_w + 1)
        augment = self.training and self.data_augmentation
        aug = random_augment(rng) if augment else {}
        gamma = rng.uniform(*self.gamma) if augment and self.gamma is not None else None
        window = movie[start : start + self.length]
        if self.cached:  # whole frames: flows come from the cache, crop afterwards
            frames = list(window)
            oy, ox = y, x
        else:  # crop first: flows on the patch
            frames = [f[y : y + size_h, x : x + size_w] for f in window]
            oy = ox = 0
        inp, target, neighbours, flows, _ = make_sample(frames, self.target, rng, self._flow_fn(m, start, frames),
                                                        neighbour_flows=not self.skip_flows)
        if self.warping and not self.skip_flows:
            neighbours = [warp_backward(nb, f) for nb, f in zip(neighbours, flows)]

        def crop_aug(img: np.ndarray) -> np.ndarray:
            img = apply_augment(img[oy : oy + size_h, ox : ox + size_w], aug)
            if gamma is not None:
                img = np.clip(img, 0.0, 1.0) ** gamma
            return img

        inp, target, neighbours = crop_aug(inp), crop_aug(target), [crop_aug(nb) for nb in neighbours]
        flows = crop_and_augment(flows, oy, ox, size_h, size_w, aug)
        inp_t = _to_tensor(inp)
        nbs_t = [_to_tensor(nb) for nb in neighbours]
        base = mean_base(inp_t, nbs_t) if self.base == "mean" else inp_t.clone()
        return inp_t, _to_tensor(target), nbs_t, [torch.from_numpy(f) for f in flows], base

    def __getitem__(self, index: int):
        try:
            return self.make_item(index)
        except DataError:
            raise
        except UserError as exc:
            raise DataError(f"{self.describe(index)}: {exc}") from None
        except Exception as exc:  # name the window so that a worker's re-raise stays readable
            raise DataError(f"{self.describe(index)}: {type(exc).__name__}: {exc}") from exc
