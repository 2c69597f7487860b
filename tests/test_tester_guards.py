"""iSeeBetterTest.py never loses a user's files and never reports silently wrong results (reliability matrix fixes)."""

import hashlib
import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch
from conftest import ROOT, moving_frames
from conftest import run_tester as _cli

import atomic
import iSeeBetterTest as tester
import upscale
import video_io


def _write_frames(folder, frames, ext=".png"):
    os.makedirs(folder, exist_ok=True)
    for i, f in enumerate(frames, start=1):
        cv2.imwrite(os.path.join(folder, f"{i:03d}{ext}"), cv2.cvtColor(f, cv2.COLOR_RGB2BGR))


def _write_avi(path, n=4, size=(40, 32), fps=12.0):
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, size)
    for frame in moving_frames(n, size[1], size[0]):
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()


def _digest(folder) -> dict:
    """{relative path: md5} of every file under ``folder``."""
    out = {}
    for base, _, names in os.walk(folder):
        for n in names:
            p = os.path.join(base, n)
            out[os.path.relpath(p, folder)] = hashlib.md5(open(p, "rb").read()).hexdigest()
    return out


def _one_error(err: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("error:") or ": error:" in line]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


# ------------------------------------------------------------------------------------ 1. outputs never hit inputs


def test_output_beside_the_input_video_never_replaces_it(tmp_path, tiny_ckpt, capsys):
    vids = tmp_path / "vids"
    vids.mkdir()
    _write_avi(vids / "clip.avi")
    os.rename(vids / "clip.avi", vids / "clip.mp4")  # MJPG in an .mp4 name: what a user's folder may hold
    before = _digest(vids)
    code, err = _cli(["-u", "--input", str(vids / "clip.mp4"), "-o", str(vids), "-m", tiny_ckpt], capsys)
    assert code == 2 and "input" in _one_error(err)
    assert _digest(vids) == before  # nothing replaced, nothing added


def test_output_parent_of_a_frame_folder_never_overwrites_frames(tmp_path, tiny_ckpt, capsys):
    parent = tmp_path / "parent"
    _write_frames(parent / "victim", moving_frames(3, 32, 40))
    before = _digest(parent)
    code, err = _cli(["-u", "--input", str(parent / "victim"), "-o", str(parent), "-m", tiny_ckpt], capsys)
    assert code == 2 and "input frames" in _one_error(err)
    assert _digest(parent) == before
    # Nor through a symlink to the same place.
    link = tmp_path / "link"
    os.symlink(parent, link)
    code, err = _cli(["-u", "--input", str(parent / "victim"), "-o", str(link), "-m", tiny_ckpt], capsys)
    assert code == 2 and _digest(parent) == before
    # Nor by writing a comparison image into the frame folder itself.
    code, err = _cli(["-u", "--input", str(parent / "victim"), "-o", str(parent / "victim"), "-m", tiny_ckpt], capsys)
    assert code == 2 and _digest(parent) == before


def test_evaluation_never_overwrites_the_ground_truth(tmp_path, capsys):
    vid4 = tmp_path / "Vid4"
    _write_frames(vid4 / "a", moving_frames(3, 32, 40))
    before = _digest(vid4)
    for extra in ([], ["--no-save_frames"]):
        code, err = _cli(["--input", str(vid4 / "a"), "-o", str(vid4 / "a"), "-m", "bicubic"] + extra, capsys)
        assert code == 2, err
        assert _digest(vid4) == before
    code, err = _cli(["--input", str(vid4), "-o", str(vid4), "-m", "bicubic"], capsys)
    assert code == 2 and "ground" not in err and "input" in _one_error(err)
    assert _digest(vid4) == before


# -------------------------------------------------------------------------------------------- 3. name collisions


