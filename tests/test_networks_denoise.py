"""Denoising generators (--denoise): Net at scale 1, grey Net, Net2; their layout, shapes, and checkpoint handling."""

import json
import os
from collections import OrderedDict

import pytest
import torch
from conftest import TINY_NET, l1_fit_losses, net_inputs

import checkpoint
import rbpn
from checkpoint import CheckpointError

DATA = os.path.join(os.path.dirname(__file__), "data")

# (class, num_channels, scale_factor, reference file, parameter count) of the fork's full-size configs.
FORK_CONFIGS = [
    (rbpn.Net, 3, 1, "fork_net_c3_x1_state_dict.json", 7_590_503),
    (rbpn.Net, 1, 1, "fork_net_c1_x1_state_dict.json", 7_569_765),
    (rbpn.Net2, 3, 2, "fork_net2_c3_x2_state_dict.json", 10_165_223),
]
# Tiny denoisers: (class, num_channels, scale_factor).
TINY_DENOISERS = [(rbpn.Net, 1, 1), (rbpn.Net, 3, 1), (rbpn.Net2, 3, 2), (rbpn.Net2, 1, 4), (rbpn.Net2, 3, 8)]


def _reference(name: str) -> dict:
    with open(os.path.join(DATA, name)) as f:
        return json.load(f)


def _tiny(cls=rbpn.Net, seed: int = 0, **overrides) -> rbpn.Net:
    torch.manual_seed(seed)
    return cls(**dict(TINY_NET, **overrides))


def _inputs(net: rbpn.Net, h: int = 7, w: int = 5, batch: int = 2, seed: int = 0):
    return net_inputs(net.config["num_channels"], net.nFrames - 1, h, w, batch, seed)


def _assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


def _one_line(exc_info) -> str:
    message = str(exc_info.value)
    assert "\n" not in message
    return message


# --------------------------------------------------------------------------------------------- full-size layouts


@pytest.mark.parametrize("cls,channels,scale,name,count", FORK_CONFIGS)
def test_full_denoisers_match_fork_state_dicts(cls, channels, scale, name, count):
    with torch.device("meta"):
        net = cls(**dict(rbpn.DEFAULT_CONFIG, num_channels=channels, scale_factor=scale))
    ref = _reference(name)
    sd = net.state_dict()
    assert list(sd) == list(ref)
    assert {k: list(v.shape) for k, v in sd.items()} == ref
    assert sum(p.numel() for p in net.parameters()) == count
    # A state_dict with exactly the reference shapes loads strictly.
    zeros = OrderedDict((k, torch.zeros(shape, device="meta")) for k, shape in ref.items())
    net.load_state_dict(zeros, strict=True, assign=True)


@pytest.mark.parametrize("cls,channels,scale,name,count", FORK_CONFIGS)
def test_full_denoiser_config_inferred_from_fork_shapes(cls, channels, scale, name, count):
    sd = OrderedDict((f"module.{k}", torch.empty(shape, device="meta")) for k, shape in _reference(name).items())
    expected = dict(rbpn.DEFAULT_CONFIG, num_channels=channels, scale_factor=scale)
    if cls is rbpn.Net2:
        expected["arch"] = "Net2"
    assert checkpoint.infer_rbpn_config(sd) == expected
    full = checkpoint.full_generator_config(sd)
    assert full == dict(expected, arch=cls.ARCH, task="denoise")
    with torch.device("meta"):
        assert type(rbpn.from_config(full)) is cls


def test_scale_1_projections_are_3x3_stride_1():
    net = _tiny(scale_factor=1)
    projections = [net.res_feat1[-1].deconv, net.res_feat3[-1].conv]
    for name in ("up1", "down1", "up2", "down2", "up3"):
        block = getattr(net.DBPN, name)
        projections += [m for m in block.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))]
    assert len(projections) == 2 + 5 * 3
    for layer in projections:
        assert (layer.kernel_size, layer.stride, layer.padding) == ((3, 3), (1, 1), (1, 1))


