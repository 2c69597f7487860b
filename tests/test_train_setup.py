"""train_setup.py: the generator's config, --pretrained paths and G's start, on tiny networks."""

import pytest
import torch

import iSeeBetterTrain
import train_setup
from errors import UserError


def test_a_resumed_run_keeps_its_generator():
    args = iSeeBetterTrain.parse_args(["--nFrames", "5", "--base_filter", "8"])
    recorded = dict(train_setup.model_config(args), nFrames=3, base_filter=16)
    state = {"config": recorded, "args": {"residual": True}}
    config = train_setup.generator_config(args, state, "t.pth", None, main=False)
    assert config == recorded and config is not recorded
    assert args.nFrames == 3 and args.residual is True  # the data and the output mode follow the generator
    fresh = iSeeBetterTrain.parse_args(["--nFrames", "5"])
    assert train_setup.generator_config(fresh, None, None, None, main=False) == train_setup.model_config(fresh)


def test_pretrained_is_a_path_or_a_name_in_the_save_folder(tmp_path):
    (tmp_path / "RBPN_4x.pth").write_bytes(b"x")
    args = iSeeBetterTrain.parse_args(["--save_folder", str(tmp_path)])
    assert train_setup.resolve_pretrained(args) == str(tmp_path / "RBPN_4x.pth")
    args.pretrained_sr = str(tmp_path / "RBPN_4x.pth")
    assert train_setup.resolve_pretrained(args) == args.pretrained_sr
    args.pretrained_sr = "missing.pth"
    with pytest.raises(UserError, match="^--pretrained: 'missing.pth' not found"):
        train_setup.resolve_pretrained(args)


def test_residual_denoiser_starts_as_the_identity():
    """--denoise --residual zeroes the reconstruction conv: G adds nothing at first, so output = input."""
    import rbpn

    torch.manual_seed(0)
    net = rbpn.Net(num_channels=1, base_filter=8, feat=8, num_stages=3, n_resblock=1, nFrames=3, scale_factor=1)
    x = torch.rand(1, 1, 16, 16)
    nbs, flows = [x, x], [torch.zeros(1, 2, 16, 16)] * 2
    assert net(x, nbs, flows).abs().max() > 0.1  # RBPN's random init outputs far from zero
    train_setup.start_as_identity(net)
    assert torch.equal(net(x, nbs, flows), torch.zeros_like(x))
