"""video_io: frames and videos in RGB uint8, clear errors, atomic writes."""

import os
import struct
from fractions import Fraction

import av
import cv2
import numpy as np
import pytest
from conftest import moving_frames

import video_io
from video_io import (
    VideoError,
    find_video_sources,
    is_video_file,
    iter_video,
    list_frames,
    load_rgb,
    read_frames,
    read_video,
    save_rgb,
    video_info,
    write_video,
)


def test_save_and_load_png_roundtrip_is_rgb(tmp_path):
    img = moving_frames(1)[0]
    path = tmp_path / "a" / "f.png"
    save_rgb(str(path), img)
    out = load_rgb(str(path))
    np.testing.assert_array_equal(out, img)
    # on disk it is a normal BGR PNG: OpenCV reads the channels reversed
    np.testing.assert_array_equal(cv2.imread(str(path))[..., ::-1], img)
    assert [n for n in os.listdir(path.parent)] == ["f.png"]  # no temp file left


def test_gray_and_16bit_images_become_rgb_uint8(tmp_path):
    gray = np.arange(64, dtype=np.uint8).reshape(8, 8)
    cv2.imwrite(str(tmp_path / "g.png"), gray)
    out = load_rgb(str(tmp_path / "g.png"))
    assert out.shape == (8, 8, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[..., 1], gray)
    cv2.imwrite(str(tmp_path / "w.png"), (gray.astype(np.uint16) * 257))
    np.testing.assert_array_equal(load_rgb(str(tmp_path / "w.png"))[..., 0], gray)


def test_missing_and_corrupt_images_name_the_file(tmp_path):
    with pytest.raises(VideoError, match="missing.png"):
        load_rgb(str(tmp_path / "missing.png"))
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png at all")
    with pytest.raises(VideoError, match="bad.png"):
        load_rgb(str(bad))
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(VideoError, match="empty.png"):
        load_rgb(str(tmp_path / "empty.png"))


def test_list_frames_natural_sort(tmp_path):
    for n in ["f10.png", "f2.png", "f1.png", "notes.txt", ".hidden.png"]:
        (tmp_path / n).write_bytes(b"x")
    assert [os.path.basename(p) for p in list_frames(str(tmp_path))] == ["f1.png", "f2.png", "f10.png"]
    with pytest.raises(VideoError, match="not found"):
        list_frames(str(tmp_path / "sub_missing"))


def test_list_frames_empty_folder(tmp_path):
    with pytest.raises(VideoError, match="no image files"):
        list_frames(str(tmp_path))


def test_read_video_and_iter_video(video_file):
    frames, fps = read_video(str(video_file))
    assert len(frames) == 8 and fps == pytest.approx(10.0)
    assert frames[0].shape == (64, 96, 3) and frames[0].dtype == np.uint8
    ref = moving_frames()
    # MJPG is lossy on this noisy texture; the decoded frame is still far closer to the RGB original than to
    # the same frame with its channels swapped (BGR)
    err_rgb = np.abs(frames[3].astype(int) - ref[3].astype(int)).mean()
    err_bgr = np.abs(frames[3].astype(int) - ref[3][..., ::-1].astype(int)).mean()
    assert err_rgb < 15 and err_rgb < 0.5 * err_bgr
    streamed = list(iter_video(str(video_file)))
    assert all(np.array_equal(a, b) for a, b in zip(frames, streamed))
    info = video_info(str(video_file))
    assert (info["width"], info["height"]) == (96, 64)


def test_read_frames_window_matches_full_decode(video_file):
    frames, _ = read_video(str(video_file))
    window = read_frames(str(video_file), 3, 4)
    assert all(np.array_equal(a, b) for a, b in zip(window, frames[3:7]))
    with pytest.raises(VideoError, match="could not decode"):
        read_frames(str(video_file), 6, 5)


def test_write_video_roundtrip_atomic(tmp_path):
    frames = moving_frames(6)
    out = tmp_path / "out.mp4"
    assert write_video(str(out), iter(frames), 12.0) == 6
    back, fps = read_video(str(out))
    assert len(back) == 6 and fps == pytest.approx(12.0)
    err = np.abs(back[2].astype(int) - frames[2].astype(int)).mean()
    assert err < 15 and err < 0.5 * np.abs(back[2].astype(int) - frames[2][..., ::-1].astype(int)).mean()
    assert sorted(os.listdir(tmp_path)) == ["out.mp4"]


def test_write_video_rejects_bad_frames_and_leaves_nothing(tmp_path):
    out = tmp_path / "bad.mp4"
    frames = moving_frames(2)
    with pytest.raises(VideoError, match="expected 96x64"):
        write_video(str(out), [frames[0], frames[1][:32]], 10)
    with pytest.raises(VideoError, match="no frames"):
        write_video(str(out), [], 10)
    assert os.listdir(tmp_path) == []


def test_unreadable_video_names_the_file(tmp_path):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"\x00" * 1000)
    with pytest.raises(VideoError, match="broken.mp4"):
        list(iter_video(str(bad)))
    with pytest.raises(VideoError, match="nothere.avi"):
        read_video(str(tmp_path / "nothere.avi"))


# ------------------------------------------------------------------------ containers, damage, counts (matrix 2)


