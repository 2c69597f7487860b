"""upscale.py: checks made before any work (video codec size, --resume settings, flow device) and progress totals
that never loop over a video header's frame count (reliability matrix 2: V17, V19, R09, P08/P09)."""

import argparse
import time

import pytest
import torch

import inference
import run_record
import upscale
from clips import Clip, input_identity
from errors import UserError
from video_io import VideoError

HUGE = 10**11  # what a damaged mkv Duration claims (V17)


def _args(tmp_path, **options) -> argparse.Namespace:
    base = dict(output=str(tmp_path / "out"), upscale_only=True, resume=False, model="bicubic", degradation="matlab",
                codec="h264", flow_backend="auto", flow_device=None)
    base.update(options)
    return argparse.Namespace(**base)


def test_progress_totals_never_loop_over_a_header_count(tmp_path):
    video = Clip("v", video=str(tmp_path / "v.mkv"), header_count=HUGE)
    start = time.time()
    assert upscale.frames_to_compute(video, None, set()) is None  # an absurd header: no total
    video.header_count = 10**7  # plausible: counted by arithmetic, not by a loop
    assert upscale.frames_to_compute(video, upscale.parse_frames("2:"), {1, 5, 10**8}) == 10**7 - 1 - 2
    assert time.time() - start < 1
    video.header_count = 10
    assert upscale.frames_to_compute(video, upscale.parse_frames("3:5"), {3}) == 2
    assert upscale.frames_to_compute(video, upscale.parse_frames("20:30"), set()) == 0
    listed = Clip("f", frames=[str(tmp_path / f"{i}.png") for i in range(6)], targets={1, 4})
    assert upscale.frames_to_compute(listed, None, {4}) == 1


def test_a_codec_that_cannot_take_the_output_size_fails_before_any_work(tmp_path):
    clip = Clip("t12", video=str(tmp_path / "t12.mp4"), size=(12, 12))
    with pytest.raises(VideoError, match=r"^clip t12: --codec h265 needs frames of at least 64x64 px .* got 48x48"):
        upscale.check_video_output([clip], {"scale_factor": 4}, _args(tmp_path, codec="h265"))
    upscale.check_video_output([clip], {"scale_factor": 4}, _args(tmp_path, codec="h264"))
    upscale.check_video_output([clip], {"scale_factor": 8}, _args(tmp_path, codec="h265"))  # 96x96
    upscale.check_video_output([clip], {"scale_factor": 4}, _args(tmp_path, codec="h265", upscale_only=False))


def test_resume_refuses_frames_that_other_settings_made(tmp_path):
    video = tmp_path / "v.mkv"
    video.write_bytes(b"x")
    clip = Clip("v", video=str(video))
    config = {"scale_factor": 4, "nFrames": 1}
    cpu = torch.device("cpu")
    earlier = upscale.frame_settings(_args(tmp_path, degradation="pil"), config, cpu, "upscale")
    rec = run_record.Recorder(str(tmp_path / "out" / "v"), input_identity(clip), earlier)
    rec.add(0)
    with pytest.raises(UserError, match=r"--resume: the frames in .* were made with other settings \(degradation "
                                        r"was pil, now matlab\); resume with the same options, or use a fresh"):
        upscale.check_resume([clip], config, _args(tmp_path, resume=True), cpu)
    upscale.check_resume([clip], config, _args(tmp_path, resume=True, degradation="pil"), cpu)
    upscale.check_resume([clip], config, _args(tmp_path), cpu)  # no --resume: the frames are all replaced


def test_frame_settings_hold_what_changes_the_frames(tmp_path, tiny_ckpt):
    args = _args(tmp_path, model=tiny_ckpt, residual=None, precision="fp32", tile=0, tile_overlap=16,
                 chop_forward=True, future_frame=True, edge="centre")
    config = {"scale_factor": 4, "nFrames": 3}
    settings = upscale.frame_settings(args, config, torch.device("cpu"), "upscale")
    assert settings["model"]["sha256"] == run_record.file_sha256(tiny_ckpt)
    assert settings["flow_backend"] == "cpp" and settings["chop_forward"] and settings["tile_overlap"] is None
    tiled = upscale.frame_settings(argparse.Namespace(**{**vars(args), "tile": 64}), config, torch.device("cpu"),
                                   "upscale")
    assert run_record.differences(settings, tiled) == ["tile was 0, now 64", "tile_overlap was unset, now 16",
                                                        "chop_forward was True, now False"]
    assert "degradation" in upscale.frame_settings(args, config, torch.device("cpu"), "evaluate")


def test_flow_device_problems_name_flow_device(tmp_path, monkeypatch):
    warned = []
    monkeypatch.setattr(upscale.logger, "warning", warned.append)
    cpu = torch.device("cpu")
    upscale.check_flow_options(_args(tmp_path, flow_backend="cpp", flow_device="cuda"), cpu)  # P09: unused
    assert len(warned) == 1 and warned[0].startswith("--flow_device cuda is not used: --flow_backend cpp computes")
    upscale.check_flow_options(_args(tmp_path, flow_backend="auto", flow_device="cuda:1"), cpu)
    assert len(warned) == 2 and "auto with the model on the CPU" in warned[1]
    upscale.check_flow_options(_args(tmp_path, flow_backend="cpp", flow_device="cpu"), cpu)
    assert len(warned) == 2
    with pytest.raises(inference.InferenceError, match="unknown device 'gpu'"):
        upscale.check_flow_options(_args(tmp_path, flow_backend="cpp", flow_device="gpu"), cpu)
    if not torch.cuda.is_available():  # P08
        with pytest.raises(inference.InferenceError, match=r"\(--flow_device cuda\) but no CUDA GPU is available; "
                                                           r"use --flow_device cpu \(or auto\)$"):
            upscale.check_flow_options(_args(tmp_path, flow_backend="torch", flow_device="cuda"), cpu)
