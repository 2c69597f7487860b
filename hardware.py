"""What the hardware does natively, and the ``--precision auto`` rule that follows from it.

``auto`` picks, on CUDA, bf16 where the GPU has native bf16 (compute capability 8.0+), else fp16 for inference and
fp32 for training (fp16 training needs loss scaling: ask for it explicitly); on CPU, bf16 where the CPU has native
bf16 instructions (AVX512-BF16 or AMX), else fp32 (bf16 there is emulated and several times slower than fp32); on
any other device, fp32. The choice is logged once, with its reason. Forcing bf16 (or fp16) where it is emulated
works but warns once. torch is imported inside the functions, so ``import hardware`` is cheap.

On CPUs with AMX, oneDNN 3.x's AMX bf16 kernels compute DBPN's strided projections (kernel 8 / stride 4 for x4,
kernel 12 / stride 8 for x8) wrongly: about 100 % relative error, in inference and in gradients (measured with
torch 2.14.1 / oneDNN 3.12 on an AMX Xeon; kernel 6 / stride 2 and 3x3 convolutions are right). Importing this
module therefore caps oneDNN at AVX512-BF16 on such CPUs (``ONEDNN_MAX_CPU_ISA``, unless the user set it), which
keeps native bf16 and gives 0.3 % error; oneDNN reads it at its first convolution, and every script imports this
module (through ``inference`` or ``training``) before one runs. ``bf16_convolutions_correct`` checks the result
on the real CPU, and ``resolve_precision`` refuses bf16 where it is still wrong.
"""

import functools
import os
import platform
from typing import Dict, Optional, Set, Tuple

import logger
from errors import UserError

CONCRETE = ("fp32", "bf16", "fp16")
_ANNOUNCED: Set[Tuple] = set()  # (kind, ...) keys of the messages already logged


def _announce(key: Tuple, message: str, warn: bool) -> None:
    """Log ``message`` (as a warning or info) the first time ``key`` is seen in this process."""
    if key in _ANNOUNCED:
        return
    _ANNOUNCED.add(key)
    (logger.warning if warn else logger.info)(message)


# ----------------------------------------------------------------------------------------------------------------------
# CPU


@functools.lru_cache(maxsize=1)
def _proc_cpuinfo() -> Tuple[str, Set[str]]:
    """(model name, flag set) of the first processor in /proc/cpuinfo; ("", empty) where there is none."""
    model, flags = "", set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip().lower()
                if key in ("model name", "hardware", "cpu model") and not model:
                    model = value.strip()
                elif key in ("flags", "features") and not flags:
                    flags = set(value.split())
                if not line.strip() and model and flags:
                    break
    except OSError:
        pass
    return model, flags


def _torch_cpu_features() -> Dict[str, Optional[bool]]:
    """avx512 / avx512_bf16 / amx (tile) / amx_fp16 as torch's cpuinfo sees them (None where this torch cannot tell)."""
    import torch

    probes = {  # torch.cpu's names (2.3+), then torch._C._cpu's older ones
        "avx512": ("_is_avx512_supported", "_is_cpu_support_avx512"),
        "avx512_bf16": ("_is_avx512_bf16_supported", "_is_cpu_support_avx512bf16"),
        "amx": ("_is_amx_tile_supported", "_is_cpu_support_amx_tile"),
        "amx_fp16": ("_is_amx_fp16_supported",),
    }
    found: Dict[str, Optional[bool]] = {}
    for key, names in probes.items():
        found[key] = None
        for module in (torch.cpu, getattr(torch._C, "_cpu", None)):
            probe = next((getattr(module, n) for n in names if hasattr(module, n)), None)
            if probe is None:
                continue
            try:
                found[key] = bool(probe())
            except Exception:  # noqa: BLE001  (a probe that fails is a probe that cannot tell)
                continue
            break
    return found


