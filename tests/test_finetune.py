"""``--finetune``: fine-tuning the denoiser on the movie itself (finetune.py, denoise_job.run_method)."""

import os

import numpy as np
import pytest
import torch
from conftest import TINY_NET, run_denoise, run_tester, tame

import checkpoint
import finetune
import rbpn
from denoise_job import DenoiseSettings
from inference import denoise_clip

GREY_NET = dict(TINY_NET, num_channels=1, scale_factor=1)


def _scene(size: int = 32) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    return 0.5 + 0.3 * np.sin(xx / 5) * np.cos(yy / 6)


def _movie(frames: int = 24, sigma: float = 0.1, seed: int = 0) -> np.ndarray:
    """A still smooth scene on [0.2, 0.8] with white noise, (T, H, W, 1) float32 (normalised units)."""
    rng = np.random.default_rng(seed)
    return (_scene()[None] + rng.normal(0, sigma, (frames, 32, 32)))[..., None].astype(np.float32)


def _tiny_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return tame(rbpn.Net(**GREY_NET), 0.5).eval()


def _true_mse(model: torch.nn.Module, data: np.ndarray) -> float:
    """The model's output (residual base: the mean) against the clean scene, whole movie."""
    stream = denoise_clip(model, ((f, None) for f in data), GREY_NET["nFrames"], flows="zero", residual="mean",
                          device=torch.device("cpu"))
    out = np.stack([o for _, _, _, o in stream])[..., 0]
    return float(np.mean((out - _scene()[None]) ** 2))


def test_split_windows_holds_out_pairs_never_trained_on():
    held, train = finetune.split_windows(list(range(30)))
    assert held and train and not set(held) & set(train)
    assert all(abs(t - h) not in (0, 2) for t in train for h in held)


def test_finetune_raises_the_held_out_score_and_the_true_error_falls():
    data = _movie()
    model = _tiny_model()
    settings = DenoiseSettings(flows="zero")
    before = _true_mse(model, data)
    tuned, info = finetune.finetune(model, dict(GREY_NET), data, [], 5.0, torch.device("cpu"), "fp32", settings,
                                    residual="mean", max_steps=40, patch=24, log=lambda line: None)
    assert info["kept"] and tuned is not None and info["steps"] == 40
    assert info["score_after"] > info["score_before"] + 0.1
    assert _true_mse(tuned, data) < 0.9 * before
    assert _true_mse(model, data) == before  # the shipped model is left as it was


def test_a_movie_too_short_is_named():
    assert "too few" in finetune.too_short(np.zeros((8, 32, 32, 1), np.float32), [], 3)
    assert "odd nFrames" in finetune.too_short(np.zeros((30, 32, 32, 1), np.float32), [], 4)
    assert finetune.too_short(np.zeros((24, 32, 32, 1), np.float32), [3], 3) is None


@pytest.fixture
def grey_ckpt(tmp_path) -> str:
    path = tmp_path / "grey.pth"
    checkpoint.save_generator(str(path), _tiny_model())
    return str(path)


def _npy(tmp_path, frames: int) -> str:
    path = tmp_path / "still.npy"
    np.save(path, _movie(frames)[..., 0] * 3.0)  # in nm, say
    return str(path)


@pytest.mark.parametrize("value", ["-1", "1441", "nan"])
def test_a_negative_or_absurd_budget_is_one_line(tmp_path, grey_ckpt, capsys, value):
    out = tmp_path / "o"
    code, err = run_tester(["--denoise", "-i", _npy(tmp_path, 24), "-o", str(out), "-m", grey_ckpt,
                            "--finetune", value], capsys)
    assert code == 2 and "--finetune must be 0 (off) to 1440 minutes" in err
    assert len([line for line in err.splitlines() if "error" in line]) == 1
    assert not out.exists()


def test_model_finetuned_needs_finetune_and_finetune_needs_denoise(tmp_path, grey_ckpt, capsys):
    code, err = run_tester(["--denoise", "-i", _npy(tmp_path, 24), "-o", str(tmp_path / "o"), "-m", grey_ckpt,
                            "--method", "model-finetuned"], capsys)
    assert code != 0 and "--method model-finetuned needs --finetune MINUTES" in err
    assert not os.path.exists(tmp_path / "o" / "still.npy")
    code, err = run_tester(["-i", "x.mp4", "--finetune", "1"], capsys)
    assert code == 2 and "--finetune 1 only apply with --denoise" in err


def test_a_short_movie_warns_and_is_not_fine_tuned(tmp_path, grey_ckpt, capsys):
    out, record, err = run_denoise(tmp_path, _npy(tmp_path, 10), grey_ckpt, capsys, "--finetune", "0.05", "--method",
                            "model-finetuned")
    assert "not fine-tuned: 10 usable frames are too few" in err
    assert record["method"] == "model" and "skipped" in record["finetune"]
    assert (out / "still.npy").exists()


def test_the_tester_fine_tunes_and_records_it(tmp_path, grey_ckpt, capsys):
    out, record, err = run_denoise(tmp_path, _npy(tmp_path, 24), grey_ckpt, capsys, "--finetune", "0.05", "--method",
                            "model-finetuned")
    entry = record["finetune"]
    assert entry["steps"] > 0 and entry["minutes"] < 0.2 and "score_before" in entry
    assert "finetune: " in err and " steps in " in err and "held-out score" in err
    assert record["method"] == ("model-finetuned" if entry["kept"] else "model")
    assert np.load(out / "still.npy").shape == (24, 32, 32) and len(os.listdir(out / "still")) == 24


def test_the_same_seed_gives_the_same_weights():
    data = _movie()
    runs = [finetune.finetune(_tiny_model(), dict(GREY_NET), data, [], 1.0, torch.device("cpu"), "fp32",
                              DenoiseSettings(flows="zero"), residual="mean", seed=3, max_steps=4, patch=24,
                              log=lambda line: None) for _ in range(2)]
    (a, info_a), (b, info_b) = runs
    assert info_a["score_after"] == info_b["score_after"] and info_a["steps"] == 4
    assert a is not None and b is not None
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)
