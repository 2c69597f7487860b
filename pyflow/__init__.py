"""pyflow: Coarse2Fine optical flow (Ce Liu's method, as in the ``pyflow`` package), our own C++ implementation.

``u, v, im2W = coarse2fine_flow(Im1, Im2, alpha, ratio, minWidth, nOuterFPIterations, nInnerFPIterations,
nSORIterations, colType)`` has the reference's argument names, order, defaults and outputs, and reproduces its
flow to rounding level (bitwise on the reference pairs in tests/data/flow_ref).

Flow convention: ``Im1(x, y) ~ Im2(x + u(x, y), y + v(x, y))``. ``u`` is the horizontal displacement (+ = right,
column index), ``v`` the vertical one (+ = down, row index), both in pixels, float64 (H, W). ``im2W`` is Im2
warped back onto Im1 (bicubic, Im1's pixel where the flow points outside the image, clamped to [0, 1]).

Inputs (both images must have the same shape):

* ``(H, W, 3)`` colour (RGB) or ``(H, W, 1)`` gray, or a 2-D ``(H, W)`` gray array, which is treated as
  ``(H, W, 1)``; ``im2W`` then comes back 2-D as well.
* dtype float64 or float32 with values in [0, 1] (float32 is converted to float64 exactly), or uint8, which is
  divided by 255 (``uint8 / 255.0`` in float64, the same values RBPN feeds the reference). Float values outside
  [0, 1] by more than ``RANGE_TOLERANCE`` (1e-6, room for rounding error only) are refused: a 0..255 float image
  silently gives a different flow, and huge values a zero one. Values within the tolerance are used as they are.
* Anything else (other dtypes or channel counts, NaN/inf, out-of-range floats, empty or mismatched arrays, a
  ``colType`` other than 0 or 1) raises ``TypeError`` or ``ValueError`` with a message saying what to pass.

Differences from the reference package: nothing is printed; the GIL is released during the computation and all
state is local, so calls from several threads run in parallel (see ``coarse2fine_flow_batch``); Im2's shape is
checked. Small images never crash: the pyramid has ``L = trunc(ln(minWidth / W) / ln(ratio))`` levels, at least 1
(a single level at full resolution when ``L <= 0``, e.g. width <= 26 with the RBPN parameters, where the reference
segfaults), and a level whose height would round to 0 is dropped. ``pyramid_levels(H, W)`` tells how many are used.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from numbers import Integral, Real
from typing import Sequence

import numpy as np

from . import _pyflow

__all__ = [
    "RBPN_PARAMS",
    "coarse2fine_flow",
    "coarse2fine_flow_batch",
    "pyramid_levels",
    "rbpn_flows",
]

# The parameters RBPN and iSeeBetter pass (positionally) in dataset.py:get_flow.
RBPN_PARAMS = dict(
    alpha=0.012, ratio=0.75, minWidth=20, nOuterFPIterations=7, nInnerFPIterations=1, nSORIterations=30, colType=0
)

# How far float input may stray outside [0, 1] (rounding error of arithmetic on [0, 1] images, not resampling
# overshoot, which must be clipped).
RANGE_TOLERANCE = 1e-6
# colType: 0 = RGB gray weights; 1 = the reference's "GRAY" tag, which for 3-channel input swaps the gray weights to
# BGR order at the finest pyramid level (no effect on 1-channel input). The reference treats any other value as 0.
_COL_TYPES = (0, 1)

_HOW = "pass a numpy array of shape (H, W, 3) RGB, (H, W, 1) or (H, W) gray, dtype float64/float32 in [0, 1] or uint8"


def _as_image(im, name: str) -> np.ndarray:
    """Validate one image and return it as float64 C-contiguous (H, W, C)."""
    if not isinstance(im, np.ndarray):
        raise TypeError(f"{name} must be a numpy array, got {type(im).__name__}; {_HOW}")
    if im.dtype == np.uint8:
        out = im.astype(np.float64) / 255.0
    elif im.dtype in (np.float64, np.float32):
        out = im.astype(np.float64, copy=False)
    else:
        raise TypeError(f"{name} has dtype {im.dtype}, which is not supported; {_HOW}")
    if out.ndim == 2:
        out = out[:, :, None]
    if out.ndim != 3:
        raise ValueError(f"{name} has {im.ndim} dimensions (shape {im.shape}); {_HOW}")
    if out.shape[0] == 0 or out.shape[1] == 0:
        raise ValueError(f"{name} is empty (shape {im.shape}); {_HOW}")
    if out.shape[2] not in (1, 3):
        raise ValueError(
            f"{name} has {out.shape[2]} channels (shape {im.shape}); {_HOW} (drop an alpha channel first)"
        )
    if im.dtype != np.uint8:
        _check_range(out, name)
    return np.ascontiguousarray(out)


def _check_range(im: np.ndarray, name: str) -> None:
    """Refuse NaN/inf and values outside [0, 1] (beyond ``RANGE_TOLERANCE``); one min and one max pass."""
    lo, hi = float(im.min()), float(im.max())  # NaN propagates through min/max, inf shows as an end
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise ValueError(f"{name} contains NaN or infinite values; pass finite values in [0, 1]")
    if lo < -RANGE_TOLERANCE or hi > 1 + RANGE_TOLERANCE:
        raise ValueError(
            f"{name} has values from {lo:.6g} to {hi:.6g}, outside [0, 1]; float images must be in [0, 1]: "
            f"divide 0..255 values by 255 (or pass uint8), and clip any resampling overshoot with np.clip(im, 0, 1)"
        )


def _check_params(alpha, ratio, minWidth, nOuter, nInner, nSOR, colType) -> None:
    for name, value in (("alpha", alpha), ("ratio", ratio), ("minWidth", minWidth)):
        if isinstance(value, bool) or not isinstance(value, Real) or not np.isfinite(value) or value <= 0:
            raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    counts = (("nOuterFPIterations", nOuter), ("nInnerFPIterations", nInner), ("nSORIterations", nSOR))
    for name, value in counts + (("colType", colType),):
        if isinstance(value, bool) or not isinstance(value, Integral):
            raise TypeError(f"{name} must be an integer, got {value!r}")
    for name, value in counts:
        if not 0 <= value <= 100000:
            raise ValueError(f"{name} must be between 0 and 100000, got {value}")
    if colType not in _COL_TYPES:
        raise ValueError(
            f"colType must be 0 (RGB) or 1 (the reference's GRAY tag: BGR gray weights for colour input), got {colType}"
        )


def _prepare(Im1, Im2, alpha, ratio, minWidth, nOuter, nInner, nSOR, colType):
    a = _as_image(Im1, "Im1")
    b = _as_image(Im2, "Im2")
    if a.shape != b.shape:
        raise ValueError(f"Im1 and Im2 must have the same shape, got {np.shape(Im1)} and {np.shape(Im2)}")
    _check_params(alpha, ratio, minWidth, nOuter, nInner, nSOR, colType)
    return a, b


def _run(a, b, two_d, alpha, ratio, minWidth, nOuter, nInner, nSOR, colType, epoch=-1):
    u, v, im2w = _pyflow.coarse2fine_flow(
        a, b, float(alpha), float(ratio), float(minWidth), int(nOuter), int(nInner), int(nSOR), int(colType), epoch
    )
    if two_d:
        im2w = im2w[:, :, 0]
    return u, v, im2w


def coarse2fine_flow(
    Im1: np.ndarray,
    Im2: np.ndarray,
    alpha: float = 1,
    ratio: float = 0.5,
    minWidth: int = 40,
    nOuterFPIterations: int = 3,
    nInnerFPIterations: int = 1,
    nSORIterations: int = 20,
    colType: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Coarse2Fine flow from Im1 to Im2; returns (u, v, im2W) as float64 arrays (see the module docstring).

    colType=1 swaps the gray weights to BGR order for 3-channel input at the finest level (the reference's quirk);
    for gray input it has no effect.
    """
    a, b = _prepare(
        Im1, Im2, alpha, ratio, minWidth, nOuterFPIterations, nInnerFPIterations, nSORIterations, colType
    )
    return _run(
        a, b, np.ndim(Im1) == 2, alpha, ratio, minWidth, nOuterFPIterations, nInnerFPIterations, nSORIterations,
        colType,
    )


