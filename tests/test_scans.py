"""scans: .asd / .npy / frame-folder / video movies as float32 in physical units; DatasetFetcher --afm_sample.

The .asd tests build small synthetic files with ``asd_bytes`` (the documented layout), so they always run. The
comparison with the public reader's values runs on the real sample movies when their archive is in the clip cache
(``python DatasetFetcher.py --afm_sample`` puts it there) and is skipped otherwise.
"""

import io
import json
import os
import struct
import sys
import tarfile
import warnings

import cv2
import numpy as np
import pytest

import DatasetFetcher as fetcher
from errors import UserError
from scans import Movie, ScanError, asd_header, find_movies, read_asd, read_movie
from video_io import iter_video

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "asd")
BIPOLAR_5V = 0x40000


# ----------------------------------------------------------------------------------------------------------------
# A writer for synthetic .asd files (file header, then per channel all frames: frame header + int16 levels)


def _frame_header(index: int, size: int) -> bytes:
    head = struct.pack("<i4h2f?bhii", index, 0, 0, 0, 0, 0.0, 0.0, False, 0, 0, 0, 0)  # 32 bytes
    return head[:size].ljust(size, b"\0")


def asd_bytes(version, channels, kinds=("TP", "PH"), x_nm=100, y_nm=80, ad_code=BIPOLAR_5V, bits=12, z_ext=45.0,
              z_gain=2.0, sensor=0.0, phase=1.5, frame_header=32, name=b"operator", comment=b"synthetic movie",
              frames=None, frame_time=250.0) -> bytes:
    """An .asd file of the given version holding ``channels`` (one (T, H, W) int16 array per present kind)."""
    t, h, w = channels[0].shape
    frames = t if frames is None else frames
    if version == 0:
        k1, k2 = (k.encode().ljust(2, b"\0") for k in kinds)
        head = struct.pack("<i2s2s5i4h3fIi?ih", 0, k1, k2, 0, frame_header, len(name), 8, len(comment), w, h, x_nm,
                           y_nm, frame_time, z_ext, z_gain, ad_code, bits, True, 1, 0)
        head += struct.pack("<h6B2f3i3ih", 2024, 1, 2, 3, 4, 5, 0, 1000.0, 1000.0, 0, 0, 0, frames, frames, 0, 1)
        head += name + struct.pack("<2fi", sensor, phase, 1)
        head = head[:8] + struct.pack("<i", len(head)) + head[12:]  # the declared size ends at the scan direction
        head += b"\0" * 8 + comment  # comment offset, comment
    else:
        k1, k2 = (k.encode().ljust(4, b"\0") for k in kinds)
        head = struct.pack("<i5i4s4s4i4i?i6i2i3fi", version, 0, frame_header, 65001, len(name), len(comment), k1, k2,
                           frames, frames, 1, 7, w, h, x_nm, y_nm, True, 1, 2024, 1, 2, 3, 4, 5, 0, 0, frame_time,
                           sensor, phase, 0)
        head += b"\0" * 12 + struct.pack("<iIi6f", 0, ad_code, bits, 1000.0, 1000.0, 10.0, 10.0, z_ext, z_gain)
        head += name + comment
        if version == 2:  # frame count again, x feed-forward, colour scale, no anchor points
            head += struct.pack("<iiid2i3i", frames, 0, 0, 0.0, 255, 0, 0, 0, 0)
        head = head[:4] + struct.pack("<i", len(head)) + head[8:]
    body = b"".join(_frame_header(i, frame_header) + levels[i].astype("<i2").tobytes()
                    for levels in channels for i in range(t))
    return head + body


def levels(t=4, h=6, w=5, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 4096, size=(t, h, w)).astype(np.int16)


def write_asd(path, version=1, channels=None, **kw) -> str:
    channels = [levels(), levels(seed=1)] if channels is None else channels
    with open(path, "wb") as f:
        f.write(asd_bytes(version, channels, **kw))
    return str(path)


def bipolar(lv, factor, volts=5.0, bits=12):
    return (volts - 2 * volts * lv.astype(np.float64) / 2**bits) * factor


# ----------------------------------------------------------------------------------------------------------------
# .asd


@pytest.mark.parametrize("version", [0, 1, 2])
def test_asd_versions_read_topography_in_nm(tmp_path, version):
    tp, ph = levels(), levels(seed=1)
    path = write_asd(tmp_path / f"v{version}.asd", version, [tp, ph], x_nm=100, y_nm=80, z_ext=45.0, z_gain=2.0)
    movie = read_movie(path)
    assert isinstance(movie, Movie)
    assert movie.frames.shape == (4, 6, 5, 1) and movie.frames.dtype == np.float32
    assert (movie.unit, movie.channel, movie.name, movie.source) == ("nm", "topography", f"v{version}", path)
    np.testing.assert_allclose(movie.frames[..., 0], bipolar(tp, 90.0), rtol=1e-6)
    assert movie.blank == []
    assert movie.info["version"] == version and movie.info["channels"] == ["topography", "phase"]
    assert movie.info["scan_size_nm"] == (100.0, 80.0) and movie.info["pixel_size_nm"] == (20.0, 80.0 / 6)
    header = asd_header(path)
    assert (header["frames"], header["x_pixels"], header["y_pixels"]) == (4, 5, 6)
    assert header["expected_bytes"] == header["file_bytes"] == os.path.getsize(path)
    assert header["comment"] == "synthetic movie" and header["operator"] == "operator"


def test_asd_level_zero_is_the_top_of_the_range(tmp_path):
    lv = np.zeros((1, 2, 2), np.int16)
    lv[0, 1, 1] = 4095
    movie = read_movie(write_asd(tmp_path / "a.asd", 1, [lv], kinds=("TP", ""), z_ext=10.0, z_gain=1.0))
    np.testing.assert_allclose(movie.frames[0, :, :, 0], [[50.0, 50.0], [50.0, 50.0 - 100.0 * 4095 / 4096]])