def test_clips_with_the_same_stem_get_distinct_outputs_and_metrics(tmp_path, capsys):
    root = tmp_path / "collide"
    _write_frames(root / "clip", moving_frames(3, 32, 40, seed=1))
    _write_avi(root / "clip.avi", n=4)
    _write_avi(root / "b.avi", n=5, size=(48, 32))
    os.makedirs(root / "tmp")
    _write_avi(root / "tmp" / "b.avi", n=3)
    os.rename(root / "tmp" / "b.avi", root / "b.mp4")
    os.rmdir(root / "tmp")
    out = tmp_path / "out"
    code, err = _cli(["--input", str(root), "-o", str(out), "-m", "bicubic"], capsys)
    assert code == 0, err
    summary = json.loads((out / "metrics.json").read_text())
    assert sorted(summary["clips"]) == ["b_avi", "b_mp4", "clip", "clip_avi"]
    frames = {name: sorted(os.listdir(out / name)) for name in summary["clips"]}
    assert len(frames["b_avi"]) == 5 and len(frames["b_mp4"]) == 3
    assert len(frames["clip"]) == 3 and len(frames["clip_avi"]) == 4
    assert "average over 4 clip(s)" in err


def test_frames_with_the_same_stem_are_all_written(tmp_path, tiny_ckpt, capsys):
    folder = tmp_path / "dupext"
    frames = moving_frames(3, 32, 40)
    _write_frames(folder, frames[:2])
    cv2.imwrite(str(folder / "002.jpg"), cv2.cvtColor(frames[2], cv2.COLOR_RGB2BGR))
    out = tmp_path / "out"
    code, err = _cli(["-u", "--input", str(folder), "-o", str(out), "-m", tiny_ckpt], capsys)
    assert code == 0, err
    assert sorted(os.listdir(out / "dupext")) == ["001.png", "002_jpg.png", "002_png.png"]


# ------------------------------------------------------------------------------------- 5. a failed video write


def test_an_interrupted_video_write_leaves_nothing_under_its_name(tmp_path):
    """Ctrl-C (or any failure) while frames are being encoded: no file that looks complete and is not."""
    def frames():
        yield from moving_frames(3, 32, 40)
        raise KeyboardInterrupt

    path = tmp_path / "out.mp4"
    with pytest.raises(KeyboardInterrupt):
        video_io.write_video(str(path), frames(), 10)
    assert os.listdir(tmp_path) == []


@pytest.fixture
def full_disk(tmp_path):
    """A 1 MiB tmpfs (root only; skipped elsewhere)."""
    mount = tmp_path / "full"
    mount.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)],
                                           capture_output=True).returncode != 0:
        pytest.skip("needs root and tmpfs to simulate a full disk")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], capture_output=True)


def test_disk_full_while_writing_the_video_is_an_error_not_a_truncated_file(tmp_path, full_disk, capsys):
    frames = [np.random.default_rng(i).integers(0, 255, (256, 320, 3), dtype=np.uint8) for i in range(40)]
    with pytest.raises((video_io.VideoError, OSError)):
        video_io.write_video(str(full_disk / "big.mp4"), frames, 10.0)
    assert not (full_disk / "big.mp4").exists()
    assert [n for n in os.listdir(full_disk) if not n.startswith(".")] == []


# ------------------------------------------------------------------------------------------- 12. PSNR stays finite


def test_a_frame_equal_to_the_ground_truth_gives_capped_finite_metrics(tmp_path, capsys):
    folder = tmp_path / "black"
    frames = moving_frames(3, 32, 40)
    frames[0] = np.zeros_like(frames[0])  # a black first frame: bicubic reproduces it exactly
    _write_frames(folder, frames)
    out = tmp_path / "out"
    code, err = _cli(["--input", str(folder), "-o", str(out), "-m", "bicubic"], capsys)
    assert code == 0, err

    def no_constants(name):
        raise AssertionError(f"metrics.json holds {name}")

    summary = json.loads((out / "metrics.json").read_text(), parse_constant=no_constants)
    clip = summary["clips"]["black"]
    assert clip["psnr_capped_frames"] == 1 and summary["average"]["psnr_capped_frames"] == 1
    assert isinstance(clip["psnr_y"], float) and 100 / 3 < clip["psnr_y"] < 100
    assert summary["average"]["psnr_y"] == clip["psnr_y"]
    assert summary["protocol"]["psnr_cap_db"] == 100.0
    assert "capped at 100 dB" in err


