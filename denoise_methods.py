"""Classic denoisers for movies of consecutive scans, and the choice between them (and the model) by Stein's unbiased
risk estimate (SURE), computed on the movie itself at the rate the output is made at.

**Units.** Every function works on one grey movie ``frames`` (T, H, W), float, in the movie's normalised units: the
caller row-levels the frames and maps their 0.5 and 99.5 percentiles to 0 and 1 with an affine map *without*
clipping (clipping would make the noise depend on the signal). Scores in dB are ``10 log10(1 / risk)``: a PSNR
against the unknown clean frame with peak 1, i.e. relative to the movie's normalised range.

**Use.** ``covs, levels, candidates = movie_candidates(frames)``; append the model as ``Candidate("model",
NONLINEAR, fn)`` with ``fn(frames, t)`` its estimate of frame t; ``best, scores = choose(frames, candidates, covs,
levels)``; ``apply(frames, find_candidate(candidates, best))``. ``auto-local`` is built for that one movie.

**Candidates** (``classic_candidates``): ``raw`` and the temporal means ``mean3`` ... ``mean21`` (windows centred on
t, *truncated* at the movie ends: fewer frames there, no reflection), means followed by a Gaussian blur
(``mean5+blur1.0``: sigma in px, ``skimage.filters.gaussian``, mirror borders), total variation (``mean3+tv``:
``skimage.restoration.denoise_tv_chambolle`` on the mean, weight proportional to the noise sigma of the mean, a fixed
number of iterations so that the output is a smooth function of the input), non-local means (``mean3+nlm``:
``skimage.restoration.denoise_nl_means`` on the mean, ``h`` and ``sigma`` from the noise estimate) and
``auto-local`` (``local_blend``: a per-pixel choice between temporal means, short windows where something moves,
long ones on the still background).

**SURE for temporal filters.** With noise independent from frame to frame (any spatial correlation), the expected
squared error of a candidate c at frame t against the clean frame is, per pixel, ``mean((c(y)_t - y_t)^2) -
sigma_t^2 + 2 tr(J_t Cov_t) / N`` (``sure_risk``), where J_t is c's Jacobian with respect to frame t only (the other
frames' noise is independent of frame t's) and Cov_t frame t's noise covariance. For a ``LINEAR`` (linear,
shift-invariant) candidate the last term is exact and cheap: ``2 sum_s h_t(s) C_t(s)`` with h_t the response to an
impulse in frame t (``linear_divergence``; ``2 g(s) / n`` for a mean of n with blur g). ``auto-local`` is linear in
frame t too (its per-pixel weights are computed without frame t): exact as well. These scores hold for any noise
distribution. For a ``NONLINEAR`` candidate the term is a Monte-Carlo divergence (``mc_divergence``: frame t alone
is moved by a small multiple of synthetic noise of covariance Cov_t), which is unbiased for Gaussian noise only.

**Noise covariance** (``frame_covariances``): C_t(s) = E[n_t(p) n_t(p + s)] for lags |s| <= radius, from frame t
and its neighbours. With the frame differences ``d_i = y_i - y_(i-1)``, ``C_t = (X(d_(t-1), d_(t+1)) + X(d_t,
d_(t+2))) / 2 - X(d_t, d_(t+1))``, X the lag products ``mean(a(p) b(p + s))``: consecutive differences share frame
t's noise with opposite signs, differences two apart share none, and a scene that drifts steadily or changes like a
random walk adds the same to both, so it cancels. Means within a frame, not medians (a robust estimate
underestimates heavy-tailed SPM noise badly); only the places whose local estimate is far below the rest (a feature
moving steadily) are left out (``still_mask``). A frame's covariance is the mean over the frames around it (the
noise level drifts during a movie); frames far noisier or quieter than those (scan noise bursts, broken frames) keep
their own level. ``noise_levels`` maps how the noise varies within a frame (``auto-local`` and the Monte-Carlo
divergence use it).

**Movie score** (``choose``): each scored frame's risk is divided by its noise variance (a noisy frame counts as much
as any other, as in the held-out score, which averages dB per frame), averaged, and given in dB at the movie's
median noise variance.

**What the score can tell, and what it cannot.** It estimates each candidate's error against the clean movie at the
movie's own frame rate, from the movie alone, without a held-out split (a half-rate split doubles the motion per
frame and picks windows twice too long for the full movie). It cannot tell noise from a scene that changes
independently from one frame to the next: what does not repeat between frames counts as noise, for the score as for
any temporal method. It assumes noise independent between frames (noise correlated over several frames makes long
means look better than they are) and a scene change that grows about linearly or quadratically with the time between
frames (a feature that jumps by more than its size between frames leaves the noise estimate a little low and favours
short windows). The nonlinear candidates' scores (TV, non-local means, a model) are approximate for heavy-tailed
noise. The held-out score (even frames in, the mean of the odd neighbours as reference) is not the same measure: its
reference is itself a temporal mean, so where the scene changes between frames it rates temporal means higher than
their true error does, and it can prefer a longer window than the best one. A score is an estimate: on a short or
small movie its error is a few percent of the noise variance, a large share of a strong smoother's risk.
"""

