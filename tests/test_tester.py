"""iSeeBetterTest.py end to end with a tiny RBPN: upscaling a video / frame folder, evaluation reports, bad inputs."""

import csv
import json
import os

import cv2
import numpy as np
import pytest
import torch
from conftest import TINY_NET, moving_frames
from conftest import run_tester as _cli

import iSeeBetterTest as tester
import metrics
from video_io import list_frames, load_rgb, video_info


def _write_clip(folder, frames):
    os.makedirs(folder, exist_ok=True)
    for i, f in enumerate(frames, start=1):
        cv2.imwrite(os.path.join(folder, f"{i:03d}.png"), cv2.cvtColor(f, cv2.COLOR_RGB2BGR))


@pytest.fixture
def vid4_like(tmp_path):
    """Two clips of different lengths in the Vid4 layout <root>/<clip>/NNN.png (HR 64x48, not a multiple of 4+)."""
    root = tmp_path / "vid4"
    _write_clip(root / "calendar", moving_frames(5, 50, 66, seed=1))
    _write_clip(root / "walk", moving_frames(3, 50, 66, seed=2))
    return root


@pytest.fixture
def small_video(tmp_path):
    """A 6-frame 40x32 MJPG .avi at 12 fps (small enough for a loaded 2-core CI machine)."""
    path = tmp_path / "small.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 12.0, (40, 32))
    for frame in moving_frames(6, 32, 40):
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    return path


@pytest.fixture
def small_folder(tmp_path):
    """A folder of 5 PNG frames 001.png..005.png (40x32)."""
    folder = tmp_path / "frames"
    _write_clip(folder, moving_frames(5, 32, 40))
    return folder


def test_upscale_video_file(small_video, tiny_ckpt, tmp_path, capsys):
    out = tmp_path / "out"
    code, err = _cli(["-u", "--input", str(small_video), "--output", str(out), "-m", tiny_ckpt, "--device", "cpu"],
                     capsys)
    assert code == 0, err
    frames = list_frames(str(out / "small"))
    assert len(frames) == 6
    assert load_rgb(frames[0]).shape == (128, 160, 3)
    info = video_info(str(out / "small.mp4"))
    assert (info["width"], info["height"]) == (160, 128)
    assert info["fps"] == pytest.approx(12.0)
    assert info["frame_count"] == 6
    assert "frame/s" in err  # the tqdm bar
    compare = load_rgb(str(out / "small_compare.png"))  # bicubic | SR, same crop, labels on top
    assert compare.shape[1] == 2 * 160 + 4 and compare.shape[0] > 128
    assert "small_compare.png" in err


def test_upscale_frame_folder_keeps_names(small_folder, tiny_ckpt, tmp_path, capsys):
    out = tmp_path / "out"
    code, err = _cli(["-u", "-i", str(small_folder), "-o", str(out), "-m", tiny_ckpt, "--precision", "fp32"], capsys)
    assert code == 0, err
    names = sorted(os.listdir(out / "frames"))
    assert names == [f"{i:03d}.png" for i in range(1, 6)]
    assert load_rgb(str(out / "frames" / "001.png")).shape == (128, 160, 3)
    assert not (out / "frames.mp4").exists()
    assert "frame/s" in err  # the tqdm bar
    # Tiled run of the same input: within one 8-bit level of the whole-frame run.
    tiled = tmp_path / "tiled"
    code, err = _cli(["-u", "-i", str(small_folder), "-o", str(tiled), "-m", tiny_ckpt, "--precision", "fp32",
                      "--tile", "32", "--tile_overlap", "16", "--no-progress"], capsys)
    assert code == 0, err
    assert "frame/s" not in err and "frames" in err  # no bar, the log lines still
    for name in names:
        x = load_rgb(str(out / "frames" / name)).astype(int)
        y = load_rgb(str(tiled / "frames" / name)).astype(int)
        assert np.abs(x - y).max() <= 1


