"""--denoise data: preprocessing, noise scores, training targets, warping and DenoiseDataset."""

import json
import random

import numpy as np
import pytest
import torch

import denoise_data
import metrics
from dataset import DataError
from denoise_data import (
    MEMORY,
    DenoiseDataset,
    Normalisation,
    blank_frames,
    level_rows,
    make_sample,
    preprocess,
    split_window,
    warp_backward,
    window_length,
)
from errors import UserError


def smooth_pattern(height: int, width: int, channels: int = 1, seed: int = 0) -> np.ndarray:
    """A smooth random texture in [0, 1], (H, W, C) float64."""
    rng = np.random.default_rng(seed)
    img = rng.random((height, width, channels))
    for _ in range(4):
        img = (img + np.roll(img, 1, 0) + np.roll(img, -1, 0) + np.roll(img, 1, 1) + np.roll(img, -1, 1)) / 5
    return (img - img.min()) / (img.max() - img.min())


def shifting_movie(n: int, height: int, width: int, channels: int = 1, dx: int = 1, dy: int = 0,
                   seed: int = 0) -> np.ndarray:
    """float32 (n, H, W, C) in [0, 1]: frame t shows the pattern at (y + dy * t, x + dx * t).

    So frame a(x, y) = frame b(x + (a - b) dx, y + (a - b) dy): the flow from a to b is ((a - b) dx, (a - b) dy).
    """
    pad = n * max(abs(dx), abs(dy)) + 1
    big = smooth_pattern(height + 2 * pad, width + 2 * pad, channels, seed)
    frames = [big[pad + dy * t : pad + dy * t + height, pad + dx * t : pad + dx * t + width] for t in range(n)]
    return np.stack(frames).astype(np.float32)


def exact_flow(src: int, dst: int, height: int, width: int, dx: int, dy: int) -> np.ndarray:
    flow = np.empty((2, height, width), np.float32)
    flow[0] = (src - dst) * dx
    flow[1] = (src - dst) * dy
    return flow


def zero_flow_fn(frames):
    return denoise_data.frame_flow_fn(frames, "zero")


# ----------------------------------------------------------------------------------------------------------------
# Preprocessing


def test_level_rows_subtracts_each_rows_median_per_channel():
    rng = np.random.default_rng(1)
    content = rng.normal(size=(12, 15, 3))
    offsets = rng.normal(scale=10, size=(12, 1, 3))
    levelled = level_rows((content + offsets).astype(np.float32))
    assert levelled.dtype == np.float32 and levelled.shape == (12, 15, 3)
    np.testing.assert_allclose(np.median(levelled, axis=1), 0, atol=1e-5)
    np.testing.assert_allclose(levelled, level_rows(content), atol=1e-4)  # row offsets are gone
    grey = level_rows(np.arange(12, dtype=np.int16).reshape(3, 4))
    assert grey.dtype == np.float32
    np.testing.assert_array_equal(grey, np.tile([-1.5, -0.5, 0.5, 1.5], (3, 1)))


def test_blank_frames_finds_constant_frames_relative_to_the_movie_range():
    rng = np.random.default_rng(2)
    movie = rng.random((8, 10, 10, 1)) * 50.0  # range ~50
    movie[2] = 7.0
    movie[5] = -3.0
    movie[6] = 1.0 + rng.random((10, 10, 1)) * 0.01  # 0.01 <= 1e-3 * 50: blank
    movie[7] = 1.0 + rng.random((10, 10, 1)) * 1.0  # 1.0 > 0.05: a real (flat) frame
    assert blank_frames(movie) == [2, 5, 6]
    assert blank_frames(movie, tol=0.0) == [2, 5]
    assert blank_frames(np.ones((3, 4, 4))) == [0, 1, 2]  # a constant movie is all blank


def test_one_spike_pixel_blanks_no_frame_and_is_reported():
    """Issue 22: one 1e4 pixel in a [0, 1] movie of 8 frames used to make the 7 other frames 'blank'."""
    import frame_check

    movie = np.random.default_rng(0).random((8, 32, 32)).astype(np.float32)
    movie[3, 5, 5] = 1e4
    movie_with_constant = movie.copy()
    movie_with_constant[6] = 0.25
    assert blank_frames(movie) == [] and blank_frames(movie_with_constant) == [6]
    check = frame_check.check_frames(movie)
    assert check.outliers == {3: 1} and check.corrupt == []
    lines = frame_check.describe_findings(check, "s")
    assert lines == [f"s: frame 3 (frames 0-7): 1 outlier pixel (the most extreme is 1e+04; the frames typically span "
                     f"{check.typical[0]:.4g} to {check.typical[1]:.4g}); {frame_check.OUTLIER_ACTION}"]
    out, norm, blank = preprocess(movie, level=False)
    assert blank == [] and out.shape == (8, 32, 32, 1)
    assert 0 <= norm.lo < 0.01 and 0.99 < norm.hi <= 1.0  # the spike did not move the normalisation
    assert out[3, 5, 5, 0] == pytest.approx(norm.forward(1e4), rel=1e-6)  # kept: the normalisation never clips
    _, _, blank = preprocess(movie_with_constant, level=False)
    assert blank == [6]


