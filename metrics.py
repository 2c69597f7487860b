"""Evaluation metrics: PSNR and SSIM on the Y channel (the standard VSR protocol) and the original's RGB PSNR.

Conventions (the ones behind published Vid4 / Vimeo-90K tables, e.g. BasicSR and EDVR evaluations):

- Images are RGB on the 0..255 scale (uint8, or float already rounded/clamped by the caller).
- Y is MATLAB ``rgb2ycbcr``'s luma (ITU-R BT.601, studio swing): ``Y = 16 + (65.481 R + 128.553 G + 24.966 B) / 255``
  for R, G, B in 0..255, so Y lies in [16, 235]. Y is kept in float (not rounded to uint8, as BasicSR does).
- PSNR uses a peak of 255; SSIM is Wang et al. (2004) with an 11x11 Gaussian window (sigma 1.5),
  C1 = (0.01 * 255)^2, C2 = (0.03 * 255)^2 and 'valid' filtering (no padding), averaged over the map.
- ``crop_border`` removes that many pixels on every side before measuring.
"""

from typing import Optional, Tuple

import numpy as np

Y_WEIGHTS = np.array([65.481, 128.553, 24.966]) / 255.0
Y_OFFSET = 16.0
PSNR_MAX_DB = 100.0  # cap: identical images (mse = 0) give this, as the original RBPN/DBPN evaluation code


def _check_pair(a: np.ndarray, b: np.ndarray) -> None:
    if a.shape != b.shape:
        raise ValueError(f"images differ in shape: {a.shape} vs {b.shape}")


def crop(img: np.ndarray, crop_border: int) -> np.ndarray:
    """Remove ``crop_border`` pixels from each side of an HxW or HxWxC image."""
    if crop_border < 0:
        raise ValueError(f"crop_border must be >= 0, got {crop_border}")
    if crop_border == 0:
        return img
    if 2 * crop_border >= min(img.shape[0], img.shape[1]):
        raise ValueError(f"crop_border {crop_border} leaves nothing of a {img.shape[0]}x{img.shape[1]} image")
    return img[crop_border:-crop_border, crop_border:-crop_border, ...]


def rgb_to_y(img: np.ndarray) -> np.ndarray:
    """Luma of an RGB image (HxWx3, 0..255 scale) as float64 HxW in [16, 235] (MATLAB ``rgb2ycbcr``, BT.601)."""
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"rgb_to_y expects an HxWx3 RGB image, got shape {img.shape}")
    return img.astype(np.float64) @ Y_WEIGHTS + Y_OFFSET


def psnr(a: np.ndarray, b: np.ndarray, crop_border: int = 0) -> float:
    """PSNR in dB between two images on the 0..255 scale (any channel layout), peak 255.

    Identical (or nearly identical) images give ``PSNR_MAX_DB`` (100 dB) instead of ``inf``, so that means over frames
    stay finite numbers; ``is_capped`` tells which frames hit the cap. Pass Y planes (``rgb_to_y``) for the standard
    protocol.
    """
    _check_pair(a, b)
    a = crop(a.astype(np.float64), crop_border)
    b = crop(b.astype(np.float64), crop_border)
    mse = float(np.mean((a - b) ** 2))
    if mse == 0:
        return PSNR_MAX_DB
    return min(PSNR_MAX_DB, float(10.0 * np.log10(255.0**2 / mse)))


def is_capped(psnr_db: float) -> bool:
    """True when a PSNR value is the cap (the frame equals its reference, or nearly)."""
    return psnr_db >= PSNR_MAX_DB


def gaussian_window(size: int = 11, sigma: float = 1.5) -> np.ndarray:
    """Normalised 2-D Gaussian window (outer product of the 1-D one), as in Wang et al.'s ``fspecial``."""
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    g = np.exp(-(x**2) / (2.0 * sigma**2))
    g /= g.sum()
    return np.outer(g, g)