def _resolve_threads(threads: int, jobs: int) -> int:
    if isinstance(threads, bool) or not isinstance(threads, Integral) or threads < 0:
        raise ValueError(f"threads must be an integer >= 0 (0 = all cores), got {threads!r}")
    if threads == 0:
        threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(int(threads), jobs))


def coarse2fine_flow_batch(
    Im1: np.ndarray,
    neighbours: Sequence[np.ndarray],
    alpha: float = 1,
    ratio: float = 0.5,
    minWidth: int = 40,
    nOuterFPIterations: int = 3,
    nInnerFPIterations: int = 1,
    nSORIterations: int = 20,
    colType: int = 0,
    threads: int = 0,
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Flows from one centre frame Im1 to each neighbour, computed in parallel threads (0 = all cores).

    Returns a list of (u, v, im2W) in neighbour order, each identical to ``coarse2fine_flow(Im1, neighbour, ...)``.
    All inputs are validated before any work starts.
    """
    if isinstance(neighbours, np.ndarray) or not isinstance(neighbours, Sequence):
        raise TypeError("neighbours must be a list of images (numpy arrays), one per neighbour frame")
    params = (alpha, ratio, minWidth, nOuterFPIterations, nInnerFPIterations, nSORIterations, colType)
    pairs = []
    for k, nb in enumerate(neighbours):
        try:
            pairs.append(_prepare(Im1, nb, *params))
        except (TypeError, ValueError) as err:
            raise type(err)(f"neighbour {k}: {err}") from None
    if not pairs:
        return []
    two_d = np.ndim(Im1) == 2
    n_threads = _resolve_threads(threads, len(pairs))
    if n_threads == 1:
        return [_run(a, b, two_d, *params) for a, b in pairs]
    with ThreadPoolExecutor(max_workers=n_threads) as pool:
        epoch = _pyflow.cancel_epoch()
        jobs = [pool.submit(_run, a, b, two_d, *params, epoch) for a, b in pairs]
        try:
            return [job.result() for job in jobs]
        except KeyboardInterrupt:  # Ctrl-C reaches this thread only: stop the workers' C++ loops too
            _pyflow.cancel_running()
            raise


def rbpn_flows(center: np.ndarray, neighbours: Sequence[np.ndarray], threads: int = 0) -> list[np.ndarray]:
    """RBPN/iSeeBetter input flows: for each neighbour, float32 (2, H, W) with channel 0 = u, 1 = v.

    Same as the original ``get_flow(center, neighbour)`` (pyflow with ``RBPN_PARAMS``), centre frame as Im1.
    Images are uint8 RGB (divided by 255) or float in [0, 1].
    """
    results = coarse2fine_flow_batch(center, neighbours, threads=threads, **RBPN_PARAMS)
    return [np.stack([u, v]).astype(np.float32) for u, v, _ in results]


def pyramid_levels(height: int, width: int, ratio: float = 0.5, minWidth: int = 40) -> int:
    """Number of pyramid levels coarse2fine_flow uses for an image of this size (at least 1)."""
    _check_params(1.0, ratio, minWidth, 0, 0, 0, 0)
    if height < 1 or width < 1:
        raise ValueError(f"height and width must be >= 1, got {height}x{width}")
    return _pyflow.pyramid_levels(int(height), int(width), float(ratio), float(minWidth))
