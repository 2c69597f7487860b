"""Classic denoising candidates and their SURE-based choice (denoise_methods), on tiny synthetic movies."""

import importlib.util
import os

import numpy as np
import pytest
from conftest import ROOT
from scipy.ndimage import gaussian_filter, shift

import denoise_methods as dm
from errors import UserError

_spec = importlib.util.spec_from_file_location("bench_methods", os.path.join(ROOT, "bench", "bench_methods.py"))
bench_methods = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench_methods)
row_noise = bench_methods.row_noise  # the bench's synthetic scan-line noise (AR(1) along the rows)

PLAIN = [dm.mean_candidate(n) for n in dm.MEAN_WINDOWS]


def ar1_covariance(rho: float, radius: int = 8) -> np.ndarray:
    """The covariance of ``row_noise`` of unit std: rho^|dx| along the rows, 0 across."""
    cov = np.zeros((2 * radius + 1, 2 * radius + 1))
    cov[radius] = rho ** np.abs(np.arange(-radius, radius + 1))
    return cov


def smooth_field(rng: np.random.Generator, shape, width: float) -> np.ndarray:
    """A smooth random field of unit standard deviation."""
    field = gaussian_filter(rng.standard_normal(shape), width, mode="wrap")
    return field / field.std()


def bump_movie(seed: int = 1, frames: int = 32, h: int = 48, w: int = 64):
    """A 12-unit Gaussian bump (sigma 2.8 px) crossing a still background at 1.5 px/frame, white noise of std 1:
    (clean, noisy, background, bump centres)."""
    rng = np.random.default_rng(seed)
    background = 2.0 * smooth_field(rng, (h, w), 4.0)
    yy, xx = np.mgrid[:h, :w]
    centres = [(h / 2, 6 + 1.5 * t) for t in range(frames)]
    clean = np.stack([background + 12.0 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * 2.8 ** 2))
                      for cy, cx in centres])
    return clean, clean + rng.standard_normal(clean.shape), background, centres


def kept_height(out: np.ndarray, clean: np.ndarray, background: np.ndarray, centres) -> float:
    """How much of the bump's height the output keeps at the bump's centre, frames 2 .. T-3."""
    kept = total = 0.0
    for t, (cy, cx) in list(enumerate(centres))[2:-2]:
        y, x = int(round(cy)), int(round(cx))
        kept += out[t, y, x] - background[y, x]
        total += clean[t, y, x] - background[y, x]
    return kept / total


def true_mse(candidate: dm.Candidate, noisy: np.ndarray, clean: np.ndarray) -> float:
    return float(np.mean((dm.apply(noisy, candidate) - clean) ** 2))


# ----------------------------------------------------------------------------------------------------------------
# Candidates


def test_window_mean_truncates_at_the_ends():
    frames = np.arange(6, dtype=np.float64)[:, None, None] * np.ones((6, 2, 3))
    assert dm.window_mean(frames, 0, 5)[0, 0] == pytest.approx(1.0)  # frames 0, 1, 2
    assert dm.window_mean(frames, 3, 5)[0, 0] == pytest.approx(3.0)  # frames 1 .. 5
    assert dm.window_count(6, 0, 5) == 3 and dm.window_count(6, 3, 5) == 5


def test_classic_candidates_names_and_kinds():
    cov = np.zeros((17, 17))
    cov[8, 8] = 0.01
    candidates = dm.classic_candidates(cov, max_window=7)
    names = [c.name for c in candidates]
    assert len(set(names)) == len(names)
    assert {"raw", "mean3", "mean7", "mean5+blur1.0", "mean3+tv", "mean5+tv", "mean3+nlm", dm.AUTO_LOCAL} <= set(names)
    assert "mean9" not in names
    assert dm.find_candidate(candidates, "mean3+tv").kind == dm.NONLINEAR
    assert dm.find_candidate(candidates, "mean5+blur1.0").kind == dm.LINEAR
    with pytest.raises(UserError, match="unknown denoising method 'mean99'.*mean5"):
        dm.find_candidate(candidates, "mean99")


def test_linear_divergence_of_mean_with_blur():
    cov = np.zeros((5, 5))
    cov[2, 2] = 2.0
    assert dm.linear_divergence(dm.mean_candidate(5), 9, 4, cov) == pytest.approx(2.0 / 5)
    assert dm.linear_divergence(dm.mean_candidate(5), 9, 0, cov) == pytest.approx(2.0 / 3)  # truncated window
    blurred = dm.linear_divergence(dm.mean_candidate(1, 1.0), 3, 1, cov)
    assert blurred == pytest.approx(2.0 * dm.kernel([1.0], 20)[20, 20], rel=1e-6)


