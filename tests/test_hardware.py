"""--precision auto: the hardware rule, the once-only warnings for emulated bf16/fp16, and auto in the inference and
training entry points (CPU only; CUDA and the CPU's features are faked)."""

import logging
import os

import numpy as np
import pytest
import torch
from conftest import TINY_NET, moving_frames

import hardware
import inference
import options
import training
from errors import UserError

NATIVE = {"model": "Fake CPU", "avx512": True, "avx512_bf16": True, "amx": False, "native_bf16": True,
          "native_fp16": False}
EMULATED = dict(NATIVE, avx512_bf16=False, native_bf16=False)


@pytest.fixture
def cpu(monkeypatch):
    """Set the CPU's features: ``cpu(native_bf16=True/False)``; also forgets the messages already logged."""
    monkeypatch.setattr(hardware, "_ANNOUNCED", set())

    def set_cpu(native_bf16: bool) -> None:
        features = dict(NATIVE if native_bf16 else EMULATED)
        monkeypatch.setattr(hardware, "_cpu_features", lambda: features)

    return set_cpu


@pytest.fixture
def gpu(monkeypatch):
    """Fake a CUDA GPU: ``gpu(bf16=True/False)`` (what torch.cuda.is_bf16_supported says without emulation)."""
    monkeypatch.setattr(hardware, "_ANNOUNCED", set())

    def set_gpu(bf16: bool) -> None:
        def is_bf16_supported(including_emulation: bool = True) -> bool:
            return bf16 or including_emulation

        monkeypatch.setattr(torch.cuda, "is_bf16_supported", is_bf16_supported)
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda index=None: (8, 0) if bf16 else (7, 5))
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda index=None: "Fake GPU")

    return set_gpu


def _messages(caplog, level):
    return [r.getMessage() for r in caplog.records if r.levelno == level]


def test_auto_is_a_precision_option():
    assert "auto" in options.PRECISIONS
    assert set(options.PRECISIONS) - {"auto"} == set(training.PRECISIONS)


@pytest.mark.parametrize("native,expected", [(True, "bf16"), (False, "fp32")])
@pytest.mark.parametrize("is_training", [False, True])
def test_auto_on_cpu_follows_native_bf16(cpu, caplog, native, expected, is_training):
    cpu(native)
    with caplog.at_level(logging.INFO):
        assert hardware.resolve_precision("auto", torch.device("cpu"), training=is_training) == expected
        assert hardware.resolve_precision("auto", "cpu", training=is_training) == expected
    infos = _messages(caplog, logging.INFO)
    assert len(infos) == 1 and f"auto -> {expected}" in infos[0]  # one line, logged once
    assert ("native bf16" in infos[0]) and ("no native bf16" in infos[0]) != native
    assert not _messages(caplog, logging.WARNING)


@pytest.mark.parametrize("bf16,is_training,expected", [(True, False, "bf16"), (True, True, "bf16"),
                                                       (False, False, "fp16"), (False, True, "fp32")])
def test_auto_on_cuda_follows_the_gpu(gpu, caplog, bf16, is_training, expected):
    gpu(bf16)
    with caplog.at_level(logging.INFO):
        assert hardware.resolve_precision("auto", torch.device("cuda"), training=is_training) == expected
    assert any(f"auto -> {expected}" in m and "Fake GPU" in m for m in _messages(caplog, logging.INFO))


def test_forced_bf16_on_a_cpu_without_native_bf16_warns_once(cpu, caplog):
    cpu(False)
    with caplog.at_level(logging.INFO):
        for _ in range(3):
            assert hardware.resolve_precision("bf16", "cpu") == "bf16"
            assert hardware.resolve_precision("fp32", "cpu") == "fp32"
    warnings = _messages(caplog, logging.WARNING)
    assert len(warnings) == 1
    assert "emulated" in warnings[0] and "AVX512-BF16/AMX" in warnings[0] and "--precision auto or fp32" in warnings[0]


def test_forced_bf16_on_a_native_cpu_is_quiet(cpu, caplog):
    cpu(True)
    with caplog.at_level(logging.INFO):
        assert hardware.resolve_precision("bf16", "cpu", training=True) == "bf16"
    assert not caplog.records


def test_forced_bf16_on_an_old_gpu_warns_once(gpu, caplog):
    gpu(False)
    for _ in range(2):
        assert hardware.resolve_precision("bf16", torch.device("cuda")) == "bf16"
        assert hardware.resolve_precision("fp16", torch.device("cuda")) == "fp16"
    warnings = _messages(caplog, logging.WARNING)
    assert len(warnings) == 1 and "emulated" in warnings[0] and "compute capability 7.5" in warnings[0]


def test_unknown_precision_is_refused():
    with pytest.raises(ValueError):
        hardware.resolve_precision("fp8", "cpu")
    with pytest.raises(inference.InferenceError):
        inference.check_precision("fp8", torch.device("cpu"))


def test_check_precision_resolves_auto_and_still_refuses_fp16_on_cpu(cpu):
    cpu(True)
    assert inference.check_precision("auto", torch.device("cpu")) == "bf16"
    assert inference.check_precision("fp32", torch.device("cpu")) == "fp32"
    with pytest.raises(inference.InferenceError, match="fp16 is for CUDA"):
        inference.check_precision("fp16", torch.device("cpu"))