# ------------------------------------------------------------------------------------------------- rough edges


def test_help_does_not_import_torch():
    code = ("import runpy, sys; sys.argv = ['iSeeBetterTest.py', '-h']\n"
            "try:\n    runpy.run_path('iSeeBetterTest.py', run_name='__main__')\n"
            "except SystemExit:\n    pass\n"
            "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH')")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert result.stdout.strip().endswith("NO-TORCH"), result.stdout + result.stderr
    for option in ("--upscale_only", "--denoise", "--channel", "--reference", "--no-eval"):
        assert option in result.stdout


def test_tiny_tiles_warn_and_overlap_must_be_below_tile(tmp_path, tiny_ckpt, capsys):
    assert tester.tile_warning(0, 16) is None and tester.tile_warning(128, 16) is None
    assert "about 289x" in tester.tile_warning(17, 16)
    assert "tiles under" in tester.tile_warning(8, 0) and "each pixel" not in tester.tile_warning(8, 0)
    folder = tmp_path / "f"
    _write_frames(folder, moving_frames(2, 16, 16))
    code, err = _cli(["-u", "-i", str(folder), "-o", str(tmp_path / "o"), "-m", tiny_ckpt, "--tile", "16",
                      "--tile_overlap", "16"], capsys)
    assert code == 2 and "--tile_overlap" in _one_error(err)
    code, err = _cli(["-u", "-i", str(folder), "-o", str(tmp_path / "o"), "-m", tiny_ckpt, "--tile", "12",
                      "--tile_overlap", "4"], capsys)
    assert code == 0 and "many times slower" in err


def test_output_problems_are_found_before_any_work(tmp_path, capsys, monkeypatch):
    folder = tmp_path / "f"
    _write_frames(folder, moving_frames(3, 32, 40))
    somefile = tmp_path / "somefile"
    somefile.write_text("x")
    evaluated = []
    monkeypatch.setattr(upscale, "evaluate_clip", lambda *a, **k: evaluated.append(1))
    code, err = _cli(["-i", str(folder), "-o", str(somefile), "-m", "bicubic", "--no-save_frames"], capsys)
    assert code == 2 and "is a file" in _one_error(err) and not evaluated
    (tmp_path / "o" / "metrics.json").mkdir(parents=True)
    code, err = _cli(["-i", str(folder), "-o", str(tmp_path / "o"), "-m", "bicubic"], capsys)
    assert code == 2 and "metrics.json is a folder" in _one_error(err) and not evaluated


def test_an_earlier_longer_run_is_not_mixed_with_this_one(tmp_path, capsys):
    folder = tmp_path / "clip"
    _write_frames(folder, moving_frames(5, 32, 40))
    out = tmp_path / "out"
    code, err = _cli(["-u", "-i", str(folder), "-o", str(out), "-m", "bicubic"], capsys)
    assert code == 0, err
    code, err = _cli(["-u", "-i", str(folder), "-o", str(out), "-m", "bicubic"], capsys)
    assert code == 0, err  # the same run again overwrites its own frames
    os.remove(folder / "004.png")
    os.remove(folder / "005.png")
    before = _digest(out)
    code, err = _cli(["-u", "-i", str(folder), "-o", str(out), "-m", "bicubic"], capsys)
    assert code == 2 and "004.png, 005.png" in _one_error(err)
    assert _digest(out) == before


def test_stale_temporary_files_in_the_output_are_removed(tmp_path, capsys):
    folder = tmp_path / "clip"
    _write_frames(folder, moving_frames(3, 32, 40))
    out = tmp_path / "out"
    (out / "clip").mkdir(parents=True)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = out / "clip" / f".tmp_{atomic._HOST}_{int(dead.stdout)}_x.png"
    stale.write_bytes(b"half a frame")
    code, err = _cli(["-u", "-i", str(folder), "-o", str(out), "-m", "bicubic"], capsys)
    assert code == 0, err
    assert not stale.exists() and len(os.listdir(out / "clip")) == 3