@pytest.mark.parametrize("choice", ["1", "phase", "PH", "ph", " Phase "])
def test_asd_channel_selection_by_index_or_name(tmp_path, choice):
    tp, ph = levels(), levels(seed=1)
    path = write_asd(tmp_path / "m.asd", 1, [tp, ph], phase=1.5)
    movie = read_movie(path, choice)
    assert (movie.channel, movie.unit, movie.info["channel_index"]) == ("phase", "deg", 1)
    np.testing.assert_allclose(movie.frames[..., 0], bipolar(ph, -1.5), rtol=1e-6)
    for first in (None, "0", "topography", "TP"):
        np.testing.assert_allclose(read_movie(path, first).frames[..., 0], bipolar(tp, 90.0), rtol=1e-6)


def test_asd_error_channel_uses_the_sensor_sensitivity(tmp_path):
    tp, er = levels(), levels(seed=2)
    path = write_asd(tmp_path / "e.asd", 2, [tp, er], kinds=("TP", "ER"), sensor=3.0)
    movie = read_movie(path, "error")
    assert movie.unit == "nm"
    np.testing.assert_allclose(movie.frames[..., 0], bipolar(er, -3.0), rtol=1e-6)


def test_asd_unknown_channel_lists_the_available_ones(tmp_path):
    path = write_asd(tmp_path / "m.asd", 0)
    for bad in ("2", "error", "height"):
        with pytest.raises(ScanError) as err:
            read_movie(path, bad)
        msg = str(err.value)
        assert f"no channel {bad!r}" in msg and "0 = topography (TP), 1 = phase (PH)" in msg and "\n" not in msg
    single = write_asd(tmp_path / "one.asd", 1, [levels()], kinds=("TP", ""))
    assert asd_header(single)["channels"] == ["topography"]
    with pytest.raises(ScanError, match=r"available channels: 0 = topography \(TP\)$"):
        read_movie(single, "1")


def test_asd_unipolar_range_and_other_bit_depth(tmp_path):
    lv = np.random.default_rng(3).integers(0, 1 << 14, size=(2, 3, 4)).astype(np.int16)
    path = write_asd(tmp_path / "u.asd", 1, [lv], kinds=("TP", ""), ad_code=0x2, bits=14, z_ext=20.0, z_gain=0.5)
    expected = -2.5 * lv.astype(np.float64) / 2**14 * 10.0
    np.testing.assert_allclose(read_movie(path).frames[..., 0], expected, rtol=1e-6, atol=1e-6)


def test_asd_channel_without_factor_stays_in_volts(tmp_path):
    tp, ph = levels(), levels(seed=1)
    path = write_asd(tmp_path / "v.asd", 0, [tp, ph], phase=0.0)
    with pytest.warns(UserWarning, match="stays in volts"):
        movie = read_movie(path, "phase")
    assert movie.unit == "V"
    np.testing.assert_allclose(movie.frames[..., 0], -5.0 + 10.0 * ph / 4096, rtol=1e-6, atol=1e-6)
    odd = write_asd(tmp_path / "odd.asd", 1, [tp, ph], kinds=("TP", "XY"))
    assert asd_header(odd)["channels"] == ["topography", "ch2"]
    with pytest.warns(UserWarning, match="its data kind is unknown"):
        movie = read_movie(odd, "ch2")
    assert (movie.channel, movie.unit) == ("ch2", "V")


@pytest.mark.parametrize("version", [0, 1])
def test_asd_nan_or_overflowing_piezo_factor_stays_in_volts_and_says_why(tmp_path, version):
    tp = levels()
    cases = {"nan": (dict(z_ext=float("nan")), "not a finite number (z piezo extension nan nm/V x z piezo gain 2)"),
             "inf": (dict(z_ext=float("inf")), "not a finite number (z piezo extension inf nm/V"),
             "huge": (dict(z_ext=1e38, z_gain=1e38), "would give values beyond the float32 range"),
             "zero": (dict(z_ext=0.0), "no conversion factor (0: z piezo extension 0 nm/V x z piezo gain 2)")}
    for name, (kw, expected) in cases.items():
        path = write_asd(tmp_path / f"{name}{version}.asd", version, [tp], kinds=("TP", ""), **kw)
        with pytest.warns(UserWarning) as caught:
            movie = read_movie(path)
        message = str(caught[0].message)
        assert "stays in volts" in message and expected in message, name
        assert movie.unit == "V" and np.isfinite(movie.frames).all()
        np.testing.assert_allclose(movie.frames[..., 0], -5.0 + 10.0 * tp / 4096, rtol=1e-6, atol=1e-6)


def test_read_movie_keep_truncated_keeps_the_complete_frames(tmp_path):
    """Only the phase channel is cut: the topography is whole, and read_movie(keep_truncated=True) keeps it."""
    tp, ph = levels(), levels(seed=1)
    path = tmp_path / "cut.asd"
    path.write_bytes(asd_bytes(1, [tp, ph])[:-1])
    with pytest.raises(ScanError, match=r"\(4 of 4 frames of channel topography complete\); copy the file again, "
                                        "or pass --keep_truncated to keep the 4 complete frames"):
        read_movie(str(path))
    with pytest.warns(UserWarning, match="keeping the 4 complete frames"):
        movie = read_movie(str(path), keep_truncated=True)
    assert movie.frames.shape[0] == 4 and movie.info["truncated"] is True
    np.testing.assert_allclose(movie.frames[..., 0], bipolar(tp, 90.0), rtol=1e-6)
    with pytest.warns(UserWarning, match="keeping the 3 complete frames"):
        assert read_movie(str(path), "phase", keep_truncated=True).frames.shape[0] == 3
    np.save(tmp_path / "s.npy", np.zeros((2, 3, 4)))
    assert read_movie(str(tmp_path / "s.npy"), keep_truncated=True).frames.shape == (2, 3, 4, 1)  # no effect


