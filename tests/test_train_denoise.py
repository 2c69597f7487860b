"""iSeeBetterTrain.py --denoise: tiny end-to-end runs on .npy movies of noisy scans, the checkpoints' records,
resume, pretrained weights, and the one-line errors for bad options and bad movies."""

import json

import numpy as np
import pytest
import torch
from conftest import run_torchrun

import checkpoint
import iSeeBetterTrain
import train_setup
import training
from errors import UserError

# A tiny generator on 16x16 patches with zero flows (fast); tests that need pyflow say --flows pyflow.
TINY = ["--denoise", "--nFrames", "3", "--base_filter", "8", "--feat", "8", "--n_resblock", "1", "--patch_size", "16",
        "--batchSize", "4", "--threads", "0", "--no-progress", "--vgg", "random", "--flows", "zero"]
ONE_STEP = ["--nEpochs", "1", "--max_steps_per_epoch", "1"]


pytestmark = pytest.mark.usefixtures("one_thread")


def noisy_movie(frames: int = 12, size: int = 32, channels: int = 1, noise: float = 0.4, seed: int = 0) -> np.ndarray:
    """Heights (nm) of a smooth pattern drifting 1 px per scan, with scan-line offsets and Gaussian noise:
    float32 (T, H, W), or (T, H, W, 3) for colour."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size].astype(np.float64)
    movie = []
    for t in range(frames):
        clean = 2.0 * np.sin((x + t) / 4.0) * np.cos(y / 5.0) + 0.03 * x
        rows = rng.normal(0.0, 0.3, (size, 1))  # each scan line has its own offset (levelled away)
        if channels == 1:
            movie.append(clean + rows + rng.normal(0.0, noise, (size, size)))
        else:
            planes = [clean * (0.6 + 0.2 * c) + rows + rng.normal(0.0, noise, (size, size)) for c in range(channels)]
            movie.append(np.stack(planes, axis=-1))
    return np.asarray(movie, dtype=np.float32)


def save_movie(path, movie: np.ndarray):
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, movie)
    return path


@pytest.fixture
def grey_movie(tmp_path):
    return save_movie(tmp_path / "movies" / "grey.npy", noisy_movie())


@pytest.fixture
def colour_movie(tmp_path):
    return save_movie(tmp_path / "colour" / "colour.npy", noisy_movie(channels=3, seed=1))


def run(args):
    return iSeeBetterTrain.main([str(a) for a in TINY + list(args)])


def rows(folder):
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


def meta_of(path):
    return checkpoint.read_checkpoint(str(path))[1]


# ---------------------------------------------------------------------------------------------------------------
# Options


def test_denoise_defaults_and_mode_options():
    a = iSeeBetterTrain.parse_args(["--denoise"])
    assert (a.upscale_factor, a.loss, a.target, a.flows, a.warping, a.level, a.channel) == \
        (1, "l1", "n2n", "pyflow", False, True, None)
    assert train_setup.model_config(a, 1)["arch"] == "Net"
    a = iSeeBetterTrain.parse_args(["--denoise", "--upscale_factor", "2", "--APITLoss"])
    assert (a.upscale_factor, a.loss) == (2, "gan")
    assert train_setup.model_config(a, 3)["arch"] == "Net2"
    a = iSeeBetterTrain.parse_args([])
    assert (a.upscale_factor, a.loss) == (4, "gan")
    assert train_setup.model_config(a)["arch"] == "Net"


def test_choices_come_from_the_denoise_record():
    """The parser's --target / --residual_base / --flows choices are denoise_record's tuples (torch-free, for a fast
    -h), which are denoise_data's."""
    import denoise_data
    import denoise_record

    actions = {action.dest: action for action in iSeeBetterTrain.build_parser()._actions}
    assert actions["target"].choices is denoise_record.TARGETS
    assert actions["residual_base"].choices is denoise_record.BASES
    assert actions["flows"].choices is denoise_record.FLOW_METHODS
    assert denoise_record.TARGETS is denoise_data.TARGETS  # one home
    assert denoise_record.BASES is denoise_data.BASES
    assert denoise_record.FLOW_METHODS is denoise_data.FLOW_METHODS


