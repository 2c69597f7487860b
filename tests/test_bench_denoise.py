"""Smoke tests of bench/bench_denoise.py's helpers (no download, no model)."""

import importlib.util
import os
import struct

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def bench():
    """The benchmark script as a module."""
    spec = importlib.util.spec_from_file_location("bench_denoise", os.path.join(ROOT, "bench", "bench_denoise.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_read_topograph_finds_header_from_size(bench):
    image = np.arange(16 * 16, dtype="<f8").reshape(16, 16) * 1e-10
    data = struct.pack("<II", 16, 16) + image.tobytes()
    np.testing.assert_array_equal(bench.read_topograph(data), image)
    np.testing.assert_array_equal(bench.read_topograph(image.tobytes()), image)  # no header at all
    with pytest.raises(ValueError):
        bench.read_topograph(struct.pack("<II", 8, 32) + image.tobytes())


def test_drifting_sequence_is_seeded_and_moves(bench):
    yy, xx = np.mgrid[0:64, 0:64]
    topo = np.sin(xx / 3.0) + np.cos(yy / 5.0)
    a = bench.drifting_sequence(topo, 4, 32, np.random.default_rng(1))
    b = bench.drifting_sequence(topo, 4, 32, np.random.default_rng(1))
    assert a.shape == (4, 32, 32)
    np.testing.assert_array_equal(a, b)
    assert np.abs(a[0] - a[3]).mean() > 1e-3  # the frames drift
    with pytest.raises(ValueError):
        bench.drifting_sequence(topo, 4, 65, np.random.default_rng(1))


def test_scan_noise_has_line_offsets_and_scars(bench):
    clean = np.zeros((3, 50, 40))
    noisy = bench.add_scan_noise(clean, np.random.default_rng(0), 1.0)
    assert noisy.shape == clean.shape
    row_means = (noisy - clean).mean(axis=2)
    assert row_means.std() > bench.LINE_SIGMA / 2  # per-row offsets, beyond the Gaussian's
    assert np.abs(noisy).max() > bench.SCAR_HEIGHT[0]
    np.testing.assert_array_equal(noisy, bench.add_scan_noise(clean, np.random.default_rng(0), 1.0))


def test_baselines_and_scores(bench):
    rng = np.random.default_rng(0)
    clean = np.repeat(rng.uniform(0.2, 0.8, size=(1, 24, 24, 1)), 7, axis=0).astype(np.float32)
    noisy = clean + rng.normal(0, 0.05, size=clean.shape).astype(np.float32)
    outs = bench.baseline_outputs(noisy)
    assert set(outs) == {"levelled", "mean3", "mean5", "mean7", "mean3_blur"}
    assert all(v.shape == noisy.shape for v in outs.values())
    psnr_raw, ssim_raw = bench.reference_psnr_ssim(outs["levelled"], clean)
    psnr_mean, ssim_mean = bench.reference_psnr_ssim(outs["mean7"], clean)
    assert psnr_mean > psnr_raw and ssim_mean > ssim_raw  # a static scene: averaging helps
    assert bench.best_mean({"mean3": 1.0, "mean5": 3.0, "mean7": 2.0}) == "mean5"