@pytest.mark.parametrize("scale,kernel,stride", [(2, 6, 2), (4, 8, 4), (8, 12, 8)])
def test_net2_output_conv_uses_the_scale_projection(scale, kernel, stride):
    net = _tiny(rbpn.Net2, scale_factor=scale)
    conv = net.output.conv
    assert (conv.kernel_size, conv.stride, conv.padding) == ((kernel, kernel), (stride, stride), (2, 2))
    assert net.output.act is None
    # Everything but the output conv is the SR network of the same scale.
    sr = _tiny(rbpn.Net, scale_factor=scale).state_dict()
    for k, v in net.state_dict().items():
        if not k.startswith("output."):
            assert v.shape == sr[k].shape, k


def test_net2_weight_init_like_rbpn():
    torch.manual_seed(0)
    net = rbpn.Net2(**dict(TINY_NET, feat=16, nFrames=7, scale_factor=2))
    for name, m in net.named_modules():
        if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)):
            assert torch.count_nonzero(m.bias) == 0, name
        if isinstance(m, torch.nn.PReLU):
            assert m.weight.item() == pytest.approx(0.25), name
    w = net.output.conv.weight  # (3, 96, 6, 6): kaiming_normal_, fan_in = 96 * 36
    assert w.std().item() == pytest.approx((2 / (96 * 36)) ** 0.5, rel=0.05)


def test_unsupported_scales():
    with pytest.raises(ValueError, match="for scale 1 use Net"):
        rbpn.Net2(**dict(TINY_NET, scale_factor=1))
    with pytest.raises(ValueError, match="scale factor"):
        rbpn.Net(**dict(TINY_NET, scale_factor=3))
    with pytest.raises(ValueError, match="num_channels"):
        rbpn.Net(**dict(TINY_NET, num_channels=0))


# ------------------------------------------------------------------------------------------------ forward, backward


@pytest.mark.parametrize("cls,channels,scale", TINY_DENOISERS)
def test_denoiser_output_has_input_size_and_trains(cls, channels, scale):
    net = _tiny(cls, num_channels=channels, scale_factor=scale)
    assert net.config["task"] == "denoise" and net.output_scale == 1
    x, nbs, flows = _inputs(net)
    y = net(x, nbs, flows)
    assert y.shape == x.shape == (2, channels, 7, 5)
    assert torch.isfinite(y).all()
    (y - x).abs().mean().backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert net.feat0.conv.weight.grad.abs().sum() > 0 and net.output.conv.weight.grad.abs().sum() > 0


def test_grey_net_feature_widths():
    net = _tiny(num_channels=1, scale_factor=1)
    assert net.feat0.conv.in_channels == 1
    assert net.feat1.conv.in_channels == 4  # centre 1 + neighbour 1 + flow 2
    assert net.output.conv.out_channels == 1
    x, nbs, flows = _inputs(net)
    with pytest.raises(ValueError, match=r"x must be a \(B, 1, h, w\)"):
        net(x.repeat(1, 3, 1, 1), nbs, flows)


@pytest.mark.parametrize("cls,channels,scale", [(rbpn.Net, 1, 1), (rbpn.Net, 3, 1), (rbpn.Net2, 3, 2)])
def test_channels_last_same_output(cls, channels, scale):
    net = _tiny(cls, num_channels=channels, scale_factor=scale).eval()
    x, nbs, flows = _inputs(net, h=8, w=6)
    with torch.no_grad():
        y0 = net(x, nbs, flows)
        net = net.to(memory_format=torch.channels_last)
        last = [t.contiguous(memory_format=torch.channels_last) for t in [x, *nbs, *flows]]
        n = len(nbs)
        y1 = net(last[0], last[1:1 + n], last[1 + n:])
    assert y1.shape == x.shape
    # Untrained outputs reach ~100; other conv kernels round differently, so compare relative to the largest value.
    assert (y0 - y1).abs().max() <= 1e-4 * y0.abs().max()