def test_cpu_features_fall_back_to_proc_cpuinfo(monkeypatch):
    monkeypatch.setattr(hardware, "_torch_cpu_features", lambda: {})
    monkeypatch.setattr(hardware, "_proc_cpuinfo", lambda: ("Some Xeon", {"avx512f", "amx_bf16", "amx_tile"}))
    found = hardware._cpu_features.__wrapped__()
    assert found["model"] == "Some Xeon" and found["amx"] and found["avx512"] and found["native_bf16"]
    assert not found["avx512_bf16"]
    monkeypatch.setattr(hardware, "_proc_cpuinfo", lambda: ("Old CPU", {"avx2"}))
    found = hardware._cpu_features.__wrapped__()
    assert not (found["native_bf16"] or found["amx"] or found["avx512"])


def test_cpu_info_and_describe_cpu(cpu):
    cpu(True)
    info = hardware.cpu_info()
    assert info["threads"] == torch.get_num_threads() and info["cores"] >= 1 and info["native_bf16"]
    line = hardware.describe_cpu()
    assert "Fake CPU" in line and "native bf16 yes (AVX512-BF16)" in line and "AMX no" in line
    assert f"{torch.get_num_threads()} torch thread(s)" in line
    cpu(False)
    assert "native bf16 no" in hardware.describe_cpu()


def test_this_machine_is_described():
    real = hardware.cpu_info()  # the machine's own answer, whatever it is
    assert isinstance(real["native_bf16"], bool) and isinstance(real["amx"], bool) and real["model"]
    assert hardware.describe_cpu().startswith(f"CPU {real['model']}: native bf16 ")


# ----------------------------------------------------------------------------------------------------------------------
# auto in the inference and training entry points, on a tiny RBPN


@pytest.fixture
def tiny_model():
    import rbpn

    torch.manual_seed(0)
    return inference.prepare_model(rbpn.Net(**TINY_NET), torch.device("cpu"))


def _window(h=24, w=32):
    frames = moving_frames(3, h, w)
    rng = np.random.default_rng(0)
    return frames[1], [frames[0], frames[2]], [rng.normal(0, 1, (2, h, w)).astype(np.float32) for _ in range(2)]


@pytest.mark.parametrize("native", [True, False])
def test_super_resolve_accepts_auto(cpu, tiny_model, native):
    cpu(native)
    lr, nbs, flows = _window()
    ref = inference.super_resolve(tiny_model, lr, nbs, flows, precision="fp32")
    out = inference.super_resolve(tiny_model, lr, nbs, flows, precision="auto")
    assert out.shape == ref.shape == (3, 96, 128) and out.dtype == torch.float32
    if native:  # bf16 autocast: close to fp32
        assert float((out - ref).abs().max()) <= 0.05 * float(ref.abs().max()) + 1e-3
        assert not torch.equal(out, ref)
    else:  # fp32 itself
        assert torch.equal(out, ref)
    tiled = inference.super_resolve(tiny_model, lr, nbs, flows, precision="auto", tile=16, overlap=4)
    assert tiled.shape == ref.shape


def test_super_resolve_clip_accepts_auto(cpu, tiny_model):
    cpu(True)
    frames = moving_frames(4, 24, 32)

    def zero_flows(centre, neighbours, same):
        return [np.zeros((2,) + centre.shape[:2], np.float32) for _ in neighbours]

    def run(precision):
        items = [(f, i) for i, f in enumerate(frames)]
        return [sr for _, _, _, sr in inference.super_resolve_clip(tiny_model, items, TINY_NET["nFrames"],
                                                                   precision=precision, flow_fn=zero_flows)]

    auto, bf16, fp32 = run("auto"), run("bf16"), run("fp32")
    assert len(auto) == len(frames)
    for a, b, f in zip(auto, bf16, fp32):
        assert torch.equal(a, b)  # auto is bf16 on this (faked) CPU
        assert float((a - f).abs().max()) <= 0.05 * float(f.abs().max()) + 1e-3


@pytest.mark.parametrize("native,expected", [(True, "bf16"), (False, "fp32")])
def test_trainer_resolves_auto(cpu, native, expected):
    import rbpn

    cpu(native)
    dist = training.DistInfo(0, 1, 0, torch.device("cpu"))
    trainer = training.Trainer(rbpn.Net(**TINY_NET), None, None, "l1", 1e-4, dist, precision="auto")
    assert trainer.precision == expected and not trainer.scaler.is_enabled()
    assert training.resolve_precision("auto", dist.device) == expected
    with training.autocast(dist.device, "auto"):
        y = torch.nn.functional.conv2d(torch.ones(1, 1, 4, 4), torch.ones(1, 1, 3, 3))
    assert y.dtype == (torch.bfloat16 if native else torch.float32)
    with pytest.raises(ValueError):
        training.resolve_precision("fp8", dist.device)


def test_bf16_convolutions_are_correct_on_this_cpu():
    """DBPN's strided x4 projection in bf16 agrees with fp32 on the real CPU (an AMX CPU needs the oneDNN cap)."""
    assert hardware._bf16_conv_error() < 0.05
    if "amx_bf16" in hardware._proc_cpuinfo()[1] and "DNNL_MAX_CPU_ISA" not in os.environ:
        assert os.environ.get("ONEDNN_MAX_CPU_ISA")


def test_wrong_bf16_convolutions_mean_fp32_or_a_clear_error(cpu, monkeypatch):
    cpu(True)
    monkeypatch.setattr(hardware, "bf16_convolutions_correct", lambda: False)
    assert hardware.resolve_precision("auto", "cpu") == "fp32"
    assert hardware.resolve_precision("fp32", "cpu") == "fp32"
    with pytest.raises(UserError, match="ONEDNN_MAX_CPU_ISA"):
        hardware.resolve_precision("bf16", "cpu")