def test_outlier_pixels_are_left_out_of_the_normalisation():
    """Even when they are more than the 0.5 % the percentiles tolerate."""
    movie = np.random.default_rng(1).random((4, 20, 20, 1))
    movie[:, 0, :3] = 5e3  # 3 of 400 pixels in every frame, 0.75 % of the movie
    _, norm, blank = preprocess(movie, level=False)
    assert blank == [] and norm.hi < 1.0
    unmasked = Normalisation.fit(movie)
    assert unmasked.hi == pytest.approx(5e3)
    with pytest.raises(UserError, match="ignore mask"):
        Normalisation.fit(movie, ignore=np.zeros((4, 20, 20), bool))


def test_a_corrupt_frame_is_skipped_and_training_still_has_samples():
    """A garbage frame is skipped like a blank one; the others stay usable (the trainer's E08 case)."""
    import frame_check

    rng = np.random.default_rng(2)
    movie = shifting_movie(8, 24, 24)
    movie[2].ravel()[50:300] = rng.uniform(-1e3, 1e3, size=250)
    check = frame_check.check_frames(movie)
    assert check.corrupt == [2] and check.blank == []
    out, norm, blank = preprocess(movie, level=False, check=check)
    assert blank == [2] and norm.hi == pytest.approx(np.percentile(np.delete(movie, 2, axis=0), 99.5))
    ds = DenoiseDataset([out], blanks=[blank], names=["m"], n_frames=3, target="n2n", patch_size=8, flows="zero")
    assert ds.samples == [(0, s) for s in (3, 4)]  # windows of 4 frames (n2n, 3 frames) without frame 2
    everything = np.repeat(movie[:1], 3, axis=0) * 0 + 0.5
    with pytest.raises(UserError, match="all 3 frames of the movie are blank \\(constant\\); nothing to denoise"):
        preprocess(everything)
    with pytest.raises(UserError, match="frame check covers 8 frames"):
        preprocess(movie[:4], check=check)


def test_normalisation_round_trips_and_records():
    rng = np.random.default_rng(3)
    heights = rng.normal(2e-9, 1e-9, size=(5, 16, 16, 1))  # metres
    norm = Normalisation.fit(heights, low_pct=1.0, high_pct=99.0, unit="m")
    assert norm.lo == pytest.approx(np.percentile(heights, 1.0))
    assert norm.hi == pytest.approx(np.percentile(heights, 99.0))
    y = norm.forward(heights, clip=False)
    assert y.dtype == np.float64
    np.testing.assert_allclose(norm.inverse(y), heights, rtol=1e-12, atol=1e-24)
    clipped = norm.forward(heights.astype(np.float32), clip=True)
    assert clipped.dtype == np.float32 and clipped.min() == 0.0 and clipped.max() == 1.0
    inside = (heights >= norm.lo) & (heights <= norm.hi)
    np.testing.assert_allclose(norm.inverse(norm.forward(heights, clip=True))[inside], heights[inside], rtol=1e-12)
    np.testing.assert_allclose(norm.inverse(norm.forward(heights)), heights, rtol=1e-12)  # exact everywhere
    ramp = np.linspace(0, 1, 11, dtype=np.float32)
    np.testing.assert_allclose(norm.forward(norm.inverse(ramp)), ramp, atol=1e-6)
    t = torch.tensor(ramp)
    assert torch.allclose(norm.forward(norm.inverse(t)), t, atol=1e-6) and norm.inverse(t).dtype == torch.float32
    record = json.loads(json.dumps(norm.to_dict()))
    assert Normalisation.from_dict(record) == norm
    assert record["unit"] == "m" and record["low_pct"] == 1.0


def test_normalisation_refuses_bad_values():
    with pytest.raises(UserError):
        Normalisation(1.0, 1.0)
    with pytest.raises(UserError):
        Normalisation(0.0, float("nan"))
    with pytest.raises(UserError):
        Normalisation.from_dict({"lo": 0.0})
    with pytest.raises(UserError):
        Normalisation.from_dict({"lo": "a", "hi": 1})
    with pytest.raises(UserError):
        Normalisation.fit(np.ones((2, 4, 4, 1)))  # no contrast
    with pytest.raises(UserError):
        Normalisation.fit(np.random.rand(2, 4, 4, 1), blank=[0, 1])