def test_asd_garbage_in_one_frame_is_corrupt_not_blank(tmp_path):
    """Issue 22 (D11): 3 KB of random int16 in the levels of frame 1 of 8 used to make the 7 good frames 'blank'."""
    import denoise_data
    import frame_check

    rng = np.random.default_rng(7)
    tp = np.clip(2048 + 40 * np.sin(np.arange(64) / 5)[None, None, :] + rng.normal(0, 8, (8, 64, 64)), 0, 4095)
    data = bytearray(asd_bytes(1, [tp.astype(np.int16)], kinds=("TP", "")))
    start = len(data) - 8 * (32 + 2 * 64 * 64)  # the first frame header
    data[start + 200 : start + 3200] = rng.integers(0, 256, size=3000, dtype=np.uint8).tobytes()
    path = tmp_path / "garbage.asd"
    path.write_bytes(bytes(data))
    movie = read_movie(str(path))
    assert movie.blank == []
    check = frame_check.check_frames(movie.frames, unit=movie.unit)
    assert check.corrupt == [0] and check.blank == [] and check.outliers == {}
    (line,) = frame_check.describe_findings(check, "garbage", extra_blank=movie.blank)
    assert line.startswith("garbage: frame 0 (frames 0-7): corrupt (its values spread ") and "nm" in line
    assert "constant" not in line and "pixels lie far outside their range" in line
    _, norm, skipped = denoise_data.preprocess(movie.frames, unit=movie.unit, extra_blank=movie.blank, check=check)
    assert skipped == [0] and norm.hi - norm.lo < 100  # nm: the garbage did not enter the normalisation


def test_asd_blank_frames_are_kept_and_listed(tmp_path):
    tp = levels(t=5)
    tp[0] = 0
    tp[3] = 1234
    movie = read_movie(write_asd(tmp_path / "b.asd", 1, [tp, levels(t=5)]))
    assert movie.frames.shape[0] == 5 and movie.blank == [0, 3]
    np.testing.assert_allclose(movie.frames[0], 450.0)


def test_asd_truncated_file_is_refused_or_keeps_complete_frames(tmp_path):
    """Policy: read_movie refuses a file shorter than its header says; read_asd(keep_truncated=True) keeps the
    complete frames of the channel with a warning, and needs at least one."""
    tp, ph = levels(), levels(seed=1)
    data = asd_bytes(1, [tp, ph])
    frame = 32 + 2 * 6 * 5
    start = len(data) - 8 * frame
    cases = {  # name: (bytes kept, complete frames of channel 0, of channel 1)
        "mid_last_frame": (len(data) - 7, 4, 3),
        "frame_boundary": (len(data) - 2 * frame, 4, 2),
        "in_channel_1": (start + 2 * frame + 10, 2, 0),
        "header_only": (start, 0, 0),
    }
    for name, (size, k0, k1) in cases.items():
        path = tmp_path / f"{name}.asd"
        path.write_bytes(data[:size])
        with pytest.raises(ScanError) as err:
            read_movie(str(path))
        msg = str(err.value)
        assert "is truncated" in msg and f"({k0} of 4 frames of channel topography complete)" in msg
        assert "copy the file again" in msg and "\n" not in msg
        for channel, k, values in ((0, k0, bipolar(tp, 90.0)), (1, k1, bipolar(ph, -1.5))):
            if k == 0:
                with pytest.raises(ScanError, match="nothing to keep"):
                    read_asd(str(path), str(channel), keep_truncated=True)
                continue
            with pytest.warns(UserWarning, match=f"keeping the {k} complete frames"):
                movie = read_asd(str(path), str(channel), keep_truncated=True)
            assert movie.frames.shape[0] == k and movie.info["truncated"] is True
            np.testing.assert_allclose(movie.frames[..., 0], values[:k], rtol=1e-6)


def test_asd_corrupt_files_are_one_line_errors(tmp_path):
    good = asd_bytes(1, [levels(), levels(seed=1)])
    cases = {
        "empty": (b"", "ends inside its .asd header"),
        "short": (good[:40], "ends inside its .asd header"),
        "version": (struct.pack("<i", 7) + good[4:], "unknown .asd file version 7"),
        "pixels": (asd_bytes(1, [levels()], kinds=("TP", ""))[:48] + struct.pack("<i", 0)
                   + asd_bytes(1, [levels()], kinds=("TP", ""))[52:], "impossible .asd header values"),
        "longer": (good + b"\0" * 10, "describes"),
        "ad_range": (asd_bytes(1, [levels()], kinds=("TP", ""), ad_code=0x7), "unknown A/D range code 0x7"),
        "header_size": (good[:4] + struct.pack("<i", 100) + good[8:], "its fields take"),
        "name_size": (good[:16] + struct.pack("<i", -5) + good[20:], "negative string size"),
        "no_frames": (asd_bytes(1, [levels()], kinds=("TP", ""), frames=0), "0 frames"),
    }
    for name, (data, expected) in cases.items():
        path = tmp_path / f"{name}.asd"
        path.write_bytes(data)
        with pytest.raises(ScanError) as err:
            read_movie(str(path))
        assert expected in str(err.value) and str(path) in str(err.value) and "\n" not in str(err.value), name
    with pytest.raises(ScanError, match="not found"):
        read_movie(str(tmp_path / "missing.asd"))