def _encode(path, fmt=None, codec="libx264", n=6, size=(48, 32), rate=10, times=None, gop=None, options=None):
    """A small clip written by PyAV (single-threaded x264, no B-frames: the same bytes on every machine)."""
    with av.open(str(path), "w", format=fmt, options=options or {}) as out:
        stream = out.add_stream(codec, rate=rate)
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        if codec == "libx264":
            stream.options = {"threads": "1", "bframes": "0"}
        if gop:
            stream.codec_context.gop_size = gop
        if times is not None:
            stream.codec_context.time_base = stream.time_base = Fraction(1, 1000)
        for k, frame in enumerate(moving_frames(n, size[1], size[0])):
            video_frame = av.VideoFrame.from_ndarray(frame, format="rgb24")
            if times is not None:
                video_frame.pts, video_frame.time_base = int(times[k] * 1000), Fraction(1, 1000)
            for packet in stream.encode(video_frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return path


def _packets(path):
    """(byte offset, size) of each video packet."""
    with av.open(str(path)) as container:
        return [(p.pos, p.size) for p in container.demux(container.streams.video[0]) if p.size]


@pytest.mark.parametrize("ext, fmt, codec", [(".ts", "mpegts", "libx264"), (".mts", "mpegts", "libx264"),
                                             (".m2ts", "mpegts", "libx264"), (".3gp", "3gp", "libx264"),
                                             (".ogv", "ogg", "libvpx")])
def test_camcorder_phone_and_ogg_containers_are_read(tmp_path, ext, fmt, codec):
    path = _encode(tmp_path / ("clip" + ext), fmt, codec)
    assert is_video_file(str(path)) and is_video_file(str(path).upper())
    assert find_video_sources(str(tmp_path)) == [str(path)]
    frames = list(iter_video(str(path)))
    assert len(frames) == 6 and frames[0].shape == (32, 48, 3)
    assert np.abs(frames[3].astype(int) - moving_frames(6, 32, 48)[3].astype(int)).mean() < 20
    info = video_info(str(path))
    assert info["frame_count"] == 6 and info["fps"] == pytest.approx(10.0)
    with pytest.raises(VideoError, match=f"{ext} is not a container this program writes"):
        write_video(str(tmp_path / ("out" + ext)), frames, 10)


def test_one_table_row_is_all_a_new_container_needs(tmp_path, monkeypatch):
    monkeypatch.setitem(video_io.CONTAINERS, ".vid", video_io.Container("matroska"))
    path = tmp_path / "clip.vid"
    assert write_video(str(path), moving_frames(3, 32, 48), 10) == 3
    assert is_video_file(str(path)) and find_video_sources(str(path)) == [str(path)]
    assert len(list(iter_video(str(path)))) == 3 and video_info(str(path))["frame_count"] == 3
    with open(path, "rb") as f:
        assert f.read(4) == b"\x1a\x45\xdf\xa3"  # EBML: written by the row's muxer (matroska)


def test_damaged_packets_are_skipped_and_the_lost_frames_reported(tmp_path):
    clean = _encode(tmp_path / "clean.mp4", n=20, gop=4)
    data = bytearray(clean.read_bytes())
    for pos, _ in (_packets(clean)[k] for k in (7, 12)):  # two P-frames: their NAL length becomes garbage
        data[pos:pos + 8] = b"\xff" * 8
    damaged = tmp_path / "damaged.mp4"
    damaged.write_bytes(bytes(data))
    messages = []
    frames = list(iter_video(str(damaged), log=messages.append))
    assert len(frames) == 18  # every frame but the two damaged ones (the whole movie stopped at frame 5 before)
    assert messages == [f"{damaged}: decoding skipped 2 damaged packet(s) and went on; 2 frame(s) lost"]
    with pytest.warns(UserWarning, match="2 frame\\(s\\) lost"):  # without a log: a warning
        assert len(list(iter_video(str(damaged)))) == 18


def test_a_cut_file_keeps_every_complete_frame(tmp_path):
    clean = _encode(tmp_path / "clean.mp4", n=20, gop=4, options={"movflags": "+faststart"})  # index first
    pos, size = _packets(clean)[12]
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(clean.read_bytes()[: pos + size // 2])  # packets 0-11 whole, packet 12 cut in half
    messages = []
    frames = list(iter_video(str(cut), log=messages.append))
    assert len(frames) == 12 and video_info(str(cut))["frame_count"] == 20  # the index still says 20
    assert messages == [f"{cut}: decoding skipped 1 damaged packet(s) and went on; 8 frame(s) lost"]


def test_low_rate_and_wrong_durations_count_the_real_frames(tmp_path):
    slow = _encode(tmp_path / "slow.mkv", fmt="matroska", n=6, rate=25, times=range(6))  # 1 frame/s, 25 declared
    info = video_info(str(slow))
    assert info["frame_count"] == 6  # not duration x rate = 126 (a false "truncated or damaged" warning)
    data = bytearray(slow.read_bytes())
    struct.pack_into(">d", data, data.find(b"\x44\x89") + 3, 4e12)  # Duration: 4e9 s, about 1e11 frames
    giant = tmp_path / "giant.mkv"
    giant.write_bytes(bytes(data))
    assert video_info(str(giant))["frame_count"] == 6


def test_codec_size_is_checked_before_any_work():
    video_io.check_codec_size("h265", 64, 64)
    video_io.check_codec_size("h264", 16, 8)
    video_io.check_codec_size("ffv1", 1, 1)
    with pytest.raises(VideoError, match="--codec h265 needs frames of at least 64x64 px .* got 96x48"):
        video_io.check_codec_size("h265", 96, 48)