def test_preprocess_levels_normalises_and_skips_blanks_for_statistics():
    rng = np.random.default_rng(4)
    t, h, w = 6, 20, 24
    movie = rng.normal(0.0, 1.0, size=(t, h, w, 1)) + rng.normal(0, 20, size=(t, h, 1, 1))  # noisy row offsets
    movie[3] = 1000.0  # blank frame far outside the data
    out, norm, blank = preprocess(movie.astype(np.float32), unit="nm")
    assert blank == [3]
    assert out.dtype == np.float32 and out.shape == (t, h, w, 1)
    good = np.delete(out, 3, axis=0)
    assert good.min() < 0.0 and good.max() > 1.0  # 1 % of the values lie outside [0, 1]: not clipped
    assert norm.levelled and norm.unit == "nm"
    assert -5 < norm.lo < 0 < norm.hi < 5  # the blank frame (and the row offsets) did not enter the statistics
    levelled = np.stack([level_rows(f) for f in movie])
    np.testing.assert_allclose(np.delete(norm.inverse(out), 3, 0), np.delete(levelled, 3, 0), atol=1e-4)
    raw, raw_norm, _ = preprocess(movie[:, :, :, 0], level=False)  # (T, H, W) is taken as one channel
    assert raw.shape == (t, h, w, 1) and not raw_norm.levelled
    _, known_norm, known = preprocess(movie, extra_blank=[0])  # e.g. a reader's Movie.blank
    assert known == [0, 3] and known_norm != norm


def test_preprocess_refuses_bad_movies():
    with pytest.raises(UserError):
        preprocess(np.zeros((2, 4, 4, 2)))
    with pytest.raises(UserError):
        preprocess(np.full((2, 4, 4, 1), np.nan))
    with pytest.raises(UserError):
        preprocess(np.ones((3, 4, 4, 1)))
    with pytest.raises(UserError):
        preprocess(np.random.rand(3, 4, 4, 1), extra_blank=[3])


# ----------------------------------------------------------------------------------------------------------------
# Noise scores (metrics.py)


def streaky(img: np.ndarray, amplitude: float, seed: int = 5) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return img + amplitude * rng.normal(size=(img.shape[0],) + (1,) * (img.ndim - 1))  # one offset per row


def test_streak_score_rises_with_horizontal_streaks():
    clean = smooth_pattern(64, 64)[:, :, 0]
    scores = [metrics.streak_score(streaky(clean, a)) for a in (0.0, 0.05, 0.2)]
    assert scores[0] < scores[1] < scores[2]
    fixed = [metrics.streak_score(streaky(clean, a), value_range=(0, 1)) for a in (0.0, 0.05, 0.2)]
    assert fixed[0] < fixed[1] < fixed[2]
    assert metrics.streak_score(streaky(clean.T, 0.2).T) < scores[0]  # vertical streaks lower it
    # scaling by the image's own min/max: physical units give the same score as [0, 1]
    assert metrics.streak_score(streaky(clean, 0.05) * 3e-9 + 1e-8) == pytest.approx(scores[1], rel=1e-9)


def test_laplacian_variance_drops_with_blur():
    import cv2

    sharp = np.random.default_rng(6).random((64, 64))
    blurred = cv2.GaussianBlur(sharp, (0, 0), 1.5)
    assert metrics.laplacian_variance(blurred) < 0.2 * metrics.laplacian_variance(sharp)
    assert metrics.laplacian_variance(blurred, (0, 1)) < 0.2 * metrics.laplacian_variance(sharp, (0, 1))
    assert metrics.laplacian_variance(np.full((8, 8), 3.0)) == 0.0


def test_noise_scores_match_opencv_and_share_one_scale():
    import cv2

    rng = np.random.default_rng(7)
    img = rng.random((20, 30, 3))
    grey = metrics.grey_0_255(img)
    expected_grey = cv2.cvtColor(img.astype(np.float32), cv2.COLOR_RGB2GRAY).astype(np.float64)
    expected_grey = (expected_grey - expected_grey.min()) * 255 / (expected_grey.max() - expected_grey.min())
    np.testing.assert_allclose(grey, expected_grey, atol=1e-3)
    sy = np.abs(cv2.Sobel(grey, cv2.CV_64F, 0, 1)).mean()
    sx = np.abs(cv2.Sobel(grey, cv2.CV_64F, 1, 0)).mean()
    assert metrics.streak_score(img) == pytest.approx((sy - sx) / 3, rel=1e-9)
    assert metrics.laplacian_variance(img) == pytest.approx(cv2.Laplacian(grey, cv2.CV_64F).var(), rel=1e-9)
    u8 = rng.integers(0, 256, (16, 16), dtype=np.uint8)  # uint8 is taken as 0..255, like float with (0, 1) * 255
    assert metrics.streak_score(u8) == pytest.approx(metrics.streak_score(u8 / 255.0, (0, 1)), rel=1e-9)
    assert metrics.laplacian_variance(u8) == pytest.approx(metrics.laplacian_variance(u8 / 255.0, (0, 1)), rel=1e-9)
    assert metrics.streak_score(u8[:, :, None]) == metrics.streak_score(u8)
    with pytest.raises(ValueError):
        metrics.streak_score(np.zeros((4, 4, 2)))