# ----------------------------------------------------------------------------------------------------------------
# The real sample movies against the public reader's values (tests/data/asd/afmreader_reference.*)


@pytest.fixture(scope="module")
def real_asd(tmp_path_factory):
    """The three real .asd movies, extracted from the cached afmreader 0.0.7 archive; skipped when not cached."""
    sdist = os.path.join(fetcher.DEFAULT_CLIP_CACHE, fetcher.AFM_SDIST)
    if not os.path.isfile(sdist):
        pytest.skip(f"real .asd samples not cached ({sdist} missing): run `python DatasetFetcher.py --afm_sample` "
                    "once (needs network) to compare with the public reader's values")
    if fetcher.sha256_of(sdist) != fetcher.AFM_SDIST_SHA256:
        pytest.skip(f"{sdist} is not the published archive (SHA-256 differs)")
    folder = tmp_path_factory.mktemp("real_asd")
    fetcher._write_afm_sample(str(folder), sdist)
    return {name: str(folder / split / name) for name, split in fetcher.AFM_MOVIES}


def test_real_asd_movies_match_the_public_reader(real_asd):
    with open(os.path.join(DATA, "afmreader_reference.json")) as f:
        facts = json.load(f)
    ref = np.load(os.path.join(DATA, "afmreader_reference.npz"))
    for name, path in real_asd.items():
        fact = facts[name]
        assert fetcher.sha256_of(path) == fact["sha256"]
        header = asd_header(path)
        assert (header["frames"], header["x_pixels"], header["y_pixels"]) == (fact["num_frames"], fact["x_pixels"],
                                                                              fact["y_pixels"])
        assert header["scan_size_nm"] == (fact["x_nm"], fact["y_nm"])
        assert header["kinds"] == [fact["channel1"], fact["channel2"]]
        assert header["ad_bits"] == fact["analogue_digital_data_bits_size"]
        assert hex(header["ad_range_code"]) == fact["analogue_digital_range"]
        assert header["frame_time_ms"] == pytest.approx(fact["frame_time"])
        assert (header["z_piezo_extension"], header["z_piezo_gain"]) == (fact["z_piezo_extension"],
                                                                         fact["z_piezo_gain"])
        for code in ("TP", "PH"):
            chan = fact["channels"][code]
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                movie = read_movie(path, code)
            if chan.get("all_constant"):  # zero phase sensitivity: the public reader gives 0, we keep volts
                assert movie.unit == "V" and "stays in volts" in str(caught[0].message)
                continue
            assert not caught
            stem = os.path.splitext(name)[0]
            frames = movie.frames[..., 0].astype(np.float64)
            assert frames.shape == (fact["num_frames"], fact["y_pixels"], fact["x_pixels"])
            assert movie.blank == chan["blank"]
            picked = frames[chan["frames"]][:, chan["rows"], :]
            np.testing.assert_allclose(picked, ref[f"{stem}_{code}_rows"], rtol=1e-6, atol=1e-4)
            np.testing.assert_allclose(frames.mean(axis=(1, 2)), ref[f"{stem}_{code}_mean"], rtol=1e-6, atol=1e-4)
            np.testing.assert_allclose(frames.min(axis=(1, 2)), ref[f"{stem}_{code}_min"], rtol=1e-6, atol=1e-4)
            np.testing.assert_allclose(frames.max(axis=(1, 2)), ref[f"{stem}_{code}_max"], rtol=1e-6, atol=1e-4)
        assert read_movie(path).info["pixel_size_nm"][0] == fact["pixel_to_nm"]


# ----------------------------------------------------------------------------------------------------------------
# .npy


def test_npy_stacks_of_any_real_dtype(tmp_path):
    grey = np.arange(2 * 3 * 4, dtype=np.int16).reshape(2, 3, 4) - 5
    np.save(tmp_path / "g.npy", grey)
    movie = read_movie(str(tmp_path / "g.npy"))
    assert movie.frames.shape == (2, 3, 4, 1) and movie.frames.dtype == np.float32
    assert (movie.unit, movie.channel, movie.name) == ("", "grey", "g")
    np.testing.assert_array_equal(movie.frames[..., 0], grey)
    colour = np.random.default_rng(0).random((3, 4, 5, 3))
    colour[1] = 0.25
    np.save(tmp_path / "c.npy", colour)
    movie = read_movie(str(tmp_path / "c.npy"))
    assert movie.channel == "rgb" and movie.blank == [1]
    np.testing.assert_allclose(movie.frames, colour.astype(np.float32))
    for arr in (np.full((2, 3, 3, 1), 60000, np.uint16), np.ones((1, 2, 2), bool), np.ones((1, 2, 2), np.float16)):
        np.save(tmp_path / "x.npy", arr)
        np.testing.assert_array_equal(read_movie(str(tmp_path / "x.npy")).frames.reshape(arr.shape), arr)


