"""MATLAB-compatible bicubic imresize: weights derived by hand from MATLAB's definition."""

import numpy as np
import pytest

from errors import UserError
from imresize import cubic, imresize, resize_matrix


def test_cubic_kernel_values():
    x = np.array([0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0, 2.5])
    # 1.5|x|^3 - 2.5|x|^2 + 1 inside, -0.5|x|^3 + 2.5|x|^2 - 4|x| + 2 outside, 0 beyond 2.
    expected = [1.0, 0.8671875, 0.5625, 0.2265625, 0.0, -0.0703125, -0.0625, -0.0234375, 0.0, 0.0]
    np.testing.assert_allclose(cubic(x), expected, atol=1e-12)
    np.testing.assert_allclose(cubic(-x), expected, atol=1e-12)


def test_shrink_weights_4_to_2_by_hand():
    # scale 0.5: u = 1.5, width 8, h(d) = 0.5 * cubic(0.5 d); taps at -2..5 folded by symmetric padding.
    m = resize_matrix(4, 2, 0.5)
    np.testing.assert_allclose(m * 64, [[35, 25.5, 6.5, -3], [-3, 6.5, 25.5, 35]], atol=1e-12)


def test_enlarge_weights_2_to_4_by_hand():
    # scale 2: u = 0.75 for the first output, plain cubic; taps -1..2 folded.
    m = resize_matrix(2, 4, 2.0)
    np.testing.assert_allclose(m * 32, [[35, -3], [25.5, 6.5], [6.5, 25.5], [-3, 35]], atol=1e-12)


def test_rows_sum_to_one_for_other_scales():
    for n_in, n_out, s in [(17, 5, 5 / 17), (256, 64, 0.25), (10, 30, 3.0), (7, 7, 1.0)]:
        np.testing.assert_allclose(resize_matrix(n_in, n_out, s).sum(axis=1), 1.0, atol=1e-12)


def test_float_2d_matches_matrix_product():
    rng = np.random.default_rng(0)
    img = rng.random((8, 12))
    out = imresize(img, 0.5)
    expected = resize_matrix(8, 4, 0.5) @ img @ resize_matrix(12, 6, 0.5).T
    np.testing.assert_allclose(out, expected, atol=1e-12)
    assert out.dtype == np.float64


def test_uint8_4x4_to_2x2_rounded_like_matlab_after_each_pass():
    img = np.array([[10, 200, 30, 250], [0, 255, 0, 255], [90, 80, 70, 60], [5, 6, 7, 250]], np.uint8)
    w = np.array([35, 25.5, 6.5, -3]) / 64
    wm = np.stack([w, w[::-1]])

    def rnd(x):
        return np.clip(np.floor(x + 0.5), 0, 255)

    rows = rnd(wm @ img.astype(float))  # rows first on a tie, uint8 in between
    expected = rnd(rows @ wm.T).astype(np.uint8)
    out = imresize(img, 0.5)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, expected)


def test_constant_image_stays_constant_and_sizes_follow_ceil():
    img = np.full((17, 23, 3), 137, np.uint8)
    out = imresize(img, 0.25)
    assert out.shape == (5, 6, 3)  # ceil(17/4), ceil(23/4)
    assert np.all(out == 137)
    up = imresize(np.full((5, 6), 0.3), 4)
    assert up.shape == (20, 24)
    np.testing.assert_allclose(up, 0.3, atol=1e-12)


def test_output_shape_and_channels_independent():
    rng = np.random.default_rng(1)
    img = (rng.random((32, 48, 3)) * 255).astype(np.uint8)
    out = imresize(img, output_shape=(8, 12))
    assert out.shape == (8, 12, 3)
    for c in range(3):
        np.testing.assert_array_equal(out[..., c], imresize(img[..., c], output_shape=(8, 12)))


def test_smaller_scale_dimension_is_resized_first():
    rng = np.random.default_rng(2)
    img = rng.random((6, 10))
    # columns shrink (0.5), rows enlarge (2): MATLAB resizes columns first. In float the order is irrelevant, so
    # check via uint8 where the intermediate rounding makes the order observable.
    img8 = (img * 255).astype(np.uint8)
    out = imresize(img8, output_shape=(12, 5))
    cols = np.clip(np.floor(img8 @ resize_matrix(10, 5, 0.5).T + 0.5), 0, 255)
    expected = np.clip(np.floor(resize_matrix(6, 12, 2.0) @ cols + 0.5), 0, 255)
    np.testing.assert_array_equal(out, expected.astype(np.uint8))


def test_bad_arguments():
    with pytest.raises(UserError):
        imresize(np.zeros((4, 4)), scale=0.5, output_shape=(2, 2))
    with pytest.raises(UserError):
        imresize(np.zeros((4, 4)))
    with pytest.raises(UserError):
        imresize(np.zeros(4), 0.5)