# ----------------------------------------------------------------------------------------------------------------
# Noise covariance


def test_noise_covariance_finds_row_correlated_noise_under_drift():
    rng = np.random.default_rng(0)
    scene = smooth_field(rng, (64, 64), 3.0)
    clean = np.stack([shift(scene, (0.2 * t, 0.5 * t), order=3, mode="wrap") for t in range(24)])  # steady drift
    noisy = clean + row_noise(rng, clean.shape, 0.5, 0.7)
    cov = dm.noise_covariance(noisy)
    r = cov.shape[0] // 2
    assert cov[r, r] == pytest.approx(0.25, rel=0.08)
    assert cov[r, r + 1] / cov[r, r] == pytest.approx(0.7, abs=0.06)
    assert abs(cov[r + 1, r] / cov[r, r]) < 0.06


def test_frame_covariances_keep_a_noise_burst():
    rng = np.random.default_rng(1)
    noisy = smooth_field(rng, (1, 48, 48), 3.0) + 0.1 * rng.standard_normal((16, 48, 48))
    noisy[7] += 0.3 * rng.standard_normal((48, 48))  # frame 7: variance 0.01 + 0.09
    covs = dm.frame_covariances(noisy)
    r = covs.shape[-1] // 2
    assert covs[7, r, r] == pytest.approx(0.1, rel=0.25)
    assert np.delete(covs[:, r, r], 7) == pytest.approx(0.01, rel=0.15)


def test_noise_levels_follow_noise_that_varies_in_space():
    rng = np.random.default_rng(7)
    noisy = smooth_field(rng, (1, 48, 64), 3.0) + rng.standard_normal((20, 48, 64)) * np.where(
        np.arange(64) < 32, 1.0, 2.0)
    levels = dm.noise_levels(noisy, dm.frame_covariances(noisy))
    assert levels.shape == noisy.shape
    assert np.mean(levels[:, :, 4:28]) == pytest.approx(0.4, rel=0.15)  # variances 1 and 4, mean 2.5
    assert np.mean(levels[:, :, 36:60]) == pytest.approx(1.6, rel=0.15)


# ----------------------------------------------------------------------------------------------------------------
# SURE


def sure_movie(seed: int = 2):
    """(clean, noisy): a smooth scene changing slowly, with row-correlated noise of unit std (rho 0.7)."""
    rng = np.random.default_rng(seed)
    scene = 3.0 * smooth_field(rng, (64, 64), 4.0)
    clean = scene + 0.05 * np.arange(32)[:, None, None] * smooth_field(rng, (64, 64), 6.0)
    return clean, clean + row_noise(rng, clean.shape, 1.0, 0.7)


SURE_NAMES = ("mean3", "mean5+blur1.0", "raw+blur1.0", "mean3+tv")


def test_sure_matches_true_mse_with_row_noise():
    """With the true covariance SURE is off by its own sampling error only: about 1 % of the noise variance here
    (64 x 64 px, rows correlated 0.7 at lag 1: few independent pixels), a quarter of the risk of the strongest
    smoother."""
    clean, noisy = sure_movie()
    cov = ar1_covariance(0.7)
    candidates = [dm.find_candidate(dm.classic_candidates(cov, local=False), name) for name in SURE_NAMES]
    frames = list(range(32))
    risks = dm.sure_table(noisy, candidates, np.repeat(cov[None], 32, axis=0), frames)
    for candidate, row in zip(candidates, risks):
        truth = np.mean([(candidate.fn(noisy, t) - clean[t]) ** 2 for t in frames])
        assert abs(row.mean() - truth) < 0.025, candidate.name  # 2.5 % of the noise variance


def test_sure_with_the_estimated_covariance():
    """With the covariance estimated from the movie itself: within 5 % of the noise variance (an error in the
    estimated variance moves every risk by about as much)."""
    clean, noisy = sure_movie()
    covs = dm.frame_covariances(noisy)
    candidates = [dm.find_candidate(dm.classic_candidates(covs[0], local=False), name) for name in SURE_NAMES]
    frames = list(range(2, 30, 3))
    risks = dm.sure_table(noisy, candidates, covs, frames)
    for candidate, row in zip(candidates, risks):
        truth = np.mean([(candidate.fn(noisy, t) - clean[t]) ** 2 for t in frames])
        assert abs(row.mean() - truth) < 0.05, candidate.name


