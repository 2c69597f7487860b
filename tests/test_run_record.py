"""run_record.py: the record beside an output clip folder of what made its frames."""

import json
import os

import run_record


def test_frames_are_kept_as_ranges_and_read_back():
    frames = {0, 1, 2, 5, 7, 8}
    ranges = run_record.to_ranges(frames)
    assert ranges == [[0, 3], [5, 6], [7, 9]]
    assert run_record.from_ranges(ranges) == frames
    assert run_record.to_ranges([]) == []


def test_the_record_lies_beside_the_folder_hidden(tmp_path):
    assert run_record.record_path(str(tmp_path / "out" / "clip")) == str(tmp_path / "out" / ".clip.iseebetter_run.json")
    assert run_record.record_path(str(tmp_path / "out" / "clip") + "/") == run_record.record_path(
        str(tmp_path / "out" / "clip"))


def test_recorder_writes_nothing_until_a_frame_and_then_every_frame(tmp_path):
    folder = str(tmp_path / "clip")
    rec = run_record.Recorder(folder, {"video": "v"}, {"scale": 4})
    rec.set_count(12)
    assert not os.path.exists(run_record.record_path(folder))  # a run that writes no frame leaves nothing
    for t in (0, 1, 2, 4):
        rec.add(t)
    rec.add(1)  # written again: no change
    record = run_record.read(folder)
    assert record["frames"] == [[0, 3], [4, 5]] and record["frame_count"] == 12
    assert run_record.recorded_frames(record) == {0, 1, 2, 4} and run_record.recorded_count(record) == 12
    # A new run replaces an earlier record at once (its frames are about to be overwritten), keeping only ``kept``.
    run_record.Recorder(folder, {"video": "v"}, {"scale": 2}, kept={4})
    record = run_record.read(folder)
    assert record["settings"] == {"scale": 2} and run_record.recorded_frames(record) == {4}
    assert run_record.recorded_count(record) is None
    assert [n for n in os.listdir(tmp_path) if n.startswith(".tmp_")] == []  # written atomically


def test_damaged_or_foreign_records_are_ignored(tmp_path):
    folder = str(tmp_path / "clip")
    path = run_record.record_path(folder)
    for text in ("", "{not json", "[]", json.dumps({"version": 99, "input": {}, "settings": {}, "frames": []}),
                 json.dumps({"version": 1, "input": {}, "settings": {}, "frames": [["a", 2]]})):
        with open(path, "w") as f:
            f.write(text)
        assert run_record.read(folder) is None, text
    run_record.remove(folder)
    run_record.remove(folder)  # nothing there: fine
    assert run_record.read(folder) is None


def test_differences_name_each_setting_with_both_values(tmp_path):
    model = tmp_path / "m.pth"
    model.write_bytes(b"weights")
    ident = run_record.model_identity(str(model))
    assert ident["file"] == "m.pth" and len(ident["sha256"]) == 64
    assert run_record.model_identity("bicubic") == {"file": "bicubic"}
    diffs = run_record.differences({"model": {"file": "bicubic"}, "scale": 4, "tile": 0},
                                   {"model": ident, "scale": 4, "tile": 64, "nFrames": 3})
    assert diffs == [f"model was bicubic, now m.pth (sha256 {ident['sha256'][:12]})", "tile was 0, now 64",
                     "nFrames was unset, now 3"]
    assert run_record.differences({"scale": 4}, {"scale": 4}) == []


def test_input_identity_changes_with_the_input(tmp_path):
    video = tmp_path / "v.mp4"
    video.write_bytes(b"abc")
    first = run_record.input_identity(str(video), None)
    video.write_bytes(b"abcd")
    assert run_record.input_identity(str(video), None) != first
    frames = [str(tmp_path / f"{i}.png") for i in range(3)]
    assert run_record.input_identity(None, frames) == run_record.input_identity(None, list(frames))
    assert run_record.input_identity(None, frames[:2]) != run_record.input_identity(None, frames)
