"""Metric functions against values computed by hand (and SSIM against a brute-force per-window loop)."""

import math

import numpy as np
import pytest

import metrics


def test_rgb_to_y_matches_matlab_rgb2ycbcr_luma():
    img = np.array([[[0, 0, 0], [255, 255, 255], [255, 0, 0]], [[0, 255, 0], [0, 0, 255], [128, 128, 128]]], np.uint8)
    y = metrics.rgb_to_y(img)
    expected = np.array([[16.0, 235.0, 16 + 65.481], [16 + 128.553, 16 + 24.966, 16 + 219.0 * 128 / 255]])
    np.testing.assert_allclose(y, expected, atol=1e-9)
    assert y.dtype == np.float64


def test_rgb_to_y_rejects_grey():
    with pytest.raises(ValueError):
        metrics.rgb_to_y(np.zeros((4, 4), np.uint8))


def test_psnr_constant_difference():
    a = np.zeros((8, 8), np.uint8)
    b = np.full((8, 8), 10, np.uint8)
    # MSE = 100 -> 10*log10(65025/100)
    assert metrics.psnr(a, b) == pytest.approx(10 * math.log10(650.25), abs=1e-12)
    assert metrics.psnr(a, a) == metrics.PSNR_MAX_DB == 100.0
    assert metrics.is_capped(metrics.psnr(a, a)) and not metrics.is_capped(metrics.psnr(a, b))


def test_psnr_is_not_affected_by_uint8_wraparound():
    a = np.full((4, 4), 250, np.uint8)
    b = np.full((4, 4), 5, np.uint8)
    assert metrics.psnr(a, b) == pytest.approx(20 * math.log10(255 / 245), abs=1e-12)


def test_psnr_crop_border_ignores_the_border():
    a = np.zeros((10, 10), np.uint8)
    b = a.copy()
    b[:2, :] = 200
    b[:, -2:] = 200
    assert metrics.psnr(a, b, crop_border=2) == metrics.PSNR_MAX_DB
    assert metrics.psnr(a, b, crop_border=1) < 20
    with pytest.raises(ValueError):
        metrics.psnr(a, b, crop_border=5)


def test_psnr_y_of_red_against_black():
    red = np.zeros((4, 4, 3), np.uint8)
    red[..., 0] = 255
    black = np.zeros((4, 4, 3), np.uint8)
    assert metrics.psnr_y(red, black) == pytest.approx(20 * math.log10(255 / 65.481), abs=1e-9)


def test_ssim_identical_is_one_and_constant_images_by_hand():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (24, 20)).astype(np.float64)
    assert metrics.ssim(a, a) == pytest.approx(1.0, abs=1e-12)
    c1 = (0.01 * 255) ** 2
    # Constant images: variances and covariance are 0, so SSIM = (2 mu_a mu_b + C1) / (mu_a^2 + mu_b^2 + C1).
    x = np.full((16, 16), 100.0)
    y = np.full((16, 16), 120.0)
    assert metrics.ssim(x, y) == pytest.approx((2 * 100 * 120 + c1) / (100**2 + 120**2 + c1), abs=1e-12)


def _ssim_brute_force(a: np.ndarray, b: np.ndarray) -> float:
    """Wang et al. SSIM, one 11x11 Gaussian-weighted window at a time (valid positions only)."""
    x = np.arange(11) - 5.0
    g = np.exp(-(x**2) / (2 * 1.5**2))
    w = np.outer(g, g) / np.outer(g, g).sum()
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    values = []
    for i in range(a.shape[0] - 10):
        for j in range(a.shape[1] - 10):
            pa, pb = a[i : i + 11, j : j + 11], b[i : i + 11, j : j + 11]
            ma, mb = (w * pa).sum(), (w * pb).sum()
            va, vb = (w * (pa - ma) ** 2).sum(), (w * (pb - mb) ** 2).sum()
            cov = (w * (pa - ma) * (pb - mb)).sum()
            values.append(((2 * ma * mb + c1) * (2 * cov + c2)) / ((ma**2 + mb**2 + c1) * (va + vb + c2)))
    return float(np.mean(values))


