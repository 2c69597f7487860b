"""Checkpoint I/O: original and project formats, module. prefixes, config inference, clear errors."""

import os
from collections import OrderedDict

import pytest
import torch
from conftest import TINY_NET

import checkpoint
import rbpn
from checkpoint import CheckpointError
from errors import UserError
from SRGAN.model import Discriminator


def _tiny(seed: int = 0, **overrides) -> rbpn.Net:
    torch.manual_seed(seed)
    return rbpn.Net(**dict(TINY_NET, **overrides))


def _assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


@pytest.mark.parametrize("prefixed", [False, True])
def test_original_state_dict_with_and_without_module_prefix(tmp_path, prefixed):
    src = _tiny(seed=1)
    sd = src.state_dict()
    if prefixed:  # as RBPN's main.py / DataParallel writes it
        sd = OrderedDict((f"module.{k}", v) for k, v in sd.items())
    path = tmp_path / "netG.pth"
    torch.save(sd, path)

    bare = _tiny(seed=2)
    assert checkpoint.load_into(bare, path) is None
    _assert_same_weights(bare, src)

    wrapped = torch.nn.DataParallel(_tiny(seed=3))
    checkpoint.load_into(wrapped, path)
    _assert_same_weights(wrapped.module, src)


def test_plain_save_has_no_prefix_and_loads_back(tmp_path):
    src = torch.nn.DataParallel(_tiny(seed=1))
    path = tmp_path / "sub" / "plain.pth"  # parent folder is created
    checkpoint.save_plain_state_dict(path, src)
    raw = torch.load(path, weights_only=True)
    assert list(raw) == list(src.module.state_dict())
    dst = _tiny(seed=2)
    dst.load_state_dict(raw, strict=True)  # what the original scripts do
    _assert_same_weights(dst, src.module)


def test_project_format_round_trip_and_build_generator(tmp_path):
    src = _tiny(seed=1, scale_factor=2)
    path = tmp_path / "G.pth"
    checkpoint.save_generator(path, src, extra={"epoch": 3})
    sd, meta = checkpoint.read_checkpoint(path)
    assert meta["format"] == "iseebetter-pytorch" and meta["kind"] == "generator" and meta["epoch"] == 3
    assert meta["config"] == src.config
    net, config = checkpoint.build_generator(path)
    assert config == src.config
    _assert_same_weights(net, src)
    assert not [f for f in os.listdir(tmp_path) if f != "G.pth"]  # no temp files left


@pytest.mark.parametrize("scale", [2, 4, 8])
def test_infer_config_of_full_original_checkpoints(scale):
    with torch.device("meta"):
        net = rbpn.Net(**rbpn.DEFAULT_CONFIG, scale_factor=scale)
    sd = OrderedDict((f"module.{k}", v) for k, v in net.state_dict().items())
    assert checkpoint.infer_rbpn_config(sd) == dict(rbpn.DEFAULT_CONFIG, scale_factor=scale)


def test_infer_config_of_tiny_and_other_nframes():
    cfg = dict(TINY_NET, nFrames=5, n_resblock=2, scale_factor=8)
    assert checkpoint.infer_rbpn_config(rbpn.Net(**cfg).state_dict()) == cfg


def test_build_generator_from_original_file_needs_no_flags(tmp_path):
    src = _tiny(seed=4, scale_factor=8, nFrames=5)
    path = tmp_path / "RBPN_8x.pth"
    torch.save(OrderedDict((f"module.{k}", v) for k, v in src.state_dict().items()), path)
    net, config = checkpoint.build_generator(path)
    assert config["scale_factor"] == 8 and config["nFrames"] == 5
    _assert_same_weights(net, src)
    with pytest.raises(CheckpointError, match=r"scale=8.*but 4 was requested.*--upscale_factor 8"):
        checkpoint.build_generator(path, expect={"scale_factor": 4})


