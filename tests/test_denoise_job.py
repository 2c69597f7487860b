"""denoise_job's pieces on their own: one-line write errors on a full disk, 0-based output names, grey content
in colour videos for a grey model, pass-through movies and the model's channel count from its checkpoint."""

import errno
import os

import numpy as np
import pytest
import torch
from conftest import TINY_NET, run_denoise, tame

import checkpoint
import denoise_job
import iSeeBetterTest as tester
import scans
from errors import UserError
from video_io import write_video

GREY_NET = dict(TINY_NET, num_channels=1, scale_factor=1)


def _args(movie: str, *extra: str):
    return tester.build_parser().parse_args(["--denoise", "--input", movie, *extra])


def _files(folder) -> list:
    return sorted(os.listdir(folder))


# ------------------------------------------------------------------------------------------------- write errors


def test_a_short_numpy_write_names_the_file_the_folder_and_the_free_space(tmp_path, monkeypatch):
    """Issue 22 D36: numpy's short write (an OSError without errno) was 'cannot access: N requested and M written'."""
    real_save = np.save

    def short_save(f, array):
        f.write(b"\x93NUMPY partial")  # numpy writes part of the data before it fails
        raise OSError("983040 requested and 524256 written")

    monkeypatch.setattr(np, "save", short_save)
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(UserError) as err:
        denoise_job.save_npy(str(out / "X.npy"), np.zeros((4, 8, 8), np.float32))
    message = str(err.value)
    assert message.startswith(f"no space left writing X.npy in {out} (needs about 1 KB, ")
    assert " free there)" in message
    assert message.endswith(": free some space or choose another --output") and "\n" not in message
    assert _files(out) == []  # no half-written file, under its name or a temporary one
    monkeypatch.setattr(np, "save", real_save)
    denoise_job.save_npy(str(out / "X.npy"), np.ones((2, 3, 3), np.float32))
    assert np.load(out / "X.npy").shape == (2, 3, 3) and _files(out) == ["X.npy"]


def test_a_full_disk_while_writing_a_frame_is_one_line_and_leaves_nothing(tmp_path, monkeypatch):
    import atomic

    def full(path, data, fsync=False):
        with atomic.atomic_path(path) as tmp, open(tmp, "wb") as f:
            f.write(data[:10])
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic, "write_bytes", full)
    folder = tmp_path / "out" / "scan"
    with pytest.raises(UserError, match=r"^no space left writing 00003.png in .*scan \(needs about 0 KB, [\d.]+ [MK]B "
                                        r"free there\): free some space or choose another --output$"):
        denoise_job.save_png16(str(folder / "00003.png"), np.zeros((4, 4, 1), np.float32))
    assert _files(folder) == []
    quota = denoise_job.write_error(OSError(errno.EDQUOT, "Disk quota exceeded"), str(tmp_path / "m.npy"))
    assert str(quota).startswith("the disk quota is exceeded writing m.npy in ")
    denied = denoise_job.write_error(OSError(errno.EACCES, "Permission denied"), str(tmp_path / "m.npy"))
    assert str(denied) == f"cannot write {tmp_path / 'm.npy'}: permission denied: check the permissions or choose " \
                          "another folder"


def test_too_little_space_for_the_npy_files_is_refused_before_any_work(tmp_path, monkeypatch):
    jobs = [denoise_job.MovieJob("a.npy", "a", (60, 128, 128, 1), True),
            denoise_job.MovieJob("b.npy", "b", (2, 8, 8, 3), False)]
    args = _args("in", "-o", str(tmp_path))
    monkeypatch.setattr(denoise_job, "free_bytes", lambda path: 2_000_000)
    with pytest.raises(UserError) as err:
        denoise_job.check_free_space(jobs, args)
    assert str(err.value) == (f"not enough space in {tmp_path} for the outputs: the .npy files alone need 3.9 MB, "
                              "2.0 MB are free there: free some space or choose another --output")
    monkeypatch.setattr(denoise_job, "free_bytes", lambda path: 4_000_000)
    denoise_job.check_free_space(jobs, args)


# ------------------------------------------------------------------------------------------------- names


def test_output_frames_are_planned_and_named_from_zero():
    clip = denoise_job.MovieClip("scan", video="scan.npy", frame_count=3)
    assert [clip.frame_name(t) for t in range(3)] == ["00000", "00001", "00002"]


# ------------------------------------------------------------------------------------------------- grey content


