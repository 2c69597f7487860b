"""iSeeBetterTrain.py / training.py: end-to-end runs on tiny configs, resume equivalence, DDP, NaN stop, options."""

import hashlib
import json

import numpy as np
import pytest
import torch
from conftest import run_torchrun

import iSeeBetterTrain
import training
from errors import UserError

# A tiny generator (TINY_NET sizes) on 8x8 LR patches; everything else as the real command line.
TINY_ARGS = ["--nFrames", "3", "--base_filter", "8", "--feat", "8", "--n_resblock", "1", "--patch_size", "8",
             "--batchSize", "3", "--threads", "0", "--vgg", "random", "--no-progress"]

CONSTANT_FLOWS = """
import numpy as np
import dataset
dataset.compute_flows = lambda centre, nbs, threads=0: [np.full((2,) + centre.shape[:2], 0.5, np.float32)
                                                        for _ in nbs]
"""


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def constant_flows(monkeypatch):
    """Skip optical flow (constant 0.5 px) in tests of the training loop itself; the end-to-end test uses pyflow."""
    import dataset

    def flows(centre, neighbours, threads=0):
        return [np.full((2,) + centre.shape[:2], 0.5, np.float32) for _ in neighbours]

    monkeypatch.setattr(dataset, "compute_flows", flows)


def run(args):
    return iSeeBetterTrain.main([str(a) for a in TINY_ARGS + list(args)])


