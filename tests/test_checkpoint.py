"""Checkpoint I/O: original and project formats, module. prefixes, config inference, clear errors."""

import errno
import os
import pickle
import random
import re
import shutil
import struct
import subprocess
import sys
import zipfile
from collections import OrderedDict

import pytest
import torch
from conftest import ROOT, TINY_NET

import atomic
import checkpoint
import rbpn
from checkpoint import CheckpointError
from errors import UserError, run_cli
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


# ------------------------------------------------------------------------------------------ non-finite weights


def _poisoned(bad: float = float("nan"), count: int = 1, seed: int = 0) -> "OrderedDict[str, torch.Tensor]":
    """A tiny RBPN state_dict with ``count`` non-finite values in output.conv.weight."""
    sd = _tiny(seed=seed).state_dict()
    sd["output.conv.weight"].view(-1)[:count] = bad
    return sd


NONFINITE = r"contains 1 non-finite value \(NaN/inf\) in output\.conv\.weight; .*diverged.*earlier checkpoint"


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_nonfinite_weights_refused_by_every_loader(tmp_path, bad):
    # T16 / R11d: a NaN or inf weight used to give wrong frames (or a diverging fine-tune) with no word.
    plain = tmp_path / "nan_plain.pth"
    torch.save(_poisoned(bad), plain)
    for load in (checkpoint.build_generator, lambda p: checkpoint.load_into(_tiny(), p), checkpoint.read_checkpoint):
        with pytest.raises(CheckpointError, match=NONFINITE) as info:
            load(plain)
        assert str(plain) in str(info.value) and "\n" not in str(info.value)
    project = tmp_path / "nan_project.pth"
    checkpoint.save_checkpoint(project, "generator", _poisoned(bad), dict(TINY_NET))
    with pytest.raises(CheckpointError, match=NONFINITE):
        checkpoint.build_generator(project)
    with pytest.raises(CheckpointError, match=NONFINITE):  # a state_dict handed over directly
        checkpoint.load_into(_tiny(), _poisoned(bad))


def test_nonfinite_count_and_several_tensors_named():
    sd = _poisoned(count=3)
    sd["feat0.conv.bias"][0] = float("inf")
    sd["DBPN.feat1.conv.weight"].view(-1)[:2] = float("nan")
    sd["res_feat1.0.conv1.weight"].view(-1)[0] = float("nan")
    with pytest.raises(CheckpointError, match=r"contains 7 non-finite values \(NaN/inf\) in feat0\.conv\.bias, "
                                              r"DBPN\.feat1\.conv\.weight, res_feat1\.0\.conv1\.weight and 1 more "
                                              r"tensor;"):
        checkpoint.load_into(_tiny(), sd)


def test_nonfinite_training_state_refused_on_resume(tmp_path):
    g, d = _tiny(seed=1), Discriminator()
    with torch.no_grad():
        d.net[0].weight[0, 0, 0, 0] = float("nan")
    path = tmp_path / "training_state_4_3.pth"
    checkpoint.save_training_state(path, g, d, g.config, epoch=3)
    with pytest.raises(CheckpointError, match=r"1 non-finite value \(NaN/inf\) in discriminator\.net\.0\.weight"):
        checkpoint.read_training_state(path)
    with pytest.raises(CheckpointError, match="discriminator.net.0.weight"):
        checkpoint.load_into(Discriminator(), path, what="discriminator")


def test_cli_info_flags_nonfinite_and_convert_refuses(tmp_path, capsys):
    # C01: info and convert accepted NaN weights without a word.
    plain = tmp_path / "nan_plain.pth"
    torch.save(_poisoned(), plain)
    assert checkpoint.main(["info", str(plain)]) == 1
    out = capsys.readouterr().out
    assert "RBPN config from shapes" in out  # still describes the file
    assert re.search(r"problem: .*1 non-finite value \(NaN/inf\) in output\.conv\.weight", out)
    dst = tmp_path / "out.pth"
    with pytest.raises(CheckpointError, match=NONFINITE):
        checkpoint.main(["convert", str(plain), str(dst)])
    assert sorted(os.listdir(tmp_path)) == ["nan_plain.pth"]


