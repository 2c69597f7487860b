"""Smoke tests of bench/bench_denoise.py: its helpers, and whole runs on tiny inputs with tiny checkpoints (no
download: the SPIEPy topographs are replaced by small synthetic ones)."""

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
    assert set(outs) == {"levelled", "mean3", "mean5", "mean7", "mean3_blur", "tri5_blur"}
    assert all(v.shape == noisy.shape for v in outs.values())
    psnr_raw, ssim_raw = bench.reference_psnr_ssim(outs["levelled"], clean)
    psnr_mean, ssim_mean = bench.reference_psnr_ssim(outs["mean7"], clean)
    assert psnr_mean > psnr_raw and ssim_mean > ssim_raw  # a static scene: averaging helps
    assert bench.best_mean({"mean3": 1.0, "mean5": 3.0, "mean7": 2.0}) == "mean5"


def test_tri_weighted_mean_by_hand(bench):
    from denoise_eval import estimate_movie, gaussian_blur, tri_weighted_mean

    rng = np.random.default_rng(3)
    sub = rng.uniform(0, 1, size=(5, 6, 6, 1)).astype(np.float32)
    f = sub.astype(np.float64)
    # an end frame: frames 0, 1, 2 with weights 3, 2, 1
    np.testing.assert_allclose(tri_weighted_mean(sub, 0), (3 * f[0] + 2 * f[1] + f[2]) / 6, rtol=1e-6)
    # the middle frame with a blank neighbour (1): weights 1, 3, 2, 1 of frames 0, 2, 3, 4
    np.testing.assert_allclose(tri_weighted_mean(sub, 2, blank=[1]), (f[0] + 3 * f[2] + 2 * f[3] + f[4]) / 7,
                               rtol=1e-6)
    # a blank frame keeps itself: frames 0, 1, 2, 3 with weights 2, 3, 2, 1
    np.testing.assert_allclose(tri_weighted_mean(sub, 1, blank=[1]), (2 * f[0] + 3 * f[1] + 2 * f[2] + f[3]) / 8,
                               rtol=1e-6)
    # the last frame, next to a blank one (3): frames 2 and 4 with weights 1 and 3
    np.testing.assert_allclose(tri_weighted_mean(sub, 4, blank=[3]), (f[2] + 3 * f[4]) / 4, rtol=1e-6)
    movie = estimate_movie(sub, "tri5_blur", blank=[1])
    assert movie.shape == sub.shape and movie.dtype == np.float32
    np.testing.assert_allclose(movie[2], gaussian_blur(tri_weighted_mean(sub, 2, [1]), sigma=0.5),
                               rtol=1e-6)


def test_image_frames_avoid_blank(bench):
    assert bench.image_frames(9) == [3, 6]
    assert bench.image_frames(9, blank=[3, 6]) == [4, 7]
    assert bench.image_frames(2, blank=[0]) == [1]


# ------------------------------------------------------------------------------------------------- whole runs

TINY_DENOISER = dict(num_channels=1, base_filter=8, feat=8, num_stages=3, n_resblock=1, scale_factor=1)
MOVIE_SIDE = 32


@pytest.fixture
def fake_inputs(bench, tmp_path, monkeypatch):
    """Small synthetic topographs instead of the SPIEPy download, and a tiny noisy .npy movie; returns its path."""
    yy, xx = np.mgrid[0:48, 0:48]
    topographs = {"waves": (np.sin(xx / 3.0) + np.cos(yy / 5.0)) * 0.2, "bumps": np.sin(xx / 4.0) * np.sin(yy / 4.0)}
    monkeypatch.setattr(bench, "fetch_spiepy_wheel", lambda: "no-wheel")
    monkeypatch.setattr(bench, "load_topographs", lambda wheel: topographs)
    rng = np.random.default_rng(0)
    scene = np.sin(xx[:MOVIE_SIDE, :MOVIE_SIDE] / 2.5) + np.cos(yy[:MOVIE_SIDE, :MOVIE_SIDE] / 3.5)
    movie = scene[None] + rng.normal(0, 0.3, size=(12, MOVIE_SIDE, MOVIE_SIDE))
    path = str(tmp_path / "movie.npy")
    np.save(path, movie.astype(np.float32))
    return path