def sha(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def load(path):
    return torch.load(path, map_location="cpu", weights_only=True)


def assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


# ---------------------------------------------------------------------------------------------------------------
# Option parsing


def test_defaults_match_the_original():
    a = iSeeBetterTrain.parse_args([])
    assert (a.upscale_factor, a.batchSize, a.start_epoch, a.nEpochs, a.snapshots, a.lr) == (4, 2, 1, 150, 1, 1e-4)
    assert (a.threads, a.seed, a.nFrames, a.patch_size, a.save_folder) == (8, 123, 7, 64, "weights/")
    assert (a.data_dir, a.file_list, a.pretrained_sr) == ("./vimeo_septuplet/sequences", "sep_trainlist.txt",
                                                          "RBPN_4x.pth")
    assert a.gpu_mode and a.future_frame and a.data_augmentation and not a.other_dataset and not a.residual
    assert a.loss == "gan" and a.precision == "auto" and a.resume is None


@pytest.mark.parametrize("argv, expected", [
    (["--future_frame", "False"], False),  # the original's type=bool turned "False" into True
    (["--future_frame", "false"], False),
    (["--no-future_frame"], False),
    (["--future_frame"], True),
    (["--future_frame", "True"], True),
    ([], True),
])
def test_boolean_options_can_be_switched(argv, expected):
    assert iSeeBetterTrain.parse_args(argv).future_frame is expected


def test_bad_boolean_and_conflicting_loss_options():
    with pytest.raises(SystemExit):
        iSeeBetterTrain.parse_args(["--gpu_mode", "maybe"])
    assert iSeeBetterTrain.parse_args(["--APITLoss"]).loss == "gan"
    with pytest.raises(UserError, match="APITLoss"):
        iSeeBetterTrain.parse_args(["--APITLoss", "--loss", "l1"])
    with pytest.raises(UserError, match="start_epoch"):
        iSeeBetterTrain.parse_args(["--start_epoch", "5", "--nEpochs", "4"])
    assert iSeeBetterTrain.parse_args(["--resume"]).resume == "auto"
    assert iSeeBetterTrain.parse_args(["--resume", "x.pth"]).resume == "x.pth"


def test_missing_dataset_points_to_the_fetcher(tmp_path):
    with pytest.raises(UserError, match="DatasetFetcher.py"):
        run(["--data_dir", tmp_path / "nothing", "--save_folder", tmp_path / "w", "--nEpochs", "1"])


# ---------------------------------------------------------------------------------------------------------------
# End to end on real data files


@pytest.fixture
def sample_dataset(tmp_path, video_file):
    """A Vimeo-90K-layout sample (2 septuplets) + an evaluation frame folder, built by DatasetFetcher's builder."""
    import DatasetFetcher

    dest = tmp_path / "sample"
    DatasetFetcher.build_sample(str(dest), [str(video_file)], str(video_file), sequences_per_clip=2, eval_frames=5,
                                progress=False)
    return dest


def test_gan_training_two_epochs_end_to_end(tmp_path, sample_dataset):
    import checkpoint
    import rbpn

    out = tmp_path / "run"
    assert run(["--data_dir", sample_dataset / "sequences", "--save_folder", out, "--nEpochs", "2",
                "--batchSize", "1", "--eval_dir", sample_dataset / "eval", "--eval_file_list", "clip_test.txt"]) == 0
    for epoch in (1, 2):
        for name in (f"netG_epoch_4_{epoch}.pth", f"netD_epoch_4_{epoch}.pth", f"training_state_4_{epoch}.pth"):
            assert (out / name).is_file(), name
    # The generator file is a plain state_dict without "module.", loadable strictly into the network.
    sd = load(out / "netG_epoch_4_2.pth")
    assert not any(k.startswith("module.") for k in sd)
    net = rbpn.Net(num_channels=3, base_filter=8, feat=8, num_stages=3, n_resblock=1, nFrames=3, scale_factor=4)
    init = {k: v.clone() for k, v in net.state_dict().items()}
    net.load_state_dict(sd, strict=True)
    assert any(not torch.equal(init[k], sd[k]) for k in sd)  # it trained
    # The best generator carries its config, so it loads with no flags.
    best, config = checkpoint.build_generator(out / "netG_best_4.pth")
    assert config["base_filter"] == 8 and config["nFrames"] == 3
    # Logs: CSV/JSONL with one row per epoch, curves, log lines.
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    assert all(r["samples"] == 2 for r in rows)  # both septuplets used, every epoch (no dropped first batch)
    assert all(np.isfinite(r[k]) for r in rows for k in ("g_loss", "d_loss", "d_x", "d_g_z", "val_psnr", "val_ssim"))
    csv_lines = (out / "metrics.csv").read_text().splitlines()
    assert len(csv_lines) == 3 and "val_psnr" in csv_lines[0]
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    log = (out / "train.log").read_text()
    assert "epoch 2, G " in log and "val Y-PSNR" in log


def test_residual_run_validates_like_the_tester(tmp_path, sample_dataset, capsys):
    """The best generator of a --residual run records its bicubic method, and the tester measures what training
    validation measured on the same frames."""
    import checkpoint
    import iSeeBetterTest

    out = tmp_path / "run"
    assert run(["--data_dir", sample_dataset / "sequences", "--save_folder", out, "--nEpochs", "1", "--loss", "l1",
                "--residual", "--degradation", "matlab", "--eval_dir", sample_dataset / "eval",
                "--eval_file_list", "clip_test.txt"]) == 0
    assert checkpoint.read_checkpoint(out / "netG_best_4.pth")[1]["residual"] == "matlab"
    val = json.loads((out / "metrics.jsonl").read_text())["val_psnr"]
    report = tmp_path / "report"
    assert iSeeBetterTest.main(["-m", str(out / "netG_best_4.pth"), "--data_dir", str(sample_dataset / "eval"),
                                "--file_list", "clip_test.txt", "-o", str(report), "--device", "cpu",
                                "--no-save_frames"]) == 0
    tested = json.loads((report / "metrics.json").read_text())["average"]["psnr_y"]
    assert abs(tested - val) < 0.02, (tested, val)


def test_pixel_loss_mode_has_no_discriminator(tmp_path, frame_folder, constant_flows):
    out = tmp_path / "run"
    assert run(["--data_dir", frame_folder, "--save_folder", out, "--nEpochs", "1", "--loss", "l1"]) == 0
    assert (out / "netG_epoch_4_1.pth").is_file()
    assert not list(out.glob("netD_*"))
    row = json.loads((out / "metrics.jsonl").read_text())
    assert "d_loss" not in row and row["pixel_loss"] == pytest.approx(row["g_loss"])
    assert row["samples"] == 6  # 8 frames, 3-frame windows: 6 centres


def test_pretrained_generator_with_module_prefix(tmp_path, frame_folder, constant_flows):
    import rbpn

    torch.manual_seed(7)
    net = rbpn.Net(num_channels=3, base_filter=8, feat=8, num_stages=3, n_resblock=1, nFrames=3, scale_factor=4)
    source = tmp_path / "RBPN_tiny.pth"
    torch.save({"module." + k: v for k, v in net.state_dict().items()}, source)  # like the released RBPN files
    out = tmp_path / "run"
    # A vanishing learning rate: the saved weights must be the pretrained ones.
    assert run(["--data_dir", frame_folder, "--save_folder", out, "--nEpochs", "1", "--loss", "mse", "--lr", "1e-30",
                "--pretrained", "--pretrained_sr", source]) == 0
    saved = load(out / "netG_epoch_4_1.pth")
    for k, v in net.state_dict().items():
        assert torch.allclose(saved[k], v, atol=1e-6), k
    with pytest.raises(UserError, match="pretrained"):
        run(["--data_dir", frame_folder, "--save_folder", out, "--nEpochs", "1", "--pretrained",
             "--pretrained_sr", tmp_path / "missing.pth"])


def test_pretrained_residual_checkpoint_keeps_residual(tmp_path, frame_folder, constant_flows):
    """Fine-tuning a project checkpoint saved with residual output keeps --residual on, without the flag."""
    import checkpoint
    import rbpn

    net = rbpn.Net(num_channels=3, base_filter=8, feat=8, num_stages=3, n_resblock=1, nFrames=3, scale_factor=4)
    source = tmp_path / "psnr.pth"
    checkpoint.save_generator(str(source), net, extra={"residual": "pil"})
    out = tmp_path / "run"
    assert run(["--data_dir", frame_folder, "--save_folder", out, "--nEpochs", "1", "--loss", "mse",
                "--pretrained", "--pretrained_sr", source]) == 0
    state = checkpoint.read_training_state(out / "training_state_4_1.pth")
    assert state["args"]["residual"] is True


# ---------------------------------------------------------------------------------------------------------------
# Resume, NaN stop


def test_resume_reaches_the_same_weights(tmp_path, frame_folder, constant_flows, monkeypatch):
    common = ["--data_dir", frame_folder, "--nEpochs", "2", "--loss", "gan", "--threads", "0",
              "--perceptual_weight", "0"]
    assert run(common + ["--save_folder", tmp_path / "straight"]) == 0

    original = training.Trainer.train_epoch

    def killed_in_epoch_2(self, loader, epoch, **kw):
        if epoch == 2:
            raise KeyboardInterrupt  # as if the job had been killed during epoch 2
        return original(self, loader, epoch, **kw)

    monkeypatch.setattr(training.Trainer, "train_epoch", killed_in_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        run(common + ["--save_folder", tmp_path / "resumed"])
    assert not (tmp_path / "resumed" / "netG_epoch_4_2.pth").exists()
    monkeypatch.setattr(training.Trainer, "train_epoch", original)
    assert run(common + ["--save_folder", tmp_path / "resumed", "--resume"]) == 0

    for name in ("netG_epoch_4_2.pth", "netD_epoch_4_2.pth"):
        assert_same_weights(load(tmp_path / "straight" / name), load(tmp_path / "resumed" / name))
    rows = [json.loads(line) for line in (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]


def test_keep_last_prunes_old_training_states(tmp_path, frame_folder, constant_flows):
    out = tmp_path / "run"
    assert run(["--data_dir", frame_folder, "--save_folder", out, "--nEpochs", "3", "--loss", "mse",
                "--keep_last", "1", "--max_steps_per_epoch", "1"]) == 0
    assert [p.name for p in out.glob("training_state_*")] == ["training_state_4_3.pth"]
    assert sorted(p.name for p in out.glob("netG_epoch_*")) == [f"netG_epoch_4_{e}.pth" for e in (1, 2, 3)]
    assert training.find_latest_state(str(out), 4).endswith("training_state_4_3.pth")


def test_resume_refuses_a_generator_file(tmp_path, frame_folder, constant_flows):
    out = tmp_path / "run"
    assert run(["--data_dir", frame_folder, "--save_folder", out, "--nEpochs", "1", "--loss", "mse"]) == 0
    with pytest.raises(UserError, match="pretrained"):
        run(["--data_dir", frame_folder, "--save_folder", out, "--nEpochs", "2", "--loss", "mse",
             "--resume", out / "netG_epoch_4_1.pth"])
    with pytest.raises(UserError, match="training_state"):
        run(["--data_dir", frame_folder, "--save_folder", tmp_path / "empty", "--nEpochs", "2", "--resume"])


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, frame_folder, constant_flows, monkeypatch):
    import rbpn

    out = tmp_path / "run"
    common = ["--data_dir", frame_folder, "--save_folder", out, "--nEpochs", "3", "--loss", "gan",
              "--perceptual_weight", "0"]
    original_forward = rbpn.Net.forward
    calls = {"n": 0}

    def poisoned(self, x, neighbor, flow):
        calls["n"] += 1
        out_ = original_forward(self, x, neighbor, flow)
        return out_ * float("nan") if calls["n"] > 2 else out_  # epoch 1 = 2 batches of 3, then NaN

    monkeypatch.setattr(rbpn.Net, "forward", poisoned)
    with pytest.raises(training.TrainingDiverged, match="NaN"):
        run(common)
    files = sorted(p.name for p in out.glob("*.pth"))
    assert files == ["netD_epoch_4_1.pth", "netG_epoch_4_1.pth", "training_state_4_1.pth"]
    hashes = {name: sha(out / name) for name in files}
    # The good checkpoint is intact and resumable.
    monkeypatch.setattr(rbpn.Net, "forward", original_forward)
    state = training.read_training_state(str(out / "training_state_4_1.pth"))
    assert state["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in load(out / "netG_epoch_4_1.pth").values())
    assert hashes == {name: sha(out / name) for name in files}


# ---------------------------------------------------------------------------------------------------------------
# Precision, checkpointing


@pytest.mark.parametrize("extra", [["--precision", "bf16"], ["--grad_checkpoint"]])
def test_precision_and_checkpointing_options_train(tmp_path, frame_folder, constant_flows, extra):
    out = tmp_path / "run"
    assert run(["--data_dir", frame_folder, "--save_folder", out, "--nEpochs", "1", "--loss", "gan",
                "--perceptual_weight", "0", "--max_steps_per_epoch", "1"] + extra) == 0
    row = json.loads((out / "metrics.jsonl").read_text())
    assert np.isfinite(row["g_loss"]) and np.isfinite(row["d_loss"])
    assert row["samples"] == 3
    sd = load(out / "netG_epoch_4_1.pth")
    assert all(v.dtype == torch.float32 for v in sd.values() if v.is_floating_point())


def test_grad_checkpointing_gives_the_same_step(frame_folder, constant_flows, tiny_net_config):
    """One GAN step with and without activation checkpointing updates G identically."""
    import dataset
    import rbpn
    from SRGAN.loss import GeneratorLoss
    from SRGAN.model import Discriminator

    data = dataset.VideoFolderDataset(str(frame_folder), 3, 4, False, 8, True)
    batch = torch.utils.data.default_collate([data[0], data[1]])
    dist = training.DistInfo(0, 1, 0, torch.device("cpu"))
    results = []
    for ckpt in (False, True):
        torch.manual_seed(0)
        net = rbpn.Net(**tiny_net_config).set_grad_checkpointing(ckpt)
        trainer = training.Trainer(net, Discriminator(), GeneratorLoss(vgg="random", perception_weight=0), "gan",
                                   1e-3, dist)
        trainer.step(batch)
        results.append(net.state_dict())
    for k in results[0]:
        assert torch.allclose(results[0][k], results[1][k], atol=1e-6), k


# ---------------------------------------------------------------------------------------------------------------
# DDP


def test_ddp_two_gloo_processes(tmp_path, frame_folder):
    out = tmp_path / "run"
    proc = run_torchrun(tmp_path, TINY_ARGS + ["--data_dir", frame_folder, "--save_folder", out, "--nEpochs", "1",
                                               "--loss", "gan", "--gpu_mode", "False", "--perceptual_weight", "0"],
                        preamble=CONSTANT_FLOWS)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "world size 2" in (out / "train.log").read_text()
    row = json.loads((out / "metrics.jsonl").read_text())
    assert row["samples"] == 6  # 3 per process, summed over both ranks
    # Only rank 0 wrote: one set of files, all complete.
    assert sorted(p.name for p in out.glob("*.pth")) == ["netD_epoch_4_1.pth", "netG_epoch_4_1.pth",
                                                         "training_state_4_1.pth"]
    assert not list(out.glob("*.part")) and not list(out.glob(".tmp_*"))
    assert all(torch.isfinite(v).all() for v in load(out / "netG_epoch_4_1.pth").values())


def test_torch_flow_backend_computes_flows_in_the_step(tmp_path, frame_folder, monkeypatch):
    """--flow_backend torch: the DataLoader returns zero flows and the step computes real ones for the whole batch."""
    import dataset
    import pyflow.torch_flow as torch_flow

    def no_loader_flows(*args, **kwargs):
        raise AssertionError("the DataLoader computed flows")

    monkeypatch.setattr(dataset, "compute_flows", no_loader_flows)
    seen = []
    real = torch_flow.flow_batch

    def counting(im1, im2, **params):
        flow = real(im1, im2, **params)
        seen.append((im1.shape, flow.abs().max().item()))
        return flow

    monkeypatch.setattr(torch_flow, "flow_batch", counting)
    out = tmp_path / "run"
    assert run(["--data_dir", frame_folder, "--save_folder", out, "--nEpochs", "1", "--loss", "l1", "--batchSize", "2",
                "--flow_backend", "torch", "--flow_device", "cpu", "--max_steps_per_epoch", "2"]) == 0
    assert seen and all(shape[0] == 2 * 2 for shape, _ in seen)  # batch 2 x 2 neighbours in one solve
    assert any(peak > 0 for _, peak in seen)  # the moving pattern gives non-zero flows


# ---------------------------------------------------------------------------------------------------------------
# The validation baseline


class FakeEvalLoader:
    """A list of validation batches with a ``dataset`` whose ``skip_flows`` is recorded while it is iterated."""

    def __init__(self, batches):
        from types import SimpleNamespace

        self.batches = batches
        self.dataset = SimpleNamespace(skip_flows=False)
        self.skipped = []

    def __iter__(self):
        self.skipped.append(self.dataset.skip_flows)
        return iter(self.batches)


def test_bicubic_baseline_is_the_bicubic_upscale_scored_like_validation():
    from conftest import moving_frames

    import dataset
    import train_data

    def t(img):
        return torch.from_numpy(img).permute(2, 0, 1).float()[None] / 255

    hr = moving_frames(1, 48, 64)[0]
    lr = dataset.degrade(hr, 4, "matlab")
    batch = (t(lr), t(hr), [t(lr)], [torch.zeros(1, 2, 12, 16)], t(dataset.bicubic_upscale(lr, 4, "matlab")))
    loader = FakeEvalLoader([batch])
    args = iSeeBetterTrain.parse_args(["--eval_dir", "eval"])
    dist = training.DistInfo(0, 1, 0, torch.device("cpu"))
    name, scores = train_data.validation_baseline(args, loader, dist, {"scale_factor": 4})
    psnr, ssim = training.image_scores(dataset.bicubic_upscale(lr, 4, "matlab").astype(np.float64), hr)
    assert name == "bicubic" and scores["val_psnr"] == pytest.approx(psnr) and scores["val_ssim"] == pytest.approx(ssim)
    assert 15 < psnr < 60  # a real score, not a perfect or an empty one
    assert loader.skipped == [True] and loader.dataset.skip_flows is False  # no flow work for the baseline


def test_denoise_baseline_is_the_temporal_mean_of_the_network_frames():
    import train_data

    torch.manual_seed(0)
    inp, nb1, nb2, target = torch.rand(4, 1, 1, 16, 16)
    batch = (inp, target, [nb1, nb2], [torch.zeros(1, 2, 16, 16)] * 2, inp)
    dist = training.DistInfo(0, 1, 0, torch.device("cpu"))
    args = iSeeBetterTrain.parse_args(["--denoise", "--nFrames", "3", "--warping"])
    loader = FakeEvalLoader([batch])
    name, scores = train_data.validation_baseline(args, loader, dist, {"scale_factor": 1})
    mean = ((inp + nb1 + nb2) / 3)[0].permute(1, 2, 0).double().numpy() * 255
    psnr, _ = training.image_scores(mean, target[0].permute(1, 2, 0).double().numpy() * 255)
    assert name == "temporal mean" and scores["val_psnr"] == pytest.approx(psnr)
    assert loader.skipped == [False]  # --warping: the neighbours the network sees are warped with their flows


def test_validation_baseline_is_logged_and_recorded(tmp_path, frame_folder, constant_flows, capsys):
    import re

    out = tmp_path / "run"
    assert run(["--data_dir", frame_folder, "--save_folder", out, "--eval_dir", frame_folder, "--eval_max_frames",
                "2", "--loss", "l1", "--nEpochs", "1", "--max_steps_per_epoch", "1"]) == 0
    log = (out / "train.log").read_text()
    logged = re.search(r"baseline \(bicubic\): ([0-9.]+) dB Y-PSNR, SSIM ([0-9.]+)", log)
    assert logged, log
    row = json.loads((out / "metrics.jsonl").read_text())
    assert row["baseline"] == "bicubic" and f"{row['baseline_psnr']:.3f}" == logged.group(1)
    assert "lr 0.0001, constant: runs of under 10 epochs keep their lr" in log