def test_ssim_matches_brute_force_window_loop():
    rng = np.random.default_rng(1)
    a = rng.integers(0, 256, (17, 19)).astype(np.float64)
    b = np.clip(a + rng.normal(0, 30, a.shape), 0, 255)
    expected = _ssim_brute_force(a, b)
    assert 0.2 < expected < 0.95
    assert metrics.ssim(a, b) == pytest.approx(expected, abs=1e-9)
    # crop_border is applied before the windows.
    assert metrics.ssim(a, b, crop_border=2) == pytest.approx(_ssim_brute_force(a[2:-2, 2:-2], b[2:-2, 2:-2]), abs=1e-9)


def test_ssim_too_small_is_an_error():
    with pytest.raises(ValueError):
        metrics.ssim(np.zeros((8, 30)), np.zeros((8, 30)))


def test_ssim_y_uses_luma():
    rng = np.random.default_rng(2)
    a = rng.integers(0, 256, (16, 16, 3)).astype(np.uint8)
    b = a.copy()
    b[..., 2] = 0  # change blue only
    expected = _ssim_brute_force(metrics.rgb_to_y(a), metrics.rgb_to_y(b))
    assert metrics.ssim_y(a, b) == pytest.approx(expected, abs=1e-9)


def test_psnr_rgb_original_border_is_s_plus_1_top_left_and_s_bottom_right():
    s = 2
    gt = np.zeros((12, 14, 3), np.float64)
    # Errors in the first s+1 rows/cols and the last s rows/cols are ignored.
    pred = gt.copy()
    pred[: s + 1] = 50
    pred[:, : s + 1] = 50
    pred[-s:] = 50
    pred[:, -s:] = 50
    assert metrics.psnr_rgb_original(pred, gt, s) == 100.0
    # Row s+1 is the first one measured: 1 erroneous row of 12-2s-1 = 7 rows, over 14-2s-1 = 9 cols.
    pred = gt.copy()
    pred[s + 1, :, :] = 30
    mse = 30.0**2 / 7
    assert metrics.psnr_rgb_original(pred, gt, s) == pytest.approx(10 * math.log10(255**2 / mse), abs=1e-9)
    # Last measured row is H-s-1.
    pred = gt.copy()
    pred[12 - s - 1] = 30
    assert metrics.psnr_rgb_original(pred, gt, s) == pytest.approx(10 * math.log10(255**2 / mse), abs=1e-9)


def test_psnr_rgb_original_does_not_clamp_the_prediction():
    gt = np.full((10, 10, 3), 255.0)
    pred = np.full((10, 10, 3), 265.0)  # above 255: the original measures it as an error of 10
    assert metrics.psnr_rgb_original(pred, gt, 1) == pytest.approx(20 * math.log10(25.5), abs=1e-9)


def test_to_uint8_clamps_and_rounds_halves_up():
    out = metrics.to_uint8(np.array([-3.0, 300.0, 2.5, 1.49, 254.5]))
    np.testing.assert_array_equal(out, [0, 255, 3, 1, 255])
    assert out.dtype == np.uint8


def test_mean_of_means_is_not_weighted_by_frame_count():
    clips = {"a": {"psnr_y": 10.0, "frames": 10}, "b": {"psnr_y": 20.0, "frames": 1}, "c": {"psnr_y": None}}
    assert metrics.mean_of_means(clips, "psnr_y") == 15.0
    assert metrics.mean_of_means({}, "psnr_y") is None


def test_psnr_of_almost_identical_images_is_capped_not_above_the_cap():
    a = np.zeros((4000, 4000), np.uint8)
    b = a.copy()
    b[0, 0] = 1  # mse = 6.25e-8 -> 120 dB uncapped
    assert metrics.psnr(a, b) == metrics.PSNR_MAX_DB
