"""clips.py: clips, frame selection and the output plan. A video header's frame count is a hint only: reruns and
``--resume`` are planned from the frames a run decoded and wrote (its run record), and nothing loops over a header
count (reliability matrix 2: R07, R10, V17)."""

import argparse
import os
import time

import cv2
import numpy as np
import pytest

import run_record
from clips import Clip, check_output, clip_record, finished_frames, input_identity, septuplet_target
from errors import UserError

HUGE = 10**11  # what a damaged mkv Duration claims (V17)


def _args(out, **options) -> argparse.Namespace:
    base = dict(output=str(out), upscale_only=True, denoise=False, save_frames=True, frames=None, resume=False,
                codec="h264")
    base.update(options)
    return argparse.Namespace(**base)


def _video_clip(tmp_path, header) -> Clip:
    """A clip of a video file (planning never decodes it, so any bytes do) whose header claims ``header`` frames."""
    path = tmp_path / "v.mkv"
    if not path.exists():
        path.write_bytes(b"not decoded")
    return Clip("v", video=str(path), header_count=header)


def _frames_on_disk(folder, names, size=(16, 16)):
    os.makedirs(folder, exist_ok=True)
    for name in names:
        cv2.imwrite(os.path.join(folder, name), np.zeros(size + (3,), np.uint8))


def _record(folder, clip, frames, count):
    """The record an earlier upscale of ``clip`` leaves after writing ``frames`` (``count``: frames decoded)."""
    rec = run_record.Recorder(str(folder), input_identity(clip), {"mode": "upscale"}, frame_count=count)
    for t in frames:
        rec.add(t)


def test_septuplet_target_frame_is_the_originals():
    assert septuplet_target(7, True, 7) == 3  # im4
    assert septuplet_target(3, True, 7) == 3  # im4 whatever nFrames (neighbours im3, im5)
    assert septuplet_target(7, False, 7) == 6  # im7: past frames only
    assert septuplet_target(5, False, 7) == 4  # im5
    assert septuplet_target(7, True, 2) == 1  # short folder: its last frame


def test_a_header_count_is_only_a_hint(tmp_path):
    clip = _video_clip(tmp_path, 120)
    assert clip.count() is None and clip.hint() == 120
    assert _video_clip(tmp_path, HUGE).hint() is None  # not believed
    clip.decoded = 12
    assert clip.count() == clip.hint() == 12  # the decoded count wins
    folder = Clip("f", frames=[str(tmp_path / f"{i}.png") for i in range(3)], header_count=99)
    assert folder.count() == folder.hint() == 3


def test_output_names_map_back_to_frames(tmp_path):
    video = _video_clip(tmp_path, 10)
    assert video.index_of("00012.png") == 11  # beyond the header's 10: the header is no limit
    assert video.index_of("123456.png") == 123455
    for name in ("00000.png", "12.png", "0012.png", "00012.jpg", "abcde.png", "\uff10\uff10\uff10\uff11\uff12.png",
                 "notes.txt"):
        assert video.index_of(name) is None, name
    _frames_on_disk(tmp_path / "f", ["a.png", "b.jpg", "c.png"])
    frames = Clip("f", frames=[str(tmp_path / "f" / n) for n in ("a.png", "b.jpg", "c.png")])
    assert [frames.index_of(n) for n in ("a.png", "b.png", "c.png", "d.png")] == [0, 1, 2, None]
    movie = Clip("m", video=str(tmp_path / "m.npy"), frame_count=2)  # an exact count: only its frames
    assert [movie.index_of(n) for n in ("00001.png", "00002.png", "00003.png")] == [0, 1, None]


@pytest.mark.parametrize("header", [10, 0, None, HUGE])
def test_rerun_and_resume_are_planned_from_the_record_not_the_header(tmp_path, header):
    """R07 (VFR mkv: header 10, 12 real), R10 (webm without Duration: no count), V17 (absurd count)."""
    clip = _video_clip(tmp_path, header)
    out = tmp_path / "out"
    names = [f"{t:05d}.png" for t in range(1, 13)]
    _frames_on_disk(out / "v", names)
    _record(out / "v", clip, range(12), 12)
    start = time.time()
    check_output([clip], _args(out))  # the same run again
    check_output([clip], _args(out, resume=True))
    check_output([clip], _args(out, frames="1:"))
    assert time.time() - start < 5  # no loop over a header count
    assert sorted(os.listdir(out / "v")) == names