from typing import Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np
from skimage.filters import gaussian
from skimage.restoration import denoise_nl_means, denoise_tv_chambolle

from errors import UserError

LINEAR = "linear"  # linear and shift-invariant: exact divergence from the impulse response
NONLINEAR = "nonlinear"  # Monte-Carlo divergence
AUTO_LOCAL = "auto-local"

MEAN_WINDOWS = (1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21)  # plain temporal means (1 = the raw frame)
BLUR_WINDOWS = (1, 3, 5, 7, 9, 11, 15, 21)  # means that are also offered with a Gaussian blur
BLUR_SIGMAS = (0.5, 1.0, 1.5, 2.0)  # px
TV_WINDOWS = (3, 5)
TV_WEIGHT = 1.0  # times the noise sigma of the mean
TV_ITERATIONS = 50
NLM_WINDOW = 3
NLM_H = 0.8  # times the noise sigma of the mean (scikit-image's advice with sigma given)
NLM_PATCH, NLM_DISTANCE = 5, 6  # px
LOCAL_SPACE_SIGMA = 1.5  # px, smoothing of the per-pixel bias
LOCAL_BIAS_WEIGHT = 2.0  # how much more a local bias counts than noise in the per-pixel risk
LOCAL_TEMPERATURE = 0.1  # times the noise variance: softness of the per-pixel choice
NOISE_RADIUS = 8  # px: covers the widest blur (sigma 2) to 4 sigma
STILL_SMOOTH = 3.0  # px, blur of the local noise estimates of still_mask
STILL_MADS = 3.0  # still_mask: places whose noise estimate is this many MADs below the median are left out
COVARIANCE_FLOOR = 0.25  # a frame's noise variance is at least this fraction of the movie's median
BURST_MADS = 3.0  # frames whose noise variance is this many MADs off the median ...
BURST_RATIO = 1.5  # ... and more than this factor off it get their own
LEVEL_WINDOW = 12  # frames either side whose noise estimates make a frame's
LEVEL_RANGE = (0.25, 4.0)  # local noise variance, relative to the frame's, is kept within this
IMPULSE_MARGIN = 16  # px: a linear candidate's spatial kernel must reach less far than this
MC_EPS = 0.01  # Monte-Carlo step, times the noise sigma
SCORED_FRAMES = 24
MAX_DB = 100.0

FrameFn = Callable[[np.ndarray, int], np.ndarray]
DivergenceFn = Callable[[np.ndarray, int, np.ndarray], float]


class Candidate(NamedTuple):
    """One denoiser: ``fn(frames, t)`` is its (H, W) estimate of frame t of the (T, H, W) movie ``frames``.

    ``kind``: ``LINEAR`` (linear and shift-invariant: exact divergence) or ``NONLINEAR`` (Monte-Carlo divergence).
    ``divergence(frames, t, cov)``, when given, computes ``tr(J_t Cov) / N`` itself (``auto-local``)."""

    name: str
    kind: str
    fn: FrameFn
    divergence: Optional[DivergenceFn] = None


class LocalBase(NamedTuple):
    """A temporal mean of ``window`` frames then a Gaussian blur of ``sigma`` px, as blended by ``local_blend``."""

    window: int
    sigma: float


# auto-local: short windows with at most a light blur (a moving molecule keeps its height), long ones blurred more
LOCAL_BASES = tuple(LocalBase(n, s) for n in (1, 3, 5) for s in (0.0, 0.5)) + tuple(
    LocalBase(n, s) for n in (9, 15, 21) for s in (0.0, 1.0, 2.0))


# ----------------------------------------------------------------------------------------------------------------
# Classic candidates


def window_mean(frames: np.ndarray, t: int, n: int) -> np.ndarray:
    """The mean of the ``n`` frames centred on t, truncated at the movie ends (fewer frames there); float64."""
    half = n // 2
    return np.mean(frames[max(0, t - half):min(len(frames), t + half + 1)], axis=0, dtype=np.float64)