def test_short_denoise_training_lowers_loss():
    net = _tiny(rbpn.Net2, num_channels=1, scale_factor=2)
    x, nbs, flows = _inputs(net, h=8, w=8)
    target = x.clone()
    noisy = (x + 0.1 * torch.randn(x.shape, generator=torch.Generator().manual_seed(1))).clamp(0, 1)
    losses = l1_fit_losses(net, noisy, nbs, flows, target)
    assert losses[-1] < 0.7 * losses[0]


# ---------------------------------------------------------------------------------------------------- from_config


def test_from_config_builds_the_right_class():
    for cls, channels, scale in TINY_DENOISERS + [(rbpn.Net, 3, 4)]:
        src = _tiny(cls, num_channels=channels, scale_factor=scale)
        net = rbpn.from_config(dict(src.config, residual="pil"))
        assert type(net) is cls and net.config == src.config
    assert type(rbpn.from_config(TINY_NET)) is rbpn.Net  # no arch: Net
    with pytest.raises(ValueError, match="unknown generator arch 'Net3'"):
        rbpn.from_config(dict(TINY_NET, arch="Net3"))
    with pytest.raises(ValueError, match="task 'denoise'.*'sr'"):
        rbpn.from_config(dict(TINY_NET, task="denoise"))


def test_generator_task_agrees_with_the_networks():
    for cls, scales in ((rbpn.Net, rbpn.SUPPORTED_SCALES), (rbpn.Net2, rbpn.NET2_SCALES)):
        for scale in scales:
            with torch.device("meta"):
                net = cls(**dict(TINY_NET, scale_factor=scale))
            assert checkpoint.generator_task(net.config) == net.config["task"]
            assert checkpoint.generator_output_scale(net.config) == net.output_scale
    assert checkpoint.generator_task(dict(TINY_NET, scale_factor=4)) == "sr"  # an original config: no arch
    assert checkpoint.generator_task(dict(TINY_NET, scale_factor=1)) == "denoise"
    assert checkpoint.generator_task(dict(TINY_NET, scale_factor=2, arch="Net2")) == "denoise"


# ----------------------------------------------------------------------------------------------------- checkpoints


@pytest.mark.parametrize("cls,channels,scale", TINY_DENOISERS)
def test_project_checkpoint_round_trip(tmp_path, cls, channels, scale):
    src = _tiny(cls, seed=1, num_channels=channels, scale_factor=scale)
    path = tmp_path / "G.pth"
    checkpoint.save_generator(path, src, extra={"epoch": 2})
    _, meta = checkpoint.read_checkpoint(path)
    assert meta["config"] == src.config
    assert meta["config"]["arch"] == cls.ARCH and meta["config"]["task"] == "denoise"
    assert meta["config"]["num_channels"] == channels
    net, config = checkpoint.build_generator(path, expect={"task": "denoise", "num_channels": channels})
    assert type(net) is cls and config == src.config
    _assert_same_weights(net, src)


def test_saved_generator_config_completed_from_the_shapes(tmp_path):
    src = _tiny(rbpn.Net2, num_channels=1, scale_factor=2)
    path = tmp_path / "G.pth"
    checkpoint.save_generator(path, src, config={"nFrames": 3, "scale_factor": 2})  # a caller's partial config
    assert checkpoint.read_checkpoint(path)[1]["config"] == src.config