def test_npy_bad_arrays_are_one_line_errors(tmp_path):
    nan = np.zeros((4, 3, 3), np.float32)
    nan[2, 1, 1] = np.nan
    nan[3, 0, 0] = np.inf
    cases = {
        "ndim2": (np.zeros((3, 3)), "expected (T, H, W) or (T, H, W, C)"),
        "ndim5": (np.zeros((1, 2, 2, 3, 1)), "expected (T, H, W)"),
        "four_channels": (np.zeros((1, 2, 2, 4)), "C = 1 or 3"),
        "complex": (np.zeros((1, 2, 2), np.complex64), "complex values"),
        "strings": (np.array([[["a"]]]), "values of type"),
        "empty": (np.zeros((0, 2, 2)), "is empty"),
        "nan": (nan, "frame 2 (the first bad one) holds NaN or infinite values"),
        "huge": (np.full((2, 2, 2), 1e300), "frame 0 (the first bad one) holds values beyond the float32 range"),
    }
    for name, (arr, expected) in cases.items():
        np.save(tmp_path / f"{name}.npy", arr)
        with pytest.raises(ScanError) as err:
            read_movie(str(tmp_path / f"{name}.npy"))
        assert expected in str(err.value) and f"{name}.npy" in str(err.value) and "\n" not in str(err.value), name
    np.save(tmp_path / "objects.npy", np.array([None, 1], dtype=object), allow_pickle=True)
    with pytest.raises(ScanError, match="objects.npy.*Python objects"):
        read_movie(str(tmp_path / "objects.npy"))
    (tmp_path / "junk.npy").write_bytes(b"not an array")
    with pytest.raises(ScanError, match="junk.npy is not a .npy file"):
        read_movie(str(tmp_path / "junk.npy"))
    np.savez(tmp_path / "archive.npz", a=np.zeros((1, 2, 2)))
    os.replace(tmp_path / "archive.npz", tmp_path / "archive.npy")
    with pytest.raises(ScanError, match="archive.npy is not a .npy file"):
        read_movie(str(tmp_path / "archive.npy"))
    np.save(tmp_path / "cut.npy", np.zeros((10, 10, 10)))
    (tmp_path / "cut.npy").write_bytes((tmp_path / "cut.npy").read_bytes()[:500])
    with pytest.raises(ScanError, match="cut.npy as a NumPy array .the file is truncated"):
        read_movie(str(tmp_path / "cut.npy"))


# ----------------------------------------------------------------------------------------------------------------
# Frame folders


def _frames_folder(tmp_path, name, images, ext):
    folder = tmp_path / name
    folder.mkdir()
    for i, img in enumerate(images, start=1):
        assert cv2.imwrite(str(folder / f"f{i}{ext}"), img)
    return str(folder)


@pytest.mark.parametrize("ext", [".png", ".tif"])
def test_grey_frames_8_and_16_bit_keep_their_values(tmp_path, ext):
    rng = np.random.default_rng(0)
    grey8 = [rng.integers(0, 256, (5, 7), dtype=np.uint8) for _ in range(3)]
    movie = read_movie(_frames_folder(tmp_path, "g8", grey8, ext))
    assert movie.frames.shape == (3, 5, 7, 1) and movie.channel == "grey" and movie.name == "g8"
    np.testing.assert_array_equal(movie.frames[..., 0], np.stack(grey8))
    grey16 = [rng.integers(0, 65536, (5, 7), dtype=np.uint16) for _ in range(3)]
    movie = read_movie(_frames_folder(tmp_path, "g16", grey16, ext))
    assert movie.frames.max() > 255 and movie.info["dtype"] == "uint16"
    np.testing.assert_array_equal(movie.frames[..., 0], np.stack(grey16))


@pytest.mark.parametrize("ext", [".png", ".tif"])
def test_colour_frames_are_rgb_and_alpha_is_dropped(tmp_path, ext):
    rng = np.random.default_rng(1)
    rgb16 = [rng.integers(0, 65536, (4, 6, 3), dtype=np.uint16) for _ in range(2)]
    movie = read_movie(_frames_folder(tmp_path, "c16", [img[..., ::-1] for img in rgb16], ext))  # written as BGR
    assert movie.channel == "rgb"
    np.testing.assert_array_equal(movie.frames, np.stack(rgb16))
    rgba = [rng.integers(0, 256, (4, 6, 4), dtype=np.uint8) for _ in range(2)]
    bgra = [np.concatenate([img[..., 2::-1], img[..., 3:]], axis=2) for img in rgba]
    movie = read_movie(_frames_folder(tmp_path, "rgba", bgra, ext))
    assert movie.frames.shape == (2, 4, 6, 3)
    np.testing.assert_array_equal(movie.frames, np.stack(rgba)[..., :3])


def test_frame_folder_mismatches_and_bad_frames_are_errors(tmp_path):
    grey = np.zeros((4, 4), np.uint8)
    cases = {
        "size": ([grey, np.zeros((4, 5), np.uint8)], "all frames of a movie must match"),
        "channels": ([grey, np.zeros((4, 4, 3), np.uint8)], "all frames of a movie must match"),
        "depth": ([grey, np.zeros((4, 4), np.uint16)], "same bit depth"),
    }
    for name, (images, expected) in cases.items():
        with pytest.raises(ScanError, match=expected):
            read_movie(_frames_folder(tmp_path, name, images, ".png"))
    folder = _frames_folder(tmp_path, "corrupt", [grey], ".png")
    with open(os.path.join(folder, "f2.png"), "wb") as f:
        f.write(b"not a png")
    with pytest.raises(ScanError, match="cannot decode image .*f2.png"):
        read_movie(folder)
    (tmp_path / "none").mkdir()
    with pytest.raises(ScanError, match="no image frames"):
        read_movie(str(tmp_path / "none"))
    with pytest.raises(ScanError, match="single image"):
        read_movie(os.path.join(_frames_folder(tmp_path, "one", [grey], ".png"), "f1.png"))


def test_channel_argument_for_images_names_their_own_channel(tmp_path):
    folder = _frames_folder(tmp_path, "g", [np.zeros((4, 4), np.uint8)], ".png")
    assert read_movie(folder, "grey").channel == read_movie(folder, "gray").channel == "grey"
    with pytest.raises(ScanError, match="only .asd files have selectable channels"):
        read_movie(folder, "1")


# ----------------------------------------------------------------------------------------------------------------
# Videos and find_movies