def test_files_no_run_of_this_clip_writes_are_refused(tmp_path):
    clip = _video_clip(tmp_path, None)
    out = tmp_path / "out"
    _frames_on_disk(out / "v", [f"{t:05d}.png" for t in range(1, 13)])
    _record(out / "v", clip, range(12), 12)
    _frames_on_disk(out / "v", ["00013.png"])  # the clip decodes to 12 frames: 13 is another clip's
    with pytest.raises(UserError, match=r"holds 1 file\(s\) that this run would not replace \(00013.png\)"):
        check_output([clip], _args(out))
    os.remove(out / "v" / "00013.png")
    with pytest.raises(UserError, match=r"holds 7 file\(s\) .*\(00006.png, 00007.png, 00008.png, ...\)"):
        check_output([clip], _args(out, resume=True, frames="1:5"))  # the documented R04 rule stays
    (out / "v" / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="notes.txt"):
        check_output([clip], _args(out))


def test_without_a_record_a_rerun_keeps_to_the_frames_it_selects(tmp_path):
    clip = _video_clip(tmp_path, 0)
    out = tmp_path / "out"
    _frames_on_disk(out / "v", ["00001.png", "00002.png", "00003.png"])  # an earlier version's run
    check_output([clip], _args(out))
    with pytest.raises(UserError, match=r"\(00003.png\)"):
        check_output([clip], _args(out, frames="1:2"))


def test_resume_needs_a_record_of_this_input(tmp_path):
    clip = _video_clip(tmp_path, 12)
    out = tmp_path / "out"
    _frames_on_disk(out / "v", ["00001.png", "00002.png"])
    with pytest.raises(UserError, match=r"--resume: .* holds 2 file\(s\) but no record of the run that made them"):
        check_output([clip], _args(out, resume=True))
    other = Clip("v", video=str(tmp_path / "other.mkv"))
    (tmp_path / "other.mkv").write_bytes(b"another video")
    _record(out / "v", other, range(2), None)
    with pytest.raises(UserError, match=r"were made from .*other.mkv, not .*v.mkv"):
        check_output([clip], _args(out, resume=True))
    _record(out / "v", clip, range(2), None)
    check_output([clip], _args(out, resume=True))
    (tmp_path / "v.mkv").write_bytes(b"re-encoded since")
    assert clip_record(clip, str(out / "v")) is None
    with pytest.raises(UserError, match=r"were made from .*v.mkv before it changed"):
        check_output([clip], _args(out, resume=True))


def test_finished_frames_are_recorded_complete_and_of_the_right_size(tmp_path):
    clip = _video_clip(tmp_path, None)
    folder = tmp_path / "v"
    _frames_on_disk(folder, ["00001.png", "00002.png", "00005.png"])
    _frames_on_disk(folder, ["00003.png"], size=(8, 8))  # another size
    (folder / "00004.png").write_bytes(b"half a frame")
    assert finished_frames(str(folder), clip, (16, 16), {0, 2, 3, 4, 9}) == {0, 4}  # 00002 was never recorded
    assert finished_frames(str(tmp_path / "none"), clip, (16, 16), {0}) == set()


def test_a_denoise_run_drops_an_upscale_record_of_its_folder(tmp_path):
    out = tmp_path / "out"
    movie = Clip("m", video=str(tmp_path / "m.npy"), frame_count=2)
    (tmp_path / "m.npy").write_bytes(b"x")
    _frames_on_disk(out / "m", ["00001.png"])
    _record(out / "m", movie, [0], 2)
    check_output([movie], _args(out, denoise=True, upscale_only=False))
    assert run_record.read(str(out / "m")) is None
