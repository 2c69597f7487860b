"""Scores for ``--denoise`` (``iSeeBetterTest.py --denoise``): how much cleaner the output is, with or without a clean
reference.

All frames are (T, H, W, C) float arrays on one movie's normalised [0, 1] scale (``denoise_data.preprocess``), C = 1
or 3; ``blank`` lists the blank (constant) frames, which are never scored.

**No-reference score (``n2n_psnr``).** Real movies have no clean frame, but consecutive scans of one area carry
independent noise. The movie is subsampled to its even frames (``subsample``): a method (the model, or a baseline)
sees only frames 0, 2, 4, ... and estimates each of them. The estimate of frame 2k is compared with the mean of
frames 2k-1 and 2k+1, which no method saw: ``n2n_psnr = PSNR(estimate_2k, (F_2k-1 + F_2k+1) / 2)`` (peak 1), averaged
over every k whose three frames exist and are not blank (``held_out_indices``). The held-out noise is independent of
the estimate, so in expectation the score's MSE is the estimate's true MSE plus a constant (half the noise variance,
plus the scene's change between scans): the better a denoiser, the higher its score, and methods compare fairly. The
value is lower than a true PSNR against a clean frame would be.

Baselines (``BASELINE_TABLE``, the one list of them, also used by ``bench/bench_denoise.py``; all on the subsampled
movie): ``raw`` (the frame itself), ``mean3`` / ``mean5`` / ``mean7`` (the mean of the 3/5/7 subsampled frames centred
on it, fewer at the movie ends, blank frames left out), ``mean3_blur`` (``mean3`` then a Gaussian blur of sigma
``BLUR_SIGMA`` px) and ``tri5_blur`` (the mean of 5 weighted 1, 2, 3, 2, 1, then a Gaussian blur of sigma
``TRI5_BLUR_SIGMA`` px). The tester scores ``BASELINES``, those of the table marked ``tester``; the benchmark all.

**The fork's scores** (``ssim_to_cleanest``, ``noise_blur_scores``): SSIM against the cleanest frame (lowest
``metrics.streak_score``) of each block of 10 consecutive frames, grey, Gaussian 11x11 window, as the fork measured
it; here leak-free: the target is the cleanest odd frame of the block and the input the cleanest even frame, so no
method saw the target. Plus the fork's noise (``metrics.streak_score``, lower = fewer scan-line streaks) and blur
(``metrics.laplacian_variance``, lower = smoother) scores of the raw and the denoised frames.

**With a clean reference** (``reference_scores``): PSNR (peak 1) and SSIM of the output and of the raw input against
it, all three given on the same [0, 1] scale by the caller.
"""

from typing import Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple

import cv2
import numpy as np

import metrics


class Baseline(NamedTuple):
    """One baseline denoiser: its label in tables and whether the tester's metrics.json scores it."""

    label: str
    tester: bool


BASELINE_TABLE = {  # name -> Baseline; ``estimate`` computes each
    "raw": Baseline("the frame itself", True),
    "mean3": Baseline("temporal mean of 3", True),
    "mean5": Baseline("temporal mean of 5", True),
    "mean7": Baseline("temporal mean of 7", True),
    "mean3_blur": Baseline("mean of 3 + Gaussian blur 1 px", True),
    "tri5_blur": Baseline("triangular mean of 5 + Gaussian blur 0.5 px", False),
}
BASELINES = tuple(name for name, baseline in BASELINE_TABLE.items() if baseline.tester)  # scored by the tester
TEMPORAL_MEANS = ("mean3", "mean5", "mean7")
MODEL = "model"
BLUR_SIGMA = 1.0
TRI5_WEIGHTS = (1.0, 2.0, 3.0, 2.0, 1.0)  # frames k-2 .. k+2 of the triangular mean
TRI5_BLUR_SIGMA = 0.5  # px
BLOCK = 10  # frames per block for the fork's SSIM against the cleanest frame (its blocks of 10 scans)


# ----------------------------------------------------------------------------------------------------------------
# Measures on the [0, 1] scale