def test_cli_info_of_a_good_checkpoint_reports_no_problem(tmp_path, capsys):
    path = tmp_path / "good.pth"
    torch.save(_tiny().state_dict(), path)
    assert checkpoint.main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    assert "problem" not in out and "loads strictly" in out


# ---------------------------------------------------------------------------------------------- key mismatches


def _with_extra_keys() -> "OrderedDict[str, torch.Tensor]":
    sd = _tiny().state_dict()
    sd["extra.a"] = torch.zeros(2)
    sd["extra.b"] = torch.zeros(3)
    return sd


def test_key_mismatch_message_names_the_file(tmp_path):
    # T15d: the tester said "checkpoint (given state_dict) does not fit the generator".
    path = tmp_path / "extra_keys.pth"
    torch.save(_with_extra_keys(), path)
    for load in (checkpoint.build_generator, lambda p: checkpoint.load_into(_tiny(), p)):
        with pytest.raises(CheckpointError, match=r"2 unexpected keys \(e\.g\. extra\.a, extra\.b\)") as info:
            load(path)
        assert f"checkpoint {path} does not fit the generator" in str(info.value)
        assert "(given state_dict)" not in str(info.value)


def test_cli_info_lists_key_mismatch_and_convert_refuses(tmp_path, capsys):
    # C03: info said nothing about extra keys, and convert wrote a "generator" the tester then refused.
    path = tmp_path / "extra_keys.pth"
    torch.save(_with_extra_keys(), path)
    assert checkpoint.main(["info", str(path)]) == 1
    out = capsys.readouterr().out
    assert re.search(r"problem: .*does not fit the generator: 2 unexpected keys \(e\.g\. extra\.a, extra\.b\)", out)
    sd = _tiny().state_dict()
    del sd["output.conv.bias"]
    missing = tmp_path / "missing_key.pth"
    torch.save(sd, missing)
    assert checkpoint.main(["info", str(missing)]) == 1
    assert "1 missing keys (e.g. output.conv.bias)" in capsys.readouterr().out
    for src in (path, missing):
        with pytest.raises(CheckpointError, match=r"does not fit the generator.*convert writes only checkpoints"):
            checkpoint.main(["convert", str(src), str(tmp_path / "out.pth")])
    assert not (tmp_path / "out.pth").exists()


def test_cli_convert_refuses_discriminator_that_does_not_fit(tmp_path):
    sd = Discriminator().state_dict()
    del sd["net.3.running_mean"]
    path = tmp_path / "netD.pth"
    torch.save(sd, path)
    with pytest.raises(CheckpointError, match=r"does not fit the discriminator: 1 missing keys"):
        checkpoint.main(["convert", str(path), str(tmp_path / "out.pth")])


# ------------------------------------------------------------------------------------- disk full, bad targets


def _enospc_save(kind: str):
    """A ``torch.save`` that fails like a full disk: OSError(ENOSPC), or torch's RuntimeError raised while the
    OSError is being handled (what a real full disk gives when saving to a file object)."""

    def save(obj, f, *args, **kwargs):
        f.write(b"\0" * 100)
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError:
            if kind == "oserror":
                raise
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598") from None

    return save


@pytest.mark.parametrize("kind", ["oserror", "runtimeerror"])
def test_disk_full_save_is_one_line_user_error(tmp_path, monkeypatch, kind):
    # R09: the RuntimeError escaped as a raw traceback.
    path = tmp_path / "training_state_4_2.pth"
    checkpoint.atomic_torch_save({"a": torch.ones(2)}, path)
    monkeypatch.setattr(torch, "save", _enospc_save(kind))
    with pytest.raises(UserError) as info:
        checkpoint.atomic_torch_save({"w": torch.zeros(1_000_000)}, path)  # 4 MB of float32
    message = str(info.value)
    assert re.fullmatch(rf"cannot save checkpoint {re.escape(str(path))}: the disk is full \(needs about 4\.0 MB, "
                        rf"[\d.]+ MB free in {re.escape(str(tmp_path))}\); free some space or save to another folder.*",
                        message), message
    monkeypatch.undo()
    assert torch.equal(torch.load(path, weights_only=True)["a"], torch.ones(2))  # the earlier file is intact
    assert os.listdir(tmp_path) == [path.name]  # no temp file left