def _filter_valid(img: np.ndarray, window: np.ndarray) -> np.ndarray:
    """Correlate a 2-D float64 image with ``window``, keeping only the 'valid' part (no padding)."""
    import cv2

    full = cv2.filter2D(img, cv2.CV_64F, window, borderType=cv2.BORDER_REFLECT)
    r = window.shape[0] // 2
    return full[r:-r, r:-r]


def ssim(a: np.ndarray, b: np.ndarray, crop_border: int = 0) -> float:
    """Mean SSIM between two single-channel images on the 0..255 scale (HxW); HxWxC images average the channels."""
    _check_pair(a, b)
    a = crop(a.astype(np.float64), crop_border)
    b = crop(b.astype(np.float64), crop_border)
    if a.ndim == 3:
        return float(np.mean([ssim(a[..., c], b[..., c]) for c in range(a.shape[2])]))
    window = gaussian_window()
    if min(a.shape) < window.shape[0]:
        raise ValueError(f"SSIM needs images of at least 11x11 pixels, got {a.shape[1]}x{a.shape[0]}")
    c1 = (0.01 * 255) ** 2
    c2 = (0.03 * 255) ** 2
    mu_a = _filter_valid(a, window)
    mu_b = _filter_valid(b, window)
    var_a = _filter_valid(a * a, window) - mu_a**2
    var_b = _filter_valid(b * b, window) - mu_b**2
    cov = _filter_valid(a * b, window) - mu_a * mu_b
    ssim_map = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return float(ssim_map.mean())


def psnr_y(sr: np.ndarray, hr: np.ndarray, crop_border: int = 0) -> float:
    """PSNR on the Y channel of two RGB images (the standard VSR protocol)."""
    return psnr(rgb_to_y(sr), rgb_to_y(hr), crop_border)


def ssim_y(sr: np.ndarray, hr: np.ndarray, crop_border: int = 0) -> float:
    """SSIM on the Y channel of two RGB images (the standard VSR protocol)."""
    return ssim(rgb_to_y(sr), rgb_to_y(hr), crop_border)


def psnr_rgb_original(pred: np.ndarray, gt: np.ndarray, scale: int) -> float:
    """The original iSeeBetter tester's PSNR, kept for comparison (``--metric rgb``).

    ``pred`` and ``gt`` are HxWx3 on the 0..255 scale; the prediction is used as given (the original neither clamps
    nor rounds it). The border is asymmetric, as in the original: ``scale + 1`` rows/columns at the top/left and
    ``scale`` at the bottom/right. MSE is over all RGB channels; identical images give 100 (the original's value).
    """
    _check_pair(pred, gt)
    s = scale
    h, w = pred.shape[:2]
    p = pred.astype(np.float64)[1 + s : h - s, 1 + s : w - s]
    g = gt.astype(np.float64)[1 + s : h - s, 1 + s : w - s]
    if p.size == 0:
        raise ValueError(f"a {w}x{h} image is too small for the original PSNR border of {s + 1}/{s} px")
    rmse = float(np.sqrt(np.mean((p - g) ** 2)))
    if rmse == 0:
        return 100.0
    return 20.0 * np.log10(255.0 / rmse)


def to_uint8(img: np.ndarray) -> np.ndarray:
    """Clamp a float image on the 0..255 scale and round it (halves up, like MATLAB) to uint8."""
    return np.clip(np.floor(np.asarray(img, dtype=np.float64) + 0.5), 0, 255).astype(np.uint8)


def mean_of_means(per_clip: dict, key: str) -> Optional[float]:
    """Benchmark average: the mean over clips of each clip's mean value of ``key`` (clips without it are skipped)."""
    values = [clip[key] for clip in per_clip.values() if clip.get(key) is not None]
    return float(np.mean(values)) if values else None


