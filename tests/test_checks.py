"""checks.py: the option, folder and size checks scripts run before any work, on tiny inputs."""

import argparse
import os
import subprocess
import sys

import pytest
from conftest import ROOT

import checks
from errors import UserError


def test_check_numbers_names_the_first_option_out_of_range():
    args = argparse.Namespace(count=2, workers=0, rate=0.5)
    checks.check_numbers(args, at_least_one=["count"], at_least_zero=["workers"], above_zero=["rate"])
    for name, value, rule in (("count", 0, "must be at least 1"), ("workers", -1, "must be 0 or more"),
                              ("rate", 0.0, "must be greater than 0"), ("rate", float("nan"), "must be greater than 0"),
                              ("workers", float("inf"), "must be 0 or more")):
        bad = argparse.Namespace(**dict(vars(args), **{name: value}))
        with pytest.raises(UserError, match=f"^--{name} {rule}, got {value}$"):
            checks.check_numbers(bad, at_least_one=["count"], at_least_zero=["workers"], above_zero=["rate"])
    with pytest.raises(UserError, match="^--count "):  # the first rule's option is named first
        checks.check_numbers(argparse.Namespace(count=0, workers=-1), at_least_zero=["workers"], at_least_one=["count"])


def test_check_writable_folder_creates_it_and_refuses_a_file(tmp_path):
    folder = tmp_path / "a" / "b"
    checks.check_writable_folder(str(folder), "--out")
    assert folder.is_dir() and os.listdir(folder) == []  # the probe file is gone
    somefile = tmp_path / "somefile"
    somefile.write_text("x")
    with pytest.raises(UserError, match="^--out .*somefile is a file, not a folder"):
        checks.check_writable_folder(str(somefile), "--out")


def test_format_bytes():
    assert checks.format_bytes(999_999) == "999999 bytes"
    assert checks.format_bytes(1_500_000) == "1.5 MB"


def test_checks_and_denoise_record_import_without_torch():
    """A script can check its options and read the --denoise choices before it loads torch."""
    code = "import sys, checks, denoise_record; print(sorted(m for m in ('torch', 'numpy') if m in sys.modules))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "[]"


def test_resolve_flow_device_names_flow_device(monkeypatch):
    """P08/P15: a CUDA flow device without a GPU is blamed on --flow_device, and the fix is --flow_device cpu."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    cpu = torch.device("cpu")
    for given in (None, "", "auto"):
        assert checks.resolve_flow_device(given, "torch", cpu) == cpu  # the model's device
    assert checks.resolve_flow_device("cpu", "torch", cpu) == cpu
    with pytest.raises(UserError, match=r"^--flow_device cuda asks for CUDA but no CUDA GPU is available; "
                                        r"use --flow_device cpu \(or auto\)$"):
        checks.resolve_flow_device("cuda", "torch", cpu)
    for bad in ("gpu", "CPU", "cuda:x", "cuda:-1", "meta"):
        with pytest.raises(UserError, match=f"^unknown --flow_device '{bad}'; use cpu, cuda, cuda:N or auto$"):
            checks.resolve_flow_device(bad, "cpp", cpu)


def test_resolve_flow_device_checks_the_gpu_index(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert checks.resolve_flow_device("cuda:0", "torch", torch.device("cpu")) == torch.device("cuda:0")
    assert checks.resolve_flow_device(None, "auto", torch.device("cuda:0")) == torch.device("cuda:0")
    with pytest.raises(UserError, match=r"^--flow_device cuda:1 does not exist: 1 CUDA device\(s\) visible; use "):
        checks.resolve_flow_device("cuda:1", "auto", torch.device("cuda:0"))  # auto on a CUDA model: torch


def test_resolve_flow_device_unused_by_the_cpp_flow_warns_once(monkeypatch):
    """P09: the C++ flow never uses --flow_device: no CUDA check, one warning, the model's device."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(checks, "_warned_unused_flow_device", set())
    warned = []
    monkeypatch.setattr(checks.logger, "warning", warned.append)
    cpu = torch.device("cpu")
    assert checks.resolve_flow_device("cuda", "cpp", cpu) == cpu
    assert checks.resolve_flow_device("cuda", "auto", cpu) == cpu  # auto with the model on the CPU: cpp
    assert checks.resolve_flow_device("cpu", "cpp", cpu) == cpu  # cpu is what the C++ flow uses: no warning
    assert len(warned) == 1 and warned[0].startswith("--flow_device cuda is not used: the C++ flow")


def test_resolve_train_device_device_wins_over_gpu_mode(monkeypatch):
    """The trainer's --device: auto follows --gpu_mode as the original; any other value wins over it."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert checks.resolve_train_device("auto", gpu_mode=True) == torch.device("cuda")
    assert checks.resolve_train_device(None, gpu_mode=False) == torch.device("cpu")
    assert checks.resolve_train_device("cpu", gpu_mode=True) == torch.device("cpu")
    assert checks.resolve_train_device("cuda:1", gpu_mode=False) == torch.device("cuda:1")
    assert checks.resolve_train_device("cuda", gpu_mode=True, world_size=2) == torch.device("cuda")
    with pytest.raises(UserError, match=r"^--device cuda:1 picks one GPU, but under torchrun .*use --device cuda"):
        checks.resolve_train_device("cuda:1", gpu_mode=True, world_size=2)
    with pytest.raises(UserError, match=r"^--device cuda:2 does not exist: 2 CUDA device\(s\) visible"):
        checks.resolve_train_device("cuda:2", gpu_mode=True)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert checks.resolve_train_device("auto", gpu_mode=True) == torch.device("cpu")  # CUDA only when available
    with pytest.raises(UserError, match=r"^--device cuda asks for CUDA but no CUDA GPU is available; "
                                        r"use --device cpu \(or auto\)$"):
        checks.resolve_train_device("cuda", gpu_mode=False)
    with pytest.raises(UserError, match="^unknown --device 'CPU'; use cpu, cuda, cuda:N or auto$"):
        checks.resolve_train_device("CPU", gpu_mode=True)