@pytest.mark.parametrize("argv, message", [
    (["--upscale_factor", "1"], "--upscale_factor 1 is for --denoise only"),
    (["--target", "median"], "--target only applies with --denoise"),
    (["--warping"], "--warping only applies with --denoise"),
    (["--no-level"], "--no-level only applies with --denoise"),
    (["--channel", "topography"], "--channel only applies with --denoise"),
    (["--denoise", "--eval_dir", "x", "--eval_file_list", "l.txt"], "--eval_file_list"),
    (["--denoise", "--nFrames", "0"], "at least 1 with --denoise"),
    (["--nFrames", "1"], "at least 2"),
    (["--residual_base", "mean"], "--residual_base only applies with --denoise"),
    (["--denoise", "--residual_base", "mean"], "--residual_base only applies with --residual"),
    (["--denoise", "--target", "interleaved", "--nFrames", "4"], "odd --nFrames"),
    (["--temporal_bin", "2"], "--temporal_bin only applies with --denoise"),
    (["--denoise", "--temporal_bin", "1", "0"], "factors of 1 or more"),
    (["--spatial_scale", "0.5"], "--spatial_scale only applies with --denoise"),
    (["--denoise", "--spatial_scale", "1", "2"], "factors in \\(0, 1\\]"),
])
def test_options_of_the_other_mode_are_refused(argv, message):
    with pytest.raises(UserError, match=message):
        iSeeBetterTrain.parse_args(argv)


# ---------------------------------------------------------------------------------------------------------------
# Training runs


def test_denoise_training_learns_and_records_its_preprocessing(tmp_path, grey_movie):
    out = tmp_path / "run"
    assert run(["--data_dir", grey_movie, "--save_folder", out, "--nEpochs", "5", "--lr", "2e-3",
                "--lr_step", "100"]) == 0
    losses = [r["g_loss"] for r in rows(out)]
    assert len(losses) == 5 and all(r["samples"] == 9 for r in rows(out))  # 12 frames, 4-frame windows
    assert losses[-1] < 0.7 * losses[0] and losses[-1] < losses[1], losses  # not only the first steps
    # Every epoch's generator is a project checkpoint with its config and preprocessing.
    meta = meta_of(out / "netG_epoch_1_5.pth")
    assert meta["config"]["task"] == "denoise" and meta["config"]["num_channels"] == 1
    assert meta["config"]["arch"] == "Net" and meta["config"]["scale_factor"] == 1
    assert meta["denoise"] == {"target": "n2n", "warping": False, "flows": "zero", "level": True, "channel": None,
                               "normalisation": "per-movie robust percentiles 0.5/99.5", "residual_base": "frame",
                               "temporal_bin": [1], "spatial_scale": [1.0]}
    net, config = checkpoint.build_generator(str(out / "netG_epoch_1_5.pth"),
                                             expect={"task": "denoise", "num_channels": 1})
    x = torch.rand(1, 1, 20, 24)
    assert net(x, [x, x], [torch.zeros(1, 2, 20, 24)] * 2).shape == x.shape
    state = training.read_training_state(str(out / "training_state_1_5.pth"))
    assert state["config"]["arch"] == "Net" and state["denoise"] == meta["denoise"]
    (movie,) = state["denoise_movies"]
    assert movie["frames"] == 12 and movie["normalisation"]["levelled"] is True


def test_residual_denoiser_learns_a_correction_of_the_input(tmp_path, grey_movie):
    """--denoise --residual: G's output is added to the input frame, recorded so the tester does the same."""
    out = tmp_path / "run"
    assert run(["--data_dir", grey_movie, "--save_folder", out, "--residual", "--eval_dir", grey_movie,
                "--eval_max_frames", "2"] + ONE_STEP) == 0
    meta = meta_of(out / "netG_epoch_1_1.pth")
    assert meta["config"]["task"] == "denoise"
    net, config = checkpoint.build_generator(str(out / "netG_epoch_1_1.pth"), expect={"task": "denoise"})
    assert config.get("residual")