def test_truncated_video_warns_with_both_counts(tmp_path, capsys):
    path = tmp_path / "v20.avi"
    _write_avi(path, n=20)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    out = tmp_path / "out"
    code, err = _cli(["-u", "-i", str(path), "-o", str(out), "-m", "bicubic"], capsys)
    decoded = len(os.listdir(out / "v20"))
    assert code == 0 and 0 < decoded < 20, err
    assert f"header says 20 frames but only {decoded} decoded" in err


@pytest.mark.parametrize("argv, expect", [
    (["-s", "0"], "--upscale_factor must be >= 1"),
    (["-s", "-2"], "--upscale_factor must be >= 1"),
    (["--nFrames", "0"], "--nFrames must be >= 1"),
])
def test_bad_numbers_name_the_option(tmp_path, capsys, argv, expect):
    code, err = _cli(["-u", "-i", str(tmp_path), "-o", str(tmp_path / "o"), "-m", "bicubic"] + argv, capsys)
    assert code == 2 and expect in _one_error(err)


def test_model_folder_unreadable_frame_and_tiny_frames_have_clear_messages(tmp_path, capsys, monkeypatch):
    folder = tmp_path / "f"
    _write_frames(folder, moving_frames(3, 32, 40))
    code, err = _cli(["-u", "-i", str(folder), "-o", str(tmp_path / "o"), "-m", str(tmp_path)], capsys)
    assert code == 2 and "is a folder" in _one_error(err)
    tiny = tmp_path / "tiny1"
    _write_frames(tiny, [np.zeros((1, 1, 3), np.uint8)] * 3)
    code, err = _cli(["-i", str(tiny), "-o", str(tmp_path / "o1"), "-m", "bicubic"], capsys)
    assert code == 2 and "frames of 1x1" in _one_error(err)

    def denied(path, dtype=None):
        raise PermissionError(13, "Permission denied", path)

    monkeypatch.setattr(np, "fromfile", denied)
    code, err = _cli(["-u", "-i", str(folder), "-o", str(tmp_path / "o2"), "-m", "bicubic"], capsys)
    assert code == 2 and "cannot read frame" in _one_error(err) and "permission" in err


def test_default_model_is_found_from_any_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    parser = tester.build_parser()
    args = parser.parse_args(["-u", "-i", "x"])
    tester.check_args(parser, args)
    assert os.path.isfile(args.model) and os.path.isabs(args.model)


# ------------------------------------------------------------------ run records and --resume (matrix 2: R09, R02b)


def test_resume_never_mixes_frames_of_another_model_or_other_options(tmp_path, tiny_ckpt, capsys):
    """R09: frames an earlier run made with another model or other options are refused, not kept."""
    folder = tmp_path / "clip"
    _write_frames(folder, moving_frames(5, 16, 16))
    out = tmp_path / "out"
    code, err = _cli(["-u", "-i", str(folder), "-o", str(out), "-m", "bicubic", "--frames", "1:3"], capsys)
    assert code == 0, err
    before = _digest(out)
    code, err = _cli(["-u", "-i", str(folder), "-o", str(out), "-m", tiny_ckpt, "--resume"], capsys)
    line = _one_error(err)
    assert code == 2 and "were made with other settings (model was bicubic, now tiny.pth (sha256" in line
    assert "resume with the same options, or use a fresh --output" in line
    assert _digest(out) == before
    code, err = _cli(["-u", "-i", str(folder), "-o", str(out), "-m", "bicubic", "--resume"], capsys)
    assert code == 0 and "keeps 3 frame(s)" in err, err
    code, err = _cli(["-u", "-i", str(folder), "-o", str(out), "-m", tiny_ckpt], capsys)  # a fresh run replaces all
    assert code == 0, err
    code, err = _cli(["-u", "-i", str(folder), "-o", str(out), "-m", tiny_ckpt, "--resume", "--tile", "12",
                      "--tile_overlap", "4"], capsys)
    assert code == 2 and "tile was 0, now 12; tile_overlap was unset, now 4" in _one_error(err)
    code, err = _cli(["-u", "-i", str(folder), "-o", str(out), "-m", tiny_ckpt, "--resume"], capsys)
    assert code == 0 and "keeps 5 frame(s)" in err, err