def test_evaluate_reports(vid4_like, tiny_ckpt, tmp_path, capsys):
    out = tmp_path / "eval"
    code, err = _cli(["-i", str(vid4_like), "-o", str(out), "-m", tiny_ckpt, "--metric", "rgb"], capsys)
    assert code == 0, err
    report = json.loads((out / "metrics.json").read_text())
    assert set(report["clips"]) == {"calendar", "walk"}
    assert report["clips"]["calendar"]["frames"] == 5 and report["clips"]["walk"]["frames"] == 3
    for key in ("psnr_y", "ssim_y", "psnr_rgb"):
        clip_means = [report["clips"][c][key] for c in ("calendar", "walk")]
        assert report["average"][key] == pytest.approx(np.mean(clip_means))
    with open(out / "per_frame.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 8
    walk = [float(r["psnr_y"]) for r in rows if r["clip"] == "walk"]
    assert report["clips"]["walk"]["psnr_y"] == pytest.approx(np.mean(walk), abs=1e-5)
    # SR frames are saved at the modcropped HR size and are what was measured.
    sr = load_rgb(str(out / "walk" / "002.png"))
    hr = load_rgb(str(vid4_like / "walk" / "002.png"))[:48, :64]
    assert sr.shape == (48, 64, 3)
    assert float(rows[6]["psnr_y"]) == pytest.approx(metrics.psnr_y(sr, hr), abs=1e-5)
    for name in ("calendar_psnr.png", "walk_psnr.png", "calendar_compare.png", "walk_compare.png"):
        assert (out / name).stat().st_size > 0
    compare = load_rgb(str(out / "walk_compare.png"))
    assert compare.shape[1] > 3 * 48  # three panels side by side


def test_bicubic_baseline_and_skip_frames(vid4_like, tmp_path, capsys):
    import dataset

    out = tmp_path / "bic"
    code, err = _cli(["-i", str(vid4_like), "-o", str(out), "-m", "bicubic", "--degradation", "matlab",
                      "--skip_frames", "1", "--crop_border", "2", "--no-save_frames"], capsys)
    assert code == 0, err
    report = json.loads((out / "metrics.json").read_text())
    assert report["clips"]["calendar"]["frames"] == 3 and report["clips"]["walk"]["frames"] == 1
    assert not (out / "walk").exists()
    # Independent recomputation of the walk clip's middle frame (the only one left).
    hr = dataset.modcrop(load_rgb(str(vid4_like / "walk" / "002.png")), 4)
    up = dataset.bicubic_upscale(dataset.degrade(hr, 4, "matlab"), 4, "matlab")
    assert report["clips"]["walk"]["psnr_y"] == pytest.approx(metrics.psnr_y(up, hr, 2), abs=1e-9)
    assert report["clips"]["walk"]["ssim_y"] == pytest.approx(metrics.ssim_y(up, hr, 2), abs=1e-9)


def test_file_list_mode_evaluates_only_listed_frames(vid4_like, tmp_path, capsys):
    (vid4_like / "calendar_test.txt").write_text("calendar/002.png\ncalendar/003.png\n")
    out = tmp_path / "list"
    code, err = _cli(["--data_dir", str(vid4_like), "--file_list", "calendar_test.txt", "-o", str(out), "-m",
                      "bicubic"], capsys)
    assert code == 0, err
    report = json.loads((out / "metrics.json").read_text())
    assert report["clips"]["calendar"]["frames"] == 2
    assert sorted(os.listdir(out / "calendar")) == ["002.png", "003.png"]


def test_checkpoint_config_is_used_and_mismatches_are_errors(small_folder, tiny_ckpt, tmp_path, capsys):
    out = str(tmp_path / "o")
    code, err = _cli(["-u", "-i", str(small_folder), "-o", out, "-m", tiny_ckpt, "--nFrames", "7"], capsys)
    assert code == 2 and "nFrames" in err and "Traceback" not in err
    code, err = _cli(["-u", "-i", str(small_folder), "-o", out, "-m", tiny_ckpt, "-s", "2"], capsys)
    assert code == 2 and "scale" in err


@pytest.mark.parametrize("case", ["missing_input", "missing_model", "bad_model", "bad_video", "empty_folder",
                                  "sizes", "text_input", "no_list"])
def test_bad_inputs_are_one_line_errors(case, small_folder, tiny_ckpt, tmp_path, capsys):
    out = str(tmp_path / "o")
    argv = ["-u", "-o", out, "-m", tiny_ckpt, "-i", str(small_folder)]
    if case == "missing_input":
        argv[-1] = str(tmp_path / "nope.mp4")
        expect = "not found"
    elif case == "missing_model":
        argv[4] = str(tmp_path / "nope.pth")
        expect = "not found"
    elif case == "bad_model":
        (tmp_path / "junk.pth").write_bytes(b"not a checkpoint at all")
        argv[4] = str(tmp_path / "junk.pth")
        expect = "checkpoint"
    elif case == "bad_video":
        (tmp_path / "broken.mp4").write_bytes(os.urandom(2000))
        argv[-1] = str(tmp_path / "broken.mp4")
        expect = "video"
    elif case == "empty_folder":
        (tmp_path / "empty").mkdir()
        argv[-1] = str(tmp_path / "empty")
        expect = "no frames"
    elif case == "sizes":
        cv2.imwrite(str(small_folder / "002.png"), np.zeros((40, 40, 3), np.uint8))
        expect = "same size"
    elif case == "text_input":
        (tmp_path / "notes.txt").write_text("hello")
        argv[-1] = str(tmp_path / "notes.txt")
        expect = "not a video"
    else:
        argv = ["-o", out, "-m", "bicubic", "--data_dir", str(tmp_path), "--file_list", "missing.txt"]
        expect = "file list"
    code, err = _cli(argv, capsys)
    assert code == 2
    message = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(message) == 1 and expect in message[0], err
    assert "Traceback" not in err


def test_original_plain_state_dict_with_module_prefix_loads_without_flags(vid4_like, tmp_path, capsys):
    import rbpn

    torch.manual_seed(1)
    net = rbpn.Net(**TINY_NET)
    path = tmp_path / "netG_epoch_4_1.pth"
    torch.save({"module." + k: v for k, v in net.state_dict().items()}, path)  # as DataParallel training saves it
    (vid4_like / "one.txt").write_text("walk/002.png\n")
    out = tmp_path / "plain"
    code, err = _cli(["--data_dir", str(vid4_like), "--file_list", "one.txt", "-o", str(out), "-m", str(path)], capsys)
    assert code == 0, err
    assert "nFrames=3" in err  # taken from the checkpoint's shapes, not the default 7
    assert json.loads((out / "metrics.json").read_text())["clips"]["walk"]["frames"] == 1


def test_residual_checkpoint_adds_the_bicubic_upscale(small_folder, tmp_path, capsys):
    """A project checkpoint that records its residual mode runs like ``-r [method]`` without the flag."""
    import checkpoint
    import rbpn

    torch.manual_seed(0)
    net = rbpn.Net(**TINY_NET)
    plain, pil, matlab = tmp_path / "plain.pth", tmp_path / "pil.pth", tmp_path / "matlab.pth"
    checkpoint.save_generator(str(plain), net)
    checkpoint.save_generator(str(pil), net, extra={"residual": True})  # True: Pillow, as the original
    checkpoint.save_generator(str(matlab), net, extra={"residual": "matlab"})
    runs = {"flag": ["-m", str(plain), "-r"], "auto": ["-m", str(pil)], "none": ["-m", str(plain)],
            "flag_matlab": ["-m", str(plain), "-r", "matlab"], "auto_matlab": ["-m", str(matlab)]}
    outs = {}
    for name, argv in runs.items():
        code, err = _cli(["-u", "-i", str(small_folder), "-o", str(tmp_path / name)] + argv, capsys)
        assert code == 0, err
        outs[name] = load_rgb(str(tmp_path / name / "frames" / "003.png"))
    assert np.array_equal(outs["flag"], outs["auto"])
    assert np.array_equal(outs["flag_matlab"], outs["auto_matlab"])
    assert not np.array_equal(outs["flag"], outs["none"])
    assert not np.array_equal(outs["flag"], outs["flag_matlab"])


def test_boolean_options_take_the_original_syntax_too():
    parse = tester.build_parser().parse_args
    assert parse([]).other_dataset and parse([]).future_frame and parse([]).save_frames
    a = parse(["--other_dataset", "False", "--future_frame", "false", "--no-save_frames"])
    assert (a.other_dataset, a.future_frame, a.save_frames) == (False, False, False)
    b = parse(["--no-other_dataset", "--future_frame"])
    assert (b.other_dataset, b.future_frame) == (False, True)
    with pytest.raises(SystemExit):
        parse(["--future_frame", "maybe"])


def test_skip_frames_counts_from_both_ends_of_the_clip(vid4_like, tmp_path, capsys):
    """With a frame list, --skip_frames drops the clip's first/last frames, not the last listed one."""
    (vid4_like / "cal.txt").write_text("calendar/001.png\ncalendar/002.png\ncalendar/003.png\ncalendar/004.png\n")
    out = tmp_path / "list"
    code, err = _cli(["--data_dir", str(vid4_like), "--file_list", "cal.txt", "-o", str(out), "-m", "bicubic",
                      "--skip_frames", "1", "--no-save_frames"], capsys)
    assert code == 0, err
    rows = list(csv.DictReader(open(out / "per_frame.csv")))
    assert [r["frame"] for r in rows] == ["002", "003", "004"]  # calendar has 5 frames: only 001 and 005 are edges


def test_septuplets_with_past_frames_only_use_the_checkpoints_nframes(tmp_path, tiny_ckpt, capsys):
    """Vimeo septuplets with --no-future_frame evaluate im{nFrames}: the clips are planned once the checkpoint says
    its nFrames (3); with future frames, before the model is loaded (im4)."""
    root = tmp_path / "vimeo"
    _write_clip(root / "00001" / "0266", moving_frames(7, 32, 40))
    for i in range(1, 8):
        os.rename(root / "00001" / "0266" / f"{i:03d}.png", root / "00001" / "0266" / f"im{i}.png")
    (root / "sep_testlist.txt").write_text("00001/0266\n")
    for future, frame in (("--no-future_frame", "im3"), ("--future_frame", "im4")):
        out = tmp_path / future
        code, err = _cli(["--data_dir", str(root), "--file_list", "sep_testlist.txt", "--no-other_dataset", future,
                          "-o", str(out), "-m", tiny_ckpt], capsys)
        assert code == 0, err
        rows = list(csv.DictReader(open(out / "per_frame.csv")))
        assert [r["frame"] for r in rows] == [frame]
        assert os.listdir(out / "00001" / "0266") == [f"{frame}.png"]