def psnr01(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB between two images on the [0, 1] scale (peak 1; capped at ``metrics.PSNR_MAX_DB``)."""
    return metrics.psnr(np.asarray(a, np.float64) * 255.0, np.asarray(b, np.float64) * 255.0)


def ssim01(a: np.ndarray, b: np.ndarray) -> float:
    """SSIM (Gaussian 11x11, sigma 1.5) between two (H, W) or (H, W, C) images on the [0, 1] scale; channels are
    averaged."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    if a.ndim == 3 and a.shape[2] == 1:
        a, b = a[..., 0], b[..., 0]
    return metrics.ssim(a * 255.0, b * 255.0)


def grey(img: np.ndarray) -> np.ndarray:
    """(H, W) grey of an (H, W), (H, W, 1) or RGB (H, W, 3) image (BT.601 weights, as ``metrics.grey_0_255``)."""
    img = np.asarray(img, np.float64)
    if img.ndim == 3 and img.shape[2] == 3:
        return img @ metrics.GREY_WEIGHTS
    return img[..., 0] if img.ndim == 3 else img


def gaussian_blur(img: np.ndarray, sigma: float = BLUR_SIGMA) -> np.ndarray:
    """Gaussian blur of an (H, W, C) image, each channel on its own (border: reflect-101)."""
    img = np.asarray(img, np.float32)
    channels = [cv2.GaussianBlur(img[..., c], (0, 0), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_REFLECT_101)
                for c in range(img.shape[2])]
    return np.stack(channels, axis=2)


# ----------------------------------------------------------------------------------------------------------------
# Held-out frames and baselines


def subsample(frames: np.ndarray, blank: Sequence[int] = ()) -> Tuple[np.ndarray, List[int]]:
    """The even frames (0, 2, 4, ...) as a movie of their own, and its blank frames (indices in the subsampled
    movie)."""
    return frames[0::2], sorted({int(t) // 2 for t in blank if int(t) % 2 == 0})


def held_out_indices(count: int, blank: Sequence[int] = ()) -> List[int]:
    """Indices k of the subsampled movie whose frame 2k and held-out frames 2k - 1 and 2k + 1 exist and are not
    blank."""
    skip = {int(t) for t in blank}
    return [k for k in range(count // 2 + 1) if 1 <= 2 * k <= count - 2 and not skip & {2 * k - 1, 2 * k, 2 * k + 1}]


def temporal_mean(sub: np.ndarray, k: int, n: int, blank: Sequence[int] = ()) -> np.ndarray:
    """The mean of the non-blank frames of ``sub`` in the window of ``n`` frames centred on ``k`` (cut at the movie
    ends); float32 (H, W, C)."""
    skip = {int(t) for t in blank}
    half = n // 2
    chosen = [j for j in range(max(0, k - half), min(len(sub), k + half + 1)) if j not in skip or j == k]
    return np.mean(np.stack([np.asarray(sub[j], np.float64) for j in chosen]), axis=0).astype(np.float32)


def tri_weighted_mean(sub: np.ndarray, k: int, blank: Sequence[int] = ()) -> np.ndarray:
    """The mean of frames k-2 .. k+2 of ``sub`` weighted ``TRI5_WEIGHTS``, cut at the movie ends and without the
    blank frames other than k itself (as ``temporal_mean``), the weights renormalised; float32 (H, W, C)."""
    skip = {int(t) for t in blank}
    half = len(TRI5_WEIGHTS) // 2
    total = np.zeros(np.shape(sub[k]), np.float64)
    weight_sum = 0.0
    for offset, weight in zip(range(-half, half + 1), TRI5_WEIGHTS):
        j = k + offset
        if 0 <= j < len(sub) and (j not in skip or j == k):
            total += weight * np.asarray(sub[j], np.float64)
            weight_sum += weight
    return (total / weight_sum).astype(np.float32)


def estimate(sub: np.ndarray, k: int, method: str, blank: Sequence[int] = (),
             model_sub: Optional[np.ndarray] = None) -> np.ndarray:
    """A method's estimate of frame ``k`` of the subsampled movie ``sub``: a baseline (``BASELINE_TABLE``) or
    ``MODEL`` (frame k of ``model_sub``, the model's output for the subsampled movie)."""
    if method == "raw":
        return np.asarray(sub[k], np.float32)
    if method in TEMPORAL_MEANS:
        return temporal_mean(sub, k, int(method[4:]), blank)
    if method == "mean3_blur":
        return gaussian_blur(temporal_mean(sub, k, 3, blank))
    if method == "tri5_blur":
        return gaussian_blur(tri_weighted_mean(sub, k, blank), sigma=TRI5_BLUR_SIGMA)
    if method == MODEL:
        if model_sub is None:
            raise ValueError("the model's estimates (model_sub) are needed for method 'model'")
        return np.asarray(model_sub[k], np.float32)
    raise ValueError(f"unknown method {method!r}; use one of {', '.join(tuple(BASELINE_TABLE) + (MODEL,))}")


def estimate_movie(sub: np.ndarray, method: str, blank: Sequence[int] = ()) -> np.ndarray:
    """A baseline's estimates of every frame of ``sub``, (T, H, W, C) float32."""
    return np.stack([estimate(sub, k, method, blank) for k in range(len(sub))])


def methods(model_sub: Optional[np.ndarray]) -> Tuple[str, ...]:
    """The methods scored: the baselines, plus ``MODEL`` when its estimates are given."""
    return BASELINES + ((MODEL,) if model_sub is not None else ())


# ----------------------------------------------------------------------------------------------------------------
# Scores


def n2n_psnr(estimate_frame: np.ndarray, before: np.ndarray, after: np.ndarray) -> float:
    """PSNR (peak 1) of an estimate of a frame against the mean of the frames just before and after it."""
    held_out = (np.asarray(before, np.float64) + np.asarray(after, np.float64)) / 2.0
    return psnr01(estimate_frame, held_out)


def no_reference_scores(frames: np.ndarray, blank: Sequence[int] = (),
                        model_sub: Optional[np.ndarray] = None) -> Dict[str, object]:
    """``{"n2n_psnr": {method: mean dB}, "frames": number of scored frames}`` (see the module docstring).

    ``model_sub``: the model's output for ``subsample(frames, blank)[0]`` (same length); without it only the
    baselines are scored. With no scorable frame (fewer than 3 frames, or blanks) the means are None.
    """
    sub, sub_blank = subsample(frames, blank)
    if model_sub is not None and len(model_sub) != len(sub):
        raise ValueError(f"model_sub has {len(model_sub)} frames but the subsampled movie has {len(sub)}")
    ks = held_out_indices(len(frames), blank)
    scores: Dict[str, List[float]] = {m: [] for m in methods(model_sub)}
    for k in ks:
        for m in scores:
            scores[m].append(n2n_psnr(estimate(sub, k, m, sub_blank, model_sub), frames[2 * k - 1], frames[2 * k + 1]))
    return {"n2n_psnr": {m: (float(np.mean(v)) if v else None) for m, v in scores.items()}, "frames": len(ks)}


def cleanest_pairs(frames: np.ndarray, blank: Sequence[int] = (), block: int = BLOCK) -> List[Tuple[int, int]]:
    """``(input, target)`` per block of ``block`` consecutive frames: the target is the block's odd frame with the
    lowest ``metrics.streak_score`` (the cleanest), the input its even frame with the lowest; blocks without a
    non-blank odd and even frame are left out."""
    skip = {int(t) for t in blank}
    pairs = []
    for start in range(0, len(frames), block):
        usable = [t for t in range(start, min(start + block, len(frames))) if t not in skip]
        scores = {t: metrics.streak_score(frames[t], (0.0, 1.0)) for t in usable}
        odd = sorted((scores[t], t) for t in usable if t % 2)
        even = sorted((scores[t], t) for t in usable if t % 2 == 0)
        if odd and even:
            pairs.append((even[0][1], odd[0][1]))
    return pairs


def ssim_to_cleanest(frames: np.ndarray, blank: Sequence[int] = (),
                     model_sub: Optional[np.ndarray] = None) -> Dict[str, object]:
    """The fork's SSIM against the cleanest frame, leak-free (``cleanest_pairs``): ``{"ssim": {method: mean},
    "blocks": n}``; grey images, Gaussian 11x11 window. Frames must be at least 11x11 px."""
    sub, sub_blank = subsample(frames, blank)
    pairs = cleanest_pairs(frames, blank)
    scores: Dict[str, List[float]] = {m: [] for m in methods(model_sub)}
    for inp, target in pairs:
        for m in scores:
            scores[m].append(ssim01(grey(estimate(sub, inp // 2, m, sub_blank, model_sub)), grey(frames[target])))
    return {"ssim": {m: (float(np.mean(v)) if v else None) for m, v in scores.items()}, "blocks": len(pairs)}


def noise_blur_scores(raw: np.ndarray, output: np.ndarray, blank: Sequence[int] = ()) -> Dict[str, Dict[str, float]]:
    """Means over the non-blank frames of the fork's noise score (``metrics.streak_score``) and blur score
    (``metrics.laplacian_variance``) of the raw and the denoised frames, both on the [0, 1] scale."""
    skip = {int(t) for t in blank}
    keep = [t for t in range(len(raw)) if t not in skip]
    result: Dict[str, Dict[str, float]] = {}
    score_fns: Dict[str, Callable] = {"streak_score": metrics.streak_score,
                                      "laplacian_variance": metrics.laplacian_variance}
    for name, fn in score_fns.items():
        result[name] = {"raw": float(np.mean([fn(raw[t], (0.0, 1.0)) for t in keep])),
                        MODEL: float(np.mean([fn(output[t], (0.0, 1.0)) for t in keep]))}
    return result


def reference_scores(output: np.ndarray, raw: np.ndarray, reference: np.ndarray,
                     blank: Sequence[int] = ()) -> Dict[str, object]:
    """PSNR (peak 1) and SSIM of the output and of the raw input against a clean reference, means over the
    non-blank frames: ``{"psnr": {"raw", "model"}, "ssim": {"raw", "model"}, "frames": n}``. All three on one
    [0, 1] scale."""
    if not output.shape == raw.shape == reference.shape:
        raise ValueError(f"output {output.shape}, raw {raw.shape} and reference {reference.shape} must match")
    skip = {int(t) for t in blank}
    keep = [t for t in range(len(raw)) if t not in skip]
    result: Dict[str, object] = {"frames": len(keep)}
    for name, fn in (("psnr", psnr01), ("ssim", ssim01)):
        result[name] = {"raw": float(np.mean([fn(raw[t], reference[t]) for t in keep])),
                        MODEL: float(np.mean([fn(output[t], reference[t]) for t in keep]))}
    return result
