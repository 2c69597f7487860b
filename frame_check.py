"""Which frames of a scan movie are blank or corrupt, and which pixels are outliers (``check_frames``).

Every decision uses robust per-frame statistics (percentiles), never min/max, so that one spike pixel or one
garbage frame cannot change the verdict on the other frames:

- spread of a frame: its 99th minus its 1st percentile (all channels); the movie's typical spread is the median
  spread of its frames that are not constant (the lower one of the middle two for an even count).
- blank: an exactly constant frame, or one whose spread is at most ``tol`` times the movie's typical spread (when
  that is 0, as for flat frames with a few small features, only constant frames are blank).
- corrupt: a frame whose spread is more than ``corrupt_factor`` times its neighbours' (the median spread of up to
  ``window`` usable frames on each side), whose median lies more than ``outlier_factor`` neighbour spreads from
  theirs, or which holds no finite value at all (e.g. garbage bytes in an ``.asd`` frame).
- outlier pixels: NaN or infinite values, or values more than ``outlier_factor`` typical spreads from their
  frame's median (a corrupt frame: from its neighbours' median).

Blank and corrupt frames are skipped (``FrameCheck.skipped``): kept as they are, never used as neighbours or for
training. Frames with outlier pixels are still used; the normalisation leaves those pixels out and their values
are not changed. ``describe_findings`` gives one log line per finding. Frames count from 0 everywhere (log lines,
``metrics.json``, the tester's PNG names).
"""

import bisect
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

BLANK_TOL = 1e-3
OUTLIER_FACTOR = 50.0
CORRUPT_FACTOR = 20.0
WINDOW = 4
LOW_PCT, MID_PCT, HIGH_PCT = 1.0, 50.0, 99.0

SKIP_ACTION = "skipped: kept as it is, never used as a neighbour or for training"
PASS_ACTION = "passed through unchanged, never used as a neighbour"  # the tester's words for skipped frames
OUTLIER_ACTION = "the frame is still used; these pixels are left out of the normalisation, not replaced"


@dataclass
class Finding:
    """One finding: ``frame`` (0-based), ``kind`` ("blank", "corrupt" or "outliers"), ``pixels`` concerned, the
    ``action`` taken and a ``detail`` for the log."""

    frame: int
    kind: str
    pixels: int
    action: str
    detail: str = ""


@dataclass
class FrameCheck:
    """The verdict on one movie: blank and corrupt frames, outlier pixel counts per frame, and the per-frame bounds
    (``low``, ``high``) outside which a value is an outlier."""

    count: int
    pixels: int  # per frame (H * W)
    blank: List[int]
    corrupt: List[int]
    outliers: Dict[int, int]
    findings: List[Finding]
    low: np.ndarray
    high: np.ndarray
    typical: Tuple[float, float]  # the movie's typical 1st and 99th percentiles (for messages)

    @property
    def skipped(self) -> List[int]:
        """Blank and corrupt frames: never denoised, never neighbours, never trained on."""
        return sorted(set(self.blank) | set(self.corrupt))

    def outlier_mask(self, frames: np.ndarray) -> np.ndarray:
        """Boolean mask of ``frames``' shape, true at outlier values of the frames that are not skipped."""
        frames = _as_frames(frames)
        mask = np.zeros(frames.shape, dtype=bool)
        skip = set(self.skipped)
        for t in self.outliers:
            if t not in skip:
                mask[t] = _outside(frames[t], self.low[t], self.high[t])
        return mask


def _as_frames(frames: np.ndarray) -> np.ndarray:
    """(T, H, W) or (T, H, W, C) -> (T, H, W, C), without copying."""
    frames = np.asarray(frames)
    if frames.ndim == 3:
        frames = frames[..., None]
    if frames.ndim != 4 or 0 in frames.shape:
        raise ValueError(f"expected a movie (T, H, W) or (T, H, W, C), got shape {frames.shape}")
    return frames


def _outside(frame: np.ndarray, low: float, high: float) -> np.ndarray:
    """True where a value is not finite or lies outside [low, high]."""
    values = frame.astype(np.float64)
    with np.errstate(invalid="ignore"):
        return ~np.isfinite(values) | (values < low) | (values > high)