def test_unrelated_runtime_error_is_not_reported_as_disk_full(tmp_path, monkeypatch):
    def broken(obj, f, *args, **kwargs):
        raise RuntimeError("something else")

    monkeypatch.setattr(torch, "save", broken)
    with pytest.raises(RuntimeError, match="something else"):
        checkpoint.atomic_torch_save({"a": torch.ones(2)}, tmp_path / "x.pth")


def _can_mount_tmpfs() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("mount") is not None


@pytest.mark.skipif(not _can_mount_tmpfs(), reason="needs root to mount a tmpfs")
def test_disk_full_save_on_a_real_tiny_tmpfs(tmp_path):
    mnt = tmp_path / "full"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)],
                      capture_output=True).returncode != 0:
        pytest.skip("mount -t tmpfs is not allowed here")
    try:
        earlier = mnt / "netG_epoch_4_1.pth"
        checkpoint.atomic_torch_save({"a": torch.ones(2)}, earlier)
        with pytest.raises(UserError, match=r"the disk is full \(needs about 1\.0 MB, 0\.\d MB free in "):
            checkpoint.atomic_torch_save({"w": torch.zeros(250_000)}, mnt / "netG_epoch_4_2.pth")
        assert torch.equal(torch.load(earlier, weights_only=True)["a"], torch.ones(2))
        assert os.listdir(mnt) == [earlier.name]
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def _run_cli(argv, capsys) -> tuple:
    with pytest.raises(SystemExit) as info:
        run_cli(checkpoint.main, argv)
    return info.value.code, capsys.readouterr().err


def test_cli_convert_to_a_folder_or_unwritable_path_is_one_line_error(tmp_path, capsys, monkeypatch):
    # C08 / C10: IsADirectoryError and PermissionError tracebacks.
    src = tmp_path / "orig.pth"
    torch.save(_tiny().state_dict(), src)
    folder = tmp_path / "out"
    folder.mkdir()
    code, err = _run_cli(["convert", str(src), str(folder)], capsys)
    assert code == 2 and err.count("\n") == 1
    assert err == f"error: cannot save checkpoint {folder}: it is a folder; give a file name like " \
                  f"{os.path.join(folder, 'model.pth')}\n"

    blocker = tmp_path / "somefile"
    blocker.write_text("x")
    code, err = _run_cli(["convert", str(src), str(blocker / "x.pth")], capsys)
    assert code == 2 and err.count("\n") == 1
    assert err.startswith(f"error: cannot save checkpoint {blocker / 'x.pth'}: ") and "file is in the way" in err

    readonly = tmp_path / "ro_dir"
    readonly.mkdir()
    if os.geteuid() == 0:  # root ignores file modes: make creating the temp file fail as it would for a user
        def denied(*args, dir=None, **kwargs):
            raise PermissionError(errno.EACCES, "Permission denied", os.path.join(dir, ".tmp_x.part"))

        monkeypatch.setattr(atomic.tempfile, "mkstemp", denied)
    else:
        readonly.chmod(0o500)
    try:
        code, err = _run_cli(["convert", str(src), str(readonly / "x.pth")], capsys)
    finally:
        readonly.chmod(0o700)
    assert code == 2 and err.count("\n") == 1
    assert err == f"error: cannot save checkpoint {readonly / 'x.pth'}: permission denied: check the permissions " \
                  f"or choose another folder\n"
    assert os.listdir(readonly) == [] and os.listdir(folder) == []


# ------------------------------------------------------------------------------------------- "pickled" hint


def test_pickle_hint_only_for_real_pickles(tmp_path):
    # R07b / R21b: random bytes and text files were said to hold "pickled Python objects".
    good = tmp_path / "good.pth"
    torch.save(_tiny().state_dict(), good)
    rand = tmp_path / "rand.pth"
    rand.write_bytes(random.Random(0).randbytes(1000))
    text = tmp_path / "vgg.txt"
    text.write_text("not weights\n" * 10)
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    not_torch = tmp_path / "plain_pickle.pth"
    not_torch.write_bytes(pickle.dumps({"a": 1}))
    for bad in (rand, text, truncated, not_torch):
        for read in (checkpoint.read_checkpoint, checkpoint.read_training_state):
            with pytest.raises(CheckpointError, match="is not a PyTorch checkpoint or is truncated/corrupt") as info:
                read(bad)
            message = str(info.value)
            assert "pickled" not in message and "trust-pickle" not in message and "\n" not in message
            assert "Weights only load failed" not in message  # torch's multi-line text is not the detail


