"""iSeeBetterTest.py --denoise end to end with tiny denoisers, blended tiles, blank frames, bad inputs, and the
no-reference score of denoise_eval."""

import json
import os

import cv2
import numpy as np
import pytest
import torch
from conftest import TINY_NET, run_tester, tame
from test_scans import asd_bytes, levels, write_asd
from torch import nn

import denoise_data
import denoise_eval
import denoise_job
import inference
import iSeeBetterTest as tester
import scans
from errors import UserError
from video_io import video_info, write_video

METHODS = ("raw", "mean3", "mean5", "mean7", "mean3_blur", "model")
GREY_NET = dict(TINY_NET, num_channels=1, scale_factor=1)


def _cli(argv, capsys):
    """The tester with --denoise tests the model's own path (--method model) unless a test names a --method; the
    default, --method auto, has its own tests in tests/test_denoise_job.py."""
    if "--denoise" in argv and "--method" not in argv:
        argv = [*argv, "--method", "model"]
    return run_tester(argv, capsys)


def _save(tmp_path, name, net, extra=None):
    import checkpoint

    path = tmp_path / name
    checkpoint.save_generator(str(path), net, extra=extra)
    return str(path)


@pytest.fixture
def grey_ckpt(tmp_path):
    import rbpn

    torch.manual_seed(0)
    return _save(tmp_path, "grey.pth", tame(rbpn.Net(**GREY_NET)))