def test_wrong_scale_error_names_flag(tmp_path):
    path = tmp_path / "x8.pth"
    torch.save(_tiny(scale_factor=8).state_dict(), path)
    with pytest.raises(CheckpointError) as info:
        checkpoint.load_into(_tiny(scale_factor=4), path)
    message = str(info.value)
    assert "is for scale 8" in message and "[8, 8, 12, 12]" in message
    assert "the model is x4" in message and "--upscale_factor 8" in message


def test_wrong_nframes_error_names_flag(tmp_path):
    path = tmp_path / "f5.pth"
    torch.save(_tiny(nFrames=5).state_dict(), path)
    with pytest.raises(CheckpointError, match=r"nFrames=5.*model has nFrames=3.*--nFrames 5"):
        checkpoint.load_into(_tiny(nFrames=3), path)


def test_wrong_width_error_names_config(tmp_path):
    path = tmp_path / "wide.pth"
    torch.save(_tiny(base_filter=16).state_dict(), path)
    with pytest.raises(CheckpointError, match=r"base_filter=16.*base_filter=8"):
        checkpoint.load_into(_tiny(), path)


def test_discriminator_and_generator_not_confused(tmp_path):
    d_path, g_path = tmp_path / "netD.pth", tmp_path / "netG.pth"
    torch.save(Discriminator().state_dict(), d_path)
    torch.save(_tiny().state_dict(), g_path)
    with pytest.raises(CheckpointError, match="discriminator"):
        checkpoint.load_into(_tiny(), d_path)
    with pytest.raises(CheckpointError, match="generator, not a discriminator"):
        checkpoint.load_into(Discriminator(), g_path, what="discriminator")
    checkpoint.save_discriminator(tmp_path / "D2.pth", Discriminator())
    with pytest.raises(CheckpointError, match="is a discriminator, but a generator was expected"):
        checkpoint.build_generator(tmp_path / "D2.pth")