@pytest.mark.parametrize("cls,channels,scale", TINY_DENOISERS)
def test_plain_state_dicts_inferred(tmp_path, cls, channels, scale):
    src = _tiny(cls, seed=2, num_channels=channels, scale_factor=scale)
    sd = OrderedDict((f"module.{k}", v) for k, v in src.state_dict().items())
    inferred = checkpoint.infer_rbpn_config(sd)
    assert inferred.get("arch", "Net") == cls.ARCH
    assert inferred["num_channels"] == channels and inferred["scale_factor"] == scale
    path = tmp_path / "plain.pth"
    torch.save(sd, path)
    net, config = checkpoint.build_generator(path)
    assert type(net) is cls and config == src.config
    _assert_same_weights(net, src)


def test_sr_checkpoint_where_denoise_expected(tmp_path):
    path = tmp_path / "sr_x4.pth"
    torch.save(_tiny(scale_factor=4).state_dict(), path)
    with pytest.raises(CheckpointError) as info:
        checkpoint.build_generator(path, expect={"task": "denoise", "num_channels": 3})
    message = _one_line(info)
    assert message.startswith(f"checkpoint {path} is a x4 super-resolution checkpoint; --denoise needs a denoising "
                              f"model (scale 1 or Net2")
    assert checkpoint.build_generator(path, expect={"task": "sr"})[1]["task"] == "sr"


@pytest.mark.parametrize("cls,scale,what", [(rbpn.Net2, 2, "Net2 (x2 inside)"), (rbpn.Net, 1, "RBPN (scale 1)")])
def test_denoiser_where_sr_expected(tmp_path, cls, scale, what):
    path = tmp_path / "denoise.pth"
    checkpoint.save_generator(path, _tiny(cls, scale_factor=scale))
    with pytest.raises(CheckpointError) as info:
        checkpoint.build_generator(path, expect={"task": "sr"})
    message = _one_line(info)
    assert f"is a denoising colour {what}" in message
    assert "cannot upscale" in message and "--denoise" in message


def test_colour_model_on_grey_data_and_back(tmp_path):
    colour, grey = tmp_path / "colour.pth", tmp_path / "grey.pth"
    checkpoint.save_generator(colour, _tiny(num_channels=3, scale_factor=1))
    torch.save(_tiny(rbpn.Net2, num_channels=1, scale_factor=2).state_dict(), grey)
    with pytest.raises(CheckpointError) as info:
        checkpoint.build_generator(colour, expect={"task": "denoise", "num_channels": 1})
    message = _one_line(info)
    assert "has 3 input channels (colour)" in message and "but the data is grey (1 channel)" in message
    assert "feat0.conv.weight has shape [8, 3, 3, 3]" in message
    with pytest.raises(CheckpointError) as info:
        checkpoint.build_generator(grey, expect={"num_channels": 3})
    message = _one_line(info)
    assert "has 1 input channel (grey)" in message and "but the data is colour (3 channels)" in message
    # The task is checked before the channels: the first problem named is the bigger one.
    sr = tmp_path / "sr.pth"
    torch.save(_tiny(scale_factor=2).state_dict(), sr)
    with pytest.raises(CheckpointError, match="super-resolution checkpoint"):
        checkpoint.build_generator(sr, expect={"num_channels": 1, "task": "denoise"})


def test_net2_checkpoint_into_net_names_the_arch(tmp_path):
    path = tmp_path / "net2.pth"
    torch.save(_tiny(rbpn.Net2, scale_factor=2).state_dict(), path)
    with pytest.raises(CheckpointError) as info:
        checkpoint.load_into(_tiny(rbpn.Net, scale_factor=2), path)
    message = _one_line(info)
    assert "is a Net2 (output.conv.weight has shape [3, 16, 6, 6]) but the model is a Net" in message
    with pytest.raises(CheckpointError, match=r"is for scale 1 .* but the model is x2"):
        torch.save(_tiny(scale_factor=1).state_dict(), tmp_path / "x1.pth")
        checkpoint.load_into(_tiny(rbpn.Net2, scale_factor=2), tmp_path / "x1.pth")