# ----------------------------------------------------------------------------------------------------------------
# Training targets


@pytest.mark.parametrize("mode", ["n2n", "select", "median"])
def test_make_sample_keeps_input_target_and_neighbours_disjoint(mode):
    rng = random.Random(0)
    np_rng = np.random.default_rng(0)
    for n_frames in range(2, 8):
        length = window_length(mode, n_frames)
        for _ in range(30):
            # frame i is noise around i, so each output can be traced back to its frame
            frames = [i + 0.1 * np_rng.random((6, 7, 1)) for i in range(length)]
            inp, target, neighbours, flows, idx = make_sample(frames, mode, rng, zero_flow_fn(frames),
                                                              score_range=None)
            used = [idx["input"], *idx["target"], *idx["neighbours"]]
            assert len(used) == len(set(used)) == length  # disjoint, and every window frame is used once
            assert len(neighbours) == len(flows) == len(idx["neighbours"]) == n_frames - 1
            assert len(idx["target"]) == (n_frames if mode == "median" else 1)
            np.testing.assert_allclose(inp, frames[idx["input"]], atol=1e-6)
            for nb, i in zip(neighbours, idx["neighbours"]):
                np.testing.assert_allclose(nb, frames[i], atol=1e-6)
            expected = np.median(np.stack([frames[i] for i in idx["target"]]), axis=0)
            np.testing.assert_allclose(target, expected, atol=1e-5)
            assert all(f.shape == (2, 6, 7) and f.dtype == np.float32 for f in flows)
            centre = length // 2
            if mode == "n2n":
                assert idx["input"] == centre and abs(idx["target"][0] - centre) == 1
            if mode == "median":
                assert idx["input"] == centre
                assert all((i - centre) % 2 == 1 for i in idx["target"])
                assert all((i - centre) % 2 == 0 for i in idx["neighbours"])


def test_n2n_draws_both_adjacent_frames():
    rng = random.Random(1)
    targets = {split_window("n2n", 8, rng)["target"][0] for _ in range(50)}
    assert targets == {3, 5}


def test_select_uses_the_cleanest_frames():
    clean = smooth_pattern(32, 32)
    amplitudes = [0.08, 0.02, 0.06, 0.0, 0.04]
    frames = [np.clip(streaky(clean, a, seed=i), 0, 1) for i, a in enumerate(amplitudes)]
    idx = make_sample(frames, "select", random.Random(0), zero_flow_fn(frames))[4]
    assert idx["target"] == [3] and idx["input"] == 1
    assert sorted(idx["neighbours"]) == [0, 2, 4]


def test_make_sample_refuses_bad_windows():
    frames = [np.zeros((4, 4, 1))] * 5
    with pytest.raises(UserError):
        make_sample(frames, "median", random.Random(0), zero_flow_fn(frames))  # median needs an even length
    with pytest.raises(UserError):
        make_sample(frames[:1], "n2n", random.Random(0), zero_flow_fn(frames))  # no target besides the input
    with pytest.raises(UserError):
        make_sample(frames, "mean", random.Random(0), zero_flow_fn(frames))
    with pytest.raises(UserError):
        window_length("n2n", 0)


@pytest.mark.parametrize("mode", ["n2n", "median"])
def test_make_sample_aligns_the_target_onto_the_input(mode):
    movie = shifting_movie(8, 24, 28, dx=1, dy=-1)
    frames = list(movie[: window_length(mode, 3)])
    h, w = frames[0].shape[:2]

    def flow_fn(src, dsts):
        return [exact_flow(src, d, h, w, 1, -1) for d in dsts]

    inp, target, _, _, idx = make_sample(frames, mode, random.Random(2), flow_fn)
    b = max(abs(i - idx["input"]) for i in idx["target"])
    np.testing.assert_allclose(target[b:-b, b:-b], inp[b:-b, b:-b], atol=1e-5)
    unaligned = make_sample(frames, mode, random.Random(2), flow_fn, align_target=False)[1]
    assert np.abs(unaligned - inp).mean() > 10 * np.abs(target[b:-b, b:-b] - inp[b:-b, b:-b]).mean()


# ----------------------------------------------------------------------------------------------------------------
# Warping and flows


def test_warp_backward_undoes_a_shift():
    im1 = smooth_pattern(20, 24, 3)
    im2 = np.roll(im1, (1, 2), axis=(0, 1))  # im1(x, y) = im2(x + 2, y + 1)
    flow = np.stack([np.full((20, 24), 2.0), np.full((20, 24), 1.0)])
    out = warp_backward(im2, flow)
    assert out.shape == im1.shape and out.dtype == np.float64
    np.testing.assert_allclose(out[:-1, :-2], im1[:-1, :-2], atol=1e-12)
    ramp = np.add.outer(np.arange(10.0) * 3, np.arange(12.0)).astype(np.float32)  # 3 y + x: bilinear is exact
    sub = warp_backward(ramp, np.stack([np.full((10, 12), 0.25), np.full((10, 12), -0.5)]))
    assert sub.dtype == np.float32
    np.testing.assert_allclose(sub[1:, :-1], ramp[1:, :-1] + 0.25 - 1.5, atol=1e-5)
    np.testing.assert_array_equal(warp_backward(ramp, np.zeros((2, 10, 12))), ramp)
    with pytest.raises(ValueError):
        warp_backward(ramp, np.zeros((2, 10, 11)))