def _scene(t_count, h, w, shift=0.0, channels=0):
    """A smooth pattern drifting ``shift`` px per frame: (T, H, W), or (T, H, W, C) with ``channels``."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    frames = []
    for t in range(t_count):
        x = xx + shift * t
        frames.append(0.5 + 0.2 * np.sin(x / 4) * np.cos(yy / 5) + 0.1 * np.sin((x + yy) / 9))
    movie = np.stack(frames)
    if channels:
        movie = np.stack([movie * (0.8 + 0.1 * c) for c in range(channels)], axis=3)
    return movie.astype(np.float32)


def _nm_movie(t_count=7, h=24, w=32, seed=0, channels=0):
    """A clean and a noisy movie in nm around 100 nm (amplitude ~1 nm, noise 0.3 nm)."""
    clean = 100.0 + 4.0 * (_scene(t_count, h, w, 0.5, channels) - 0.5)
    noisy = clean + np.random.default_rng(seed).normal(0.0, 0.3, clean.shape)
    return clean.astype(np.float32), noisy.astype(np.float32)


@pytest.fixture
def movie(tmp_path):
    """A noisy 7-frame 24x32 grey movie in nm (T, H, W) .npy, and its clean version."""
    clean, noisy = _nm_movie()
    np.save(tmp_path / "scan.npy", noisy)
    np.save(tmp_path / "clean.npy", clean)
    return tmp_path / "scan.npy"


def _one_error(err: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("error:") or ": error:" in line]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def _denoise(movie_path, out, ckpt, capsys, *extra):
    code, err = _cli(["--denoise", "-i", str(movie_path), "-o", str(out), "-m", ckpt, "--device", "cpu", *extra],
                     capsys)
    assert code == 0, err
    return err


def _files(folder):
    return sorted(os.path.relpath(os.path.join(b, n), folder) for b, _, names in os.walk(folder) for n in names)


# -------------------------------------------------------------------------------------------------- end to end


def test_denoise_writes_every_output_in_the_input_units(movie, grey_ckpt, tmp_path, capsys):
    out = tmp_path / "out"
    _denoise(movie, out, grey_ckpt, capsys, "--no-level")
    noisy = np.load(movie)
    result = np.load(out / "scan.npy")
    assert result.shape == noisy.shape == (7, 24, 32) and result.dtype == np.float32
    # Back in nm around 100 (Normalisation.inverse), not on the network's [0, 1] scale.
    assert 95 < result.min() and result.max() < 105 and abs(float(np.median(result)) - 100) < 2

    pngs = sorted(os.listdir(out / "scan"))
    assert pngs == [f"{t:05d}.png" for t in range(7)]  # named by frame index, from 0 like metrics.json
    first = cv2.imread(str(out / "scan" / "00000.png"), cv2.IMREAD_UNCHANGED)
    assert first.dtype == np.uint16 and first.shape == (24, 32) and first.max() > 255
    info = video_info(str(out / "scan.mp4"))
    assert info["frame_count"] == 7 and (info["width"], info["height"]) == (32, 24)
    compare = cv2.imread(str(out / "scan_compare.png"))
    assert compare is not None and compare.shape[0] > 3 * 24

    report = json.loads((out / "metrics.json").read_text())
    entry = report["movies"]["scan"]
    assert entry["frames"] == 7 and entry["blank_frames"] == entry["corrupt_frames"] == [] and \
        entry["outlier_pixels"] == {} and entry["normalisation"]["levelled"] is False
    assert report["movies_pending"] == []
    n2n = entry["no_reference"]["n2n_psnr"]
    assert set(n2n) == set(METHODS) and all(np.isfinite(v) for v in n2n.values())
    assert entry["no_reference"]["frames"] == 2  # indices 2 and 4 have both held-out neighbours (1|3, 3|5)
    assert set(entry["ssim_to_cleanest"]["ssim"]) == set(METHODS)
    assert set(entry["noise_blur"]) == {"streak_score", "laplacian_variance"}
    assert report["average"]["n2n_psnr"] == n2n
    assert report["protocol"]["settings"]["from_checkpoint"] is False and "n2n_psnr" in report["protocol"]


def test_levelling_is_on_by_default_and_the_output_stays_levelled(movie, grey_ckpt, tmp_path, capsys):
    out = tmp_path / "out"
    _denoise(movie, out, grey_ckpt, capsys, "--no-eval")
    result = np.load(out / "scan.npy")
    # Each row's median was subtracted before denoising: the output is in nm around 0, not around 100.
    assert result.shape == (7, 24, 32) and np.abs(result).max() < 5
    report = json.loads((out / "metrics.json").read_text())
    assert report["movies"]["scan"]["normalisation"]["levelled"] is True
    assert "no_reference" not in report["movies"]["scan"]  # --no-eval


def test_reference_gives_psnr_and_ssim_of_output_and_raw(movie, grey_ckpt, tmp_path, capsys):
    out = tmp_path / "out"
    _denoise(movie, out, grey_ckpt, capsys, "--no-level", "--reference", str(tmp_path / "clean.npy"))
    ref = json.loads((out / "metrics.json").read_text())["movies"]["scan"]["reference"]
    assert ref["frames"] == 7 and set(ref["psnr"]) == set(ref["ssim"]) == {"raw", "model"}
    # The raw PSNR on the reference's own [0, 1] scale (its 0.5/99.5 percentiles), computed here independently from
    # the input as the network saw it (clipped to the input's own percentiles).
    clean, ref_norm, _ = denoise_data.preprocess(np.load(tmp_path / "clean.npy"), level=False)
    seen, norm, _ = denoise_data.preprocess(np.load(movie), level=False)
    raw = ref_norm.forward(norm.inverse(seen))
    expected = np.mean([10 * np.log10(1 / np.mean((raw[t].astype(np.float64) - clean[t]) ** 2)) for t in range(7)])
    assert ref["psnr"]["raw"] == pytest.approx(expected, abs=1e-3)
    assert 0 < ref["ssim"]["raw"] < 1 and np.isfinite(ref["psnr"]["model"])


def test_blank_frames_are_passed_through_unchanged(tmp_path, grey_ckpt, capsys):
    _, noisy = _nm_movie(t_count=9)
    noisy[3] = 7.0
    np.save(tmp_path / "blank.npy", noisy)
    out = tmp_path / "out"
    err = _denoise(tmp_path / "blank.npy", out, grey_ckpt, capsys)
    assert "blank: blank (constant) frame(s) 3 (frames 0-8): passed through unchanged" in err
    result = np.load(out / "blank.npy")
    assert np.all(result[3] == 7.0) and np.all(np.isfinite(result))
    entry = json.loads((out / "metrics.json").read_text())["movies"]["blank"]
    assert entry["blank_frames"] == [3]
    assert entry["no_reference"]["frames"] == 1  # only index 6 keeps both held-out neighbours (5 and 7)


def test_net2_checkpoint_denoises(movie, tmp_path, capsys):
    import rbpn

    torch.manual_seed(0)
    ckpt = _save(tmp_path, "net2.pth", tame(rbpn.Net2(**dict(GREY_NET, scale_factor=2))))
    out = tmp_path / "out"
    err = _denoise(movie, out, ckpt, capsys, "--no-eval")
    assert "Net2" in err
    assert np.load(out / "scan.npy").shape == (7, 24, 32)


def test_colour_movie(tmp_path, capsys):
    import rbpn

    torch.manual_seed(0)
    ckpt = _save(tmp_path, "colour.pth", tame(rbpn.Net(**dict(GREY_NET, num_channels=3))))
    _, noisy = _nm_movie(t_count=5, channels=3)
    np.save(tmp_path / "rgb.npy", noisy)
    out = tmp_path / "out"
    _denoise(tmp_path / "rgb.npy", out, ckpt, capsys, "--no-level")
    result = np.load(out / "rgb.npy")
    assert result.shape == (5, 24, 32, 3) and result.dtype == np.float32
    png = cv2.imread(str(out / "rgb" / "00003.png"), cv2.IMREAD_UNCHANGED)
    assert png.dtype == np.uint16 and png.shape == (24, 32, 3)
    assert video_info(str(out / "rgb.mp4"))["frame_count"] == 5
    n2n = json.loads((out / "metrics.json").read_text())["movies"]["rgb"]["no_reference"]["n2n_psnr"]
    assert set(n2n) == set(METHODS)


def test_checkpoint_denoise_settings_are_applied(movie, tmp_path, capsys, monkeypatch):
    import rbpn

    torch.manual_seed(0)
    net = tame(rbpn.Net(**GREY_NET))
    ckpt = _save(tmp_path, "zero.pth", net, extra={"denoise": {"warping": True, "flows": "zero", "level": False,
                                                               "channel": "topography", "target": "median"}})

    def no_pyflow(*args, **kwargs):
        raise AssertionError("pyflow ran although the checkpoint was trained with zero flows")

    monkeypatch.setattr(denoise_data, "compute_flows", no_pyflow)
    out = tmp_path / "out"
    err = _denoise(movie, out, ckpt, capsys, "--no-eval")
    settings = json.loads((out / "metrics.json").read_text())["protocol"]["settings"]
    assert settings == {"warping": True, "flows": "zero", "level": False, "trained_channel": "topography",
                        "from_checkpoint": True}
    assert "trained on channel topography" in err  # this movie is grey
    assert abs(float(np.median(np.load(out / "scan.npy"))) - 100) < 2  # the checkpoint's level: False
    _denoise(movie, tmp_path / "out2", ckpt, capsys, "--no-eval", "--level")  # the option overrides it
    assert json.loads((tmp_path / "out2" / "metrics.json").read_text())["protocol"]["settings"]["level"] is True


def test_asd_movie_is_read_in_the_checkpoints_channel(tmp_path, capsys):
    import rbpn

    torch.manual_seed(0)
    ckpt = _save(tmp_path, "phase.pth", tame(rbpn.Net(**GREY_NET)), extra={"denoise": {"channel": "phase"}})
    path = write_asd(tmp_path / "scan.asd", 1, [levels(5, 16, 20), levels(5, 16, 20, seed=1)], frame_time=250.0)
    out = tmp_path / "out"
    err = _denoise(path, out, ckpt, capsys, "--no-eval")
    entry = json.loads((out / "metrics.json").read_text())["movies"]["scan"]
    assert entry["channel"] == "phase" and entry["unit"] == "deg" and "trained on channel" not in err
    assert np.load(out / "scan.npy").shape == (5, 16, 20) and "(4 fps)" in err  # 250 ms per frame
    err = _denoise(path, tmp_path / "out2", ckpt, capsys, "--no-eval", "--channel", "topography")
    assert "trained on channel phase, this is topography" in err
    one = write_asd(tmp_path / "one.asd", 1, [levels(5, 16, 20)], kinds=("TP", ""))
    code, err = _cli(["--denoise", "-i", one, "-o", str(tmp_path / "out3"), "-m", ckpt], capsys)
    assert code == 2 and "trained on channel phase; pass --channel" in _one_error(err)


def test_short_movie_is_padded_by_the_edge_rule_like_upscaling(tmp_path, grey_ckpt, capsys):
    _, noisy = _nm_movie(t_count=2)
    np.save(tmp_path / "two.npy", noisy)
    out = tmp_path / "out"
    err = _denoise(tmp_path / "two.npy", out, grey_ckpt, capsys, "--edge", "reflect")
    assert np.load(out / "two.npy").shape == (2, 24, 32)
    assert "too few for the no-reference scores" in err


# ------------------------------------------------------------------------- frame checks and odd inputs (issue 22)


def _entry(out, name):
    return json.loads((out / "metrics.json").read_text())["movies"][name]


def _warning_lines(err):
    return [line for line in err.splitlines() if line.startswith("[ WARNING]")]


def test_one_spike_pixel_is_reported_and_every_frame_is_denoised(tmp_path, grey_ckpt, capsys):
    """D12: one 1e4 pixel (2000x the movie's range) used to make the other 7 frames 'blank', passed through."""
    _, noisy = _nm_movie(t_count=8)
    noisy[3, 5, 5] = 1e4
    np.save(tmp_path / "spike.npy", noisy)
    out = tmp_path / "out"
    err = _denoise(tmp_path / "spike.npy", out, grey_ckpt, capsys, "--no-level", "--no-eval")
    (line,) = _warning_lines(err)
    assert "spike: frame 3 (frames 0-7): 1 outlier pixel (the most extreme is 1e+04;" in line
    result = np.load(out / "spike.npy")
    assert all(not np.allclose(result[t], noisy[t], atol=1e-3) for t in range(8))  # every frame denoised
    entry = _entry(out, "spike")
    assert entry["blank_frames"] == entry["corrupt_frames"] == [] and entry["outlier_pixels"] == {"3": 1}


def test_garbage_in_one_asd_frame_is_reported_corrupt_and_the_others_are_denoised(tmp_path, grey_ckpt, capsys):
    """D11: 1000 random bytes in frame 0's levels used to make the seven good frames 'blank'."""
    rng = np.random.default_rng(7)
    tp = np.clip(2048 + 40 * np.sin(np.arange(32) / 5)[None, None, :] + rng.normal(0, 8, (8, 24, 32)), 0, 4095)
    data = bytearray(asd_bytes(1, [tp.astype(np.int16)], kinds=("TP", "")))
    start = len(data) - 8 * (32 + 2 * 24 * 32)  # frame 0's header
    data[start + 100 : start + 1100] = rng.integers(0, 256, size=1000, dtype=np.uint8).tobytes()
    path = tmp_path / "garbage.asd"
    path.write_bytes(bytes(data))
    out = tmp_path / "out"
    err = _denoise(path, out, grey_ckpt, capsys, "--no-level", "--no-eval")
    (line,) = _warning_lines(err)
    assert "garbage: frame 0 (frames 0-7): corrupt (its values spread " in line and "blank" not in line
    assert line.endswith("passed through unchanged, never used as a neighbour")
    raw = scans.read_movie(str(path)).frames[..., 0]
    result = np.load(out / "garbage.npy")
    np.testing.assert_array_equal(result[0], raw[0])  # kept as read
    assert all(not np.allclose(result[t], raw[t], atol=1e-3) for t in range(1, 8))
    entry = _entry(out, "garbage")
    assert entry["corrupt_frames"] == [0] and entry["blank_frames"] == [] and entry["unit"] == "nm"


def test_keep_truncated_keeps_the_complete_frames_of_a_cut_asd(tmp_path, grey_ckpt, capsys):
    """D02: only the phase channel is cut by one byte; the topography is whole."""
    path = tmp_path / "cut.asd"
    path.write_bytes(asd_bytes(1, [levels(6, 16, 20), levels(6, 16, 20, seed=1)])[:-1])
    refused = tmp_path / "refused"
    code, err = _cli(["--denoise", "-i", str(path), "-o", str(refused), "-m", grey_ckpt, "--device", "cpu"], capsys)
    line = _one_error(err)
    assert code == 2 and "is truncated" in line and "pass --keep_truncated to keep the 6 complete frames" in line
    assert not refused.exists() or _files(refused) == []
    out = tmp_path / "kept"
    err = _denoise(path, out, grey_ckpt, capsys, "--no-eval", "--keep_truncated")
    assert "keeping the 6 complete frames" in err
    assert np.load(out / "cut.npy").shape == (6, 16, 20) and len(os.listdir(out / "cut")) == 6


def test_an_all_blank_movie_is_passed_through_with_one_warning(tmp_path, grey_ckpt, capsys):
    """D17: the tester said 'nothing to train on' and stopped."""
    frames = np.full((4, 24, 32), 3.0, np.float32)
    frames[2] = 5.0
    np.save(tmp_path / "const.npy", frames)
    out = tmp_path / "out"
    err = _denoise(tmp_path / "const.npy", out, grey_ckpt, capsys)
    assert _warning_lines(err) == ["[ WARNING] const: all 4 frames (frames 0-3) are blank (constant): the movie is "
                                   "passed through unchanged (outputs written as read, no scores)"]
    assert "train" not in err
    np.testing.assert_array_equal(np.load(out / "const.npy"), frames)
    assert sorted(os.listdir(out / "const")) == [f"{t:05d}.png" for t in range(4)]
    assert video_info(str(out / "const.mp4"))["frame_count"] == 4 and (out / "const_compare.png").is_file()
    entry = _entry(out, "const")
    assert entry["passed_through"] is True and entry["blank_frames"] == [0, 1, 2, 3] and "no_reference" not in entry


def test_a_grey_video_uses_the_grey_model_and_a_colour_one_is_refused(tmp_path, grey_ckpt, capsys):
    """D34: videos decode as RGB, so a grey AFM movie exported to mp4 could never use a grey denoiser."""
    _, noisy = _nm_movie(t_count=5)
    grey = [np.repeat(np.clip((f - 98.0) * 60.0, 0, 255).astype(np.uint8)[..., None], 3, axis=2) for f in noisy]
    write_video(str(tmp_path / "afm.mp4"), grey, 10)
    out = tmp_path / "out"
    err = _denoise(tmp_path / "afm.mp4", out, grey_ckpt, capsys, "--no-eval")
    assert "afm: the video is grey content stored as RGB" in err
    assert np.load(out / "afm.npy").shape == (5, 24, 32)
    entry = _entry(out, "afm")
    assert entry["channels"] == 1 and entry["channel"] == "grey"
    tinted = [np.concatenate([f[..., :2], f[..., 2:] // 2], axis=2) for f in grey]
    write_video(str(tmp_path / "tint.mp4"), tinted, 10)
    code, err = _cli(["--denoise", "-i", str(tmp_path / "tint.mp4"), "-o", str(tmp_path / "o2"), "-m", grey_ckpt],
                     capsys)
    line = _one_error(err)
    assert code == 2 and "tint.mp4 is a colour video (its colour channels differ by " in line
    assert line.endswith("convert the video to grey first, or pass a model trained on colour data")


def test_a_tiff_stack_file_is_a_movie(tmp_path, grey_ckpt, capsys):
    """D22: a multi-page TIFF given as --input was 'not a movie'."""
    import tifffile

    _, noisy = _nm_movie(t_count=6)
    pages = ((noisy - noisy.min()) / np.ptp(noisy) * 60000).astype(np.uint16)
    tifffile.imwrite(str(tmp_path / "stack.tif"), pages, photometric="minisblack")
    out = tmp_path / "out"
    _denoise(tmp_path / "stack.tif", out, grey_ckpt, capsys, "--no-eval")
    assert np.load(out / "stack.npy").shape == (6, 24, 32)
    assert sorted(os.listdir(out / "stack")) == [f"{t:05d}.png" for t in range(6)]
    assert _entry(out, "stack")["unit"] == "a.u."
    _denoise(tmp_path / "stack.tif", out, grey_ckpt, capsys, "--no-eval")  # a rerun replaces its own 0-based frames


def test_each_movie_is_written_when_done_with_progress_over_movies(tmp_path, grey_ckpt, capsys, monkeypatch):
    """Issue 20: a movie's outputs (and metrics.json) are written as soon as it is done; tqdm over the movies and
    their frames unless --no-progress."""
    folder = tmp_path / "movies"
    folder.mkdir()
    for seed, name in enumerate(("a", "b")):
        np.save(folder / f"{name}.npy", _nm_movie(t_count=4, seed=seed)[1])
    real = denoise_job.denoise_movie

    def stop_at_b(job, *args, **kwargs):
        if job.name == "b":
            raise UserError("stopped at b")
        return real(job, *args, **kwargs)

    monkeypatch.setattr(denoise_job, "denoise_movie", stop_at_b)
    out = tmp_path / "out"
    code, err = _cli(["--denoise", "-i", str(folder), "-o", str(out), "-m", grey_ckpt, "--no-eval"], capsys)
    assert code == 2 and "stopped at b" in _one_error(err)
    assert np.load(out / "a.npy").shape == (4, 24, 32) and (out / "a_compare.png").is_file()
    report = json.loads((out / "metrics.json").read_text())
    assert list(report["movies"]) == ["a"] and report["movies_pending"] == ["b"]
    assert "movies:  50%" in err and "a: 100%" in err  # the bars over movies and over a's frames
    monkeypatch.setattr(denoise_job, "denoise_movie", real)
    err = _denoise(folder, tmp_path / "quiet", grey_ckpt, capsys, "--no-eval", "--no-progress")
    assert "%|" not in err and json.loads((tmp_path / "quiet" / "metrics.json").read_text())["movies_pending"] == []


# ------------------------------------------------------------------------------------------ tiles and windows


def test_ramp_weights_cross_fade_overlaps_and_cover_every_pixel():
    length, tile, overlap = 100, 32, 16
    total = np.zeros(length)
    for start, end, _, _ in inference._axis_tiles(length, tile, overlap):
        weights = inference.ramp_weights(start, end, length, overlap)
        if start > 0:
            assert np.all(weights[: overlap // 4] == 0)  # the pixels next to a cut are not used
        total[start:end] += weights
    assert np.all(total > 0.2)
    # Tiles overlapping by exactly `overlap` px sum to 1; the last tile (start 68) overlaps more and counts from 72.
    np.testing.assert_allclose(total[:72], 1.0, atol=1e-12)
    assert np.all(inference.ramp_weights(0, 32, 32, overlap) == 1.0)


def test_blended_tiles_equal_the_whole_frame_for_a_local_model():
    torch.manual_seed(0)
    conv = nn.Conv2d(1 + 3 * 2, 1, 3, padding=1)

    def local(x, neighbours, flows):
        return conv(torch.cat([x] + [torch.cat((n, f), 1) for n, f in zip(neighbours, flows)], 1))

    rng = np.random.default_rng(0)
    frames = [rng.random((37, 53, 1)).astype(np.float32) for _ in range(3)]
    flows = [rng.normal(0, 1, (2, 37, 53)).astype(np.float32) for _ in range(2)]
    model = nn.Module()
    model.forward = local
    model.conv = conv
    whole = inference.super_resolve(model, frames[0], frames[1:], flows, channels_last=False)
    tiled = inference.super_resolve(model, frames[0], frames[1:], flows, tile=16, overlap=8, blend=True,
                                    channels_last=False)
    torch.testing.assert_close(tiled, whole, atol=1e-5, rtol=0)


def test_blended_tiles_of_a_tiny_denoiser_are_within_0_01_without_seams():
    import rbpn

    torch.manual_seed(0)
    model = inference.prepare_model(tame(rbpn.Net(**GREY_NET)), torch.device("cpu"))
    rng = np.random.default_rng(0)
    clean = _scene(1, 96, 112)[0][..., None]
    frames = [np.clip(clean + rng.normal(0, 0.05, clean.shape), 0, 1).astype(np.float32) for _ in range(3)]
    flows = [np.zeros((2, 96, 112), np.float32)] * 2
    whole = inference.super_resolve(model, frames[0], frames[1:], flows)[0].numpy()
    tiled = inference.super_resolve(model, frames[0], frames[1:], flows, tile=48, overlap=24, blend=True)[0].numpy()
    assert whole.std() > 0.05  # a real output on the [0, 1] scale, not a constant
    diff = np.abs(tiled - whole)
    assert diff.max() < 0.01
    # Along every tile edge (where plain concatenation would show a seam) the output is as close as elsewhere.
    cuts_y = sorted({s for s, _, _, _ in inference._axis_tiles(96, 48, 24)} | {e for _, e, _, _ in
                                                                                 inference._axis_tiles(96, 48, 24)})
    cuts_x = sorted({s for s, _, _, _ in inference._axis_tiles(112, 48, 24)} | {e for _, e, _, _ in
                                                                                  inference._axis_tiles(112, 48, 24)})
    for y in [c for c in cuts_y if 0 < c < 96]:
        assert diff[y - 1 : y + 1].max() < 0.01
    for x in [c for c in cuts_x if 0 < c < 112]:
        assert diff[:, x - 1 : x + 1].max() < 0.01


def test_tiled_cli_output_matches_the_whole_frame_output(tmp_path, grey_ckpt, capsys):
    rng = np.random.default_rng(0)
    clean = 2.0 * _scene(4, 56, 72, 1.0)
    np.save(tmp_path / "big.npy", (clean + rng.normal(0, 0.15, clean.shape)).astype(np.float32))
    results = []
    for name, extra in (("whole", ["--precision", "fp32"]),
                        ("tiled", ["--precision", "fp32", "--tile", "40", "--tile_overlap", "24"])):
        _denoise(tmp_path / "big.npy", tmp_path / name, grey_ckpt, capsys, "--no-eval", *extra)
        norm = json.loads((tmp_path / name / "metrics.json").read_text())["movies"]["big"]["normalisation"]
        results.append(np.load(tmp_path / name / "big.npy") / (norm["hi"] - norm["lo"]))  # on the [0, 1] scale
    assert np.abs(results[1] - results[0]).max() < 0.01


class Recorder(nn.Module):
    """A stand-in denoiser that records the neighbours it is given and returns the frame plus 0.01."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))
        self.calls = []

    def forward(self, x, neighbours, flows):
        self.calls.append(([n.clone() for n in neighbours], [f.clone() for f in flows]))
        return x + 0.01 + self.weight


def test_blank_frames_are_never_neighbours_and_warping_aligns_neighbours():
    rng = np.random.default_rng(0)
    frames = [rng.random((12, 16, 1)).astype(np.float32) for _ in range(5)]
    frames[2][:] = 0.5
    seen = []

    def fake_flows(centre, neighbours, same):
        seen.append(list(same))
        return [np.full((2, 12, 16), 0.0 if s else 0.5, np.float32) for s in same]

    model = Recorder()
    items = [(f, t) for t, f in enumerate(frames)]
    results = list(inference.denoise_clip(model, items, 3, blank=[2], flow_fn=fake_flows, prefetch=False))
    assert [r[0] for r in results] == [0, 1, 2, 3, 4] and [r[1] for r in results] == [0, 1, 2, 3, 4]
    np.testing.assert_array_equal(results[2][3], frames[2])  # not denoised
    np.testing.assert_allclose(results[0][3], frames[0] + 0.01, atol=1e-6)
    assert len(model.calls) == 4  # the blank frame never reached the model
    # Frame 1's next neighbour (2) and frame 3's previous one are blank: the centre frame stands in, zero flow.
    assert seen[1] == [False, True] and seen[2] == [True, False]
    torch.testing.assert_close(model.calls[1][0][1][0], torch.from_numpy(frames[1]).permute(2, 0, 1))

    model = Recorder()
    list(inference.denoise_clip(model, items[:2], 3, warping=True, flow_fn=fake_flows, edge="clamp"))
    warped = denoise_data.warp_backward(frames[1], np.full((2, 12, 16), 0.5, np.float32))
    torch.testing.assert_close(model.calls[0][0][1][0], torch.from_numpy(warped).permute(2, 0, 1))


# --------------------------------------------------------------------------------------------------- bad input


def _write_bad(tmp_path, case):
    """(argv additions, expected text) for a bad-input case; files are written under tmp_path/in."""
    folder = tmp_path / "in"
    folder.mkdir()
    _, noisy = _nm_movie()
    if case == "wrong_shape":
        np.save(folder / "m.npy", np.zeros((4, 24, 32, 2), np.float32))
        return [str(folder / "m.npy")], [], "expected (T, H, W) or (T, H, W, C) with C = 1 or 3"
    if case == "two_d":
        np.save(folder / "m.npy", np.zeros((24, 32), np.float32))
        return [str(folder / "m.npy")], [], "expected (T, H, W)"
    if case == "nan":
        noisy[2, 5, 5] = np.nan
        np.save(folder / "m.npy", noisy)
        return [str(folder / "m.npy")], [], "NaN or infinite"
    if case == "truncated_asd":
        (folder / "m.asd").write_bytes(b"\x01\x00\x00\x00" + b"\x00" * 30)
        return [str(folder / "m.asd")], [], "ends inside its .asd header"
    if case == "unknown_channel":
        np.save(folder / "m.npy", noisy)
        return [str(folder / "m.npy")], ["--channel", "phase"], "channel 'phase' does not exist"
    if case == "too_small":
        np.save(folder / "m.npy", noisy[:, :8, :8])
        return [str(folder / "m.npy")], [], "pass --no-eval"
    if case == "reference_shape":
        np.save(folder / "m.npy", noisy)
        np.save(folder / "clean.npy", noisy[:5])
        return [str(folder / "m.npy")], ["--reference", str(folder / "clean.npy")], "pass the clean version"
    if case == "output_is_input_folder":
        np.save(folder / "m.npy", noisy)
        return [str(folder / "m.npy")], ["-o", str(folder)], "is an input of this run"
    raise AssertionError(case)


@pytest.mark.parametrize("case", ["wrong_shape", "two_d", "nan", "truncated_asd", "unknown_channel", "too_small",
                                  "reference_shape", "output_is_input_folder"])
def test_bad_movies_are_one_line_errors_and_nothing_is_written(case, tmp_path, grey_ckpt, capsys):
    inputs, extra, expected = _write_bad(tmp_path, case)
    before = {p: open(os.path.join(tmp_path, "in", p), "rb").read() for p in _files(tmp_path / "in")}
    out = tmp_path / "out"
    argv = ["--denoise", "-i", inputs[0], "-o", str(out), "-m", grey_ckpt, "--device", "cpu"] + extra
    code, err = _cli(argv, capsys)
    assert code == 2 and expected in _one_error(err)
    assert not out.exists() or _files(out) == []
    assert {p: open(os.path.join(tmp_path, "in", p), "rb").read() for p in _files(tmp_path / "in")} == before


def test_checkpoint_mismatches_are_one_line_errors(movie, grey_ckpt, tmp_path, capsys, monkeypatch):
    import rbpn

    torch.manual_seed(0)
    colour = _save(tmp_path, "colour.pth", rbpn.Net(**dict(GREY_NET, num_channels=3)))
    sr = _save(tmp_path, "sr.pth", rbpn.Net(**dict(TINY_NET, num_channels=1)))
    out = str(tmp_path / "out")
    base = ["--denoise", "-i", str(movie), "-o", out, "--device", "cpu"]
    code, err = _cli(base + ["-m", colour], capsys)
    assert code == 2 and "3 input channels (colour)" in _one_error(err) and "the data is grey" in err
    code, err = _cli(base + ["-m", sr], capsys)
    assert code == 2 and "super-resolution checkpoint; --denoise needs a denoising model" in _one_error(err)
    frames = tmp_path / "frames"
    frames.mkdir()
    for i in range(3):
        cv2.imwrite(str(frames / f"{i:03d}.png"), np.full((16, 16, 3), 40 * i, np.uint8))
    code, err = _cli(["-u", "-i", str(frames), "-o", out, "-m", grey_ckpt], capsys)
    assert code == 2 and "cannot upscale; add --denoise" in _one_error(err)
    code, err = _cli(base + ["-m", str(tmp_path / "nope.pth")], capsys)
    assert code == 2 and "nope.pth not found" in _one_error(err)
    monkeypatch.setattr(tester, "DEFAULT_DENOISE_WEIGHTS", os.path.join("weights", "no_such_denoiser.pth"))
    code, err = _cli(base, capsys)
    assert code == 2 and "is missing: restore it" in _one_error(err)
    bad = _save(tmp_path, "badflows.pth", rbpn.Net(**GREY_NET), extra={"denoise": {"flows": "farneback"}})
    code, err = _cli(base + ["-m", bad], capsys)
    assert code == 2 and "records flows 'farneback'" in _one_error(err)
    assert not os.path.exists(out) or _files(out) == []


@pytest.mark.parametrize("argv,expected", [
    (["--denoise", "-u"], "only apply to upscaling"),
    (["--denoise", "--frames", "1:3"], "only apply to upscaling"),
    (["--denoise", "-s", "4"], "only apply to upscaling"),
    (["--channel", "phase", "-u"], "only apply with --denoise"),
    (["--no-level", "-u"], "only apply with --denoise"),
    (["--denoise", "--reference", "clean.npy", "--no-eval"], "drop --no-eval"),
])
def test_options_of_the_other_mode_are_refused(argv, expected, movie, tmp_path, capsys):
    code, err = _cli(argv + ["-i", str(movie), "-o", str(tmp_path / "out")], capsys)
    assert code == 2 and expected in _one_error(err)


# ------------------------------------------------------------------------------------------------- denoise_eval


def _true_and_n2n(clean, noisy, model_sub=None):
    """{method: (true PSNR of its estimates of the scored frames against the clean frames, n2n_psnr)}."""
    sub, sub_blank = denoise_eval.subsample(noisy)
    ks = denoise_eval.held_out_indices(len(noisy))
    n2n = denoise_eval.no_reference_scores(noisy, (), model_sub)["n2n_psnr"]
    true = {m: float(np.mean([denoise_eval.psnr01(denoise_eval.estimate(sub, k, m, sub_blank, model_sub),
                                                  clean[2 * k]) for k in ks])) for m in n2n}
    return {m: (true[m], n2n[m]) for m in n2n}


def test_held_out_frames_are_never_among_the_seen_ones():
    assert denoise_eval.held_out_indices(7) == [1, 2]  # frames 2 and 4 between 1|3 and 3|5; 6 has no frame 7
    assert denoise_eval.held_out_indices(8) == [1, 2, 3]
    assert denoise_eval.held_out_indices(7, blank=[3]) == []  # frame 3 is held out for both
    assert denoise_eval.held_out_indices(2) == []
    frames = np.arange(7, dtype=np.float32).reshape(7, 1, 1, 1)
    sub, sub_blank = denoise_eval.subsample(frames, blank=[2, 3])
    assert sub[:, 0, 0, 0].tolist() == [0, 2, 4, 6] and sub_blank == [1]
    # A temporal mean of the subsampled movie only ever uses even frames, and skips blank ones.
    assert float(denoise_eval.temporal_mean(sub, 2, 5, sub_blank)[0, 0, 0]) == pytest.approx((0 + 4 + 6) / 3)


def test_temporal_averaging_scores_higher_than_raw_on_a_static_scene():
    clean = _scene(31, 48, 56)[..., None]
    noisy = (clean + np.random.default_rng(1).normal(0, 0.08, clean.shape)).astype(np.float32)
    scores = _true_and_n2n(clean, noisy)
    n2n = {m: v[1] for m, v in scores.items()}
    assert n2n["raw"] < n2n["mean3"] < n2n["mean5"] < n2n["mean7"]
    # Held-out noise is independent: the score's MSE is the true MSE plus half the noise variance, for every method.
    for true, score in scores.values():
        assert 10 ** (-score / 10) - 10 ** (-true / 10) == pytest.approx(0.08**2 / 2, rel=0.1)


@pytest.mark.parametrize("shift", [0.0, 0.6])
def test_no_reference_score_tracks_the_true_psnr_ordering(shift):
    clean = _scene(31, 48, 56, shift)[..., None]
    noisy = (clean + np.random.default_rng(2).normal(0, 0.08, clean.shape)).astype(np.float32)
    sub, _ = denoise_eval.subsample(noisy)
    over_smoothed = np.stack([denoise_eval.gaussian_blur(f, 3.0) for f in sub])  # a "model" that blurs too much
    scores = _true_and_n2n(clean, noisy, over_smoothed)
    names = list(scores)
    for a in names:
        for b in names:
            true_a, n2n_a = scores[a]
            true_b, n2n_b = scores[b]
            if true_a > true_b + 0.5:  # clearly better against the clean frames -> better score
                assert n2n_a > n2n_b, (a, b, scores)


def test_cleanest_pairs_pick_the_least_streaky_odd_target_and_even_input():
    clean = _scene(10, 24, 32)[..., None]
    rng = np.random.default_rng(3)
    streaks = [0.10, 0.08, 0.05, 0.02, 0.09, 0.07, 0.01, 0.06, 0.04, 0.03]
    frames = np.stack([clean[t] + streaks[t] * rng.normal(0, 1, (24, 1, 1)) for t in range(10)]).astype(np.float32)
    assert denoise_eval.cleanest_pairs(frames) == [(6, 3)]
    assert denoise_eval.cleanest_pairs(frames, blank=[6, 3]) == [(8, 9)]
    result = denoise_eval.ssim_to_cleanest(frames)
    assert result["blocks"] == 1 and set(result["ssim"]) == set(denoise_eval.BASELINES)


def test_reference_and_noise_scores_reward_the_clean_estimate():
    clean = _scene(6, 24, 32)[..., None]
    noisy = (clean + np.random.default_rng(4).normal(0, 0.05, clean.shape)).astype(np.float32)
    ref = denoise_eval.reference_scores(clean, noisy, clean)
    assert ref["psnr"]["model"] == 100.0 and ref["ssim"]["model"] == pytest.approx(1.0)
    assert ref["psnr"]["raw"] == pytest.approx(26.0, abs=0.3) and ref["frames"] == 6
    scores = denoise_eval.noise_blur_scores(noisy, clean)
    assert scores["laplacian_variance"]["model"] < scores["laplacian_variance"]["raw"]


def test_torch_flow_backend_denoises_like_the_cpp_flow(movie, grey_ckpt, tmp_path, capsys, monkeypatch):
    """--flow_backend torch in the denoise mode: the flows come from pyflow.torch_flow, the output stays close."""
    import pyflow.torch_flow as torch_flow

    calls = []
    real = torch_flow.flow_batch
    monkeypatch.setattr(torch_flow, "flow_batch", lambda *a, **k: calls.append(1) or real(*a, **k))
    outs = {}
    for backend in ("cpp", "torch"):
        _denoise(movie, tmp_path / backend, grey_ckpt, capsys, "--no-eval", "--precision", "fp32",
                 "--flow_backend", backend)
        outs[backend] = np.load(tmp_path / backend / "scan.npy")
    assert calls  # the torch run used the torch flow
    scale = np.percentile(outs["cpp"], 99.5) - np.percentile(outs["cpp"], 0.5)
    assert np.abs(outs["torch"] - outs["cpp"]).mean() / scale < 0.01


# ------------------------------------------------------------------------------------------- residual bases, nFrames 1


class Zero(nn.Module):
    """A denoiser whose correction is zero: with a residual base the output is the base itself."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))

    def forward(self, x, neighbours, flows):
        return x * 0 + self.weight


def test_mean_residual_adds_the_correction_to_the_mean_of_the_frames_seen():
    rng = np.random.default_rng(0)
    frames = [rng.random((6, 8, 1)).astype(np.float32) for _ in range(5)]
    items = [(f, t) for t, f in enumerate(frames)]
    out = {t: o for t, _, _, o in inference.denoise_clip(Zero(), items, 3, residual="mean", flows="zero",
                                                         prefetch=False)}
    np.testing.assert_allclose(out[2], (frames[1] + frames[2] + frames[3]) / 3, atol=1e-6)
    np.testing.assert_allclose(out[0], (2 * frames[0] + frames[1]) / 3, atol=1e-6)  # 'centre' edge: frame 0 twice
    frame_base = {t: o for t, _, _, o in inference.denoise_clip(Zero(), items, 3, residual="frame", flows="zero")}
    np.testing.assert_allclose(frame_base[2], frames[2], atol=1e-6)
    single = {t: o for t, _, _, o in inference.denoise_clip(Zero(), items, 1, residual="mean", flows="zero")}
    np.testing.assert_allclose(single[4], frames[4], atol=1e-6)  # nFrames 1: no neighbours, the mean is the frame


def test_single_frame_and_mean_base_checkpoints_denoise(movie, tmp_path, capsys):
    """A project checkpoint of the single-frame model (nFrames 1) and one trained with --residual_base mean run
    through the CLI; a zero-correction mean-base model's output is the plain temporal mean."""
    import rbpn

    torch.manual_seed(0)
    single = tame(rbpn.Net(**dict(GREY_NET, nFrames=1)))
    ckpt = _save(tmp_path, "single.pth", single, extra={"residual": "frame"})
    _denoise(movie, tmp_path / "single", ckpt, capsys, "--no-eval", "--precision", "fp32")
    assert np.load(tmp_path / "single" / "scan.npy").shape == (7, 24, 32)

    net = rbpn.Net(**GREY_NET)
    with torch.no_grad():
        net.output.conv.weight.zero_()
        net.output.conv.bias.zero_()
    ckpt = _save(tmp_path, "mean.pth", net, extra={"residual": "mean", "denoise": {"flows": "zero", "level": False}})
    _denoise(movie, tmp_path / "mean", ckpt, capsys, "--precision", "fp32", "--edge", "clamp")
    report = json.loads((tmp_path / "mean" / "metrics.json").read_text())["movies"]["scan"]
    scores = report["no_reference"]["n2n_psnr"]
    assert scores["model"] == pytest.approx(scores["mean3"], abs=0.02)  # the model is the 3-frame mean
