"""video_io: frames and videos in RGB uint8, clear errors, atomic writes."""

import os

import cv2
import numpy as np
import pytest
from conftest import moving_frames

from video_io import (
    VideoError,
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