def test_video_frames_are_rgb_float32(video_file):
    movie = read_movie(str(video_file))
    assert movie.frames.shape == (8, 64, 96, 3) and movie.frames.dtype == np.float32
    assert (movie.channel, movie.unit, movie.name) == ("rgb", "", "clip")
    assert 0 <= movie.frames.min() and movie.frames.max() <= 255
    np.testing.assert_array_equal(movie.frames, np.stack(list(iter_video(str(video_file)))))


def test_find_movies_file_frame_folder_and_folder_of_movies(tmp_path, video_file):
    root = tmp_path / "movies"
    root.mkdir()
    write_asd(root / "m10.asd")
    write_asd(root / "m2.asd")
    np.save(root / "stack.npy", np.zeros((2, 3, 3)))
    os.replace(video_file, root / "clip.avi")
    frames = _frames_folder(root, "frames", [np.zeros((4, 4), np.uint8)], ".png")
    (root / "notes.txt").write_text("not a movie")
    (root / ".hidden.asd").write_bytes(b"")
    (root / "empty_folder").mkdir()
    names = [os.path.basename(p) for p in find_movies(str(root))]
    assert names == ["clip.avi", "frames", "m2.asd", "m10.asd", "stack.npy"]
    assert find_movies(frames) == [frames]
    assert find_movies(str(root / "m2.asd")) == [str(root / "m2.asd")]
    for p in find_movies(str(root)):
        assert read_movie(p).frames.ndim == 4


def test_find_movies_errors(tmp_path):
    with pytest.raises(ScanError, match="not found"):
        find_movies(str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ScanError, match="no movies in"):
        find_movies(str(tmp_path / "empty"))
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ScanError, match="is not a movie"):
        find_movies(str(tmp_path / "notes.txt"))
    mixed = _frames_folder(tmp_path, "mixed", [np.zeros((4, 4), np.uint8)], ".png")
    write_asd(os.path.join(mixed, "m.asd"))
    with pytest.raises(ScanError, match="mixes image frames with movies"):
        find_movies(mixed)
    movies_only = tmp_path / "movies_only"
    movies_only.mkdir()
    write_asd(movies_only / "a.asd")
    with pytest.raises(ScanError, match="find_movies lists them"):
        read_movie(str(movies_only))
    assert issubclass(ScanError, UserError)


# ----------------------------------------------------------------------------------------------------------------
# Multi-page TIFF stacks (issue 22: D22, D23)


def _stack(path, pages, **kw):
    import tifffile

    tifffile.imwrite(str(path), np.asarray(pages), photometric="minisblack", **kw)
    return str(path)


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "float32"])
def test_a_tiff_stack_is_a_movie_in_page_order(tmp_path, dtype):
    rng = np.random.default_rng(0)
    pages = (rng.random((8, 6, 7)) * (255 if dtype == "uint8" else 65535)).astype(dtype)
    path = _stack(tmp_path / "stack.tif", pages)
    assert find_movies(path) == [path]
    movie = read_movie(path)
    assert movie.frames.shape == (8, 6, 7, 1) and movie.channel == "grey" and movie.name == "stack"
    np.testing.assert_array_equal(movie.frames[..., 0], pages.astype(np.float32))
    assert movie.unit == "a.u." and movie.info["format"] == "tiff" and movie.info["dtype"] == dtype
    assert movie.info["pages"] == 8 and movie.info["calibration"] == "none"


def test_tiff_stack_units_from_imagej_or_the_projects_own_writer(tmp_path):
    import scan_writers

    pages = np.random.default_rng(1).integers(0, 4096, (3, 5, 6)).astype(np.uint16)
    calibrated = _stack(tmp_path / "cal.tif", pages, imagej=True,
                        metadata={"axes": "ZYX", "vunit": "nm", "cf": 0, "c0": -10.0, "c1": 0.01, "finterval": 0.5})
    movie = read_movie(calibrated)
    assert movie.unit == "nm" and movie.info["frame_time_ms"] == 500.0
    np.testing.assert_allclose(movie.frames[..., 0], -10.0 + 0.01 * pages, rtol=1e-6)
    other = read_movie(_stack(tmp_path / "od.tif", pages, imagej=True, metadata={"axes": "ZYX", "cf": 21}))
    assert other.unit == "a.u." and "not applied" in other.info["calibration"]
    np.testing.assert_array_equal(other.frames[..., 0], pages)
    heights = np.random.default_rng(2).normal(5.0, 1.0, (4, 5, 6)).astype(np.float32)
    for name in ("written.tif", "written.ome.tif"):
        scan_writers.write_tiff_stack(str(tmp_path / name), heights, unit="nm", pixel_size=2.0, fps=4.0)
        back = read_movie(str(tmp_path / name))
        assert back.unit == "nm" and back.info["frame_time_ms"] == 250.0, name
        np.testing.assert_array_equal(back.frames[..., 0], heights)


def test_folders_of_stacks_are_folders_of_movies(tmp_path):
    pages = np.random.default_rng(3).integers(0, 255, (4, 5, 6)).astype(np.uint8)
    one = tmp_path / "one"
    one.mkdir()
    stack = _stack(one / "s.tif", pages)
    assert find_movies(str(one)) == [stack]  # issue 22 D23: the folder's stack was read as its first page
    assert read_movie(str(one)).frames.shape == (4, 5, 6, 1)
    _stack(one / "t.tif", pages[:2])
    assert find_movies(str(one)) == [stack, str(one / "t.tif")]
    with pytest.raises(ScanError, match="holds 2 multi-page TIFF stacks, each a movie"):
        read_movie(str(one))
    cv2.imwrite(str(one / "frame.tif"), pages[0])
    with pytest.raises(ScanError, match="mixes image frames with movies"):
        find_movies(str(one))
    with pytest.raises(ScanError, match=r"mixes single frames with a multi-page TIFF stack \(s.tif\)"):
        read_movie(str(one))
    single = _stack(tmp_path / "single.tif", pages[:1])
    for call in (find_movies, read_movie):
        with pytest.raises(ScanError, match=r"is a single image; .* \(a multi-page TIFF stack is read as a movie\)"):
            call(single)