@functools.lru_cache(maxsize=1)
def _cpu_features() -> Dict:
    """The CPU's model name and native-precision features (cached: they do not change while we run)."""
    model, flags = _proc_cpuinfo()
    probed = _torch_cpu_features()

    def has(key: str, *proc_flags: str) -> bool:
        return probed[key] if probed.get(key) is not None else any(f in flags for f in proc_flags)

    avx512 = has("avx512", "avx512f")
    avx512_bf16 = has("avx512_bf16", "avx512_bf16")
    amx = has("amx", "amx_bf16", "amx_tile")
    native_fp16 = has("amx_fp16", "amx_fp16") or "avx512_fp16" in flags
    return {"model": model or platform.processor() or platform.machine() or "unknown CPU", "avx512": avx512,
            "avx512_bf16": avx512_bf16, "amx": amx, "native_bf16": avx512_bf16 or amx, "native_fp16": native_fp16}


def cpu_info() -> Dict:
    """model, native_bf16 (AVX512-BF16 or AMX), amx, avx512, avx512_bf16, native_fp16, threads (torch's) and
    cores (logical CPUs this process may use)."""
    import torch

    info = dict(_cpu_features())
    info["threads"] = torch.get_num_threads()
    try:
        info["cores"] = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        info["cores"] = os.cpu_count() or 1
    return info


def _bf16_units(info: Dict) -> str:
    """'AVX512-BF16 + AMX', 'AVX512-BF16', 'AMX' or '' for the native bf16 units in ``info``."""
    return " + ".join(name for name, key in (("AVX512-BF16", "avx512_bf16"), ("AMX", "amx")) if info.get(key))


def describe_cpu() -> str:
    """One line for benchmark tables: model, native bf16 or not, AMX, AVX-512, torch threads / usable cores."""
    info = cpu_info()
    units = _bf16_units(info)
    bf16 = f"native bf16 yes ({units})" if info["native_bf16"] else "native bf16 no (emulated)"
    return (f"CPU {info['model']}: {bf16}, AMX {'yes' if info['amx'] else 'no'}, "
            f"AVX-512 {'yes' if info['avx512'] else 'no'}, {info['threads']} torch thread(s) on {info['cores']} "
            f"core(s)")


def _cap_onednn_below_amx() -> None:
    """Cap oneDNN at AVX512-BF16 on CPUs with AMX, unless the user chose an ISA (see the module docstring)."""
    if "ONEDNN_MAX_CPU_ISA" in os.environ or "DNNL_MAX_CPU_ISA" in os.environ:
        return
    _, flags = _proc_cpuinfo()
    if "amx_bf16" in flags and "avx512_bf16" in flags:
        os.environ["ONEDNN_MAX_CPU_ISA"] = "AVX512_CORE_BF16"


_cap_onednn_below_amx()


def _bf16_conv_error() -> float:
    """Relative mean error of a bf16 strided convolution (DBPN's x4 projection) against fp32 on this CPU."""
    import torch

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1, 8, 32, 32, generator=gen)
    weight = torch.randn(8, 8, 8, 8, generator=gen) / 16
    with torch.no_grad():
        exact = torch.nn.functional.conv2d(x, weight, stride=4, padding=2)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = torch.nn.functional.conv2d(x, weight, stride=4, padding=2).float()
    return float((low - exact).abs().mean() / exact.abs().mean())


@functools.lru_cache(maxsize=1)
def bf16_convolutions_correct() -> bool:
    """Whether bf16 convolutions on this CPU agree with fp32 to bf16's precision (under 5 % relative error; a
    correct kernel gives about 0.3 %). Checked once per process on a small strided convolution."""
    return _bf16_conv_error() < 0.05


_BROKEN_BF16 = ("bf16 convolutions on this CPU give wrong results (a oneDNN AMX fault); set "
                "ONEDNN_MAX_CPU_ISA=AVX512_CORE_BF16 before starting, or use --precision fp32")


# ----------------------------------------------------------------------------------------------------------------------
# precision