def test_pyflow_run_validates_against_a_no_reference_proxy(tmp_path, grey_movie):
    out = tmp_path / "run"
    assert run(["--data_dir", grey_movie, "--save_folder", out, "--flows", "pyflow", "--eval_dir", grey_movie,
                "--eval_max_frames", "2"] + ONE_STEP) == 0
    (row,) = rows(out)
    assert np.isfinite(row["val_psnr"]) and -1 <= row["val_ssim"] <= 1 and row["val_frames"] == 2
    log = (out / "train.log").read_text()
    assert "no-reference proxy" in log and "validation baseline, the raw input frame" in log
    assert "val PSNR vs the n2n target" in log
    meta = meta_of(out / "netG_best_1.pth")
    assert meta["denoise"]["flows"] == "pyflow" and meta["config"]["task"] == "denoise"
    checkpoint.build_generator(str(out / "netG_best_1.pth"), expect={"task": "denoise", "num_channels": 1})


def test_net2_with_upscale_factor_2_keeps_the_input_size(tmp_path, grey_movie):
    out = tmp_path / "run"
    assert run(["--data_dir", grey_movie, "--save_folder", out, "--upscale_factor", "2"] + ONE_STEP) == 0
    net, config = checkpoint.build_generator(str(out / "netG_epoch_2_1.pth"), expect={"task": "denoise"})
    assert (config["arch"], config["scale_factor"], config["num_channels"]) == ("Net2", 2, 1)
    x = torch.rand(1, 1, 16, 16)
    assert net(x, [x, x], [torch.zeros(1, 2, 16, 16)] * 2).shape == x.shape


def test_colour_movies_train_a_colour_denoiser(tmp_path, colour_movie):
    out = tmp_path / "run"
    assert run(["--data_dir", colour_movie, "--save_folder", out, "--eval_dir", colour_movie,
                "--eval_max_frames", "1"] + ONE_STEP) == 0
    assert meta_of(out / "netG_epoch_1_1.pth")["config"]["num_channels"] == 3
    assert "val Y-PSNR vs the n2n target" in (out / "train.log").read_text()


@pytest.mark.parametrize("target", ["n2n", "select", "median", "interleaved"])
def test_each_target_trains(tmp_path, grey_movie, target):
    out = tmp_path / "run"
    assert run(["--data_dir", grey_movie, "--save_folder", out, "--target", target] + ONE_STEP) == 0
    assert np.isfinite(rows(out)[0]["g_loss"])
    assert meta_of(out / "netG_epoch_1_1.pth")["denoise"]["target"] == target


def test_warping_and_no_levelling(tmp_path, grey_movie):
    out = tmp_path / "run"
    assert run(["--data_dir", grey_movie, "--save_folder", out, "--warping", "--no-level"] + ONE_STEP) == 0
    record = meta_of(out / "netG_epoch_1_1.pth")["denoise"]
    assert record["warping"] is True and record["level"] is False


@pytest.mark.parametrize("extra", [["--precision", "bf16"], ["--grad_checkpoint", "--upscale_factor", "2"],
                                   ["--patch_size", "0", "--batchSize", "2", "--loss", "gan"]])
def test_precision_checkpointing_and_whole_frames(tmp_path, grey_movie, extra):
    out = tmp_path / "run"
    assert run(["--data_dir", grey_movie, "--save_folder", out] + ONE_STEP + extra) == 0
    assert np.isfinite(rows(out)[0]["g_loss"])


