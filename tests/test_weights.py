"""The shipped weights: they load with the documented config and really super-resolve real frames."""

import os

import numpy as np
import pytest
import torch

import checkpoint
import metrics
from dataset import bicubic_upscale, degrade
from inference import prepare_model, sr_image, super_resolve_clip
from video_io import read_video

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WEIGHTS = os.path.join(ROOT, "weights")
COMPACT = {"num_channels": 3, "base_filter": 64, "feat": 16, "num_stages": 3, "n_resblock": 2, "nFrames": 3,
           "scale_factor": 4}


@pytest.mark.parametrize("name", ["iSeeBetter_x4_psnr.pth", "iSeeBetter_x4_gan_noperceptual.pth"])
def test_shipped_weights_load_with_their_config(name):
    net, config = checkpoint.build_generator(os.path.join(WEIGHTS, name))
    assert {k: config[k] for k in COMPACT} == COMPACT
    assert config["residual"] == "matlab"
    assert sum(p.numel() for p in net.parameters()) == 554_926


@pytest.mark.parametrize("name", sorted(f for f in os.listdir(WEIGHTS) if f.endswith(".pth")))
def test_shipped_weights_pass_the_damage_checks_with_a_wide_margin(name):
    path = os.path.join(WEIGHTS, name)
    assert checkpoint.verify_archive(path) > 0  # zip files: every entry's CRC-32 is checked on load
    sd, _ = checkpoint.read_checkpoint(path)
    largest = max(float(v.abs().max()) for v in sd.values() if v.is_floating_point())
    assert largest < checkpoint.MAX_ABS_WEIGHT / 1e5, largest


def test_psnr_model_beats_bicubic_on_real_frames():
    """Frames of the bundled clip (192x108, used as HR) degraded x4: the default model must beat bicubic."""
    torch.set_num_threads(1)
    frames, _ = read_video(os.path.join(ROOT, "samples", "bigbuckbunny_lr.mp4"))
    hr = [f[:108, :192] for f in frames[20:25]]
    lr = [degrade(h, 4, "matlab") for h in hr]
    net, config = checkpoint.build_generator(os.path.join(WEIGHTS, "iSeeBetter_x4_psnr.pth"))
    model = prepare_model(net, torch.device("cpu"))
    ours, bicubic = [], []
    for t, _, low, sr in super_resolve_clip(model, ((f, None) for f in lr), 3, device=torch.device("cpu")):
        out = metrics.to_uint8(sr_image(sr, low, 4, config["residual"]))
        ours.append(metrics.psnr_y(out, hr[t]))
        bicubic.append(metrics.psnr_y(bicubic_upscale(low, 4, "matlab"), hr[t]))
    assert len(ours) == 5
    assert np.mean(ours) > np.mean(bicubic) + 0.3, (np.mean(ours), np.mean(bicubic))


@pytest.mark.usefixtures("one_thread")
def test_shipped_denoiser_loads_and_cleans_a_noisy_movie():
    """weights/iSeeBetter_denoise_afm.pth: grey nFrames-5 RBPN at scale 1 adding a correction to the mean of its
    frames; on a synthetic noisy movie of small drifting blobs it must come closer to the clean frames than the raw
    scans and than the plain mean of its 5 frames does."""
    import denoise_data
    from inference import denoise_clip

    path = os.path.join(WEIGHTS, "iSeeBetter_denoise_afm.pth")
    net, config = checkpoint.build_generator(path, expect={"task": "denoise", "num_channels": 1})
    assert (config["nFrames"], config["scale_factor"], config["residual"]) == (5, 1, "mean")
    meta = checkpoint.read_checkpoint(path)[1]
    assert meta["denoise"]["target"] == "interleaved" and meta["denoise"]["level"] is True
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:48, 0:48].astype(np.float64)
    centres = rng.uniform(4, 44, (30, 2))
    clean = np.stack([sum(np.exp(-((xx - cx - 0.3 * t) ** 2 + (yy - cy) ** 2) / 4.0) for cy, cx in centres)
                      for t in range(9)])
    clean = (clean - clean.min()) / (clean.max() - clean.min())
    noisy = (clean + rng.normal(0, 0.12, clean.shape)).astype(np.float32)[..., None]
    model = prepare_model(net, torch.device("cpu"))
    out = {t: o for t, _, _, o in denoise_clip(model, ((f, None) for f in noisy), 5, flows="pyflow",
                                               residual=config["residual"], prefetch=False)}
    t = 4
    mean5 = noisy[t - 2 : t + 3].mean(axis=0)
    err = {name: float(np.mean((img[..., 0] - clean[t]) ** 2)) for name, img in
           (("raw", noisy[t]), ("mean5", mean5), ("model", np.clip(out[t], 0, 1)))}
    assert err["model"] < 0.5 * err["raw"] and err["model"] < err["mean5"], err
    assert denoise_data.BASES == ("frame", "mean")