# ----------------------------------------------------------------------------------------------------------------
# Grey content stored as RGB (issue 22: D34)


def test_grey_content_in_a_video_is_told_from_colour(tmp_path):
    from scans import channel_spread, is_grey_content, to_grey
    from video_io import write_video

    rng = np.random.default_rng(4)
    grey = [np.repeat(rng.integers(0, 256, (32, 48, 1), dtype=np.uint8), 3, axis=2) for _ in range(4)]
    write_video(str(tmp_path / "grey.mp4"), grey, 10)
    movie = read_movie(str(tmp_path / "grey.mp4"))
    assert movie.frames.shape[3] == 3 and is_grey_content(movie) and channel_spread(movie)[0] < 0.005
    as_grey = to_grey(movie)
    assert as_grey.frames.shape == (4, 32, 48, 1) and as_grey.channel == "grey"
    assert as_grey.info["converted_from"] == "rgb" and as_grey.info["format"] == "video"
    np.testing.assert_allclose(as_grey.frames[..., 0], movie.frames.mean(axis=3), atol=1e-4)
    tinted = [np.concatenate([f[..., :2], np.clip(f[..., 2:].astype(int) + 10, 0, 255).astype(np.uint8)], axis=2)
              for f in grey]  # 10 levels of 255 more blue: a tint, colour
    write_video(str(tmp_path / "tint.mp4"), tinted, 10)
    tint = read_movie(str(tmp_path / "tint.mp4"))
    assert not is_grey_content(tint) and channel_spread(tint)[0] > 0.02
    np.save(tmp_path / "g.npy", np.zeros((2, 4, 4)))
    assert not is_grey_content(read_movie(str(tmp_path / "g.npy")))  # one channel already


# ----------------------------------------------------------------------------------------------------------------
# DatasetFetcher --afm_sample (offline: a fake source archive in the clip cache)


def fake_sdist(path, names=("sample_0.asd", "sample_1.asd", "extra_sample.asd")) -> bytes:
    """A tar.gz laid out like the afmreader source archive, with tiny synthetic movies; returns the .asd bytes."""
    movies = {}
    with tarfile.open(path, "w:gz") as tf:
        def add(name, data):
            info = tarfile.TarInfo(f"afmreader-0.0.7/{name}")
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))

        add("README.md", b"fake")
        add("tests/resources/sample_0.spm", b"not a movie")
        for i, name in enumerate(names):
            movies[name] = asd_bytes(i % 2, [levels(t=3, seed=i), levels(t=3, seed=i + 10)])
            add(f"tests/resources/{name}", movies[name])
    return movies


@pytest.fixture
def afm_cache(tmp_path, monkeypatch):
    """A clip cache holding a fake afmreader archive whose SHA-256 the fetcher accepts; returns (cache, movies)."""
    cache = tmp_path / "cache"
    cache.mkdir()
    movies = fake_sdist(cache / fetcher.AFM_SDIST)
    monkeypatch.setattr(fetcher, "AFM_SDIST_SHA256", fetcher.sha256_of(str(cache / fetcher.AFM_SDIST)))
    return cache, movies


def afm_args(cache, dest):
    return ["--afm_sample", "--dest", str(dest), "--clip_cache", str(cache), "-q"]


def test_afm_sample_layout_from_the_cached_archive(tmp_path, afm_cache, capsys):
    cache, movies = afm_cache
    dest = tmp_path / "afm"
    assert fetcher.main(afm_args(cache, dest)) == 0
    assert "AFM sample ready" in capsys.readouterr().out
    assert sorted(os.listdir(dest)) == [".iseebetter_sample.json", "eval", "manifest.json", "train"]
    assert sorted(os.listdir(dest / "train")) == ["sample_0.asd", "sample_1.asd"]
    assert os.listdir(dest / "eval") == ["extra_sample.asd"]
    for name, split in fetcher.AFM_MOVIES:
        assert (dest / split / name).read_bytes() == movies[name]
    manifest = json.loads((dest / "manifest.json").read_text())
    assert manifest["train"] == ["train/sample_0.asd", "train/sample_1.asd"]
    assert manifest["eval"] == ["eval/extra_sample.asd"]
    assert [m["frames"] for m in manifest["movies"]] == [3, 3, 3]
    assert manifest["source"]["requirement"] == "afmreader==0.0.7"
    marker = json.loads((dest / ".iseebetter_sample.json").read_text())
    assert marker["created_by"] == "DatasetFetcher.py --afm_sample"
    assert find_movies(str(dest / "train")) == [str(dest / "train" / "sample_0.asd"), str(dest / "train" /
                                                                                           "sample_1.asd")]
    assert read_movie(str(dest / "eval" / "extra_sample.asd")).frames.shape == (3, 6, 5, 1)


def test_afm_sample_rerun_keeps_user_files_and_refuses_foreign_folders(tmp_path, afm_cache, capsys):
    cache, _ = afm_cache
    dest = tmp_path / "afm"
    fetcher.main(afm_args(cache, dest))
    (dest / "train" / "notes.txt").write_text("mine\n")
    (dest / "mine.txt").write_text("mine\n")
    fetcher.main(afm_args(cache, dest))
    assert (dest / "train" / "notes.txt").read_text() == "mine\n" and (dest / "mine.txt").read_text() == "mine\n"
    assert sorted(os.listdir(dest / "train")) == ["notes.txt", "sample_0.asd", "sample_1.asd"]
    assert not [n for n in os.listdir(dest) if n.startswith(".iseebetter_sample_tmp")]
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("keep me\n")
    with pytest.raises(SystemExit) as exit_info:
        fetcher.run_cli(fetcher.main, afm_args(cache, foreign))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "not made by DatasetFetcher --afm_sample" in err and "--overwrite" in err and err.count("\n") == 1
    assert os.listdir(foreign) == ["thesis.tex"]
    fetcher.main(afm_args(cache, foreign) + ["--overwrite"])
    assert (foreign / "thesis.tex").read_text() == "keep me\n" and (foreign / "eval" / "extra_sample.asd").is_file()