def _video(path, frames) -> str:
    write_video(str(path), frames, 10)
    return str(path)


def test_grey_content_video_is_read_as_grey_for_a_grey_model(tmp_path, caplog):
    rng = np.random.default_rng(0)
    grey = [np.repeat(rng.integers(0, 256, (24, 32, 1), dtype=np.uint8), 3, axis=2) for _ in range(3)]
    path = _video(tmp_path / "afm.mp4", grey)
    movie = scans.read_movie(path)
    args = _args(path)
    settings = denoise_job.DenoiseSettings(model_channels=1)
    with caplog.at_level("INFO"):
        converted = denoise_job.match_model_channels(movie, args, settings, "afm", log=True)
    assert converted.frames.shape == (3, 24, 32, 1) and converted.channel == "grey"
    assert "afm: the video is grey content stored as RGB" in caplog.text and "read as one grey channel" in caplog.text
    colour_model = denoise_job.DenoiseSettings(model_channels=3)
    assert denoise_job.match_model_channels(movie, args, colour_model, "afm", log=True) is movie


def test_a_colour_video_with_a_grey_model_says_it_is_colour(tmp_path):
    rng = np.random.default_rng(1)
    colour = [rng.integers(0, 256, (24, 32, 3), dtype=np.uint8) for _ in range(3)]
    path = _video(tmp_path / "colour.mp4", colour)
    args = _args(path, "-m", "grey.pth")
    with pytest.raises(UserError) as err:
        denoise_job.match_model_channels(scans.read_movie(path), args, denoise_job.DenoiseSettings(model_channels=1),
                                         "colour", log=True)
    message = str(err.value)
    assert message.startswith(f"{path} is a colour video (its colour channels differ by ")
    assert message.endswith("but the model grey.pth is grey (1 channel): convert the video to grey first, or pass a "
                            "model trained on colour data")
    stack = np.repeat(rng.random((3, 8, 8, 1)), 3, axis=3).astype(np.float32)
    np.save(tmp_path / "rgb.npy", stack)  # an explicit colour array: left to the checkpoint's channel check
    npy = scans.read_movie(str(tmp_path / "rgb.npy"))
    assert denoise_job.match_model_channels(npy, args, denoise_job.DenoiseSettings(model_channels=1), "rgb",
                                            log=False) is npy


def test_the_model_channels_come_from_the_checkpoint(tmp_path):
    import rbpn

    torch.manual_seed(0)
    for channels in (1, 3):
        path = str(tmp_path / f"c{channels}.pth")
        checkpoint.save_generator(path, rbpn.Net(**dict(GREY_NET, num_channels=channels)))
        assert denoise_job.denoise_settings(_args("x.npy", "-m", path)).model_channels == channels


# ------------------------------------------------------------------------------------------------- pass-through


def test_an_all_blank_movie_is_prepared_to_pass_through(tmp_path, caplog):
    frames = np.stack([np.full((12, 12), v, np.float32) for v in (3.0, 3.0, 5.0, 4.0)])
    np.save(tmp_path / "const.npy", frames)
    args = _args(str(tmp_path / "const.npy"))
    with caplog.at_level("WARNING"):
        prepared = denoise_job.prepare(str(tmp_path / "const.npy"), args, denoise_job.DenoiseSettings(), "const",
                                       log=True)
    assert prepared.passthrough and prepared.blank == [0, 1, 2, 3] and prepared.blank_frames() == [0, 1, 2, 3]
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["const: all 4 frames (frames 0-3) are blank (constant): the movie is passed through unchanged "
                     "(outputs written as read, no scores)"]
    # Shown on its own range: 3 -> 0, 5 -> 1; back in the input's units exactly.
    assert prepared.data[0].max() == 0.0 and prepared.data[2].min() == 1.0
    np.testing.assert_allclose(prepared.norm.inverse(prepared.data)[..., 0], frames, rtol=1e-6)
    flat = scans.Movie(np.full((2, 4, 4, 1), 3.0, np.float32), "nm", "flat", "flat.npy", "grey")
    shown = denoise_job._passthrough(flat, prepared.check, [0, 1])
    assert (shown.norm.lo, shown.norm.hi) == (2.5, 3.5) and np.all(shown.data == 0.5)  # mid grey