def test_output_kernel_of_no_known_arch_is_refused():
    sd = _tiny(rbpn.Net2, scale_factor=4).state_dict()
    sd["output.conv.weight"] = torch.zeros(3, 16, 5, 5)
    with pytest.raises(CheckpointError, match="kernel 5, which is neither Net's 3 nor Net2's 8"):
        checkpoint.infer_rbpn_config(sd)


def test_cli_info_and_convert_of_a_denoiser(tmp_path, capsys):
    src = _tiny(rbpn.Net2, seed=5, num_channels=1, scale_factor=2)
    plain, conv = tmp_path / "plain.pth", tmp_path / "conv.pth"
    torch.save(src.state_dict(), plain)
    assert checkpoint.main(["info", str(plain)]) == 0
    out = capsys.readouterr().out
    assert "'arch': 'Net2'" in out and "'task': 'denoise'" in out and "denoising grey Net2 (x2 inside)" in out
    checkpoint.main(["convert", str(plain), str(conv)])
    assert checkpoint.read_checkpoint(conv)[1]["config"] == src.config


# --------------------------------------------------------------------------------------------- single frame, init


@pytest.mark.parametrize("cls, scale", [(rbpn.Net, 1), (rbpn.Net2, 2)])
def test_single_frame_model_sees_only_the_frame(cls, scale, tmp_path):
    """nFrames 1: no neighbours; one projection with the frame as its own neighbour and a zero flow, so it has the
    parameters of nFrames 2 and equals nFrames 2 fed (x, [x], [0])."""
    single = _tiny(cls, num_channels=1, scale_factor=scale, nFrames=1)
    pair = _tiny(cls, num_channels=1, scale_factor=scale, nFrames=2)
    assert {k: v.shape for k, v in single.state_dict().items()} == {k: v.shape for k, v in pair.state_dict().items()}
    pair.load_state_dict(single.state_dict())
    x = torch.rand(2, 1, 9, 8)
    out = single(x, [], [])
    assert out.shape == x.shape
    torch.testing.assert_close(out, pair(x, [x], [torch.zeros(2, 2, 9, 8)]))
    with pytest.raises(ValueError, match="nFrames-1 = 0"):
        single(x, [x], [torch.zeros(2, 2, 9, 8)])
    # The stored config keeps nFrames 1 although the shapes say 2.
    path = tmp_path / "single.pth"
    checkpoint.save_generator(str(path), single, single.config)
    net, config = checkpoint.build_generator(str(path), expect={"task": "denoise"})
    assert config["nFrames"] == 1 and net.nFrames == 1
    torch.testing.assert_close(net(x, [], []), out)
    with pytest.raises(ValueError, match="at least 1"):
        _tiny(nFrames=0)


def test_unit_variance_init_tames_the_recurrent_features():
    """RBPN's init lets the features grow with every neighbour at scale 1; scale_to_unit_variance brings them to
    about 1, and the output conv in ``skip`` is left alone."""
    from base_networks import scale_to_unit_variance

    net = _tiny(num_channels=1, scale_factor=1, nFrames=5, base_filter=32, feat=16, n_resblock=2)
    x, nbs, flows = _inputs(net, 24, 24, batch=2)
    seen = {}
    net.output.register_forward_hook(lambda m, i, o: seen.update(features=i[0].detach()))
    with torch.no_grad():
        net(x, nbs, flows)
    before = float(seen["features"].pow(2).mean().sqrt())
    output_weight = net.output.conv.weight.clone()
    changed = scale_to_unit_variance(net, lambda: net(x, nbs, flows), skip=[net.output.conv])
    x2, nbs2, flows2 = _inputs(net, 24, 24, batch=2, seed=1)  # other data: the scaling carries over
    with torch.no_grad():
        net(x2, nbs2, flows2)
    after = float(seen["features"].pow(2).mean().sqrt())
    assert before > 1e3 and changed > 0 and 0.3 < after < 10, (before, after)
    assert torch.equal(net.output.conv.weight, output_weight)
