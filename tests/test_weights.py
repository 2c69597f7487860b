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