def _frame_stats(frames: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per frame: 1st, 50th and 99th percentiles of its finite values (NaN if none), and whether it is constant."""
    count = frames.shape[0]
    stats = np.full((count, 3), np.nan)
    constant = np.zeros(count, dtype=bool)
    for t in range(count):
        values = frames[t].astype(np.float64).ravel()
        values = values[np.isfinite(values)]
        if values.size:
            stats[t] = np.percentile(values, [LOW_PCT, MID_PCT, HIGH_PCT])
            constant[t] = values.min() == values.max()
    return stats[:, 0], stats[:, 1], stats[:, 2], constant


def _median(values: np.ndarray, fallback: float = 0.0) -> float:
    return float(np.median(values)) if len(values) else fallback


def _neighbours(t: int, usable: Sequence[int], window: int) -> List[int]:
    """Up to ``window`` frames of the sorted ``usable`` on each side of ``t`` (``t`` itself left out)."""
    i = bisect.bisect_left(usable, t)
    j = i + 1 if i < len(usable) and usable[i] == t else i
    return list(usable[max(0, i - window) : i]) + list(usable[j : j + window])


def _corrupt_frames(p1: np.ndarray, mid: np.ndarray, p99: np.ndarray, usable: List[int], window: int,
                    outlier_factor: float, corrupt_factor: float) -> Dict[int, str]:
    """Usable frames whose spread or median is far from their neighbours': frame -> why."""
    spread = p99 - p1
    found: Dict[int, str] = {}
    for t in usable:
        near = _neighbours(t, usable, window)
        if not near:
            continue
        ref_spread, ref_mid = _median(spread[near]), _median(mid[near])
        if ref_spread <= 0:
            continue
        if spread[t] > corrupt_factor * ref_spread:
            found[t] = f"its values spread {spread[t] / ref_spread:.3g} times as wide as its neighbours'"
        elif abs(mid[t] - ref_mid) > outlier_factor * ref_spread:
            found[t] = f"its median lies {abs(mid[t] - ref_mid) / ref_spread:.3g} neighbour spreads from theirs"
    return found


def _bounds(mid: np.ndarray, corrupt: Sequence[int], usable: List[int], typical_spread: float, window: int,
            outlier_factor: float) -> Tuple[np.ndarray, np.ndarray]:
    """Per-frame outlier bounds: the frame's median (a corrupt frame: its neighbours') +- factor x typical spread."""
    centre = mid.copy()
    bad = set(corrupt)
    good = [t for t in usable if t not in bad]
    for t in corrupt:
        centre[t] = _median(mid[_neighbours(t, good, window)], fallback=_median(mid[good], fallback=mid[t]))
    width = outlier_factor * typical_spread if typical_spread > 0 else np.inf
    return centre - width, centre + width


def _count_pixels(mask: np.ndarray) -> int:
    """Pixels (positions, any channel) where ``mask`` (H, W, C) is true."""
    return int(mask.any(axis=-1).sum())


def _value_range(unit: str, low: float, high: float) -> str:
    return f"{low:.4g} to {high:.4g}{' ' + unit if unit else ''}"


def check_frames(frames: np.ndarray, tol: float = BLANK_TOL, outlier_factor: float = OUTLIER_FACTOR,
                 corrupt_factor: float = CORRUPT_FACTOR, window: int = WINDOW, unit: str = "") -> FrameCheck:
    """Blank and corrupt frames and outlier pixels of a movie (T, H, W) or (T, H, W, C); see the module doc.

    A movie whose frames are all constant is all blank. ``unit`` only goes into the findings' details.
    """
    frames = _as_frames(frames)
    count, pixels = frames.shape[0], frames.shape[1] * frames.shape[2]
    p1, mid, p99, constant = _frame_stats(frames)
    spread = p99 - p1
    finite = np.isfinite(mid)
    moving = [t for t in range(count) if finite[t] and not constant[t]]
    movie_spread = float(np.percentile(spread[moving], 50, method="lower")) if moving else 0.0
    blank = [t for t in range(count)
             if constant[t] or (finite[t] and movie_spread > 0 and spread[t] <= tol * movie_spread)]
    skip = set(blank)
    usable = [t for t in range(count) if finite[t] and t not in skip]
    why = _corrupt_frames(p1, mid, p99, usable, window, outlier_factor, corrupt_factor)
    why.update({t: "it holds no finite value" for t in range(count) if not finite[t]})
    corrupt = sorted(why)
    good = [t for t in usable if t not in why]
    typical_spread = _median(spread[good], fallback=movie_spread)
    typical = (_median(p1[good], fallback=np.nan), _median(p99[good], fallback=np.nan))
    low, high = _bounds(mid, corrupt, usable, typical_spread, window, outlier_factor)
    findings = [Finding(t, "blank", pixels, SKIP_ACTION, "blank (constant)") for t in blank]
    outliers: Dict[int, int] = {}
    for t in range(count):
        if t in why:
            findings.append(_corrupt_finding(frames[t], t, why[t], (p1, mid, p99), good, window, outlier_factor,
                                             unit))
        elif t not in skip:
            n = _count_pixels(_outside(frames[t], low[t], high[t]))
            if n:
                outliers[t] = n
                findings.append(_outlier_finding(frames[t], t, n, typical, unit))
    findings.sort(key=lambda f: (f.frame, f.kind))
    return FrameCheck(count, pixels, blank, corrupt, outliers, findings, low, high, typical)


def _corrupt_finding(frame: np.ndarray, t: int, why: str, stats: Tuple[np.ndarray, np.ndarray, np.ndarray],
                     good: List[int], window: int, outlier_factor: float, unit: str) -> Finding:
    """A corrupt frame; ``pixels`` counts its values far (one spread) outside its neighbours' typical range. That
    range follows the frame's own median unless the median itself is what is wrong (scan movies drift in height
    from frame to frame: only the values that do not belong count)."""
    p1, mid, p99 = stats
    near = _neighbours(t, good, window) or good
    if near:
        lo, centre, hi = _median(p1[near]), _median(mid[near]), _median(p99[near])
        if np.isfinite(mid[t]) and abs(mid[t] - centre) <= outlier_factor * (hi - lo):
            lo, hi = lo + mid[t] - centre, hi + mid[t] - centre
        n = _count_pixels(_outside(frame, 2 * lo - hi, 2 * hi - lo))
        detail = (f"corrupt ({why}; {n} of {frame.shape[0] * frame.shape[1]} pixels lie far outside their range "
                  f"{_value_range(unit, lo, hi)})")
    else:
        n = _count_pixels(~np.isfinite(frame))
        detail = f"corrupt ({why})"
    return Finding(t, "corrupt", n, SKIP_ACTION, detail)


def _outlier_finding(frame: np.ndarray, t: int, n: int, typical: Tuple[float, float], unit: str) -> Finding:
    """A usable frame with ``n`` outlier pixels; the detail names the most extreme value."""
    values = frame.astype(np.float64)
    finite = values[np.isfinite(values)]
    centre = 0.5 * (typical[0] + typical[1])
    bad = int((~np.isfinite(values)).any(axis=-1).sum())
    parts = []
    if finite.size and np.isfinite(centre):
        worst = finite[np.argmax(np.abs(finite - centre))]
        if not typical[0] <= worst <= typical[1]:
            parts.append(f"the most extreme is {worst:.4g}{' ' + unit if unit else ''}")
    if bad:
        parts.append(f"{bad} NaN or infinite")
    what = f"{n} outlier pixel{'s' if n != 1 else ''}"
    detail = f"{what} ({'; '.join(parts)}; the frames typically span {_value_range(unit, *typical)})" if parts else \
        f"{what} (the frames typically span {_value_range(unit, *typical)})"
    return Finding(t, "outliers", n, OUTLIER_ACTION, detail)


def frame_numbers(indices: Sequence[int], shown: int = 8) -> str:
    """'2, 6, 8' (frame indices, from 0) or '2, 6, ... (12 in all)'."""
    numbers = [str(int(t)) for t in indices]
    if len(numbers) <= shown:
        return ", ".join(numbers)
    return f"{', '.join(numbers[:shown])}, ... ({len(numbers)} in all)"


def frame_span(count: int) -> str:
    """'frames 0-7': how a movie of ``count`` frames is numbered (from 0), for messages."""
    return "frame 0 only" if count == 1 else f"frames 0-{count - 1}"


def describe_findings(check: FrameCheck, name: str = "", shown: int = 10,
                      extra_blank: Optional[Sequence[int]] = None, skip_action: str = SKIP_ACTION) -> List[str]:
    """Log lines for ``check``: one for all blank frames, one per corrupt frame and per frame with outlier pixels
    (at most ``shown`` of those, then one line with the rest's count). ``extra_blank``: further frames that will be
    skipped as blank (e.g. ``Movie.blank``). ``skip_action`` says what happens to blank and corrupt frames (the
    tester passes ``PASS_ACTION``). Frames count from 0: "frame 3 (frames 0-7)"."""
    prefix = f"{name}: " if name else ""
    span = frame_span(check.count)
    lines = []
    blank = sorted(set(check.blank) | {int(t) for t in extra_blank or ()} - set(check.corrupt))
    if blank:
        lines.append(f"{prefix}blank (constant) frame(s) {frame_numbers(blank)} ({span}): {skip_action}")
    others = [f for f in check.findings if f.kind != "blank"]
    for f in others[:shown]:
        action = skip_action if f.kind == "corrupt" else f.action
        lines.append(f"{prefix}frame {f.frame} ({span}): {f.detail}; {action}")
    if len(others) > shown:
        rest = others[shown:]
        pixels = sum(f.pixels for f in rest if f.kind == "outliers")
        corrupt = sum(f.kind == "corrupt" for f in rest)
        lines.append(f"{prefix}... and {len(rest)} more finding(s): {corrupt} corrupt frame(s), {pixels} outlier "
                     f"pixel(s) in {len(rest) - corrupt} frame(s), in frames {frame_numbers([f.frame for f in rest])}")
    return lines