def test_pickled_training_state_never_suggests_convert(tmp_path):
    whole = tmp_path / "training_state_4_1.pth"
    torch.save({"model": _tiny()}, whole)
    with pytest.raises(CheckpointError, match="pickled Python objects") as info:
        checkpoint.read_training_state(whole)
    assert "convert" not in str(info.value) and "trust-pickle" not in str(info.value)
    with pytest.raises(CheckpointError, match="convert it once with .*--trust-pickle"):
        checkpoint.read_checkpoint(whole)


# ------------------------------------------------------------------------------------------------------ -h


@pytest.mark.parametrize("argv", [["-h"], ["info", "-h"], ["convert", "-h"]])
def test_help_does_not_import_torch(argv):
    # T37: `python checkpoint.py -h` took 4 s because torch was imported before argparse.
    code = ("import runpy, sys\n"
            f"sys.argv = ['checkpoint.py'] + {argv!r}\n"
            "try:\n"
            "    runpy.run_path('checkpoint.py', run_name='__main__')\n"
            "except SystemExit as exc:\n"
            "    assert exc.code == 0, exc.code\n"
            "print('torch imported' if 'torch' in sys.modules else 'torch not imported')\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "usage:" in out.stdout and out.stdout.rstrip().endswith("torch not imported")


# ------------------------------------------------------------------------------- damaged files (CRC, huge values)


def _flip_stored_byte(path, mask: int = 0x40) -> str:
    """Flip ``mask`` in byte 3 of the first float of the largest tensor-data entry of a zip checkpoint (its
    exponent: a weight of ~0.03 becomes ~1e37), as a bad disk or copy would; returns the entry's name."""
    with zipfile.ZipFile(path) as archive:
        entry = max((e for e in archive.infolist() if "/data/" in e.filename), key=lambda e: e.file_size)
    assert entry.compress_type == zipfile.ZIP_STORED  # torch.save stores tensor data uncompressed
    raw = bytearray(open(path, "rb").read())
    name_len, extra_len = struct.unpack_from("<HH", raw, entry.header_offset + 26)  # the local file header
    raw[entry.header_offset + 30 + name_len + extra_len + 3] ^= mask
    open(path, "wb").write(raw)
    return entry.filename


def test_flipped_bit_refused_by_every_loader_info_and_convert(tmp_path, capsys):
    # Matrix 2, C08-C10: the CRC was never checked; info said "loads strictly", convert laundered the damage.
    g = _tiny(seed=1)
    plain, project, state = tmp_path / "plain.pth", tmp_path / "G.pth", tmp_path / "training_state_4_1.pth"
    torch.save(g.state_dict(), plain)
    checkpoint.save_generator(project, g)
    checkpoint.save_training_state(state, g, Discriminator(), g.config, epoch=1)
    for path in (plain, project, state):
        entry = _flip_stored_byte(path)
        torch.load(path, weights_only=True)  # torch itself reads the damaged file without a word
        message = rf"checkpoint {re.escape(str(path))} is damaged: its entry {entry} fails its CRC-32 check .*; " \
                  r"re-download or re-copy the file, or use an earlier epoch's checkpoint"
        loads = [checkpoint.read_checkpoint, lambda p: checkpoint.load_into(_tiny(), p)]
        loads += [checkpoint.read_training_state] if path == state else [checkpoint.build_generator]
        for load in loads:
            with pytest.raises(CheckpointError, match=message):
                load(path)
        for argv in (["info", str(path)], ["convert", str(path), str(tmp_path / "out.pth")]):
            code, err = _run_cli(argv, capsys)
            assert code == 2 and err.count("\n") == 1 and entry in err and "damaged" in err
    assert not (tmp_path / "out.pth").exists()


def test_huge_finite_weight_is_reported_everywhere(tmp_path, capsys):
    # Matrix 2, C09: a flipped exponent bit under a valid CRC (-9.5e36) passed the non-finite check.
    sd = _tiny().state_dict()
    sd["output.conv.weight"].view(-1)[0] = -9.5e36
    path = tmp_path / "huge.pth"
    torch.save(sd, path)
    message = r"has implausibly large weights in output\.conv\.weight \(\|value\| up to 9\.5e\+36; .*re-download"
    for load in (checkpoint.read_checkpoint, checkpoint.build_generator, lambda p: checkpoint.load_into(_tiny(), p)):
        with pytest.raises(CheckpointError, match=message):
            load(path)
    with pytest.raises(CheckpointError, match=r"checkpoint \(given state_dict\) " + message):
        checkpoint.load_into(_tiny(), sd)
    assert checkpoint.main(["info", str(path)]) == 1
    assert re.search("problem: checkpoint .*" + message, capsys.readouterr().out)
    with pytest.raises(CheckpointError, match=message):
        checkpoint.main(["convert", str(path), str(tmp_path / "out.pth")])
    sd["output.conv.weight"].view(-1)[0] = 0.9 * checkpoint.MAX_ABS_WEIGHT  # large but under the limit: loads
    torch.save(sd, path)
    checkpoint.build_generator(path)


def test_integer_weights_refused_and_half_precision_loads(tmp_path, capsys):
    # Matrix 2, C07: int64 weights loaded "strictly" and gave black frames.
    sd = _tiny().state_dict()
    path = tmp_path / "int.pth"
    torch.save({k: (v * 100).to(torch.int64) for k, v in sd.items()}, path)
    message = r"does not fit the generator: \d+ integer tensors where the generator has floating-point weights " \
              r"\(e\.g\. feat0\.conv\.weight: int64\)"
    for load in (checkpoint.build_generator, lambda p: checkpoint.load_into(_tiny(), p)):
        with pytest.raises(CheckpointError, match=message):
            load(path)
    assert checkpoint.main(["info", str(path)]) == 1
    assert re.search("problem: .*" + message, capsys.readouterr().out)
    with pytest.raises(CheckpointError, match=message):
        checkpoint.main(["convert", str(path), str(tmp_path / "out.pth")])
    half = tmp_path / "half.pth"
    torch.save({k: v.half() for k, v in sd.items()}, half)
    checkpoint.build_generator(half)


def test_one_damaged_projection_does_not_change_the_implied_scale(tmp_path, capsys):
    # Matrix 2, C03: one tensor of shape [7, 7, 3, 3] made info describe an x4 file as a scale-1 denoiser.
    sd = _tiny().state_dict()
    sd["DBPN.up1.up_conv1.deconv.weight"] = torch.zeros(7, 7, 3, 3)
    assert checkpoint.infer_rbpn_config(sd)["scale_factor"] == 4
    path = tmp_path / "wrongshape.pth"
    torch.save(sd, path)
    assert checkpoint.main(["info", str(path)]) == 1
    out = capsys.readouterr().out
    assert "x4 super-resolution colour RBPN" in out
    assert f"problem: checkpoint {path} does not fit the generator: 1 shape mismatches (e.g. " \
           f"DBPN.up1.up_conv1.deconv.weight: checkpoint [7, 7, 3, 3], model [8, 8, 8, 8])" in out


def test_info_reports_checksums_and_legacy_files_still_load(tmp_path, capsys):
    g = _tiny(seed=2)
    path, legacy = tmp_path / "zip.pth", tmp_path / "legacy.pth"
    torch.save(g.state_dict(), path)
    torch.save(g.state_dict(), legacy, _use_new_zipfile_serialization=False)
    entries = len(zipfile.ZipFile(path).infolist())
    assert checkpoint.verify_archive(path) == entries and checkpoint.verify_archive(legacy) is None
    assert checkpoint.main(["info", str(path)]) == 0
    assert f"checksums: CRC-32 of all {entries} zip entries match" in capsys.readouterr().out
    assert checkpoint.main(["info", str(legacy)]) == 0
    assert "checksums: none (a legacy non-zip file" in capsys.readouterr().out
    _assert_same_weights(checkpoint.build_generator(legacy)[0], g)