def test_pyflow_flow_warps_the_neighbour_onto_the_input():
    movie = shifting_movie(3, 48, 48, channels=1, dx=2, dy=1)
    inp, nb = movie[0], movie[1]
    (flow,) = denoise_data.compute_flows(inp, [nb], threads=1)
    assert flow.shape == (2, 48, 48) and flow.dtype == np.float32
    np.testing.assert_allclose(np.median(flow[0]), -2.0, atol=0.1)
    np.testing.assert_allclose(np.median(flow[1]), -1.0, atol=0.1)
    warped = warp_backward(nb, flow)
    assert np.abs(warped - inp)[4:-4, 4:-4].mean() < 0.1 * np.abs(nb - inp)[4:-4, 4:-4].mean()
    colour = shifting_movie(2, 32, 32, channels=3, dx=1)
    assert denoise_data.compute_flows(colour[0], [colour[1]], threads=1)[0].shape == (2, 32, 32)


# ----------------------------------------------------------------------------------------------------------------
# Dataset


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("mode", ["n2n", "select", "median"])
def test_dataset_sample_shapes(channels, mode):
    movie = np.random.default_rng(8).random((12, 20, 22, channels)).astype(np.float32)
    ds = DenoiseDataset([movie], n_frames=3, target=mode, patch_size=16, flows="zero")
    assert len(ds) == 12 - window_length(mode, 3) + 1
    inp, target, neighbours, flows, bicubic = ds[0]
    assert inp.shape == target.shape == (channels, 16, 16) and inp.dtype == torch.float32
    assert len(neighbours) == len(flows) == 2
    assert all(nb.shape == (channels, 16, 16) for nb in neighbours)
    assert all(f.shape == (2, 16, 16) and f.dtype == torch.float32 for f in flows)
    assert torch.equal(bicubic, inp)
    assert 0.0 <= float(inp.min()) and float(inp.max()) <= 1.0
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=2)))
    assert batch[0].shape == (2, channels, 16, 16) and len(batch[2]) == 2 and batch[3][0].shape == (2, 2, 16, 16)
    whole = DenoiseDataset([movie], n_frames=3, target=mode, training=False, flows="zero")[0]
    assert whole[0].shape == (channels, 20, 22)


def test_dataset_skips_windows_with_blank_frames():
    movie = np.random.default_rng(9).random((10, 8, 8, 1)).astype(np.float32)
    movie[4] = 0.5
    with pytest.warns(UserWarning, match="short"):
        ds = DenoiseDataset([movie, movie[:3]], names=["a", "short"], n_frames=3, patch_size=0, flows="zero")
    assert [ds.window(i) for i in range(len(ds))] == [(0, [0, 1, 2, 3]), (0, [5, 6, 7, 8]), (0, [6, 7, 8, 9])]
    assert ds.blanks[0] == [4]
    given = DenoiseDataset([movie], blanks=[[1, 4]], n_frames=3, flows="zero", patch_size=0)
    assert [given.window(i)[1][0] for i in range(len(given))] == [5, 6]
    with pytest.raises(DataError), pytest.warns(UserWarning, match="no run of 6"):
        DenoiseDataset([movie], n_frames=3, target="median", flows="zero", patch_size=0)  # needs 6 in a row


def test_dataset_refuses_bad_input():
    movie = np.random.default_rng(10).random((6, 8, 8, 1)).astype(np.float32)
    with pytest.raises(UserError):
        DenoiseDataset([movie * 5], n_frames=2, flows="zero")  # not normalised
    with pytest.raises(DataError):
        DenoiseDataset([movie], n_frames=2, patch_size=16, flows="zero")
    with pytest.raises(UserError):
        DenoiseDataset([movie, np.repeat(movie, 3, axis=3)], n_frames=2, patch_size=0, flows="zero")
    with pytest.raises(UserError):
        DenoiseDataset([movie], n_frames=2, patch_size=0, flows="farneback")