def save_tiny(path: str, nframes: int, extra=None) -> str:
    """A tiny grey denoising checkpoint (seeded random weights)."""
    import torch

    import checkpoint
    import rbpn

    torch.manual_seed(nframes)
    checkpoint.save_generator(path, rbpn.Net(nFrames=nframes, **TINY_DENOISER), extra=extra)
    return path


def run_bench(bench, capsys, movie: str, *extra: str) -> str:
    bench.main(["--size", "24", "--frames", "4", "--skip-speed", "--precision", "fp32", "--movie", movie, *extra])
    return capsys.readouterr().out


def single_rows(out: str):
    return [line for line in out.splitlines() if line.startswith("| single-frame model")]


def test_single_model_fills_its_row(bench, fake_inputs, tmp_path, capsys):
    out = run_bench(bench, capsys, fake_inputs)
    rows = single_rows(out)
    assert len(rows) == 2  # synthetic and real table
    assert all("not run: no --single-model given" in row for row in rows)
    assert sum(line.startswith("| triangular mean of 5 + Gaussian blur 0.5 px |") for line in out.splitlines()) == 2

    single = save_tiny(str(tmp_path / "single.pth"), 1)
    out = run_bench(bench, capsys, fake_inputs, "--single-model", single)
    assert f"single model {single}: nFrames 1" in out
    rows = single_rows(out)
    assert len(rows) == 2
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert "not run" not in row
        float(cells[1]), float(cells[2]), float(cells[3])  # scores, not a note
    synthetic_cells = [c.strip() for c in rows[0].strip("|").split("|")]
    float(synthetic_cells[4])  # the n2n proxy is scored too
    assert any("multi-frame model (--model) | not run: no --model given" in line for line in out.splitlines())
    lines = out.splitlines()
    for table_start in (i for i, line in enumerate(lines) if line.startswith("| method |")):
        labels = [line.split("|")[1].strip() for line in lines[table_start + 2:table_start + 9]]
        assert labels[3:] == ["mean of 3 + Gaussian blur 1 px", "triangular mean of 5 + Gaussian blur 0.5 px",
                              "single-frame model (--single-model)", "multi-frame model (--model)"]


def test_image_has_two_rows_of_panels(bench, fake_inputs, tmp_path, capsys):
    import cv2

    single = save_tiny(str(tmp_path / "single.pth"), 1)
    multi = save_tiny(str(tmp_path / "multi.pth"), 3, extra={"denoise": {"flows": "zero", "warping": True}})
    image = str(tmp_path / "out" / "real.png")
    out = run_bench(bench, capsys, fake_inputs, "--model", multi, "--single-model", single, "--image", image)
    assert f"image: {image}" in out
    png = cv2.imread(image, cv2.IMREAD_UNCHANGED)
    side = 2 * MOVIE_SIDE  # frames under 200 px are shown 2x
    panels = 4  # levelled input, mean of 5, multi-frame model, single-frame model
    assert png.dtype == np.uint8 and png.ndim == 2
    assert png.shape == (2 * (bench.IMAGE_TITLE_HEIGHT + side), panels * side + (panels - 1) * bench.IMAGE_GAP)
    assert os.listdir(os.path.dirname(image)) == ["real.png"]  # written atomically, no temporary left
    first = png[bench.IMAGE_TITLE_HEIGHT:bench.IMAGE_TITLE_HEIGHT + side, :side]
    assert first.std() > 10  # the input frame, shown at its 1-99 percentile range
    assert (png[:bench.IMAGE_TITLE_HEIGHT, :side] < 128).any()  # title text