def test_resume_with_every_frame_present_still_writes_the_comparison(tmp_path, tiny_ckpt, capsys):
    """R02b: the comparison image comes from the frames on disk when none is computed."""
    folder = tmp_path / "clip"
    _write_frames(folder, moving_frames(5, 16, 16))
    out = tmp_path / "out"
    code, err = _cli(["-u", "-i", str(folder), "-o", str(out), "-m", tiny_ckpt], capsys)
    assert code == 0, err
    first = cv2.imread(str(out / "clip_compare.png"))
    os.remove(out / "clip_compare.png")
    code, err = _cli(["-u", "-i", str(folder), "-o", str(out), "-m", tiny_ckpt, "--resume"], capsys)
    assert code == 0 and "keeps 5 frame(s)" in err, err
    assert np.array_equal(cv2.imread(str(out / "clip_compare.png")), first)  # the same frame, from disk


def test_inputs_and_output_are_checked_before_the_model_is_loaded(tmp_path, capsys, monkeypatch):
    def never(args):
        raise AssertionError("the model was loaded before the inputs were checked")

    monkeypatch.setattr(upscale, "load_generator", never)
    code, err = _cli(["-u", "-i", str(tmp_path / "missing.mp4"), "-o", str(tmp_path / "o")], capsys)
    assert code == 2 and _one_error(err) == f"error: input not found: {tmp_path / 'missing.mp4'}"
    folder = tmp_path / "clip"
    _write_frames(folder, moving_frames(2, 16, 16))
    (tmp_path / "afile").write_text("x")
    code, err = _cli(["-u", "-i", str(folder), "-o", str(tmp_path / "afile")], capsys)
    assert code == 2 and "is a file; pass a folder" in _one_error(err)
    (tmp_path / "o" / "clip").mkdir(parents=True)
    (tmp_path / "o" / "clip" / "notes.txt").write_text("mine")
    code, err = _cli(["-u", "-i", str(folder), "-o", str(tmp_path / "o")], capsys)
    assert code == 2 and "would not replace (notes.txt)" in _one_error(err)


def test_flow_device_errors_name_flow_device_and_cpp_warns_it_is_unused(tmp_path, tiny_ckpt, capsys):
    """P08/P09: the model runs on the CPU; only the flow device is wrong (or unused)."""
    folder = tmp_path / "clip"
    _write_frames(folder, moving_frames(2, 16, 16))
    code, err = _cli(["-u", "-i", str(folder), "-o", str(tmp_path / "o"), "-m", tiny_ckpt, "--flow_backend", "cpp",
                      "--flow_device", "cuda"], capsys)
    assert code == 0, err
    assert "--flow_device cuda is not used: --flow_backend cpp computes the optical flow with the C++ pyflow" in err
    if not torch.cuda.is_available():
        code, err = _cli(["-u", "-i", str(folder), "-o", str(tmp_path / "o2"), "-m", tiny_ckpt, "--flow_backend",
                          "torch", "--flow_device", "cuda"], capsys)
        assert code == 2 and _one_error(err) == ("error: CUDA was requested (--flow_device cuda) but no CUDA GPU is "
                                                 "available; use --flow_device cpu (or auto)")


def test_small_tile_overlaps_warn_that_the_output_changes():
    """D37: overlaps under the measured threshold change the output by more than 1% (test_inference measures it)."""
    assert tester.tile_warning(64, tester.MIN_OVERLAP) is None
    warning = tester.tile_warning(64, tester.MIN_OVERLAP - 4)
    assert "changes the output" in warning and "more than 1% of its range" in warning and "slower" not in warning
    assert f"use --tile_overlap {tester.MIN_OVERLAP} or more" in warning
    assert tester.tile_warning(96, 16, blend=True) is None
    blended = tester.tile_warning(8, 4, blend=True)  # D37: --denoise --tile 8 --tile_overlap 4
    assert "many times slower" in blended and "it also changes the output" in blended
    assert f"overlaps under {tester.MIN_OVERLAP_BLEND} px" in blended