@pytest.mark.parametrize("cached", [False, True])
@pytest.mark.parametrize("mode", ["n2n", "median"])
def test_augmentation_keeps_input_target_neighbours_and_flows_aligned(monkeypatch, cached, mode):
    dx, dy = 1, -1
    movie = shifting_movie(12, 40, 44, channels=3, dx=dx, dy=dy)
    h, w = movie.shape[1:3]

    def patch_flow_fn(frames, method="pyflow", threads=0):
        return lambda src, dsts: [exact_flow(src, d, *frames[0].shape[:2], dx, dy) for d in dsts]

    monkeypatch.setattr(denoise_data, "frame_flow_fn", patch_flow_fn)
    monkeypatch.setattr(DenoiseDataset, "movie_flows",
                        lambda self, m, src, dsts: [exact_flow(src, d, h, w, dx, dy) for d in dsts])
    kwargs = dict(n_frames=3, target=mode, patch_size=24, flow_cache=MEMORY if cached else None)
    warped = DenoiseDataset([movie], warping=True, **kwargs)
    plain = DenoiseDataset([movie], warping=False, **kwargs)
    warped.reseed(0)
    plain.reseed(0)
    b = window_length(mode, 3)  # no frame is further than this from the input: beyond it no clamped border
    for i in range(16):
        index = i % len(warped)
        inp, target, neighbours, _, _ = warped[index]
        inp = inp.numpy()
        np.testing.assert_allclose(target.numpy()[:, b:-b, b:-b], inp[:, b:-b, b:-b], atol=1e-4)
        for nb in neighbours:
            np.testing.assert_allclose(nb.numpy()[:, b:-b, b:-b], inp[:, b:-b, b:-b], atol=1e-4)
        # the same draws without warping: the returned (flipped) flows must warp each neighbour onto the input
        p_inp, _, p_nbs, p_flows, _ = plain[index]
        assert torch.equal(p_inp, torch.from_numpy(inp))
        for nb, flow in zip(p_nbs, p_flows):
            back = warp_backward(nb.numpy().transpose(1, 2, 0), flow.numpy()).transpose(2, 0, 1)
            np.testing.assert_allclose(back[:, b:-b, b:-b], inp[:, b:-b, b:-b], atol=1e-4)


def test_gamma_is_drawn_once_for_the_whole_group():
    frame = smooth_pattern(16, 16)
    movie = np.stack([frame, frame[::-1], frame, frame[::-1], frame]).astype(np.float32)
    ds = DenoiseDataset([movie], n_frames=2, patch_size=0, flows="zero", gamma=(0.5, 0.5))
    ds.reseed(3)
    for i in range(8):
        inp, target, neighbours, _, _ = ds[i % len(ds)]
        expected = np.sort((movie[ds.window(i % len(ds))[1][1]] ** 0.5).ravel())
        np.testing.assert_allclose(np.sort(inp.numpy().ravel()), expected, atol=1e-6)  # flipped, gamma 0.5
        # target and neighbour are the same frame up to a flip, with the same gamma
        np.testing.assert_allclose(np.sort(target.numpy().ravel()), expected, atol=1e-6)
        np.testing.assert_allclose(np.sort(neighbours[0].numpy().ravel()), expected, atol=1e-6)
    plain = DenoiseDataset([movie], n_frames=2, patch_size=0, flows="zero", data_augmentation=False)[0]
    assert torch.equal(plain[0][0], torch.from_numpy(movie[1, :, :, 0]))


def test_dataset_eval_samples_are_deterministic_whole_frames():
    movie = np.random.default_rng(11).random((8, 12, 12, 1)).astype(np.float32)
    ds = DenoiseDataset([movie], n_frames=2, training=False, flows="zero")
    first, again = ds[2], ds[2]
    assert torch.equal(first[1], again[1]) and first[0].shape == (1, 12, 12)
    assert torch.equal(first[0][0], torch.from_numpy(movie[3, :, :, 0]))  # no flips or gamma: the centre frame


def test_flow_cache_computes_each_pair_once(monkeypatch, tmp_path):
    movie = shifting_movie(6, 32, 32, dx=1)
    calls = []
    real = denoise_data.compute_flows

    def counting(center, others, threads=0):
        calls.append(len(others))
        return real(center, others, threads=1)

    monkeypatch.setattr(denoise_data, "compute_flows", counting)
    ds = DenoiseDataset([movie], n_frames=2, target="n2n", patch_size=16, flow_cache=MEMORY)
    needed = sum(len(d) for d in ds.needed_pairs(0).values())
    assert needed == 2 * len(ds)  # n2n with nFrames 2: each centre frame to its two neighbours
    assert ds.precompute_flows() == needed
    calls.clear()
    for i in range(len(ds)):
        sample = ds[i]
        assert sample[3][0].shape == (2, 16, 16)
    assert calls == []
    disk = DenoiseDataset([movie], n_frames=2, target="n2n", patch_size=16, flow_cache=str(tmp_path / "flows"))
    disk[0]
    assert sum(calls) == 2
    calls.clear()
    reopened = DenoiseDataset([movie], n_frames=2, target="n2n", patch_size=16, flow_cache=str(tmp_path / "flows"))
    reopened[0]
    assert calls == []
    f_memory = ds.movie_flows(0, 1, [0, 2])
    f_disk = reopened.movie_flows(0, 1, [0, 2])
    for a, b, u in zip(f_memory, f_disk, (1.0, -1.0)):  # frame 1 -> 0 and 1 -> 2 of a movie moving 1 px per frame
        np.testing.assert_array_equal(a, b)
        assert a.dtype == np.float32
        np.testing.assert_allclose(np.median(b[0]), u, atol=0.1)