def test_ddp_two_gloo_processes_denoise(tmp_path, grey_movie):
    """--denoise under torchrun: two CPU processes split the windows, only rank 0 writes, the run is a denoiser."""
    out = tmp_path / "run"
    proc = run_torchrun(tmp_path, TINY + ["--data_dir", grey_movie, "--save_folder", out, "--nEpochs", "1",
                                          "--gpu_mode", "False"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "world size 2" in (out / "train.log").read_text()
    (row,) = rows(out)
    assert row["samples"] == 10 and np.isfinite(row["g_loss"])  # 9 windows padded to 5 per rank, summed
    assert sorted(p.name for p in out.glob("*.pth")) == ["netG_epoch_1_1.pth", "training_state_1_1.pth"]
    assert not list(out.glob("*.part")) and not list(out.glob(".tmp_*"))
    meta = meta_of(out / "netG_epoch_1_1.pth")
    assert meta["config"]["task"] == "denoise" and meta["denoise"]["target"] == "n2n"


def test_gan_on_grey_scans(tmp_path, grey_movie):
    """The grey discriminator and the perceptual term (VGG on the grey channel repeated) train one step."""
    out = tmp_path / "run"
    assert run(["--data_dir", grey_movie, "--save_folder", out, "--loss", "gan", "--patch_size", "32",
                "--batchSize", "2"] + ONE_STEP) == 0
    (row,) = rows(out)
    assert all(np.isfinite(row[k]) for k in ("g_loss", "d_loss", "g_perception", "g_tv"))
    assert torch.load(out / "netD_epoch_1_1.pth", weights_only=True)["net.0.weight"].shape == (64, 1, 3, 3)


def test_gan_patches_too_small_for_the_perceptual_vgg_are_refused(tmp_path, grey_movie):
    with pytest.raises(UserError, match="at least 32x32 px, but G's outputs are 16x16 px; use --patch_size 32"):
        run(["--data_dir", grey_movie, "--save_folder", tmp_path / "run", "--loss", "gan"] + ONE_STEP)
    assert run(["--data_dir", grey_movie, "--save_folder", tmp_path / "run", "--loss", "gan",
                "--perceptual_weight", "0"] + ONE_STEP) == 0


def test_grey_discriminator_and_generator_loss():
    from SRGAN.loss import GeneratorLoss
    from SRGAN.model import Discriminator

    d = Discriminator(num_channels=1)
    assert list(d.state_dict()) == list(Discriminator().state_dict())  # the same names
    grey = torch.rand(2, 1, 32, 32)
    assert d(grey).shape == (2,)
    with pytest.raises(ValueError, match=r"\(B, 1, H, W\)"):
        d(torch.rand(2, 3, 32, 32))
    loss = GeneratorLoss(vgg="random")
    total, terms = loss(d(grey), grey, grey.flip(-1))
    assert torch.isfinite(total) and terms["perception"] > 0


def test_resume_rebuilds_the_recorded_arch(tmp_path, grey_movie, frame_folder):
    out = tmp_path / "run"
    common = ["--data_dir", grey_movie, "--save_folder", out, "--upscale_factor", "2", "--max_steps_per_epoch", "1"]
    assert run(common + ["--nEpochs", "1", "--target", "median"]) == 0
    # The command line asks for other frames and another target: the run keeps its own.
    assert run(common + ["--nEpochs", "2", "--resume", "--nFrames", "4"]) == 0
    config = meta_of(out / "netG_epoch_2_2.pth")["config"]
    assert (config["arch"], config["nFrames"]) == ("Net2", 3)
    state = training.read_training_state(str(out / "training_state_2_2.pth"))
    assert state["denoise"]["target"] == "median" and state["args"]["target"] == "median"
    assert "continues with its recorded data option --target median" in (out / "train.log").read_text()
    with pytest.raises(UserError, match="is a --denoise training state"):
        iSeeBetterTrain.main(["--data_dir", str(frame_folder), "--save_folder", str(tmp_path / "sr"),
                              "--upscale_factor", "2", "--resume", str(out / "training_state_2_2.pth")])


# ---------------------------------------------------------------------------------------------------------------
# Pretrained weights


def tiny_rbpn(channels: int, scale: int, arch: str = "Net"):
    import rbpn

    torch.manual_seed(5)
    return rbpn.from_config(dict(num_channels=channels, base_filter=8, feat=8, num_stages=3, n_resblock=1, nFrames=3,
                                 scale_factor=scale, arch=arch))


def test_super_resolution_checkpoint_is_refused_for_denoising(tmp_path, grey_movie, colour_movie):
    source = tmp_path / "sr_x4.pth"
    torch.save(tiny_rbpn(3, 4).state_dict(), source)
    with pytest.raises(UserError, match="x4 super-resolution checkpoint; --denoise needs a denoising model"):
        run(["--data_dir", colour_movie, "--save_folder", tmp_path / "run", "--pretrained", "--pretrained_sr",
             source] + ONE_STEP)
    grey_denoiser = tmp_path / "grey.pth"
    checkpoint.save_generator(str(grey_denoiser), tiny_rbpn(1, 1))
    with pytest.raises(UserError, match="input channel .* the data is colour"):
        run(["--data_dir", colour_movie, "--save_folder", tmp_path / "run", "--pretrained", "--pretrained_sr",
             grey_denoiser] + ONE_STEP)


def test_net2_starts_from_a_super_resolution_checkpoint_of_its_factor(tmp_path, colour_movie):
    sr = tiny_rbpn(3, 2)
    source = tmp_path / "sr_x2.pth"
    torch.save(sr.state_dict(), source)
    out = tmp_path / "run"
    assert run(["--data_dir", colour_movie, "--save_folder", out, "--upscale_factor", "2", "--lr", "1e-30",
                "--pretrained", "--pretrained_sr", source] + ONE_STEP) == 0
    saved, _ = checkpoint.read_checkpoint(str(out / "netG_epoch_2_1.pth"))
    for k, v in sr.state_dict().items():
        if k == "output.conv.weight":
            assert saved[k].shape == (3, 16, 6, 6)  # Net2's strided output conv: fresh weights
        else:
            assert torch.allclose(saved[k], v, atol=1e-6), k
    assert "every tensor but output.conv.weight" in (out / "train.log").read_text()


def test_denoising_checkpoint_continues_training(tmp_path, grey_movie):
    source = tmp_path / "denoiser.pth"
    net = tiny_rbpn(1, 1)
    checkpoint.save_generator(str(source), net)
    out = tmp_path / "run"
    assert run(["--data_dir", grey_movie, "--save_folder", out, "--lr", "1e-30", "--pretrained", "--pretrained_sr",
                source] + ONE_STEP) == 0
    saved, _ = checkpoint.read_checkpoint(str(out / "netG_epoch_1_1.pth"))
    assert all(torch.allclose(saved[k], v, atol=1e-6) for k, v in net.state_dict().items())


# ---------------------------------------------------------------------------------------------------------------
# Bad movies


def test_movie_shorter_than_a_window_is_refused(tmp_path):
    short = save_movie(tmp_path / "short.npy", noisy_movie(frames=3))
    with pytest.raises(UserError, match="has 3 frames, but --target n2n with --nFrames 3 needs 4 consecutive"):
        run(["--data_dir", short, "--save_folder", tmp_path / "run"] + ONE_STEP)
    with pytest.raises(UserError, match="needs 6 consecutive"):
        run(["--data_dir", short, "--save_folder", tmp_path / "run", "--target", "median"] + ONE_STEP)


def test_movie_with_nan_is_refused(tmp_path):
    movie = noisy_movie()
    movie[5, 3, 4] = np.nan
    path = save_movie(tmp_path / "nan.npy", movie)
    with pytest.raises(UserError, match=r"frame 5 .*NaN"):
        run(["--data_dir", path, "--save_folder", tmp_path / "run"] + ONE_STEP)


def test_a_spike_pixel_does_not_stop_training(tmp_path, caplog):
    """Issue 22 (E08): one 1e4 pixel made the other frames 'blank': 'no movie has 4 consecutive non-blank frames'."""
    movie = noisy_movie(frames=8)
    movie[3, 5, 5] = 1e4
    path = save_movie(tmp_path / "spike.npy", movie)
    with caplog.at_level("INFO"):
        assert run(["--data_dir", path, "--save_folder", tmp_path / "run"] + ONE_STEP) == 0
    assert "frame 3 (frames 0-7): 1 outlier pixel" in caplog.text
    assert "training samples: 5," in caplog.text  # every 4-frame window of the 8 frames


def test_an_all_blank_movie_is_refused_and_keep_truncated_keeps_a_cut_asd(tmp_path):
    from test_scans import asd_bytes, levels

    flat = save_movie(tmp_path / "flat.npy", np.full((8, 32, 32), 2.0, np.float32))
    with pytest.raises(UserError, match="all 8 frames of the movie are blank \\(constant\\); nothing to train on"):
        run(["--data_dir", flat, "--save_folder", tmp_path / "run"] + ONE_STEP)
    cut = tmp_path / "cut.asd"
    cut.write_bytes(asd_bytes(1, [levels(8, 32, 32), levels(8, 32, 32, seed=1)])[:-1])
    with pytest.raises(UserError, match="pass --keep_truncated to keep the 8 complete frames"):
        run(["--data_dir", cut, "--save_folder", tmp_path / "run"] + ONE_STEP)
    assert run(["--data_dir", cut, "--keep_truncated", "--save_folder", tmp_path / "run"] + ONE_STEP) == 0


def test_grey_and_colour_movies_are_not_mixed(tmp_path, grey_movie, colour_movie):
    folder = tmp_path / "mixed"
    save_movie(folder / "a.npy", noisy_movie())
    save_movie(folder / "b.npy", noisy_movie(channels=3))
    with pytest.raises(UserError, match="mix grey and colour"):
        run(["--data_dir", folder, "--save_folder", tmp_path / "run"] + ONE_STEP)
    with pytest.raises(UserError, match="--eval_dir: the movies are colour .* the generator is grey"):
        run(["--data_dir", grey_movie, "--eval_dir", colour_movie, "--save_folder", tmp_path / "run"] + ONE_STEP)


def test_missing_data_and_small_eval_frames_are_refused_up_front(tmp_path, grey_movie, monkeypatch):
    with pytest.raises(UserError, match="^--data_dir: not found"):
        run(["--data_dir", tmp_path / "nothing", "--save_folder", tmp_path / "run"] + ONE_STEP)
    tiny = save_movie(tmp_path / "tiny.npy", noisy_movie(size=8))
    monkeypatch.setattr(training.Trainer, "train_epoch", lambda *a, **k: pytest.fail("trained"))
    with pytest.raises(UserError, match=r"^--eval_dir .*tiny.npy: frames of 8x8 px are too small to validate"):
        run(["--data_dir", grey_movie, "--eval_dir", tiny, "--save_folder", tmp_path / "run"] + ONE_STEP)


# ---------------------------------------------------------------------------------------------------------------
# Validation on grey frames


def test_grey_validation_measures_the_plane_on_the_float_scale():
    import metrics

    class Identity(torch.nn.Module):
        def forward(self, x, neighbours, flows):
            return x

    torch.manual_seed(0)
    inp, target = torch.rand(1, 1, 16, 16), torch.rand(1, 1, 16, 16)
    batch = (inp, target, [inp], [torch.zeros(1, 2, 16, 16)], inp)
    scores = training.validate(Identity(), [batch], torch.device("cpu"), 1, denoise=True)
    a, b = inp[0, 0].double().numpy() * 255, target[0, 0].double().numpy() * 255
    assert scores["val_psnr"] == pytest.approx(metrics.psnr(a, b))
    assert scores["val_ssim"] == pytest.approx(metrics.ssim(a, b))
    same = (inp, inp, [inp], [torch.zeros(1, 2, 16, 16)], inp)
    assert training.validate(Identity(), [same], torch.device("cpu"), 1, denoise=True)["val_psnr"] == 100.0


def test_mean_base_starts_as_the_temporal_mean_and_is_recorded(tmp_path, grey_movie):
    """--residual --residual_base mean: G's correction is added to the mean of the frames it sees; G starts at zero,
    the best checkpoint records "mean" too, and the log names the mean baseline."""
    out = tmp_path / "run"
    assert run(["--data_dir", grey_movie, "--save_folder", out, "--residual", "--residual_base", "mean", "--target",
                "interleaved", "--eval_dir", grey_movie, "--eval_max_frames", "2"] + ONE_STEP) == 0
    for name in ("netG_epoch_1_1.pth", "netG_best_1.pth"):
        meta = meta_of(out / name)
        assert meta["residual"] == "mean" and meta["denoise"]["residual_base"] == "mean"
        assert meta["denoise"]["target"] == "interleaved"
        assert checkpoint.build_generator(str(out / name), expect={"task": "denoise"})[1]["residual"] == "mean"
    log = (out / "train.log").read_text()
    assert "the plain mean of the frames G sees" in log and "conv rescalings to unit-variance" in log


def test_single_frame_model_trains_and_is_recorded(tmp_path, grey_movie):
    out = tmp_path / "run"
    assert run(["--data_dir", grey_movie, "--save_folder", out, "--nFrames", "1", "--residual", "--eval_dir",
                grey_movie, "--eval_max_frames", "2"] + ONE_STEP) == 0
    net, config = checkpoint.build_generator(str(out / "netG_epoch_1_1.pth"), expect={"task": "denoise"})
    assert config["nFrames"] == 1 and net.nFrames == 1
    x = torch.rand(1, 1, 16, 16)
    assert net(x, [], []).shape == x.shape
    assert "training samples: 11," in (out / "train.log").read_text()  # 12 frames, 2-frame n2n windows


def test_torch_flow_in_denoise_training_warps_in_the_step(tmp_path, grey_movie, monkeypatch):
    """--flow_backend torch with --denoise: the DataLoader computes no neighbour flow; the step computes them for
    the batch, warps the neighbours and rebuilds the mean base."""
    import denoise_data

    calls = []
    real_prepare = training.denoise_step_inputs

    def spying_prepare(warping, base):
        prepare = real_prepare(warping, base)

        def wrapped(inp, neighbours, flows, bicubic):
            calls.append((warping, base, [float(f.abs().sum()) for f in flows]))
            return prepare(inp, neighbours, flows, bicubic)

        return wrapped

    def no_loader_flows(*args, **kwargs):
        raise AssertionError("the DataLoader computed a flow")

    monkeypatch.setattr(training, "denoise_step_inputs", spying_prepare)
    monkeypatch.setattr(denoise_data, "compute_flows", no_loader_flows)
    out = tmp_path / "run"
    args = [a if a != "zero" else "pyflow" for a in TINY]
    assert iSeeBetterTrain.main([str(a) for a in args + ["--data_dir", grey_movie, "--save_folder", out,
                                                        "--flow_backend", "torch", "--warping", "--residual",
                                                        "--residual_base", "mean", "--target", "interleaved"]
                                 + ONE_STEP]) == 0
    assert calls and calls[0][:2] == (True, "mean") and all(s > 0 for s in calls[0][2])  # real flows in the step
    assert "pyflow.torch_flow on cpu" in (out / "train.log").read_text()


def test_denoise_step_inputs_match_the_loaders_warp_and_mean():
    import denoise_data

    rng = np.random.default_rng(0)
    inp = torch.from_numpy(rng.random((2, 1, 12, 14)).astype(np.float32))
    nbs = [torch.from_numpy(rng.random((2, 1, 12, 14)).astype(np.float32)) for _ in range(2)]
    flows = [torch.from_numpy(rng.normal(0, 2, (2, 2, 12, 14)).astype(np.float32)) for _ in range(2)]
    warped, base = training.denoise_step_inputs(True, "mean")(inp, nbs, flows, inp)
    for nb, fl, w in zip(nbs, flows, warped):
        for i in range(2):
            expected = denoise_data.warp_backward(nb[i].numpy().transpose(1, 2, 0), fl[i].numpy())
            np.testing.assert_allclose(w[i].numpy().transpose(1, 2, 0), expected, atol=1e-5)
    torch.testing.assert_close(base, torch.stack([inp] + warped).mean(dim=0))
    same, frame_base = training.denoise_step_inputs(False, None)(inp, nbs, flows, inp)
    assert same == nbs and frame_base is inp


def test_temporal_bins_add_binned_copies_of_the_training_movies(tmp_path, grey_movie):
    out = tmp_path / "run"
    assert run(["--data_dir", grey_movie, "--save_folder", out, "--temporal_bin", "1", "2"] + ONE_STEP) == 0
    # 12 frames -> 9 windows of 4; binned by 2: 6 frames -> 3 windows
    assert "training samples: 12," in (out / "train.log").read_text()
    assert meta_of(out / "netG_epoch_1_1.pth")["denoise"]["temporal_bin"] == [1, 2]


def test_spatial_scales_add_resized_copies_of_the_training_movies(tmp_path):
    movie = save_movie(tmp_path / "movies" / "big.npy", noisy_movie(size=64))
    out = tmp_path / "run"
    assert run(["--data_dir", movie, "--save_folder", out, "--temporal_bin", "1", "2", "--spatial_scale", "1", "0.5"]
               + ONE_STEP) == 0
    # 12 frames -> 9 windows of 4, binned by 2 -> 3 windows; each also at half size (32 px >= the 16 px patches)
    assert "training samples: 24," in (out / "train.log").read_text()
    assert meta_of(out / "netG_epoch_1_1.pth")["denoise"]["spatial_scale"] == [1.0, 0.5]