def _device_type(device) -> Tuple[str, Optional[int]]:
    if device is None:
        return "cpu", None
    if isinstance(device, str):
        import torch

        device = torch.device(device)
    return device.type, device.index


def _cuda_bf16(index: Optional[int]) -> Tuple[bool, str]:
    """(native bf16 on this GPU, its name and compute capability for messages)."""
    import torch

    try:
        native = bool(torch.cuda.is_bf16_supported(including_emulation=False))
    except TypeError:  # torch < 2.3: no emulation flag, and no emulation counted
        native = bool(torch.cuda.is_bf16_supported())
    try:
        major, minor = torch.cuda.get_device_capability(index)
        name = f"{torch.cuda.get_device_name(index)} (compute capability {major}.{minor})"
    except Exception:  # noqa: BLE001  (names only decorate the message)
        name = "this GPU"
    return native, name


def resolve_precision(requested: str, device=None, training: bool = False) -> str:
    """``requested`` ('auto', 'fp32', 'bf16' or 'fp16') made concrete for ``device`` (torch.device or str; None: CPU).

    'auto' follows the hardware (see the module docstring) and logs its choice once; a forced bf16/fp16 that the
    hardware only emulates is kept but warned about once. Validity checks (fp16 on CPU for inference) are the
    caller's.
    """
    if requested not in CONCRETE + ("auto",):
        raise ValueError(f"unknown precision {requested!r}; use auto, {', '.join(CONCRETE)}")
    kind, index = _device_type(device)
    use = "training" if training else "inference"
    if kind == "cuda":
        native, gpu = _cuda_bf16(index)
        if requested == "auto":
            if native:
                choice, why = "bf16", f"{gpu} has native bf16"
            elif training:
                choice, why = "fp32", f"{gpu} has no native bf16 (fp16 training needs --precision fp16 explicitly)"
            else:
                choice, why = "fp16", f"{gpu} has no native bf16"
            _announce(("auto", kind, index, training), f"precision auto -> {choice} for {use}: {why}", warn=False)
            return choice
        if requested == "bf16" and not native:
            _announce(("emulated", kind, index, requested),
                      f"bf16 on {gpu} is emulated and typically much slower than fp16/fp32; "
                      "use --precision auto, fp16 or fp32", warn=True)
        return requested
    if kind == "cpu":
        info = _cpu_features()
        if requested == "auto":
            if info["native_bf16"] and not bf16_convolutions_correct():
                choice, why = "fp32", _BROKEN_BF16.split(";")[0]
            elif info["native_bf16"]:
                choice, why = "bf16", f"the CPU ({info['model']}) has native bf16 ({_bf16_units(info)})"
            else:
                choice, why = "fp32", (f"the CPU ({info['model']}) has no native bf16 (no AVX512-BF16/AMX), "
                                       "where bf16 is emulated and slower")
            _announce(("auto", kind, training), f"precision auto -> {choice} for {use}: {why}", warn=False)
            return choice
        if requested == "bf16" and not bf16_convolutions_correct():
            raise UserError(_BROKEN_BF16)
        if requested == "bf16" and not info["native_bf16"]:
            _announce(("emulated", kind, requested),
                      "bf16 on this CPU (no AVX512-BF16/AMX) is emulated and typically many times slower than "
                      "fp32; use --precision auto or fp32", warn=True)
        elif requested == "fp16" and not info["native_fp16"]:
            _announce(("emulated", kind, requested),
                      "fp16 on this CPU (no AVX512-FP16/AMX-FP16) is emulated and typically slower than fp32; "
                      "use --precision auto or fp32", warn=True)
        return requested
    if requested == "auto":
        _announce(("auto", kind, training), f"precision auto -> fp32 for {use}: no precision rule for {kind} devices",
                  warn=False)
        return "fp32"
    return requested


def resident_mib() -> float:
    """Current resident memory (VmRSS) of this process in MiB; 0 where /proc is not available."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return 0.0