def test_outlier_pixels_are_shielded_from_the_network_and_kept():
    """A spike goes into the network as its frame's median and comes out as it went in, untouched."""
    data = np.random.default_rng(0).random((3, 8, 8, 1)).astype(np.float32)
    mask = np.zeros(data.shape, bool)
    data[1, 4, 4, 0], mask[1, 4, 4, 0] = 1e4, True
    safe = denoise_job.shielded(data, mask)
    assert safe[1, 4, 4, 0] == np.median(data[1][~mask[1]]) and data[1, 4, 4, 0] == 1e4  # a copy
    np.testing.assert_array_equal(safe[~mask], data[~mask])
    assert denoise_job.shielded(data, None) is data


def test_png_range_never_clips_a_height():
    out = np.zeros((2, 4, 4, 1), np.float32)
    assert denoise_job.png_range(out) == (0.0, 1.0)
    out[1, 2, 2, 0] = 7.5  # a feature 7.5x the normalisation's range
    assert denoise_job.png_range(out) == (0.0, 7.5)


# ------------------------------------------------------------------------------------------------- --method


@pytest.fixture
def grey_model(tmp_path):
    import rbpn

    torch.manual_seed(0)
    path = tmp_path / "grey.pth"
    checkpoint.save_generator(str(path), tame(rbpn.Net(**GREY_NET)))
    return str(path)


def _static_movie(tmp_path, frames=20, bump=None, seed=0):
    """A still scene with white noise (nm); ``bump``: a static Gaussian bump of that height at the centre."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:32, 0:32].astype(np.float64)
    scene = np.sin(xx / 5) * np.cos(yy / 6)
    if bump:
        scene = scene + bump * np.exp(-((xx - 16) ** 2 + (yy - 16) ** 2) / (2 * 2.0**2))
    movie = scene + rng.normal(0, 0.3, (frames, 32, 32))
    path = tmp_path / "still.npy"
    np.save(path, movie.astype(np.float32))
    return str(path), scene


def _run(tmp_path, movie, model, capsys, *extra):
    out, record, err = run_denoise(tmp_path, movie, model, capsys, *extra)
    return np.load(out / "still.npy"), record, err


def test_auto_scores_every_method_and_a_still_movie_gets_a_long_mean(tmp_path, grey_model, capsys):
    movie, scene = _static_movie(tmp_path)
    out, record, err = _run(tmp_path, movie, grey_model, capsys)
    scores = record["method_scores"]
    assert {"model", "raw", "mean3", "mean21", "mean3+tv", "mean3+nlm", "auto-local"} <= set(scores)
    assert record["method"] == max(scores, key=scores.get)
    assert record["method"] not in ("model", "raw", "mean3")  # a random model and short windows lose on a still scene
    assert "method " + record["method"] in err and "SURE score" in err
    raw = np.load(movie)
    assert np.mean((out - scene) ** 2) < 0.2 * np.mean((raw - scene) ** 2)


def test_auto_keeps_a_tall_static_feature_s_height(tmp_path, grey_model, capsys):
    """Issue 20: a feature 10x taller than the movie's 99.5th percentile keeps its height within 2 %."""
    movie, scene = _static_movie(tmp_path, bump=None)
    p995 = np.percentile(np.load(movie), 99.5)
    movie, scene = _static_movie(tmp_path, bump=10 * p995)
    out, record, _ = _run(tmp_path, movie, grey_model, capsys)
    peak_true, peak_out = scene[14:19, 14:19].max(), out[:, 14:19, 14:19].max(axis=(1, 2)).mean()
    assert abs(peak_out / peak_true - 1) < 0.02, (record["method"], peak_out, peak_true)


def test_a_forced_method_is_written_as_asked(tmp_path, grey_model, capsys):
    import denoise_methods as dm

    movie, _ = _static_movie(tmp_path)
    out, record, _ = _run(tmp_path, movie, grey_model, capsys, "--method", "mean5")
    assert record["method"] == "mean5" and record["method_scores"] == {}
    raw = np.load(movie).astype(np.float64)
    np.testing.assert_allclose(out, dm.apply(raw, dm.mean_candidate(5)), atol=1e-4)