def test_partial_state_dict_error_lists_keys():
    sd = _tiny().state_dict()
    del sd["output.conv.bias"]
    sd["extra.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointError, match=r"1 missing keys \(e.g. output.conv.bias\); 1 unexpected keys"):
        checkpoint.load_into(_tiny(), sd)


def test_missing_and_non_checkpoint_files(tmp_path):
    with pytest.raises(CheckpointError, match=r"missing\.pth does not exist"):
        checkpoint.load_into(_tiny(), tmp_path / "missing.pth")
    text = tmp_path / "notes.pth"
    text.write_text("hello\n" * 20)
    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    good = tmp_path / "good.pth"
    torch.save(_tiny().state_dict(), good)
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(good.read_bytes()[:500])
    for bad in (text, empty, truncated):
        with pytest.raises(CheckpointError, match="not a PyTorch checkpoint"):
            checkpoint.read_checkpoint(bad)
    with pytest.raises(CheckpointError, match="is a folder"):
        checkpoint.read_checkpoint(tmp_path)
    other = tmp_path / "list.pth"
    torch.save([1, 2, 3], other)
    with pytest.raises(CheckpointError, match="holds a list, not a model state_dict"):
        checkpoint.read_checkpoint(other)
    assert issubclass(CheckpointError, UserError)


def test_whole_pickled_model_needs_trust(tmp_path):
    src = _tiny(seed=5)
    path = tmp_path / "whole.pth"
    torch.save(src, path)
    with pytest.raises(CheckpointError, match="pickled Python objects.*--trust-pickle"):
        checkpoint.read_checkpoint(path)
    dst = _tiny(seed=6)
    checkpoint.load_into(dst, path, trust_pickle=True)
    _assert_same_weights(dst, src)


def test_training_state_round_trip(tmp_path):
    g, d = _tiny(seed=1), Discriminator()
    opt_g = torch.optim.Adam(g.parameters(), lr=1e-4)
    g(*_inputs_for(g)).mean().backward()
    opt_g.step()
    path = tmp_path / "state.pth"
    checkpoint.save_training_state(path, g, d, g.config, epoch=7, optimizer_g=opt_g, extra={"lr_g": 1e-5})
    state = checkpoint.read_training_state(path)
    assert state["epoch"] == 7 and state["lr_g"] == 1e-5 and state["config"] == g.config
    opt2 = torch.optim.Adam(_tiny(seed=2).parameters(), lr=1e-4)
    opt2.load_state_dict(state["optimizer_g"])
    d2 = Discriminator()
    checkpoint.load_into(d2, path, what="discriminator")
    _assert_same_weights(d2, d)
    g2 = _tiny(seed=3)
    checkpoint.load_into(g2, path)
    _assert_same_weights(g2, g)
    checkpoint.save_generator(tmp_path / "G.pth", g)
    with pytest.raises(CheckpointError, match="not a training state"):
        checkpoint.read_training_state(tmp_path / "G.pth")


def _inputs_for(net: rbpn.Net):
    n = net.nFrames - 1
    return torch.rand(1, 3, 4, 4), [torch.rand(1, 3, 4, 4)] * n, [torch.zeros(1, 2, 4, 4)] * n


def test_atomic_save_keeps_old_file_on_failure(tmp_path):
    path = tmp_path / "ckpt.pth"
    checkpoint.atomic_torch_save({"a": torch.ones(2)}, path)
    with pytest.raises(Exception):  # noqa: B017 - whatever pickling raises for a lambda
        checkpoint.atomic_torch_save({"a": lambda: None}, path)
    assert torch.equal(torch.load(path, weights_only=True)["a"], torch.ones(2))
    assert os.listdir(tmp_path) == ["ckpt.pth"]


def test_cli_info_and_convert(tmp_path, capsys):
    src = _tiny(seed=1, scale_factor=2)
    orig = tmp_path / "orig.pth"
    torch.save(OrderedDict((f"module.{k}", v) for k, v in src.state_dict().items()), orig)
    assert checkpoint.main(["info", str(orig)]) == 0
    out = capsys.readouterr().out
    assert "plain state_dict" in out and "'scale_factor': 2" in out
    conv = tmp_path / "conv.pth"
    checkpoint.main(["convert", str(orig), str(conv)])
    sd, meta = checkpoint.read_checkpoint(conv)
    assert meta["kind"] == "generator" and meta["config"] == src.config


def test_residual_flag_survives_convert_and_build_generator(tmp_path, capsys):
    src = _tiny(seed=3)
    plain = tmp_path / "plain.pth"
    torch.save(src.state_dict(), plain)
    conv = tmp_path / "residual.pth"
    checkpoint.main(["convert", str(plain), str(conv), "--residual", "matlab", "--note", "trained on X"])
    _, config = checkpoint.build_generator(conv)
    assert config["residual"] == "matlab"
    assert checkpoint.main(["info", str(conv)]) == 0
    out = capsys.readouterr().out
    assert "residual (output added to the bicubic upscale): matlab" in out and "note: trained on X" in out
    again = tmp_path / "again.pth"  # converting a project checkpoint keeps what it records
    checkpoint.main(["convert", str(conv), str(again)])
    assert checkpoint.read_checkpoint(again)[1]["residual"] == "matlab"
    bare = tmp_path / "bare.pth"  # --residual alone: Pillow's bicubic, as the original's --residual
    checkpoint.main(["convert", str(plain), str(bare), "--residual"])
    assert checkpoint.build_generator(bare)[1]["residual"] == "pil"
    _, config = checkpoint.build_generator(plain)
    assert "residual" not in config  # an original file says nothing about it
    assert checkpoint.residual_method(True) == "pil" and checkpoint.residual_method(False) is None
    with pytest.raises(checkpoint.CheckpointError, match="residual"):
        checkpoint.residual_method("lanczos")