def window_count(n_frames: int, t: int, n: int) -> int:
    """How many frames ``window_mean`` averages at frame t of a movie of ``n_frames``."""
    return min(n_frames, t + n // 2 + 1) - max(0, t - n // 2)


def blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of an (H, W) image (``skimage.filters.gaussian``, mirror borders, 4 sigma)."""
    return gaussian(image, sigma=sigma, mode="mirror", preserve_range=True)


def mean_name(n: int, sigma: float = 0.0) -> str:
    """``raw``, ``mean5``, ``mean5+blur1.0``, ``raw+blur0.5``."""
    base = "raw" if n == 1 else f"mean{n}"
    return f"{base}+blur{sigma:.1f}" if sigma else base


def mean_candidate(n: int, sigma: float = 0.0) -> Candidate:
    """The temporal mean of ``n`` frames (``window_mean``), then a Gaussian blur of ``sigma`` px if ``sigma``."""

    def fn(frames: np.ndarray, t: int) -> np.ndarray:
        out = window_mean(frames, t, n)
        return blur(out, sigma) if sigma else out

    return Candidate(mean_name(n, sigma), LINEAR, fn)


def tv_candidate(n: int, weight: float) -> Candidate:
    """Chambolle's total-variation denoising of the mean of ``n`` frames with ``weight`` (normalised units); a fixed
    ``TV_ITERATIONS`` iterations (no early stop, so that the output is smooth in the input)."""

    def fn(frames: np.ndarray, t: int) -> np.ndarray:
        return denoise_tv_chambolle(window_mean(frames, t, n), weight=weight, eps=0.0, max_num_iter=TV_ITERATIONS)

    return Candidate(f"mean{n}+tv", NONLINEAR, fn)


def nlm_candidate(n: int, sigma: float) -> Candidate:
    """Non-local means (fast mode) of the mean of ``n`` frames whose noise sigma is ``sigma``."""

    def fn(frames: np.ndarray, t: int) -> np.ndarray:
        return denoise_nl_means(window_mean(frames, t, n), patch_size=NLM_PATCH, patch_distance=NLM_DISTANCE,
                                h=NLM_H * sigma, sigma=sigma, fast_mode=True, preserve_range=True)

    return Candidate(f"mean{n}+nlm", NONLINEAR, fn)


def noise_sigma(cov: np.ndarray) -> float:
    """The noise standard deviation of one frame: the square root of the covariance's centre."""
    r = cov.shape[-1] // 2
    return float(np.sqrt(max(cov[r, r], 0.0)))


def classic_candidates(cov: np.ndarray, max_window: int = 21, local: bool = True,
                       levels: Optional[np.ndarray] = None) -> List[Candidate]:
    """Every classic candidate (module docstring) with windows up to ``max_window`` frames; the TV weight, the
    non-local-means parameters and ``auto-local`` (if ``local``) use the movie's noise covariance ``cov``
    (``noise_covariance``), ``auto-local`` also its local noise ``levels`` (``noise_levels``; uniform if None),
    so that it works on that movie only."""
    sigma = noise_sigma(cov)
    found = [mean_candidate(n) for n in MEAN_WINDOWS if n <= max_window]
    found += [mean_candidate(n, s) for n in BLUR_WINDOWS if n <= max_window for s in BLUR_SIGMAS]
    found += [tv_candidate(n, TV_WEIGHT * sigma / np.sqrt(n)) for n in TV_WINDOWS if n <= max_window]
    if NLM_WINDOW <= max_window:
        found.append(nlm_candidate(NLM_WINDOW, sigma / np.sqrt(NLM_WINDOW)))
    if local:
        found.append(local_candidate(cov, levels, [base for base in LOCAL_BASES if base.window <= max_window]))
    return found


def find_candidate(candidates: Sequence[Candidate], name: str) -> Candidate:
    """The candidate called ``name`` (``--method``); a ``UserError`` listing the names if there is none."""
    for candidate in candidates:
        if candidate.name == name:
            return candidate
    raise UserError(f"unknown denoising method {name!r}: use auto or one of {', '.join(c.name for c in candidates)}")


def apply(frames: np.ndarray, candidate: Candidate) -> np.ndarray:
    """The candidate's estimate of every frame, (T, H, W) float64."""
    frames = np.asarray(frames, np.float64)
    return np.stack([np.asarray(candidate.fn(frames, t), np.float64) for t in range(len(frames))])


# ----------------------------------------------------------------------------------------------------------------
# Noise covariance


def still_mask(frames: Sequence[np.ndarray]) -> np.ndarray:
    """(H, W) float 0/1 for the middle one of 5 consecutive ``frames``: 0 where its local noise estimate (the pixel
    products of ``own_covariance`` blurred by ``STILL_SMOOTH`` px) is more than ``STILL_MADS`` median absolute
    deviations below the median. A feature moving steadily makes consecutive differences alike and the estimate
    low there; high estimates are kept: heavy-tailed noise (scars), and a scene that fluctuates independently from
    frame to frame, are noise to a temporal filter."""
    d = [np.asarray(frames[k + 1], np.float64) - np.asarray(frames[k], np.float64) for k in range(4)]
    own = blur((d[0] * d[2] + d[1] * d[3]) / 2.0 - d[1] * d[2], STILL_SMOOTH)
    centre = np.median(own)
    return (own >= centre - STILL_MADS * 1.4826 * np.median(np.abs(own - centre))).astype(np.float64)


def lag_products(terms: Sequence[Tuple[float, np.ndarray, np.ndarray]], mask: np.ndarray,
                 radius: int) -> np.ndarray:
    """(2 radius + 1)^2: ``sum_k w_k mean(a_k(p) b_k(p + s) + b_k(p) a_k(p + s)) / 2`` over the ``terms`` (w_k, a_k,
    b_k), means over the pixel pairs with both pixels in ``mask``, lags |s| <= radius along each axis (centre = lag
    0). Computed with FFTs."""
    h, w = mask.shape
    size = (h + radius, w + radius)  # zero padding: no wrap-around up to |lag| = radius
    lags = np.arange(-radius, radius + 1)
    pick = np.ix_(lags % size[0], lags % size[1])
    m = np.fft.fft2(mask, s=size)
    pairs = np.maximum(np.round(np.fft.ifft2((m * m.conj()).real).real[pick]), 1.0)
    total = np.zeros((2 * radius + 1, 2 * radius + 1))
    for weight, a, b in terms:
        total += weight * np.fft.ifft2(np.fft.fft2(a * mask, s=size).conj() * np.fft.fft2(b * mask, s=size)).real[pick]
    return (total + total[::-1, ::-1]) / 2.0 / pairs


def own_terms(frames: np.ndarray, t: int) -> Tuple[List[Tuple[float, np.ndarray, np.ndarray]], np.ndarray]:
    """The difference products whose lag products give frame t's noise covariance (module docstring), and their
    mask: from frames t - 2 .. t + 2 on their ``still_mask``, or from frames t - 1 .. t + 1 alone (``-d_t
    d_(t+1)``: no steady drift allowed, no mask) where the movie is shorter."""
    if t < 1 or t > len(frames) - 2:
        raise ValueError(f"frame {t} of {len(frames)} has no neighbour on one side")
    if t < 2 or t > len(frames) - 3:
        y = [np.asarray(frames[t + k], np.float64) for k in (-1, 0, 1)]
        return [(-1.0, y[1] - y[0], y[2] - y[1])], np.ones(y[0].shape)
    y = [np.asarray(frames[t + k], np.float64) for k in range(-2, 3)]
    d = [y[k + 1] - y[k] for k in range(4)]  # d_(t-1), d_t, d_(t+1), d_(t+2)
    return [(0.5, d[0], d[2]), (0.5, d[1], d[3]), (-1.0, d[1], d[2])], still_mask(y)


def own_covariance(frames: np.ndarray, t: int, radius: int) -> np.ndarray:
    """Frame t's noise covariance from it and its neighbours alone (``own_terms``, ``lag_products``)."""
    terms, mask = own_terms(frames, t)
    return lag_products(terms, mask, radius)


def estimated_frames(n_frames: int) -> Tuple[int, int]:
    """The first and last frame with an own noise estimate; the frames before and after take theirs."""
    return (2, n_frames - 3) if n_frames >= 5 else (1, n_frames - 2)


def bursts(variances: np.ndarray) -> np.ndarray:
    """Bool per frame: a noise variance more than ``BURST_MADS`` median absolute deviations and a factor
    ``BURST_RATIO`` away from the median of ``variances``."""
    centre = np.median(variances)
    ratio = np.maximum(variances, 1e-30) / max(centre, 1e-30)
    far = np.abs(variances - centre) > BURST_MADS * 1.4826 * np.median(np.abs(variances - centre))
    return far & ((ratio > BURST_RATIO) | (ratio < 1.0 / BURST_RATIO))


def frame_covariances(frames: np.ndarray, radius: int = NOISE_RADIUS) -> np.ndarray:
    """(T, 2 radius + 1, 2 radius + 1): each frame's noise covariance. A frame's own estimate (``own_covariance``;
    frames without two neighbours either side take the nearest one's) is noisy, so each frame gets the mean of the
    own estimates of the frames within ``LEVEL_WINDOW`` of it (the noise level drifts during a movie), leaving out
    the ``bursts`` among them (scan noise bursts, broken frames; a burst also makes its neighbours' estimates
    noisier, which the ratio keeps out). A burst frame gets that mean scaled to its own variance (at least
    ``COVARIANCE_FLOOR`` times the mean). A movie of 2 frames splits its one difference equally. The radius is cut
    to fit frames smaller than 2 radius + 1 px."""
    frames = np.asarray(frames)
    if frames.ndim != 3 or len(frames) < 2:
        raise UserError(f"the noise estimate needs a grey movie of at least 2 frames (T, H, W), got {frames.shape}")
    radius = max(0, min(radius, (min(frames.shape[1:]) - 1) // 2))
    if len(frames) == 2:
        d = np.asarray(frames[1], np.float64) - np.asarray(frames[0], np.float64)
        return np.repeat(lag_products([(0.5, d, d)], np.ones(d.shape), radius)[None], 2, axis=0)
    first, last = estimated_frames(len(frames))
    computed = {t: own_covariance(frames, t, radius) for t in range(first, last + 1)}
    own = np.array([computed[min(max(t, first), last)] for t in range(len(frames))])
    covs = np.empty_like(own)
    for t in range(len(frames)):
        start = max(0, t - LEVEL_WINDOW)
        near = own[start:t + LEVEL_WINDOW + 1]
        burst = bursts(near[:, radius, radius])
        typical = near[~burst].mean(axis=0)
        level = max(typical[radius, radius], 1e-30)
        scale = max(own[t, radius, radius], COVARIANCE_FLOOR * level) / level if burst[t - start] else 1.0
        covs[t] = typical * scale
    return covs


def noise_covariance(frames: np.ndarray, radius: int = NOISE_RADIUS) -> np.ndarray:
    """The movie's typical noise covariance: the median over frames of ``frame_covariances``."""
    return np.median(frame_covariances(frames, radius), axis=0)


def noise_levels(frames: np.ndarray, covs: np.ndarray) -> np.ndarray:
    """(T, H, W) float32: each frame's local noise variance relative to its mean (``covs``), mean 1 per frame. The
    per-pixel products of ``own_terms`` blurred by ``STILL_SMOOTH`` px, over each frame's variance (1 where
    ``still_mask`` leaves a moving feature out: motion makes them low), averaged over the frames within
    ``LEVEL_WINDOW`` but not within 2 frames (so that frame t's map does not depend on frame t), and clipped to
    ``LEVEL_RANGE``. SPM noise is not uniform: it is higher on steep features, and a molecule that
    fluctuates from frame to frame is noise to a temporal filter."""
    frames = np.asarray(frames)
    n_frames, r = len(frames), covs.shape[-1] // 2
    if n_frames < 3:
        return np.ones(frames.shape, np.float32)
    first, last = estimated_frames(n_frames)
    relative = np.zeros(frames.shape, np.float32)
    for u in range(first, last + 1):
        terms, mask = own_terms(frames, u)
        products = blur(sum(weight * a * b for weight, a, b in terms), STILL_SMOOTH) / max(covs[u, r, r], 1e-30)
        relative[u] = np.where(mask > 0, products, 1.0)
    levels = np.empty(frames.shape, np.float32)
    for t in range(n_frames):
        used = [u for u in range(max(first, t - LEVEL_WINDOW), min(last, t + LEVEL_WINDOW) + 1) if abs(u - t) > 2]
        used = used or [u for u in range(first, last + 1) if abs(u - t) > 2] or list(range(first, last + 1))
        level = np.clip(np.mean(relative[used], axis=0), *LEVEL_RANGE)
        levels[t] = level / level.mean()
    return levels


def noise_sample(cov: np.ndarray, shape: Tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """Gaussian noise of covariance ``cov`` on an (H, W) grid, shaped through its power spectrum (circular; negative
    parts of the spectrum set to 0)."""
    h, w = shape
    c = cov.shape[0] // 2
    r = min(c, (min(h, w) - 1) // 2)
    kernel_ = np.zeros((h, w))
    lags = np.arange(-r, r + 1)
    kernel_[np.ix_(lags % h, lags % w)] = cov[c - r:c + r + 1, c - r:c + r + 1]
    power = np.clip(np.fft.fft2(kernel_).real, 0.0, None)
    return np.fft.ifft2(np.sqrt(power) * np.fft.fft2(rng.standard_normal((h, w)))).real


# ----------------------------------------------------------------------------------------------------------------
# SURE


def linear_divergence(candidate: Candidate, n_frames: int, t: int, cov: np.ndarray) -> float:
    """``tr(J_t Cov) / N`` of a linear, shift-invariant candidate at frame t of a movie of ``n_frames``:
    ``sum_s h_t(s) C(s)`` with h_t its response to an impulse in frame t (borders ignored)."""
    r = cov.shape[0] // 2
    size = 2 * (r + IMPULSE_MARGIN) + 1
    centre = size // 2
    probe = np.zeros((n_frames, size, size))
    probe[t, centre, centre] = 1.0
    response = candidate.fn(probe, t)[centre - r:centre + r + 1, centre - r:centre + r + 1]
    return float(np.sum(response * cov))


def mc_divergence(frames: np.ndarray, candidate: Candidate, t: int, cov: np.ndarray, out: np.ndarray,
                  rng: np.random.Generator, level: Optional[np.ndarray] = None, probes: int = 1) -> float:
    """Monte-Carlo ``tr(J_t Cov) / N``: the mean over ``probes`` of ``b . (c(y + eps b)_t - c(y)_t) / (eps N)``
    with b noise of covariance ``cov`` (times the square root of the local ``level`` map, if given) added to frame t
    only (``out`` = c(y)_t). ``frames`` (float64, writable) is changed during the call and restored exactly."""
    eps = MC_EPS * max(noise_sigma(cov), 1e-12)
    original = frames[t].copy()
    scale = 1.0 if level is None else np.sqrt(level)
    total = 0.0
    try:
        for _ in range(probes):
            b = noise_sample(cov, original.shape, rng) * scale
            frames[t] = original + eps * b
            total += float(np.mean(b * (np.asarray(candidate.fn(frames, t), np.float64) - out))) / eps
    finally:
        frames[t] = original
    return total / probes


def sure_risk(frames: np.ndarray, candidate: Candidate, t: int, cov: np.ndarray,
              rng: Optional[np.random.Generator] = None, level: Optional[np.ndarray] = None) -> float:
    """SURE of the candidate at frame t, whose noise covariance is ``cov`` (and local level map ``level``, used by
    the Monte-Carlo divergence): its expected mean squared error against the clean frame t (module docstring).
    ``frames``: (T, H, W) float64 (changed and restored for a nonlinear candidate)."""
    out = np.asarray(candidate.fn(frames, t), np.float64)
    r = cov.shape[0] // 2
    if candidate.divergence is not None:
        divergence = candidate.divergence(frames, t, cov)
    elif candidate.kind == LINEAR:
        divergence = linear_divergence(candidate, len(frames), t, cov)
    else:
        divergence = mc_divergence(frames, candidate, t, cov, out, rng or np.random.default_rng(0), level)
    return float(np.mean((out - frames[t]) ** 2)) - float(cov[r, r]) + 2.0 * divergence


def risk_db(risk: float) -> float:
    """``10 log10(1 / risk)``: a PSNR with peak 1 against the clean movie (``MAX_DB`` for a risk of 0 or less)."""
    return MAX_DB if risk <= 10.0 ** (-MAX_DB / 10.0) else float(10.0 * np.log10(1.0 / risk))


def score_frames(n_frames: int, count: int = SCORED_FRAMES) -> List[int]:
    """``count`` frame indices spread evenly over the movie, both ends included (all frames if fewer)."""
    return sorted({int(round(x)) for x in np.linspace(0, n_frames - 1, min(count, n_frames))})


def sure_table(frames: np.ndarray, candidates: Sequence[Candidate], covs: np.ndarray, frames_to_score: Sequence[int],
               levels: Optional[np.ndarray] = None, seed: int = 0) -> np.ndarray:
    """(candidates, frames) array of ``sure_risk`` of every candidate at every frame of ``frames_to_score``;
    ``covs``: (T, K, K) per-frame covariances (``frame_covariances``), ``levels``: (T, H, W) local noise levels
    (``noise_levels``) or None (uniform)."""
    frames = np.array(frames, np.float64)
    rng = np.random.default_rng(seed)
    return np.array([[sure_risk(frames, candidate, t, covs[t], rng, None if levels is None else levels[t])
                      for t in frames_to_score] for candidate in candidates])


def movie_scores(risks: np.ndarray, variances: np.ndarray) -> np.ndarray:
    """One dB score per candidate from a (candidates, frames) risk table: each frame's risk over its noise variance,
    averaged, at the median variance (``risk_db``)."""
    relative = np.mean(risks / variances[None, :], axis=1) * float(np.median(variances))
    return np.array([risk_db(float(r)) for r in relative])


def choose(frames: np.ndarray, candidates: Sequence[Candidate], covs: Optional[np.ndarray] = None,
           levels: Optional[np.ndarray] = None, frames_to_score: Optional[Sequence[int]] = None,
           seed: int = 0) -> Tuple[str, Dict[str, float]]:
    """The candidate with the best SURE score (``movie_scores``) over ``frames_to_score`` (default
    ``score_frames``), and every candidate's score in dB, in the candidates' order. ``covs`` and ``levels``: the
    movie's (``movie_candidates``), estimated here if None. Ties go to the earlier candidate."""
    covs = frame_covariances(frames) if covs is None else covs
    levels = noise_levels(frames, covs) if levels is None else levels
    chosen = score_frames(len(frames)) if frames_to_score is None else list(frames_to_score)
    r = covs.shape[-1] // 2
    risks = sure_table(frames, candidates, covs, chosen, levels, seed)
    scores = dict(zip((c.name for c in candidates), movie_scores(risks, covs[chosen, r, r]).tolist()))
    best = max(scores, key=lambda name: scores[name])
    return best, scores


def movie_candidates(frames: np.ndarray, max_window: int = 21) -> Tuple[np.ndarray, np.ndarray, List[Candidate]]:
    """Everything ``choose`` needs for one movie: its per-frame noise covariances, its local noise levels and its
    ``classic_candidates``. Add the model as ``Candidate("model", NONLINEAR, fn)`` to the list to score it too."""
    covs = frame_covariances(frames)
    levels = noise_levels(frames, covs)
    return covs, levels, classic_candidates(np.median(covs, axis=0), max_window, levels=levels)


# ----------------------------------------------------------------------------------------------------------------
# Per-pixel choice


def kernel(sigmas: Sequence[float], radius: int) -> np.ndarray:
    """The (2 radius + 1)^2 impulse response of Gaussian blurs of ``sigmas`` px applied in turn (``blur``; a 0 sigma
    is skipped)."""
    out = np.zeros((2 * radius + 1, 2 * radius + 1))
    out[radius, radius] = 1.0
    for sigma in sigmas:
        out = blur(out, sigma) if sigma else out
    return out


def noise_power(kernel_: np.ndarray, cov: np.ndarray) -> float:
    """``sum_(s, s') k(s) k(s') C(s - s')``: the variance of noise of covariance ``cov`` filtered by the kernel (C
    taken as 0 beyond its radius)."""
    r = cov.shape[0] // 2
    k = kernel_.shape[0] // 2
    size = 2 * kernel_.shape[0]
    spectrum = np.fft.fft2(kernel_, s=(size, size))
    auto = np.fft.ifft2((spectrum * spectrum.conj()).real).real  # autocorrelation, lag d at index d % size
    lags = np.arange(-min(r, 2 * k), min(r, 2 * k) + 1)
    return float(np.sum(auto[np.ix_(lags % size, lags % size)] * cov[np.ix_(lags + r, lags + r)]))


def local_variances(base: LocalBase, count: int, cov: np.ndarray) -> Tuple[float, float]:
    """For a base whose window holds ``count`` frames: the variance of its output's noise, and that of its residual's
    noise blurred by ``LOCAL_SPACE_SIGMA`` (``blur(c_t - y_t)``), both from the noise covariance."""
    radius = int(4 * (base.sigma + LOCAL_SPACE_SIGMA)) + 2
    g = kernel([base.sigma], radius)
    sg = kernel([base.sigma, LOCAL_SPACE_SIGMA], radius)
    s = kernel([LOCAL_SPACE_SIGMA], radius)
    variance = noise_power(g, cov) / count
    residual = (count - 1) * noise_power(sg, cov) / count ** 2 + noise_power(sg / count - s, cov)
    return variance, residual


VarianceTable = Dict[Tuple[LocalBase, int], Tuple[float, float]]


def cached_variances(table: VarianceTable, base: LocalBase, count: int, cov: np.ndarray) -> Tuple[float, float]:
    """``local_variances``, kept in ``table`` by (base, frame count)."""
    if (base, count) not in table:
        table[(base, count)] = local_variances(base, count, cov)
    return table[(base, count)]


def base_outputs(frames: np.ndarray, t: int, bases: Sequence[LocalBase]) -> List[np.ndarray]:
    """Each base's output at frame t (one temporal mean per window length)."""
    means: Dict[int, np.ndarray] = {}
    outs = []
    for base in bases:
        if base.window not in means:
            means[base.window] = window_mean(frames, t, base.window)
        outs.append(blur(means[base.window], base.sigma) if base.sigma else means[base.window])
    return outs


def local_bias(frames: np.ndarray, u: int, cov: np.ndarray, level: np.ndarray, bases: Sequence[LocalBase],
               table: VarianceTable) -> np.ndarray:
    """(bases, H, W): each base's squared local bias at frame u: its residual ``c_u - y_u`` blurred by
    ``LOCAL_SPACE_SIGMA`` px, squared, less the part the noise explains (times the local noise ``level``)."""
    bias = []
    for base, out in zip(bases, base_outputs(frames, u, bases)):
        residual = cached_variances(table, base, window_count(len(frames), u, base.window), cov)[1]
        bias.append(blur(out - frames[u], LOCAL_SPACE_SIGMA) ** 2 - residual * level)
    return np.stack(bias)


def local_weights(frames: np.ndarray, t: int, cov: np.ndarray, level: np.ndarray, bases: Sequence[LocalBase],
                  table: VarianceTable) -> np.ndarray:
    """(bases, H, W) per-pixel weights of the bases at frame t (of a movie of at least 2 frames), computed without
    frame t, so that the blend is linear in it. A base's local risk is ``LOCAL_BIAS_WEIGHT`` times its squared local
    bias averaged over frames t - 1 and t + 1 (``local_bias``, frame t replaced by the mean of those two) plus its
    noise variance (times the local noise ``level``, a map that does not depend on frame t); the bias counts more
    because the blurred residual underestimates a bias that changes within the blur (a moving edge). The weights
    are a softmax of minus the risk over ``LOCAL_TEMPERATURE`` times the noise variance."""
    reach = max(base.window for base in bases) // 2 + 1
    start = max(0, t - reach)
    movie = np.array(frames[start:t + reach + 1], np.float64)
    near = [u for u in (t - 1 - start, t + 1 - start) if 0 <= u < len(movie)]
    movie[t - start] = np.mean(movie[near], axis=0)
    bias = np.mean([local_bias(movie, u, cov, level, bases, table) for u in near], axis=0)
    variances = [cached_variances(table, base, window_count(len(frames), t, base.window), cov)[0] for base in bases]
    risks = LOCAL_BIAS_WEIGHT * bias + np.asarray(variances)[:, None, None] * level
    weights = np.exp(-(risks - risks.min(axis=0)) / (LOCAL_TEMPERATURE * max(noise_sigma(cov) ** 2, 1e-20)))
    return weights / np.sum(weights, axis=0)


def local_blend(frames: np.ndarray, t: int, cov: np.ndarray, level: Optional[np.ndarray] = None,
                bases: Sequence[LocalBase] = LOCAL_BASES, table: Optional[VarianceTable] = None) -> np.ndarray:
    """Frame t as a per-pixel blend of temporal means with blur (``bases``) with the ``local_weights`` from the
    movie's noise covariance ``cov`` and frame t's local noise ``level`` (``noise_levels``; uniform if None): a
    moving molecule gets a short window, the still background a long one. ``table``: a cache kept between calls
    (``local_candidate``). A 1-frame movie is returned as is."""
    if len(frames) < 2:
        return np.array(frames[t], np.float64)
    level = np.ones(frames.shape[1:]) if level is None else level
    weights = local_weights(frames, t, cov, level, bases, {} if table is None else table)
    return np.sum(weights * np.stack(base_outputs(frames, t, bases)), axis=0)


def local_divergence(frames: np.ndarray, t: int, cov: np.ndarray, level: np.ndarray, frame_cov: np.ndarray,
                     bases: Sequence[LocalBase], table: VarianceTable) -> float:
    """``tr(J_t Cov_t) / N`` of ``local_blend`` (exact: the weights do not depend on frame t): each base's own
    divergence ``sum_s g(s) C_t(s) / count`` under frame t's covariance ``frame_cov``, times the mean over the
    pixels of its weight times the local noise ``level``."""
    r, m = frame_cov.shape[0] // 2, IMPULSE_MARGIN
    if len(frames) < 2:
        return float(frame_cov[r, r])
    weights = (local_weights(frames, t, cov, level, bases, table) * level).mean(axis=(1, 2))
    own = [np.sum(kernel([base.sigma], r + m)[m:m + 2 * r + 1, m:m + 2 * r + 1] * frame_cov)
           / window_count(len(frames), t, base.window) for base in bases]
    return float(np.dot(weights, own))


def local_candidate(cov: np.ndarray, levels: Optional[np.ndarray] = None,
                    bases: Sequence[LocalBase] = LOCAL_BASES) -> Candidate:
    """``auto-local``: ``local_blend`` of ``bases`` with the movie's noise covariance ``cov`` and local noise
    ``levels`` (T, H, W) (uniform if None), with its exact divergence (``local_divergence``)."""
    table: VarianceTable = {}

    def level_at(frames: np.ndarray, t: int) -> np.ndarray:
        return np.ones(frames.shape[1:]) if levels is None else levels[t]

    def fn(frames: np.ndarray, t: int) -> np.ndarray:
        return local_blend(frames, t, cov, level_at(frames, t), bases, table)

    def divergence(frames: np.ndarray, t: int, frame_cov: np.ndarray) -> float:
        return local_divergence(frames, t, cov, level_at(frames, t), frame_cov, bases, table)

    return Candidate(AUTO_LOCAL, LINEAR, fn, divergence)