def test_the_model_wins_where_it_is_right(tmp_path, grey_model, capsys, monkeypatch):
    """A movie whose scene changes every frame (temporal means blur it) and a model that returns the clean frames:
    auto picks the model."""
    rng = np.random.default_rng(1)
    clean = rng.normal(0, 1, (16, 32, 32)).cumsum(axis=0)  # a random walk: each frame differs from the last
    movie = clean + rng.normal(0, 0.3, clean.shape)
    np.save(tmp_path / "still.npy", movie.astype(np.float32))
    real = denoise_job.denoise_array

    def oracle(frames, blank, loaded, args, settings, device, desc, keep=None):
        real(frames, blank, loaded, args, settings, device, desc, keep)  # the real path still runs
        return ((clean[..., None] - norm.lo) / (norm.hi - norm.lo)).astype(np.float32)

    norm = denoise_job.Normalisation.fit(movie[..., None])
    monkeypatch.setattr(denoise_job, "denoise_array", oracle)
    _, record, _ = _run(tmp_path, str(tmp_path / "still.npy"), grey_model, capsys)
    assert record["method"] == "model" and record["method_scores"]["model"] == max(record["method_scores"].values())


def test_method_errors_and_short_movies(tmp_path, grey_model, capsys):
    from conftest import run_tester

    movie, _ = _static_movie(tmp_path, frames=5)
    code, err = run_tester(["--denoise", "-i", movie, "-o", str(tmp_path / "o"), "-m", grey_model, "--method",
                            "median9"], capsys)
    assert code == 2 and "unknown --method 'median9'" in err and "mean21" in err and len(err.strip().splitlines()) == 1
    assert not os.path.exists(tmp_path / "o" / "still.npy")
    out, record, err = _run(tmp_path, movie, grey_model, capsys)
    assert record["method"] == "mean3" and "too few to score" in err


def test_tiff_and_gwy_outputs_keep_heights_units_and_the_record(tmp_path, grey_model, capsys):
    import gwyfile
    import tifffile

    movie, _ = _static_movie(tmp_path, frames=10)
    out, record, _ = _run(tmp_path, movie, grey_model, capsys, "--method", "mean3", "--tiff", "--gwy",
                          "--units", "nm", "--pixel_size", "2.5")
    with tifffile.TiffFile(tmp_path / "out" / "still.tif") as tif:
        np.testing.assert_array_equal(tif.asarray(), out)  # the .npy's heights, exactly
        info = tif.imagej_metadata["Info"]
    assert "z unit: nm" in info and '"method": "mean3"' in info and '"sha256"' in info
    field = gwyfile.load(str(tmp_path / "out" / "still.gwy"))["/3/data"]
    np.testing.assert_allclose(field.data * 1e9, out[3], rtol=1e-6)
    assert field.xreal == pytest.approx(32 * 2.5e-9)


def test_preview_frames_show_time_and_a_round_scale_bar():
    assert denoise_job.nice_length(43.0) == 20.0 and denoise_job.nice_length(7.0) == 5.0
    assert denoise_job.nice_length(1.0) == 1.0
    img = np.zeros((128, 160, 3), np.uint8)
    marked = denoise_job.annotate(img, 12, denoise_job.Fraction(10), 2.0, "nm")
    assert marked.shape == img.shape and img.max() == 0  # a copy
    assert marked[-12:, 100:].max() == 255  # the bar (20 nm = 10 px at 2 nm/px) in the lower right corner
    assert marked[:20, :60].any()  # the frame index and time
    small = np.zeros((32, 32, 3), np.uint8)
    assert denoise_job.annotate(small, 0, denoise_job.Fraction(10), 2.0, "nm") is small


def test_fps_sets_the_preview_rate_and_metrics_record_what_made_it(tmp_path, grey_model, capsys):
    from video_io import video_info

    movie, _ = _static_movie(tmp_path, frames=10)
    _, record, _ = _run(tmp_path, movie, grey_model, capsys, "--method", "mean3", "--fps", "2.5")
    assert float(video_info(str(tmp_path / "out" / "still.mp4"))["rate"]) == pytest.approx(2.5)
    assert record["record"]["method"] == "mean3" and len(record["record"]["model"]["sha256"]) == 64


@pytest.mark.parametrize("option,value", [("--fps", "0"), ("--fps", "-2"), ("--fps", "nan"), ("--pixel_size", "-1"),
                                          ("--pixel_size", "inf")])
def test_bad_fps_and_pixel_size_are_one_line(tmp_path, grey_model, capsys, option, value):
    from conftest import run_tester

    movie, _ = _static_movie(tmp_path, frames=10)
    code, err = run_tester(["--denoise", "-i", movie, "-o", str(tmp_path / "o"), "-m", grey_model, option, value],
                           capsys)
    assert code == 2 and f"{option} must be a positive number" in err
    assert not os.path.exists(tmp_path / "o")