def test_mc_divergence_agrees_with_the_exact_one_and_restores_frames():
    rng = np.random.default_rng(3)
    noisy = row_noise(rng, (5, 48, 48), 1.0, 0.5)
    before = noisy.copy()
    cov = ar1_covariance(0.5)
    candidate = dm.mean_candidate(3, 1.0)
    exact = dm.linear_divergence(candidate, 5, 2, cov)
    estimate = dm.mc_divergence(noisy, candidate, 2, cov, candidate.fn(noisy, 2), rng, probes=16)
    assert estimate == pytest.approx(exact, rel=0.05)
    assert np.array_equal(noisy, before)


def test_static_movie_chooses_a_long_mean():
    rng = np.random.default_rng(4)
    noisy = smooth_field(rng, (1, 32, 32), 3.0) + 0.5 * rng.standard_normal((24, 32, 32))
    best, scores = dm.choose(noisy, PLAIN)
    assert best in ("mean15", "mean17", "mean19", "mean21")
    assert scores["mean21"] > scores["mean5"] + 3.0 > scores["raw"] + 6.0


def test_fast_changing_movie_chooses_raw_or_mean3():
    """Every frame adds new content (a random walk of smooth fields; content that is independent from frame to frame
    cannot be told from noise by any temporal method) under small noise."""
    rng = np.random.default_rng(5)
    steps = np.stack([smooth_field(rng, (32, 32), 2.0) for _ in range(24)])
    noisy = np.cumsum(steps, axis=0) + 0.2 * rng.standard_normal((24, 32, 32))
    best, _ = dm.choose(noisy, PLAIN)
    assert best in ("raw", "mean3")


def test_scores_are_db_of_the_risk_on_the_normalised_scale():
    rng = np.random.default_rng(6)
    noisy = 0.1 * rng.standard_normal((8, 32, 32))
    covs = dm.frame_covariances(noisy)
    _, scores = dm.choose(noisy, [dm.mean_candidate(1)], covs)
    assert scores["raw"] == pytest.approx(10 * np.log10(1 / np.median(covs[:, 8, 8])), abs=1e-9)  # raw: sigma^2
    assert scores["raw"] == pytest.approx(20.0, abs=0.3)


# ----------------------------------------------------------------------------------------------------------------
# Per-pixel choice


def test_local_weights_ignore_the_frame_they_weigh():
    _, noisy, _, _ = bump_movie(frames=12, h=32, w=40)
    cov = dm.noise_covariance(noisy)
    level = dm.noise_levels(noisy, dm.frame_covariances(noisy))[5]
    weights = dm.local_weights(noisy, 5, cov, level, dm.LOCAL_BASES, {})
    changed = noisy.copy()
    changed[5] += 5.0 * np.random.default_rng(0).standard_normal(changed[5].shape)
    changed_level = dm.noise_levels(changed, dm.frame_covariances(noisy))[5]
    assert np.array_equal(changed_level, level)
    assert np.array_equal(dm.local_weights(changed, 5, cov, level, dm.LOCAL_BASES, {}), weights)
    assert np.allclose(weights.sum(axis=0), 1.0)


def test_local_blend_keeps_a_moving_bump_and_beats_every_single_candidate():
    clean, noisy, background, centres = bump_movie()
    covs, levels, candidates = dm.movie_candidates(noisy)
    local = dm.find_candidate(candidates, dm.AUTO_LOCAL)
    assert kept_height(dm.apply(noisy, dm.mean_candidate(5)), clean, background, centres) < 0.8  # ~77 %
    assert kept_height(dm.apply(noisy, local), clean, background, centres) >= 0.95
    local_mse = true_mse(local, noisy, clean)
    for candidate in candidates:
        if candidate.name != dm.AUTO_LOCAL:
            assert local_mse < true_mse(candidate, noisy, clean), candidate.name
    best, _ = dm.choose(noisy, candidates, covs, levels)
    assert best == dm.AUTO_LOCAL


def test_local_blend_sure_is_exact():
    """auto-local is linear in the frame it estimates: with the true covariance its SURE is off by sampling error
    only (about 0.5 % of the noise variance here)."""
    clean, noisy, _, _ = bump_movie()
    cov = np.zeros((17, 17))
    cov[8, 8] = 1.0
    local = dm.local_candidate(cov)
    risks = dm.sure_table(noisy, [local], np.repeat(cov[None], 32, axis=0), range(32))
    assert risks.mean() == pytest.approx(true_mse(local, noisy, clean), abs=0.015)