# ----------------------------------------------------------------------------------------------------------------
# No-reference noise scores for SPM/AFM scans (``--denoise``): the fork's streak score and blur score
#
# Both are computed on a grey image on the 0..255 scale, as the fork computed them on 8-bit renderings:
#
# - colour (HxWx3) becomes grey with the BT.601 weights 0.299 R + 0.587 G + 0.114 B (OpenCV's RGB2GRAY);
# - uint8 is used as it is (0..255);
# - float (any units: [0, 1], nm, ...) is mapped linearly so that ``value_range = (lo, hi)`` becomes 0..255 (no
#   clipping); without ``value_range`` an image is scaled by its own min and max (a constant image becomes 0), as an
#   SPM frame is rendered for display. Pass ``value_range=(0, 1)`` for frames normalised by
#   ``denoise_data.preprocess`` so that the scores of frames of one movie can be compared with each other.
#
# Filters are 3x3 with the border reflected without repeating the edge pixel (OpenCV's default BORDER_REFLECT_101),
# so the values equal ``cv2.Sobel(g, cv2.CV_64F, 0, 1)`` etc. on the same 0..255 float image.

GREY_WEIGHTS = np.array([0.299, 0.587, 0.114])
SOBEL_X = np.array([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])
SOBEL_Y = SOBEL_X.T.copy()
LAPLACIAN = np.array([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])


def grey_0_255(img: np.ndarray, value_range: Optional[Tuple[float, float]] = None) -> np.ndarray:
    """The grey float64 HxW image on the 0..255 scale that the noise scores use (see the comment above)."""
    img = np.asarray(img)
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if img.ndim == 3 and img.shape[2] == 3:
        grey = img.astype(np.float64) @ GREY_WEIGHTS
    elif img.ndim == 2:
        grey = img.astype(np.float64)
    else:
        raise ValueError(f"expected an HxW, HxWx1 or HxWx3 image, got shape {img.shape}")
    if min(grey.shape) < 2:
        raise ValueError(f"the noise scores need an image of at least 2x2 pixels, got shape {img.shape}")
    if not np.all(np.isfinite(grey)):
        raise ValueError("the image contains NaN or infinite values")
    if value_range is None:
        if img.dtype == np.uint8:
            return grey
        lo, hi = float(grey.min()), float(grey.max())
    else:
        lo, hi = float(value_range[0]), float(value_range[1])
        if not hi > lo:
            raise ValueError(f"value_range must be (lo, hi) with hi > lo, got {value_range}")
    if hi == lo:
        return np.zeros_like(grey)
    return (grey - lo) * (255.0 / (hi - lo))


def _filter3(grey: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Correlate a 2-D image with a 3x3 kernel; the output has the image's size (border: reflect-101)."""
    padded = np.pad(grey, 1, mode="reflect")
    h, w = grey.shape
    out = np.zeros_like(grey)
    for dy in range(3):
        for dx in range(3):
            if kernel[dy, dx] != 0:
                out += kernel[dy, dx] * padded[dy : dy + h, dx : dx + w]
    return out


def streak_score(img: np.ndarray, value_range: Optional[Tuple[float, float]] = None) -> float:
    """The fork's noise score: ``(mean|Sobel_y * I| - mean|Sobel_x * I|) / 3`` on the grey 0..255 image.

    Horizontal scan-line streaks (rows offset from each other) give vertical gradients and raise it; an image with
    mostly vertical structure scores below 0. Lower is cleaner.
    """
    grey = grey_0_255(img, value_range)
    gy = np.abs(_filter3(grey, SOBEL_Y)).mean()
    gx = np.abs(_filter3(grey, SOBEL_X)).mean()
    return float((gy - gx) / 3.0)


def laplacian_variance(img: np.ndarray, value_range: Optional[Tuple[float, float]] = None) -> float:
    """Blur score: the variance of the 4-neighbour Laplacian of the grey 0..255 image (lower = blurrier).

    On 8-bit images this is the fork's value (``cv2.Laplacian(grey, cv2.CV_64F).var()``); the fork kept frames
    with a score in (250, 1500).
    """
    grey = grey_0_255(img, value_range)
    return float(_filter3(grey, LAPLACIAN).var())