def test_dataset_with_pyflow_on_patches():
    movie = shifting_movie(5, 32, 32, channels=1, dx=1)
    ds = DenoiseDataset([movie], n_frames=2, target="n2n", patch_size=24, flow_threads=1, data_augmentation=False)
    for i in range(len(ds)):
        inp, target, neighbours, flows, _ = ds[i]
        assert inp.shape == target.shape == (1, 24, 24) and flows[0].shape == (2, 24, 24)
        assert abs(abs(float(flows[0][0].median())) - 1.0) < 0.1  # the neighbour is one frame (1 px) away
        # the target was aligned with pyflow's flow: much closer to the input than the unaligned neighbour
        aligned = float((target - inp)[:, 4:-4, 4:-4].abs().mean())
        assert aligned < 0.3 * float((neighbours[0] - inp)[:, 4:-4, 4:-4].abs().mean())


def test_cached_whole_frame_flows_are_cropped_with_the_patch(monkeypatch):
    movie = np.random.default_rng(12).random((6, 20, 22, 1)).astype(np.float32)
    ys, xs = np.mgrid[0:20, 0:22].astype(np.float32)

    def position_flows(self, m, src, dsts):  # whole-frame "flows" that tell where a pixel came from
        return [np.stack([xs, ys]) for _ in dsts]

    monkeypatch.setattr(DenoiseDataset, "movie_flows", position_flows)
    ds = DenoiseDataset([movie], n_frames=2, patch_size=8, flow_cache=MEMORY, data_augmentation=False)
    corners = set()
    for i in range(20):
        inp, _, _, flows, _ = ds[i % len(ds)]
        x0, y0 = int(flows[0][0, 0, 0]), int(flows[0][1, 0, 0])
        np.testing.assert_array_equal(flows[0][0].numpy(), xs[y0 : y0 + 8, x0 : x0 + 8])
        centre = ds.window(i % len(ds))[1][1]
        np.testing.assert_array_equal(inp[0].numpy(), movie[centre, y0 : y0 + 8, x0 : x0 + 8, 0])
        corners.add((y0, x0))
    assert len(corners) > 1


# ----------------------------------------------------------------------------------------------------------------
# The interleaved target, the single-frame windows, the mean base and the step's flows


