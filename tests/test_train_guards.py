"""iSeeBetterTrain.py: bad options, folders and data are refused up front with one line; no epoch is lost.

Each test reproduces a row of the QA matrix (docs: bad-input-matrix, "Trainer").
"""

import errno
import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch
from conftest import ROOT, moving_frames
from test_train import load, run

import atomic
import iSeeBetterTrain
import training
from errors import UserError

# Pixel-loss runs of one step: the cheapest full pass through the trainer.
QUICK = ["--loss", "l1", "--nEpochs", "1", "--max_steps_per_epoch", "1"]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(autouse=True)
def constant_flows(monkeypatch):
    """No optical flow: these tests are about the trainer's checks, not the data pipeline."""
    import importlib

    import dataset

    importlib.import_module("inference")  # it imports compute_flows by name: let it bind the real one, not ours

    def flows(centre, neighbours, threads=0):
        return [np.full((2,) + centre.shape[:2], 0.5, np.float32) for _ in neighbours]

    monkeypatch.setattr(dataset, "compute_flows", flows)


def write_frames(folder, frames):
    folder.mkdir(parents=True)
    for i, frame in enumerate(frames, start=1):
        cv2.imwrite(str(folder / f"{i:03d}.png"), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    return folder


def checkpoints(folder):
    return sorted(p.name for p in folder.glob("*.pth")) if folder.is_dir() else []


# ---------------------------------------------------------------------------------------------------------------
# Options (R10, R18) and a fast -h (T37)


def test_num_stages_other_than_3_is_an_argparse_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        iSeeBetterTrain.parse_args(["--num_stages", "2"])
    assert exit_info.value.code == 2
    assert "--num_stages" in capsys.readouterr().err
    assert iSeeBetterTrain.parse_args(["--num_stages", "3"]).num_stages == 3


@pytest.mark.parametrize("option, value", [
    ("keep_last", "-3"), ("patch_size", "-1"), ("threads", "-1"), ("lr", "0"), ("lr", "nan"), ("lr_gamma", "0"),
    ("lr_step", "-1"), ("flow_threads", "-2"), ("eval_max_frames", "-1"), ("max_steps_per_epoch", "-1"),
    ("base_filter", "0"), ("feat", "0"), ("n_resblock", "-1"), ("gpus", "0"), ("perceptual_weight", "-1"),
    ("tv_weight", "inf"), ("seed", "-1"),
])
def test_bad_numbers_name_their_option(option, value):
    with pytest.raises(UserError, match=f"^--{option} "):
        iSeeBetterTrain.parse_args([f"--{option}", value])


def test_help_and_option_errors_do_not_import_torch():
    script = os.path.join(ROOT, "iSeeBetterTrain.py")
    for argv, code, stream, text in ((["-h"], 0, "stdout", "--save_folder"),
                                     (["--keep_last", "-3"], 2, "stderr", "error: --keep_last"),
                                     (["--num_stages", "2"], 2, "stderr", "--num_stages")):
        proc = subprocess.run([sys.executable, "-X", "importtime", script] + argv, capture_output=True, text=True,
                              timeout=120)
        assert proc.returncode == code, proc.stderr[-2000:]
        assert text in getattr(proc, stream)
        imported = [line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines()
                    if line.startswith("import time:")]
        assert "argparse" in imported and not [m for m in imported if m.split(".")[0] in ("torch", "numpy")]


@pytest.mark.parametrize("argv, message", [
    (["--flow_backend", "torch", "--flow_device", "cuda"],
     r"^--flow_device cuda asks for CUDA but no CUDA GPU is available; use --flow_device cpu \(or auto\)$"),
    (["--device", "cuda"], r"^--device cuda asks for CUDA but no CUDA GPU is available; use --device cpu \(or auto\)$"),
])
def test_a_cuda_device_without_a_gpu_names_its_option(tmp_path, frame_folder, monkeypatch, argv, message):
    """P15: the trainer's flow-device error names --flow_device; the advice for --device names an option it has."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(UserError, match=message):
        run(QUICK + ["--data_dir", frame_folder, "--save_folder", tmp_path / "out"] + argv)
    assert not (tmp_path / "out").exists()  # refused before anything is written


def test_device_cpu_trains_on_the_cpu_even_with_gpu_mode(tmp_path, frame_folder, monkeypatch, caplog):
    """--device wins over --gpu_mode (on by default); a cpp flow with a --flow_device warns that it is unused."""
    import checks

    monkeypatch.setattr(checks, "_warned_unused_flow_device", set())
    warned = []
    monkeypatch.setattr(checks.logger, "warning", warned.append)
    assert iSeeBetterTrain.parse_args(["--device", "cpu"]).gpu_mode is True
    assert run(QUICK + ["--data_dir", frame_folder, "--save_folder", tmp_path / "out", "--device", "cpu",
                        "--gpu_mode", "true", "--flow_backend", "cpp", "--flow_device", "cuda:0"]) == 0
    state = load(tmp_path / "out" / "training_state_4_1.pth")
    assert state["epoch"] == 1
    assert len([w for w in warned if w.startswith("--flow_device cuda:0 is not used")]) == 1


# ---------------------------------------------------------------------------------------------------------------
# --save_folder (R12, R13) and stale temp files (R08b)


def test_save_folder_that_is_a_file_is_refused_before_training(tmp_path, frame_folder):
    somefile = tmp_path / "somefile"
    somefile.write_text("x")
    for folder in (somefile, somefile / "run"):
        with pytest.raises(UserError, match="^--save_folder .*somefile"):
            run(["--data_dir", frame_folder, "--save_folder", folder] + QUICK)
    assert somefile.read_text() == "x"


def test_unwritable_save_folder_is_refused_before_training(tmp_path, frame_folder, monkeypatch):
    locked = tmp_path / "ro_dir"
    real_makedirs = os.makedirs

    def makedirs(path, *args, **kwargs):  # what a read-only folder does for a normal user (tests may run as root)
        if os.fspath(path).startswith(str(locked)):
            raise PermissionError(errno.EACCES, "Permission denied", os.fspath(path))
        return real_makedirs(path, *args, **kwargs)

    monkeypatch.setattr(os, "makedirs", makedirs)
    monkeypatch.setattr(training.Trainer, "train_epoch", lambda *a, **k: pytest.fail("trained"))
    with pytest.raises(UserError, match="^--save_folder .*ro_dir/run.*permission denied"):
        run(["--data_dir", frame_folder, "--save_folder", locked / "run"] + QUICK)


def test_stale_temp_files_of_killed_runs_are_removed(tmp_path, frame_folder, caplog):
    out = tmp_path / "run"
    out.mkdir()
    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = out / f".tmp_{atomic._HOST}_{int(child.stdout)}_abc.part"  # left by a SIGKILL during a save
    stale.write_bytes(b"x" * 1000)
    live = out / f".tmp_{atomic._HOST}_{os.getppid()}_def.part"  # a running process's: not ours to delete
    live.write_bytes(b"y")
    user = out / "notes.txt"
    user.write_text("mine")
    assert run(["--data_dir", frame_folder, "--save_folder", out] + QUICK) == 0
    assert not stale.exists() and live.exists() and user.read_text() == "mine"
    log = (out / "train.log").read_text()
    assert "removed 1 stale temporary file (1000 bytes)" in log


# ---------------------------------------------------------------------------------------------------------------
# Validation (R17b)


def test_eval_frames_smaller_than_the_ssim_window_are_refused_up_front(tmp_path, frame_folder, monkeypatch):
    tiny = write_frames(tmp_path / "tiny8", moving_frames(3, 8, 8))
    monkeypatch.setattr(training.Trainer, "train_epoch", lambda *a, **k: pytest.fail("trained"))
    with pytest.raises(UserError, match=r"^--eval_dir .*tiny8.* 8x8 .*11"):
        run(["--data_dir", frame_folder, "--save_folder", tmp_path / "run", "--eval_dir", tiny] + QUICK)


def test_validation_refuses_frames_smaller_than_the_ssim_window():
    """The backstop for clips not checked up front (only each clip's first frame is): a UserError, no traceback."""

    def upscale(x, neighbours, flows):
        return torch.nn.functional.interpolate(x, scale_factor=4)

    model = torch.nn.Module()
    model.forward = upscale
    batch = (torch.rand(1, 3, 2, 3), torch.rand(1, 3, 8, 12), [torch.rand(1, 3, 2, 3)], [torch.zeros(1, 2, 2, 3)],
             torch.rand(1, 3, 8, 12))
    with pytest.raises(UserError, match="12x8 px is smaller than the 11x11 px SSIM window"):
        training.validate(model, [batch], torch.device("cpu"), 4)


def test_an_epoch_is_saved_before_it_is_validated(tmp_path, frame_folder, monkeypatch):
    def failing_validation(*args, **kwargs):
        raise UserError("validation failed")

    monkeypatch.setattr(training, "validate", failing_validation)
    out = tmp_path / "run"
    with pytest.raises(UserError, match="validation failed"):
        run(["--data_dir", frame_folder, "--save_folder", out, "--eval_dir", frame_folder] + QUICK)
    assert checkpoints(out) == ["netG_epoch_4_1.pth", "training_state_4_1.pth"]
    assert training.read_training_state(str(out / "training_state_4_1.pth"))["epoch"] == 1


def test_a_baseline_that_cannot_be_scored_is_a_warning(tmp_path, frame_folder, monkeypatch):
    """The validation baseline only informs: its failure warns, and the first validation reports it after the save."""
    calls = []

    def failing_validation(*args, **kwargs):
        calls.append(args[0])
        raise UserError("validation failed")

    monkeypatch.setattr(training, "validate", failing_validation)
    out = tmp_path / "run"
    with pytest.raises(UserError, match="validation failed"):
        run(["--data_dir", frame_folder, "--save_folder", out, "--eval_dir", frame_folder] + QUICK)
    assert len(calls) == 2  # the baseline, then epoch 1's validation
    assert "validation baseline not scored: validation failed" in (out / "train.log").read_text()
    assert checkpoints(out) == ["netG_epoch_4_1.pth", "training_state_4_1.pth"]


def test_resume_remembers_the_best_epoch_validated_after_the_save(tmp_path, frame_folder, monkeypatch):
    """The training state is written before validation, so a resumed run learns the best score from netG_best."""
    import checkpoint

    out = tmp_path / "run"
    common = ["--data_dir", frame_folder, "--save_folder", out, "--eval_dir", frame_folder, "--eval_max_frames", "1",
              "--loss", "l1", "--max_steps_per_epoch", "1"]
    assert run(common + ["--nEpochs", "1"]) == 0
    first = checkpoint.read_checkpoint(str(out / "netG_best_4.pth"))[1]
    assert first["epoch"] == 1
    monkeypatch.setattr(training, "validate", lambda *a, **k: {"val_psnr": first["val_psnr"] - 1, "val_ssim": 0.5,
                                                              "val_frames": 1})
    assert run(common + ["--nEpochs", "2", "--resume"]) == 0
    assert checkpoint.read_checkpoint(str(out / "netG_best_4.pth"))[1]["epoch"] == 1
    assert training.read_training_state(str(out / "training_state_4_2.pth"))["best"]["epoch"] == 1


# ---------------------------------------------------------------------------------------------------------------
# GAN batches the discriminator's BatchNorm cannot train on (R22)


def test_gan_with_one_value_per_channel_in_the_discriminator_is_refused(tmp_path, frame_folder, monkeypatch):
    monkeypatch.setattr(training.Trainer, "train_epoch", lambda *a, **k: pytest.fail("trained"))
    with pytest.raises(UserError, match=r"^--loss gan .*--batchSize 1.*--patch_size 4.*--patch_size 5"):
        run(["--data_dir", frame_folder, "--save_folder", tmp_path / "run", "--loss", "gan", "--perceptual_weight",
             "0", "--batchSize", "1", "--patch_size", "4", "--nEpochs", "1"])


def test_gan_skips_a_last_batch_of_one_sample(tmp_path, frame_folder):
    out = tmp_path / "run"
    # 6 samples in batches of 5: the last batch would hold 1 sample of 16x16 px, a 1x1 map in D's last BatchNorm.
    assert run(["--data_dir", frame_folder, "--save_folder", out, "--loss", "gan", "--perceptual_weight", "0",
                "--batchSize", "5", "--patch_size", "4", "--nEpochs", "1"]) == 0
    assert json.loads((out / "metrics.jsonl").read_text())["samples"] == 5
    assert "last batch of 1 sample is skipped" in (out / "train.log").read_text()


# ---------------------------------------------------------------------------------------------------------------
# Training lists (R23a)


def vimeo_tree(root, entries, frames=7):
    """A Vimeo-90K-layout folder: sequences/<entry>/im1..im<frames>.png and a list naming ``entries``."""
    sequences = root / "sequences"
    for i, entry in enumerate(entries):
        folder = sequences / entry
        folder.mkdir(parents=True)
        for k, frame in enumerate(moving_frames(frames, 32, 32, seed=i), start=1):
            cv2.imwrite(str(folder / f"im{k}.png"), frame)
    return sequences


def test_training_list_with_missing_sequences_is_refused_up_front(tmp_path):
    import dataset

    sequences = vimeo_tree(tmp_path, ["00001/0001", "00001/0002", "00002/0001"])
    os.remove(sequences / "00001/0002/im5.png")
    (sequences / "sep_trainlist.txt").write_text("00001/0001\n00009/0009\n00001/0002\n00002/0001\n00009/0010\n")
    with pytest.raises(dataset.DataError) as info:
        dataset.DatasetFromFolder(str(sequences), 3, 4, False, "sep_trainlist.txt", False, 8, True)
    message = str(info.value)
    assert "3 of 5 sequences" in message and "sep_trainlist.txt" in message and "\n" not in message
    assert "00009/0009 (no folder)" in message and "00001/0002 (no im5.png)" in message
    assert "00009/0010" in message


def test_frame_list_with_missing_frames_is_refused_up_front(tmp_path):
    import dataset

    clip = write_frames(tmp_path / "data" / "clip", moving_frames(4, 32, 32))
    (clip.parent / "list.txt").write_text("clip/002.png\nclip/003.png\nclip/009.png\n")
    with pytest.raises(dataset.DataError, match=r"1 of 3 frames .*clip/009\.png"):
        dataset.DatasetFromFolder(str(clip.parent), 3, 4, False, "list.txt", True, 8, True)


# ---------------------------------------------------------------------------------------------------------------
# Checkpoints: pretrained weights go through the checked loader (R11d); disk full while saving (R09)


def test_pretrained_and_resume_read_through_the_checkpoint_loader(tmp_path, frame_folder, monkeypatch):
    """Both --pretrained and --resume use checkpoint.read_checkpoint, which refuses corrupt or non-finite files."""
    import checkpoint
    import rbpn

    net = rbpn.Net(num_channels=3, base_filter=8, feat=8, num_stages=3, n_resblock=1, nFrames=3, scale_factor=4)
    source = tmp_path / "pretrained.pth"
    torch.save(net.state_dict(), source)
    out = tmp_path / "run"
    read = []
    real_read = checkpoint.read_checkpoint
    monkeypatch.setattr(checkpoint, "read_checkpoint", lambda path, **kw: read.append(os.fspath(path))
                        or real_read(path, **kw))
    assert run(["--data_dir", frame_folder, "--save_folder", out, "--pretrained", "--pretrained_sr", source]
               + QUICK) == 0
    assert read == [str(source)]
    assert run(["--data_dir", frame_folder, "--save_folder", out, "--resume", "--loss", "l1", "--nEpochs", "2",
                "--max_steps_per_epoch", "1"]) == 0
    assert read[1:] == [str(out / "training_state_4_1.pth")]


def test_pretrained_weights_that_are_not_finite_are_refused(tmp_path, frame_folder, monkeypatch):
    import rbpn

    net = rbpn.Net(num_channels=3, base_filter=8, feat=8, num_stages=3, n_resblock=1, nFrames=3, scale_factor=4)
    sd = net.state_dict()
    sd["output.conv.weight"][0, 0, 0, 0] = float("nan")
    source = tmp_path / "nan.pth"
    torch.save(sd, source)
    monkeypatch.setattr(training.Trainer, "train_epoch", lambda *a, **k: pytest.fail("trained"))
    with pytest.raises(UserError) as info:
        run(["--data_dir", frame_folder, "--save_folder", tmp_path / "run", "--pretrained", "--pretrained_sr",
             source] + QUICK)
    assert not isinstance(info.value, training.TrainingDiverged)
    assert str(source) in str(info.value)


def test_disk_full_while_saving_keeps_the_previous_epoch(tmp_path, frame_folder, monkeypatch):
    """torch.save on a full disk raises ``RuntimeError: [enforce fail at inline_container.cc:672] . unexpected pos``
    (the ENOSPC OSError is only its context); the run stops with one line and epoch 1's files stay whole."""
    out = tmp_path / "run"
    real_save = torch.save
    calls = []

    def save(obj, f, *args, **kwargs):
        calls.append(1)
        if len(calls) <= 2:  # epoch 1: netG and the training state
            return real_save(obj, f, *args, **kwargs)
        f.write(b"PK\x03\x04 partial")
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError as exc:
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 810240 vs 810128") from exc

    monkeypatch.setattr(torch, "save", save)
    with pytest.raises(UserError, match="(?i)space|disk"):
        run(["--data_dir", frame_folder, "--save_folder", out, "--loss", "l1", "--nEpochs", "2",
             "--max_steps_per_epoch", "1"])
    assert checkpoints(out) == ["netG_epoch_4_1.pth", "training_state_4_1.pth"]
    assert load(out / "netG_epoch_4_1.pth")
    assert not [p for p in os.listdir(out) if p.startswith(atomic.TEMP_PREFIX)]