def test_afm_sample_sha_mismatch_is_a_clear_error(tmp_path, capsys):
    cache = tmp_path / "cache"
    cache.mkdir()
    fake_sdist(cache / fetcher.AFM_SDIST)  # not the published archive
    dest = tmp_path / "afm"
    with pytest.raises(SystemExit):
        fetcher.run_cli(fetcher.main, afm_args(cache, dest))
    err = capsys.readouterr().err
    assert "SHA-256" in err and fetcher.AFM_SDIST_SHA256 in err and "delete" in err and err.count("\n") == 1
    assert not dest.exists() and (cache / fetcher.AFM_SDIST).exists()  # the user's file is never deleted


def test_afm_sample_download_checks_the_archive_and_fails_clearly_offline(tmp_path, monkeypatch, capsys):
    source = tmp_path / "pypi" / fetcher.AFM_SDIST
    source.parent.mkdir()
    fake_sdist(source)
    cache, dest = tmp_path / "cache", tmp_path / "afm"
    copy = [sys.executable, "-c", f"import shutil, sys; shutil.copy({str(source)!r}, sys.argv[1])"]
    monkeypatch.setattr(fetcher, "_afm_pip_command", lambda folder: copy + [folder])
    with pytest.raises(fetcher.FetchError, match="the downloaded afmreader-0.0.7.tar.gz has SHA-256"):
        fetcher.main(afm_args(cache, dest))
    assert os.listdir(cache) == [] and not dest.exists()  # a bad download never lands in the cache
    monkeypatch.setattr(fetcher, "AFM_SDIST_SHA256", fetcher.sha256_of(str(source)))
    fetcher.main(afm_args(cache, dest))
    assert os.listdir(cache) == [fetcher.AFM_SDIST] and (dest / "train" / "sample_1.asd").is_file()
    offline = [sys.executable, "-c", "import sys; print('ERROR: No matching distribution found for afmreader==0.0.7',"
                                     " file=sys.stderr); sys.exit(1)"]
    monkeypatch.setattr(fetcher, "_afm_pip_command", lambda folder: offline)
    empty = tmp_path / "empty_cache"
    with pytest.raises(SystemExit):
        fetcher.run_cli(fetcher.main, afm_args(empty, tmp_path / "afm2"))
    err = capsys.readouterr().err
    assert "could not download the afmreader==0.0.7 source archive" in err and "network" in err
    assert err.count("\n") == 1 and os.listdir(empty) == [] and not (tmp_path / "afm2").exists()


def test_afm_sample_archive_without_movies_or_damaged(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    cache.mkdir()
    fake_sdist(cache / fetcher.AFM_SDIST, names=("sample_0.asd", "sample_1.asd"))
    monkeypatch.setattr(fetcher, "AFM_SDIST_SHA256", fetcher.sha256_of(str(cache / fetcher.AFM_SDIST)))
    with pytest.raises(fetcher.FetchError, match="holds no regular file tests/resources/extra_sample.asd"):
        fetcher.main(afm_args(cache, tmp_path / "afm"))
    (cache / fetcher.AFM_SDIST).write_bytes(b"\x1f\x8b" + b"\0" * 100)
    monkeypatch.setattr(fetcher, "AFM_SDIST_SHA256", fetcher.sha256_of(str(cache / fetcher.AFM_SDIST)))
    with pytest.raises(fetcher.FetchError, match="is damaged"):
        fetcher.main(afm_args(cache, tmp_path / "afm"))
    assert not (tmp_path / "afm").exists()


# ----------------------------------------------------------------------------------------------------------------
# libasd (an independent C++ .asd reader) as the oracle: same heights, same header fields


def _libasd_movie(path, channel=0):
    libasd = pytest.importorskip("libasd")
    data = libasd.read_asd(path)
    return data.header, np.stack([np.array(frame.image(), dtype=np.float64) for frame in data.channels[channel]])


def _check_against_libasd(path):
    header, oracle = _libasd_movie(path)
    ours = asd_header(path)
    assert (ours["frames"], ours["x_pixels"], ours["y_pixels"]) == (header.num_frames, header.x_pixel,
                                                                     header.y_pixel)
    assert ours["scan_size_nm"] == (header.x_scanning_range, header.y_scanning_range)
    assert (ours["z_piezo_extension"], ours["z_piezo_gain"]) == pytest.approx((header.z_piezo_extension,
                                                                               header.z_piezo_gain))
    assert ours["version"] == header.file_version
    movie = read_movie(path)
    assert movie.unit == "nm"
    np.testing.assert_allclose(movie.frames[..., 0], oracle, rtol=1e-6, atol=1e-4)


@pytest.mark.parametrize("version", [0, 1])
def test_synthetic_asd_matches_libasd(tmp_path, version):
    """libasd reads v0 and v1 files; values (nm) and header fields agree with our reader's."""
    _check_against_libasd(write_asd(tmp_path / f"v{version}.asd", version, [levels(t=3, h=7, w=9),
                                                                           levels(t=3, h=7, w=9, seed=1)]))


def test_real_asd_movies_match_libasd(real_asd):
    for path in real_asd.values():
        _check_against_libasd(path)
