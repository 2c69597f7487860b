"""denoise_job's pieces on their own: one-line write errors on a full disk, 0-based output names, grey content
in colour videos for a grey model, pass-through movies and the model's channel count from its checkpoint."""

import errno
import os

import numpy as np
import pytest
import torch
from conftest import TINY_NET

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