def test_interleaved_sees_even_offsets_and_targets_the_unwarped_mean_of_the_two_between():
    rng = random.Random(0)
    for n_frames in (1, 3, 5, 7):
        length = window_length("interleaved", n_frames)
        assert length == max(3, 2 * n_frames - 1)
        assert denoise_data.network_frames("interleaved", length) == n_frames
        frames = [np.full((4, 5, 1), float(i)) for i in range(length)]
        asked = []

        def flow_fn(src, dsts, asked=asked):
            asked.extend(dsts)
            return [np.zeros((2, 4, 5), np.float32) for _ in dsts]

        inp, target, neighbours, flows, idx = make_sample(frames, "interleaved", rng, flow_fn)
        c = length // 2
        assert idx["input"] == c and idx["target"] == [c - 1, c + 1]
        offsets = [i - c for i in idx["neighbours"]]
        assert offsets == sorted(offsets) and sorted(abs(o) for o in offsets) == sorted(
            2 * k for k in range(1, n_frames // 2 + 1) for _ in (0, 1))
        assert len(neighbours) == len(flows) == n_frames - 1
        np.testing.assert_allclose(target, float(c))  # the mean of frames c - 1 and c + 1
        assert not set(asked) & {c - 1, c + 1}  # the target is never warped, so no flow is computed for it


def test_interleaved_needs_an_odd_nframes():
    with pytest.raises(UserError, match="odd nFrames"):
        window_length("interleaved", 4)
    with pytest.raises(UserError, match="odd number of frames"):
        denoise_data.network_frames("interleaved", 6)


@pytest.mark.parametrize("mode, length", [("n2n", 2), ("select", 2), ("median", 2), ("interleaved", 3)])
def test_single_frame_windows(mode, length):
    """nFrames 1 (the single-frame model): the input and a target, no neighbours."""
    assert window_length(mode, 1) == length
    frames = [np.full((4, 4, 1), float(i)) for i in range(length)]
    for seed in range(5):
        inp, target, neighbours, flows, idx = make_sample(frames, mode, random.Random(seed), zero_flow_fn(frames),
                                                          score_range=None)
        assert neighbours == [] and flows == []
        assert idx["input"] not in idx["target"]


def test_dataset_mean_base_is_the_mean_of_the_frames_the_network_sees():
    movie = shifting_movie(9, 24, 24, dx=1)
    for warping in (False, True):
        data = DenoiseDataset([movie], n_frames=3, target="interleaved", patch_size=16, warping=warping,
                              base="mean")
        data.reseed(0)
        inp, target, neighbours, flows, base = data[2]
        torch.testing.assert_close(base, torch.stack([inp] + neighbours).mean(dim=0))
        assert not torch.allclose(base, inp)
    frame_base = DenoiseDataset([movie], n_frames=3, target="interleaved", patch_size=16)[2]
    torch.testing.assert_close(frame_base[4], frame_base[0])
    with pytest.raises(UserError, match="residual base"):
        DenoiseDataset([movie], n_frames=3, base="median")


def test_skip_flows_leaves_flows_and_warping_to_the_training_step(monkeypatch):
    movie = shifting_movie(9, 24, 24, dx=1)
    asked = []
    real = denoise_data.compute_flows

    def counting(center, others, threads=0):
        asked.append(len(others))
        return real(center, others, threads)

    monkeypatch.setattr(denoise_data, "compute_flows", counting)
    data = DenoiseDataset([movie], n_frames=3, target="interleaved", patch_size=0, warping=True, base="mean",
                          data_augmentation=False, gamma=None)
    data.skip_flows = True
    inp, target, neighbours, flows, base = data[1]
    assert asked == [] and all(torch.count_nonzero(f) == 0 for f in flows)
    _, window = data.window(1)
    c = len(window) // 2
    for nb, d in zip(neighbours, (-2, 2)):  # the frames as they are: the step warps them with its own flows
        torch.testing.assert_close(nb, torch.from_numpy(movie[window[c + d]].transpose(2, 0, 1).copy()))
    data.skip_flows = False
    warped = data[1][2]
    assert asked and not torch.allclose(warped[0], neighbours[0])


def test_warp_backward_batch_equals_warp_backward():
    rng = np.random.default_rng(0)
    images = rng.random((3, 2, 11, 13)).astype(np.float32)
    flows = (rng.normal(0, 3, (3, 2, 11, 13))).astype(np.float32)  # some samples fall outside: clamped
    out = denoise_data.warp_backward_batch(torch.from_numpy(images), torch.from_numpy(flows)).numpy()
    for i in range(3):
        expected = warp_backward(images[i].transpose(1, 2, 0), flows[i]).transpose(2, 0, 1)
        np.testing.assert_allclose(out[i], expected, atol=1e-5)
    with pytest.raises(ValueError, match="flows"):
        denoise_data.warp_backward_batch(torch.zeros(1, 1, 4, 4), torch.zeros(1, 2, 4, 5))


def test_temporal_bin_averages_disjoint_groups_and_marks_blank_groups():
    movie = np.arange(7, dtype=np.float32)[:, None, None, None] * np.ones((7, 2, 3, 1), np.float32)
    binned, blank = denoise_data.temporal_bin(movie, [3], 2)
    assert binned.shape == (3, 2, 3, 1)  # the leftover frame 6 is dropped
    np.testing.assert_allclose(binned[:, 0, 0, 0], [0.5, 2.5, 4.5])
    assert blank == [1]  # frames 2 and 3, and 3 is blank
    same, same_blank = denoise_data.temporal_bin(movie, [3], 1)
    assert same is not None and np.array_equal(same, movie) and same_blank == [3]
    rng = np.random.default_rng(0)
    noise = rng.normal(0, 1, (400, 8, 8, 1)).astype(np.float32)
    assert np.std(denoise_data.temporal_bin(noise, [], 4)[0]) == pytest.approx(0.5, rel=0.05)  # noise / sqrt(4)
    with pytest.raises(UserError, match="at least 1"):
        denoise_data.temporal_bin(movie, [], 0)


def test_spatial_scale_area_averages_and_keeps_channels():
    movie = np.zeros((2, 8, 10, 1), np.float32)
    movie[:, :, ::2] = 1.0  # stripes of 1 px: area averaging by 2 gives 0.5 everywhere
    half = denoise_data.spatial_scale(movie, 0.5)
    assert half.shape == (2, 4, 5, 1)
    np.testing.assert_allclose(half, 0.5, atol=1e-6)
    colour = np.random.default_rng(0).random((3, 20, 20, 3)).astype(np.float32)
    assert denoise_data.spatial_scale(colour, 0.4).shape == (3, 8, 8, 3)
    np.testing.assert_array_equal(denoise_data.spatial_scale(colour, 1.0), colour)
    noise = np.random.default_rng(1).normal(0, 1, (4, 64, 64, 1)).astype(np.float32)
    assert np.std(denoise_data.spatial_scale(noise, 0.5)) == pytest.approx(0.5, rel=0.05)
    for bad in (0, 1.5):
        with pytest.raises(UserError, match="spatial scale"):
            denoise_data.spatial_scale(movie, bad)
