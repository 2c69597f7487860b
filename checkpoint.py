"""All checkpoint I/O: atomic saving, reading original and project checkpoints, strict loading with clear errors.

Formats read:
- a plain state_dict, as the original iSeeBetter/RBPN scripts write it (``torch.save(net.state_dict())``), with or
  without the ``module.`` prefix that DataParallel adds;
- this project's format: ``{"format": "iseebetter-pytorch", "version": 1, "kind": "generator" | "discriminator" |
  "training_state", "config": {...}, "state_dict": {...}, ...}`` (a training state also holds the discriminator
  under ``"discriminator"``, the optimizers and the epoch);
- a whole pickled ``nn.Module`` only with ``trust_pickle=True`` (unpickling can run arbitrary code).

Generators: RBPN ``Net`` (super-resolution x2/x4/x8, or denoising at scale 1) and the denoising ``Net2`` (strided
output conv: x2/x4/x8 inside, output of the input's size). A generator checkpoint's config records the constructor
arguments plus ``arch`` ("Net" / "Net2") and ``task`` ("sr" / "denoise", see ``generator_task``); all of it is also
inferred from the parameter shapes, so plain state_dicts of every kind load without flags.

Unlike the original, nothing here ever continues with random weights: a missing file, a file that is not a
checkpoint, a damaged file (a zip entry whose CRC-32 does not match), a checkpoint for another scale / nFrames /
network, one with integer tensors where the network has floats, or one with NaN/inf or implausibly large weights
(over ``MAX_ABS_WEIGHT``) is a ``CheckpointError`` naming the problem. A failed save (disk full, a folder in the
way, no permission) is a ``UserError``.

Command line: ``python checkpoint.py info PATH`` prints what a checkpoint holds and the RBPN config it implies, and
lists what would make the loaders refuse it (non-finite or huge weights, missing or unexpected keys; exit status 1
then); ``python checkpoint.py convert IN OUT [--plain] [--trust-pickle]`` rewrites it in the project format (or as a
plain original-compatible state_dict), only when it loads strictly and all its weights are plausible. Both refuse a
damaged file.

torch is imported inside the functions that need it, so that ``python checkpoint.py -h`` answers at once.
"""

from __future__ import annotations

import argparse
import errno
import os
import pickle
import re
import warnings
import zipfile
import zlib
from collections import OrderedDict
from typing import TYPE_CHECKING, Any, Dict, Iterable, List, Mapping, Optional, Tuple, Union

import atomic
from errors import UserError, describe_os_error, free_bytes, run_cli

if TYPE_CHECKING:
    import torch
    from torch import nn

FORMAT = "iseebetter-pytorch"
VERSION = 1
KINDS = ("generator", "discriminator", "training_state")

# Projection kernel size -> scale factor (see base_networks.PROJECTION_PARAMS).
_KERNEL_TO_SCALE = {3: 1, 6: 2, 8: 4, 12: 8}
# Generator architectures (rbpn.ARCHS) and what a generator is for.
ARCHS = ("Net", "Net2")
TASKS = ("sr", "denoise")
# How many missing / unexpected keys `info` names (the loaders' messages name 3).
_INFO_EXAMPLES = 20
# Command-line options that set a config field, for error messages.
_CONFIG_FLAGS = {"scale_factor": "--upscale_factor", "nFrames": "--nFrames"}
# Largest |weight| a trained network plausibly has. RBPN and SRGAN weights stay well under 100 (the shipped models
# under 2.2); a flipped exponent bit in a float32 makes values like 9.5e36.
MAX_ABS_WEIGHT = 1e6
# What to do about a damaged file, for error messages.
_DAMAGED_ADVICE = "re-download or re-copy the file, or use an earlier epoch's checkpoint"
# The DBPN projection convs of an RBPN state_dict: their kernel gives the scale.
_PROJECTION_KEY = re.compile(r"DBPN\.(up|down)\d+\.(up|down)_conv\d\.(de)?conv\.weight")

StateDict = Dict[str, "torch.Tensor"]
PathLike = Union[str, "os.PathLike[str]"]


class CheckpointError(UserError):
    """A checkpoint is missing, unreadable, or does not fit the model."""


# ----------------------------------------------------------------------------------------------------------- saving


def atomic_torch_save(obj: Any, path: PathLike) -> None:
    """``torch.save`` to a temp file in the same folder, fsync, then ``os.replace``: no half-written checkpoints.

    A failed write (disk full, a folder or file in the way, no permission) removes the temp file, leaves ``path``
    as it was and raises a one-line ``UserError``.
    """
    import torch

    path = os.fspath(path)
    try:
        with atomic.atomic_path(path, suffix=".part") as tmp, open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
    except (OSError, RuntimeError) as exc:
        error = _save_error(exc, path, obj)
        if error is None:
            raise
        raise error from exc


def _tensor_bytes(obj: Any) -> int:
    """Bytes of tensor data in ``obj`` and the dicts, lists and tuples it holds: about the size of its file."""
    import torch

    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, Mapping):
        return sum(_tensor_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(_tensor_bytes(v) for v in obj)
    return 0


def _os_error_in(exc: Optional[BaseException]) -> Optional[OSError]:
    """``exc`` if it is an ``OSError``, else the first one it was raised from or while handling."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, OSError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def _save_error(exc: BaseException, path: str, obj: Any) -> Optional[UserError]:
    """The ``UserError`` for a failed checkpoint write, or None when ``exc`` is not a write failure.

    On a full disk torch's zip writer raises ``RuntimeError: [enforce fail at inline_container.cc...] unexpected
    pos ...`` while handling the ``OSError`` (ENOSPC) of the file write; either one is recognised.
    """
    os_error = _os_error_in(exc)
    if os_error is None and "inline_container" not in str(exc) and "PytorchStreamWriter" not in str(exc):
        return None  # not an I/O failure (a bug, an object that cannot be saved): keep the traceback
    action = f"cannot save checkpoint {path}"
    folder = os.path.dirname(os.path.abspath(path))
    needed, free = _tensor_bytes(obj), free_bytes(folder)
    code = os_error.errno if os_error is not None else None
    if code in (errno.ENOSPC, errno.EDQUOT) or (os_error is None and free is not None and free < needed):
        what = "the disk quota is exceeded" if code == errno.EDQUOT else "the disk is full"
        free_text = "" if free is None else f", {free / 1e6:.1f} MB free in {folder}"
        return UserError(f"{action}: {what} (needs about {needed / 1e6:.1f} MB{free_text}); free some space or save "
                         f"to another folder (e.g. another --save_folder)")
    if os_error is None or code is None:
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return UserError(f"{action}: writing failed ({detail}); check the disk holding {folder}")
    if code == errno.EISDIR and os.path.isdir(path):
        return UserError(f"{action}: it is a folder; give a file name like {os.path.join(path, 'model.pth')}")
    if code == errno.EEXIST:  # os.makedirs: a file where a parent folder should be
        code = errno.ENOTDIR
    # Name the checkpoint, not the hidden temp file the error may be about.
    return UserError(describe_os_error(OSError(code, os_error.strerror, path), "cannot save checkpoint"))


def unwrap_model(model: nn.Module) -> nn.Module:
    """The network inside DataParallel / DistributedDataParallel / torch.compile wrappers."""
    from torch import nn

    while True:
        if isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
            model = model.module
        elif hasattr(model, "_orig_mod") and isinstance(model._orig_mod, nn.Module):
            model = model._orig_mod
        else:
            return model


def plain_state_dict(model: nn.Module) -> StateDict:
    """The model's state_dict without any wrapper prefix, on the CPU."""
    return OrderedDict((k, v.detach().cpu()) for k, v in unwrap_model(model).state_dict().items())


def save_checkpoint(path: PathLike, kind: str, state_dict: Mapping[str, torch.Tensor],
                    config: Optional[dict] = None, extra: Optional[dict] = None) -> None:
    """Write the project format. ``extra`` entries (plain Python values and tensors only) are stored alongside."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    state_dict = strip_prefix(state_dict)
    config = dict(config or {})
    if kind == "generator":
        config = _with_shape_config(state_dict, config)
    obj = {"format": FORMAT, "version": VERSION, "kind": kind, "config": config, "state_dict": state_dict}
    for key, value in (extra or {}).items():
        if key in obj:
            raise ValueError(f"extra key {key!r} clashes with a reserved checkpoint key")
        obj[key] = value
    atomic_torch_save(obj, path)


def _with_shape_config(sd: StateDict, config: dict) -> dict:
    """``config`` with the fields an RBPN state_dict's shapes determine (including ``arch`` and ``task``) set from
    the shapes; unchanged for anything that is no RBPN state_dict."""
    try:
        inferred = single_frame_kept(full_generator_config(sd), config)
    except CheckpointError:
        return config
    return dict(config, **inferred)


def single_frame_kept(inferred: dict, stored: Mapping[str, Any]) -> dict:
    """``inferred`` (a config from the shapes) with nFrames 1 where ``stored`` says 1: the single-frame form has
    the shapes of nFrames 2, so only a stored config tells the two apart."""
    if stored.get("nFrames") == 1 and inferred.get("nFrames") == 2:
        inferred = dict(inferred, nFrames=1)
    return inferred


def save_generator(path: PathLike, model: nn.Module, config: Optional[dict] = None,
                   extra: Optional[dict] = None) -> None:
    """Save a generator with its config (default: ``model.config``) in the project format.

    The stored config always holds the fields the weights determine, ``arch`` and ``task`` included.
    """
    if config is None:
        config = getattr(unwrap_model(model), "config", None)
    save_checkpoint(path, "generator", plain_state_dict(model), config, extra)


def save_discriminator(path: PathLike, model: nn.Module, extra: Optional[dict] = None) -> None:
    save_checkpoint(path, "discriminator", plain_state_dict(model), {}, extra)


def save_training_state(path: PathLike, generator: nn.Module, discriminator: Optional[nn.Module], config: dict,
                        epoch: int, optimizer_g: Optional[torch.optim.Optimizer] = None,
                        optimizer_d: Optional[torch.optim.Optimizer] = None, extra: Optional[dict] = None) -> None:
    """Everything needed to resume: both networks, both optimizers, the epoch just finished, and ``extra``."""
    state = {"epoch": int(epoch)}
    if discriminator is not None:
        state["discriminator"] = plain_state_dict(discriminator)
    if optimizer_g is not None:
        state["optimizer_g"] = optimizer_g.state_dict()
    if optimizer_d is not None:
        state["optimizer_d"] = optimizer_d.state_dict()
    state.update(extra or {})
    save_checkpoint(path, "training_state", plain_state_dict(generator), config, state)


def save_plain_state_dict(path: PathLike, model: nn.Module) -> None:
    """Write a bare state_dict (no ``module.`` prefix), loadable by the original iSeeBetter/RBPN scripts."""
    atomic_torch_save(plain_state_dict(model), path)


# ---------------------------------------------------------------------------------------------------------- reading


def strip_prefix(state_dict: Mapping[str, torch.Tensor]) -> StateDict:
    """Remove a ``module.`` (DataParallel) or ``_orig_mod.`` (torch.compile) prefix shared by all keys."""
    sd = OrderedDict(state_dict)
    for prefix in ("module.", "_orig_mod."):
        if sd and all(k.startswith(prefix) for k in sd):
            sd = OrderedDict((k[len(prefix):], v) for k, v in sd.items())
    return sd


def _is_state_dict(obj: Any) -> bool:
    import torch

    return isinstance(obj, Mapping) and len(obj) > 0 and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())


def read_checkpoint(path: PathLike, trust_pickle: bool = False, check_weights: bool = True,
                    convert_hint: bool = True) -> Tuple[StateDict, Optional[dict]]:
    """Read a checkpoint file: ``(state_dict without wrapper prefix, meta)``.

    ``meta`` is None for a plain state_dict, else the project-format dict without its ``state_dict``.
    The CRC-32 of every zip entry is verified first (``verify_archive``). Loads with ``weights_only=True``; a file
    holding pickled objects (e.g. a whole model) is refused unless ``trust_pickle`` is set, with advice to
    ``convert --trust-pickle`` it unless ``convert_hint`` is False. With ``check_weights`` a NaN/inf weight or one
    over ``MAX_ABS_WEIGHT`` (also in a training state's discriminator) is refused: such a model gives wrong output
    without any error.
    """
    path = os.fspath(path)
    sd, meta = _unpack(path, _load_file(path, trust_pickle, convert_hint))
    if check_weights:
        _refuse_bad_weights(path, _named_weights(sd, meta))
    return sd, meta


def read_training_state(path: PathLike) -> dict:
    """The full dict of a ``training_state`` checkpoint (``state_dict``, ``discriminator``, optimizers, epoch...)."""
    path = os.fspath(path)
    sd, meta = read_checkpoint(path, convert_hint=False)  # convert cannot make a training state
    if meta is None or meta.get("kind") != "training_state":
        kind = "a plain state_dict" if meta is None else f"a {meta.get('kind')} checkpoint"
        raise CheckpointError(f"{path} is {kind}, not a training state; resume needs a file written "
                              f"by the trainer's training-state save")
    return dict(meta, state_dict=sd)


def _needs_unsafe_unpickling(exc: pickle.UnpicklingError) -> bool:
    """Whether a ``weights_only`` load failed only because the file pickles Python objects (a class or function
    that is not an allowed global), as opposed to bytes that are no pickle / torch file at all."""
    text = str(exc).lower()
    return "weights only load failed" in text and any(
        words in text for words in ("unsupported global", "not an allowed global", "unsupported class"))


def _corrupt(path: str, exc: BaseException) -> CheckpointError:
    """The error for a file torch cannot read, with a one-line detail (torch's messages run over many lines)."""
    text = str(exc)
    if "WeightsUnpickler error:" in text:
        text = text.split("WeightsUnpickler error:", 1)[1]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    first = lines[0].split(". ")[0] if lines else ""
    detail = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
    return CheckpointError(f"{path} is not a PyTorch checkpoint or is truncated/corrupt ({detail})")


def _load_file(path: str, trust_pickle: bool, convert_hint: bool) -> Any:
    """``torch.load`` with clear errors: missing, unreadable, corrupt, or holding pickled objects."""
    import torch

    if not os.path.isfile(path):
        where = "is a folder, not a file" if os.path.isdir(path) else "does not exist"
        raise CheckpointError(f"checkpoint {path} {where}; pass the path of a .pth file")
    verify_archive(path)
    try:
        with warnings.catch_warnings():  # torch warns about the pickle protocol of files it is about to refuse
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if not _needs_unsafe_unpickling(exc):
            raise _corrupt(path, exc) from None
        unsafe = (f"{path} contains pickled Python objects (for example a whole saved model), which are not loaded "
                  f"because unpickling can run code")
        if not convert_hint:
            raise CheckpointError(f"{unsafe}; the checkpoints and training states this project writes hold only "
                                  f"tensors and plain values, so it did not write this file") from None
        if not trust_pickle:
            raise CheckpointError(f"{unsafe}; if you trust the file, convert it once with "
                                  f"`python checkpoint.py convert {path} OUT.pth --trust-pickle`") from None
    except OSError as exc:  # permission denied, I/O error
        raise CheckpointError(describe_os_error(exc, "cannot read checkpoint")) from None
    except Exception as exc:  # EOFError, zip errors, bad magic number, KeyError on text files, ...
        raise _corrupt(path, exc) from None
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # any unpickling failure: the message says what it was
        raise CheckpointError(f"{path} could not be unpickled: {type(exc).__name__}: {exc}") from None


def verify_archive(path: PathLike) -> Optional[int]:
    """Check the CRC-32 of every entry of a zip checkpoint (what ``torch.save`` writes since torch 1.6); returns the
    number of entries, or None for a file that is no zip archive (a legacy pickle: it has no checksums, and a
    truncated zip is left to ``torch.load``'s error). A damaged entry raises a one-line ``CheckpointError``."""
    path = os.fspath(path)
    try:
        if not zipfile.is_zipfile(path):
            return None
        with zipfile.ZipFile(path) as archive:
            entries = archive.infolist()
            for entry in entries:
                _check_entry(path, archive, entry)
    except zipfile.BadZipFile:
        return None  # no readable central directory: torch.load says what is wrong
    except OSError as exc:
        raise CheckpointError(describe_os_error(exc, "cannot read checkpoint")) from None
    return len(entries)


def _check_entry(path: str, archive: zipfile.ZipFile, entry: zipfile.ZipInfo) -> None:
    """Read one zip entry to its end (``zipfile`` compares the CRC-32 there); CheckpointError naming it if bad."""
    try:
        with archive.open(entry) as f:
            while f.read(1 << 24):
                pass
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError) as exc:
        what = "fails its CRC-32 check (bytes changed on disk or in a copy)" if "CRC" in str(exc) else \
            f"cannot be read ({exc})"
        raise CheckpointError(f"checkpoint {path} is damaged: its entry {entry.filename} {what}; "
                              f"{_DAMAGED_ADVICE}") from None


def _unpack(path: str, obj: Any) -> Tuple[StateDict, Optional[dict]]:
    """``(state_dict, meta)`` of a loaded checkpoint object, whatever its layout."""
    from torch import nn

    if isinstance(obj, nn.Module):
        return plain_state_dict(obj), None
    if isinstance(obj, Mapping) and obj.get("format") == FORMAT:
        version = obj.get("version")
        if version != VERSION:
            raise CheckpointError(f"{path} is format version {version}; this code reads version {VERSION}")
        if obj.get("kind") not in KINDS or not _is_state_dict(obj.get("state_dict")):
            raise CheckpointError(f"{path} is a damaged {FORMAT} checkpoint (no valid kind/state_dict)")
        meta = {k: v for k, v in obj.items() if k != "state_dict"}
        return strip_prefix(obj["state_dict"]), meta
    if _is_state_dict(obj):
        return strip_prefix(obj), None
    if isinstance(obj, Mapping) and _is_state_dict(obj.get("state_dict")):
        # Common third-party layout {"state_dict": ..., "epoch": ...}.
        return strip_prefix(obj["state_dict"]), {k: v for k, v in obj.items() if k != "state_dict"}
    raise CheckpointError(f"{path} holds a {type(obj).__name__}, not a model state_dict")


# ------------------------------------------------------------------------------------------ non-finite weights


def _named_weights(sd: StateDict, meta: Optional[dict]) -> Iterable[Tuple[str, torch.Tensor]]:
    """The tensors of a checkpoint's network(s): its state_dict and a training state's discriminator."""
    yield from sd.items()
    discriminator = (meta or {}).get("discriminator")
    if _is_state_dict(discriminator):
        for name, tensor in strip_prefix(discriminator).items():
            yield f"discriminator.{name}", tensor


def nonfinite_tensors(tensors: Iterable[Tuple[str, torch.Tensor]]) -> List[Tuple[str, int]]:
    """``(name, number of NaN/inf values)`` of every floating-point tensor that has any, in order."""
    import torch

    found = []
    for name, tensor in tensors:
        if not (tensor.is_floating_point() or tensor.is_complex()) or tensor.is_meta:
            continue
        finite = torch.isfinite(tensor)
        if not bool(finite.all()):
            found.append((name, int(finite.numel() - finite.sum())))
    return found


def _describe_nonfinite(label: str, found: List[Tuple[str, int]]) -> str:
    total = sum(count for _, count in found)
    names = ", ".join(name for name, _ in found[:3])
    more = len(found) - 3
    if more > 0:
        names += f" and {more} more tensor{'s' if more > 1 else ''}"
    return (f"checkpoint {label} contains {total} non-finite value{'s' if total > 1 else ''} (NaN/inf) in {names}; "
            f"the file is damaged or the training diverged: use an earlier checkpoint")


def huge_tensors(tensors: Iterable[Tuple[str, torch.Tensor]],
                 limit: float = MAX_ABS_WEIGHT) -> List[Tuple[str, float]]:
    """``(name, largest finite |value|)`` of every floating-point tensor with a finite value over ``limit``."""
    import torch

    found = []
    for name, tensor in tensors:
        if not tensor.is_floating_point() or tensor.is_meta or tensor.numel() == 0:
            continue
        size = tensor.detach().abs().float()
        size = size[torch.isfinite(size)]
        if size.numel() and float(size.max()) > limit:
            found.append((name, float(size.max())))
    return found


def _describe_huge(label: str, found: List[Tuple[str, float]]) -> str:
    name, size = max(found, key=lambda item: item[1])
    others = "" if len(found) == 1 else f" and {len(found) - 1} more tensor{'s' if len(found) > 2 else ''}"
    return (f"checkpoint {label} has implausibly large weights in {name}{others} (|value| up to {size:.3g}; trained "
            f"weights stay far below {MAX_ABS_WEIGHT:.0e}): the file is damaged (e.g. a flipped bit) or the training "
            f"diverged; {_DAMAGED_ADVICE}")


def weight_problems(label: str, tensors: Iterable[Tuple[str, torch.Tensor]]) -> List[str]:
    """One line for each reason the weights are unusable: NaN/inf values, finite values over ``MAX_ABS_WEIGHT``."""
    tensors = list(tensors)
    problems = []
    found = nonfinite_tensors(tensors)
    if found:
        problems.append(_describe_nonfinite(label, found))
    huge = huge_tensors(tensors)
    if huge:
        problems.append(_describe_huge(label, huge))
    return problems


def _refuse_bad_weights(label: str, tensors: Iterable[Tuple[str, torch.Tensor]]) -> None:
    problems = weight_problems(label, tensors)
    if problems:
        raise CheckpointError(problems[0])


# ------------------------------------------------------------------------------------------------- RBPN config


def infer_rbpn_config(state_dict: Mapping[str, torch.Tensor]) -> dict:
    """The RBPN constructor arguments a state_dict was made with, derived from its parameter shapes.

    The projection kernel (of ``DBPN.up1.up_conv1.deconv.weight`` and the other DBPN projections; the most common
    one) gives the scale: 3 -> 1, 6 -> 2, 8 -> 4, 12 -> 8.
    A Net2 (its ``output`` conv has the projection kernel instead of 3x3) adds ``"arch": "Net2"``; without ``arch``
    it is a plain ``Net``, so an original checkpoint gives exactly ``rbpn.Net``'s arguments. Either way
    ``rbpn.from_config`` builds the right network from the result.
    """
    sd = strip_prefix(state_dict)
    needed = ("feat0.conv.weight", "DBPN.feat1.conv.weight", "DBPN.output.conv.weight",
              "DBPN.up1.up_conv1.deconv.weight", "output.conv.weight")
    missing = [k for k in needed if k not in sd]
    if missing:
        raise CheckpointError(f"not an RBPN generator state_dict (no {missing[0]})")
    feat0 = sd["feat0.conv.weight"].shape
    feat = sd["DBPN.feat1.conv.weight"].shape[0]
    kernel = _projection_kernel(sd)
    if kernel not in _KERNEL_TO_SCALE:
        raise CheckpointError(f"RBPN state_dict with projection kernel {kernel}, which matches no supported scale")
    scale = _KERNEL_TO_SCALE[kernel]
    output_kernel = sd["output.conv.weight"].shape[-1]
    if output_kernel == 3:
        arch = "Net"
    elif output_kernel == kernel and scale != 1:
        arch = "Net2"
    else:
        raise CheckpointError(f"RBPN state_dict whose output conv has kernel {output_kernel}, which is neither "
                              f"Net's 3 nor Net2's {kernel} (the x{scale} projection kernel)")
    n_resblock = 0
    while f"res_feat1.{n_resblock}.conv1.weight" in sd:
        n_resblock += 1
    config = dict(num_channels=int(feat0[1]), base_filter=int(feat0[0]), feat=int(feat),
                  num_stages=int(sd["DBPN.output.conv.weight"].shape[1] // feat), n_resblock=n_resblock,
                  nFrames=int(sd["output.conv.weight"].shape[1] // feat + 1), scale_factor=scale)
    if arch != "Net":
        config["arch"] = arch
    return config


def _projection_kernel(sd: StateDict) -> int:
    """The kernel of the DBPN projections: the most common one among them (so that one damaged tensor does not
    change the scale the file implies), ``DBPN.up1.up_conv1``'s on a tie."""
    first = sd["DBPN.up1.up_conv1.deconv.weight"].shape[-1]
    kernels = [v.shape[-1] for k, v in sd.items() if _PROJECTION_KEY.fullmatch(k) and v.dim() == 4]
    if not kernels:
        return first
    return max(sorted(set(kernels)), key=lambda k: (kernels.count(k), k == first))


def generator_output_scale(config: Mapping[str, Any]) -> int:
    """Output size / input size of the generator a config describes: 1 for Net2, else its ``scale_factor``."""
    arch = config.get("arch", "Net")
    if arch not in ARCHS:
        raise CheckpointError(f"unknown generator arch {arch!r}; expected one of {', '.join(ARCHS)}")
    return 1 if arch == "Net2" else int(config["scale_factor"])


def generator_task(config: Mapping[str, Any]) -> str:
    """The task of the generator a config describes: "denoise" when its output has the input's size (scale 1, or
    Net2), else "sr"."""
    return "denoise" if generator_output_scale(config) == 1 else "sr"


def full_generator_config(state_dict: Mapping[str, torch.Tensor]) -> dict:
    """``infer_rbpn_config`` plus ``arch`` (also "Net") and ``task``: everything the shapes say about a generator."""
    config = infer_rbpn_config(state_dict)
    config.setdefault("arch", "Net")
    config["task"] = generator_task(config)
    return config


def describe_generator(config: Mapping[str, Any]) -> str:
    """A short name for a generator config, e.g. "x4 super-resolution RBPN" or "denoising Net2 (x2 inside)"."""
    channels = config.get("num_channels")
    colour = "" if channels is None else " " + {1: "grey", 3: "colour"}.get(channels, f"{channels}-channel")
    if config.get("arch", "Net") == "Net2":
        return f"denoising{colour} Net2 (x{config['scale_factor']} inside)"
    if int(config["scale_factor"]) == 1:
        return f"denoising{colour} RBPN (scale 1)"
    return f"x{config['scale_factor']} super-resolution{colour} RBPN"


def _config_evidence(sd: StateDict, field: str) -> str:
    key = {"scale_factor": "DBPN.up1.up_conv1.deconv.weight", "nFrames": "output.conv.weight",
           "arch": "output.conv.weight",
           "base_filter": "feat0.conv.weight", "num_channels": "feat0.conv.weight", "feat": "DBPN.feat1.conv.weight",
           "num_stages": "DBPN.output.conv.weight"}.get(field)
    if key is None or key not in sd:
        return ""
    return f" ({key} has shape {list(sd[key].shape)})"


def _describe_config_mismatch(label: str, sd: StateDict, ckpt: dict, model: dict) -> Optional[str]:
    ckpt = single_frame_kept(dict(ckpt, arch=ckpt.get("arch", "Net")), model)
    diffs = [f for f in ("arch", "scale_factor", "nFrames", "num_channels", "base_filter", "feat", "num_stages",
                         "n_resblock") if f in model and ckpt.get(f) != model.get(f)]
    if not diffs:
        return None
    parts = []
    for f in diffs:
        if f == "scale_factor":
            parts.append(f"is for scale {ckpt[f]}{_config_evidence(sd, f)} but the model is x{model[f]}")
        elif f == "arch":
            parts.append(f"is a {ckpt[f]}{_config_evidence(sd, f)} but the model is a {model[f]}")
        else:
            parts.append(f"has {f}={ckpt[f]}{_config_evidence(sd, f)} but the model has {f}={model[f]}")
    flags = [f"{_CONFIG_FLAGS[f]} {ckpt[f]}" for f in diffs if f in _CONFIG_FLAGS]
    hint = f" — pass {' '.join(flags)}" if flags and len(flags) == len(diffs) else \
        f" — build the model with {', '.join(f'{f}={ckpt[f]}' for f in diffs)}"
    return f"checkpoint {label} " + "; ".join(parts) + hint


def _fits(sd: StateDict, expected: StateDict) -> bool:
    """Whether ``sd`` has exactly the keys of ``expected``, with the same shapes (what a strict load needs), and
    floating-point tensors wherever ``expected`` has them (``load_state_dict`` would silently copy integers in)."""
    return set(sd) == set(expected) and all(tuple(sd[k].shape) == tuple(v.shape) for k, v in expected.items()) \
        and not _integer_where_float(sd, expected)


def _integer_where_float(sd: StateDict, expected: StateDict) -> List[str]:
    """Keys whose tensor is integer (or bool) in ``sd`` where ``expected`` has floating point, in order."""
    return [k for k, v in expected.items() if k in sd and v.is_floating_point() and not sd[k].is_floating_point()
            and not sd[k].is_complex()]


def _describe_key_mismatch(label: str, sd: StateDict, expected: StateDict, what: str, examples: int = 3) -> str:
    missing = [k for k in expected if k not in sd]
    unexpected = [k for k in sd if k not in expected]
    shapes = [k for k in expected if k in sd and tuple(sd[k].shape) != tuple(expected[k].shape)]
    if "feat0.conv.weight" in sd and what == "discriminator":
        return f"checkpoint {label} is an RBPN generator, not a discriminator"
    if "net.0.weight" in sd and "feat0.conv.weight" not in sd and what == "generator":
        return f"checkpoint {label} looks like an SRGAN discriminator (keys net.*), not a generator"
    bits = []
    if missing:
        bits.append(f"{len(missing)} missing keys (e.g. {', '.join(missing[:examples])})")
    if unexpected:
        bits.append(f"{len(unexpected)} unexpected keys (e.g. {', '.join(unexpected[:examples])})")
    if shapes:
        k = shapes[0]
        bits.append(f"{len(shapes)} shape mismatches (e.g. {k}: checkpoint {list(sd[k].shape)}, "
                    f"model {list(expected[k].shape)})")
    integers = _integer_where_float(sd, expected)
    if integers:
        k = integers[0]
        bits.append(f"{len(integers)} integer tensors where the {what} has floating-point weights (e.g. {k}: "
                    f"{str(sd[k].dtype).replace('torch.', '')}), so the weights were rounded away; use the original "
                    f"float checkpoint")
    return f"checkpoint {label} does not fit the {what}: " + "; ".join(bits)


# ---------------------------------------------------------------------------------------------------------- loading


def load_into(model: nn.Module, source: Union[PathLike, Mapping[str, torch.Tensor]], what: str = "generator",
              trust_pickle: bool = False) -> Optional[dict]:
    """Load a checkpoint (path or state_dict) into ``model`` strictly; returns the checkpoint's meta (or None).

    Works whatever the ``module.`` prefixes of checkpoint and model (the model may be wrapped in
    DataParallel/DDP). A checkpoint of the wrong kind, scale, nFrames or size, or with NaN/inf weights, raises
    ``CheckpointError`` (naming the file when ``source`` is a path).
    ``what`` ("generator" or "discriminator") picks the network from a training-state file and is used in messages.
    """
    if isinstance(source, Mapping):
        label, meta, sd = "(given state_dict)", None, strip_prefix(source)
        _refuse_bad_weights(label, sd.items())
    else:
        label = os.fspath(source)
        sd, meta = read_checkpoint(label, trust_pickle=trust_pickle)
    if meta is not None and meta.get("format") == FORMAT:
        kind = meta.get("kind")
        if kind == "training_state" and what == "discriminator":
            if not _is_state_dict(meta.get("discriminator")):
                raise CheckpointError(f"training state {label} holds no discriminator")
            sd = strip_prefix(meta["discriminator"])
        elif kind in ("generator", "discriminator") and kind != what:
            raise CheckpointError(f"checkpoint {label} is a {kind}, but a {what} was expected")
    _load_strict(model, sd, label, what)
    return meta


def _load_strict(model: nn.Module, sd: StateDict, label: str, what: str) -> None:
    """``load_state_dict(strict=True)`` after checks that name the config flag or the keys that differ."""
    target = unwrap_model(model)
    expected = target.state_dict()
    model_config = getattr(target, "config", None)
    if isinstance(model_config, dict) and "nFrames" in model_config and "feat0.conv.weight" in sd:
        try:
            message = _describe_config_mismatch(label, sd, infer_rbpn_config(sd), model_config)
        except CheckpointError:
            message = None
        if message:
            raise CheckpointError(message)
    if not _fits(sd, expected):
        raise CheckpointError(_describe_key_mismatch(label, sd, expected, what))
    target.load_state_dict(sd, strict=True)


def _reference_model(sd: StateDict) -> Optional[Tuple[str, nn.Module]]:
    """``(what, empty model)`` the state_dict should load into: the RBPN its shapes imply, or the SRGAN
    discriminator; None when it is neither. Built on the meta device (no memory, no init)."""
    import torch

    if "feat0.conv.weight" in sd:
        from rbpn import from_config

        config = infer_rbpn_config(sd)
        try:
            with torch.device("meta"):
                return "generator", from_config(config)
        except ValueError as exc:
            raise CheckpointError(f"its shapes imply an unsupported RBPN config {config}: {exc}") from None
    if "net.0.weight" in sd:
        from SRGAN.model import Discriminator

        with torch.device("meta"):
            return "discriminator", Discriminator()
    return None


def _fit_problem(label: str, sd: StateDict, examples: int = 3) -> Optional[str]:
    """Why ``sd`` would not load strictly into the network it is for (see ``_reference_model``); None if it would
    or if it is no RBPN generator / SRGAN discriminator."""
    try:
        reference = _reference_model(sd)
    except CheckpointError as exc:
        return f"checkpoint {label}: {exc}"
    if reference is None:
        return None
    what, model = reference
    expected = model.state_dict()
    if _fits(sd, expected):
        return None
    return _describe_key_mismatch(label, sd, expected, what, examples)


RESIDUAL_MODES = ("pil", "matlab", "frame", "mean")


def residual_method(value) -> Optional[str]:
    """A checkpoint's ``residual`` entry: what G's output is added to, None when not residual.

    Super-resolution: the bicubic method ("pil" / "matlab"); ``True`` (no method recorded) means Pillow's bicubic,
    the original's ``--residual``. ``--denoise``: "frame" (the input frame) or "mean" (the mean of the frames the
    network sees); denoisers of earlier versions recorded "pil" for "frame".
    """
    if not value:
        return None
    if value is True:
        return "pil"
    if value in RESIDUAL_MODES:
        return value
    raise CheckpointError(f"unknown residual mode {value!r} in the checkpoint; expected one of "
                          f"{', '.join(RESIDUAL_MODES)}")


def _channels_text(n: int, noun: str = "channel", kind_first: bool = False) -> str:
    """E.g. "3 input channels (colour)", or with ``kind_first`` "grey (1 channel)"."""
    count = f"{n} {noun}{'' if n == 1 else 's'}"
    kind = {1: "grey", 3: "colour"}.get(n)
    if kind is None:
        return count
    return f"{kind} ({count})" if kind_first else f"{count} ({kind})"


def _expect_problem(label: str, sd: StateDict, config: dict, field: str, wanted: Any) -> Optional[str]:
    """The one-line reason a checkpoint with ``config`` is not what ``expect[field] = wanted`` asks for, or None."""
    if field == "task":
        if wanted not in TASKS:
            raise ValueError(f"expect['task'] must be one of {TASKS}, got {wanted!r}")
        have = config["task"]
        if have == wanted:
            return None
        if wanted == "denoise":
            return (f"checkpoint {label} is a x{config['scale_factor']} super-resolution checkpoint; --denoise needs "
                    f"a denoising model (scale 1 or Net2, whose output has the input's size): pass one trained with "
                    f"--denoise, or leave out --denoise to upscale")
        return (f"checkpoint {label} is a {describe_generator(config)}: its output has the input's size, so it "
                f"cannot upscale; add --denoise to use it, or pass a super-resolution checkpoint")
    if config.get(field) == wanted:
        return None
    if field == "num_channels":
        have = int(config[field])
        data_kind = {1: "grey", 3: "colour"}.get(wanted, f"{wanted}-channel")
        return (f"checkpoint {label} has {_channels_text(have, 'input channel')}{_config_evidence(sd, field)} but "
                f"the data is {_channels_text(wanted, kind_first=True)}; pass a model trained on {data_kind} data")
    flag = _CONFIG_FLAGS.get(field)
    hint = f" — pass {flag} {config.get(field)}, or a checkpoint made for {wanted}" if flag else ""
    name = "scale" if field == "scale_factor" else field
    return (f"checkpoint {label} is for {name}={config.get(field)}{_config_evidence(sd, field)} but {wanted} was "
            f"requested{hint}")


def build_generator(path: PathLike, fallback_config: Optional[dict] = None,
                    expect: Optional[dict] = None) -> Tuple[nn.Module, dict]:
    """Build the RBPN ``Net`` / ``Net2`` that fits the checkpoint at ``path`` and load it; returns ``(net, config)``.

    The config comes from the parameter shapes (for a project checkpoint they agree with its stored config), so
    original checkpoints need no flags; it holds the constructor arguments, ``arch`` ("Net" / "Net2") and ``task``
    ("sr" / "denoise"). ``fallback_config`` only fills fields the checkpoint does not determine. ``expect`` lists
    fields the caller insists on (e.g. ``{"scale_factor": 4}`` from ``--upscale_factor``, ``{"task": "denoise"}``
    from ``--denoise``, ``{"num_channels": 1}`` for grey data); a checkpoint that disagrees raises a one-line
    ``CheckpointError`` saying what to change. The task is checked first, then the channels, then the rest in order.
    A project checkpoint trained with ``--residual`` adds ``"residual": "pil"|"matlab"`` (the bicubic upscale its
    output is added to) to the returned config.
    """
    from rbpn import DEFAULT_CONFIG, from_config

    label = os.fspath(path)
    sd, meta = read_checkpoint(label)
    if meta is not None and meta.get("kind") == "discriminator":
        raise CheckpointError(f"checkpoint {label} is a discriminator, but a generator was expected")
    config = dict(DEFAULT_CONFIG)
    config.update(fallback_config or {})
    config.update(single_frame_kept(full_generator_config(sd), (meta or {}).get("config") or {}))
    expect = dict(expect or {})
    first = ("task", "num_channels")  # the bigger mismatches first
    for field in [f for f in first if f in expect] + [f for f in expect if f not in first]:
        problem = _expect_problem(label, sd, config, field, expect[field])
        if problem:
            raise CheckpointError(problem)
    try:
        net = from_config(config)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"checkpoint {label} implies an unsupported RBPN config {config}: {exc}") from None
    _load_strict(net, sd, label, "generator")
    if meta is not None and meta.get("residual"):
        config["residual"] = residual_method(meta["residual"])
    return net, config


# ------------------------------------------------------------------------------------------------------------- CLI


def _info(path: str) -> int:
    """Print what a checkpoint holds; returns 1 when the loaders would refuse it (each reason on a ``problem:``
    line), else 0."""
    entries = verify_archive(path)
    sd, meta = read_checkpoint(path, check_weights=False)
    n_params = sum(v.numel() for k, v in sd.items() if v.is_floating_point() and "running_" not in k)
    print(f"{path}: {len(sd)} tensors, {n_params:,} values")
    print(f"format: {'plain state_dict (original)' if meta is None else meta.get('format', 'dict')}"
          + (f", kind {meta.get('kind')}" if meta else ""))
    if meta and meta.get("config"):
        print(f"stored config: {meta['config']}")
    if meta and "residual" in meta:
        added_to = {"frame": "the input frame", "mean": "the mean of the frames G sees"}.get(
            meta["residual"], "the bicubic upscale")
        print(f"residual (output added to {added_to}): {meta['residual']}")
    if meta and meta.get("note"):
        print(f"note: {meta['note']}")
    print(f"checksums: CRC-32 of all {entries} zip entries match" if entries is not None else
          "checksums: none (a legacy non-zip file; damage to its bytes cannot be detected)")
    problems = weight_problems(path, _named_weights(sd, meta))
    fit = _fit_problem(path, sd, examples=_INFO_EXAMPLES)
    if "feat0.conv.weight" in sd:
        try:
            config = full_generator_config(sd)
            print(f"RBPN config from shapes: {config} ({describe_generator(config)})")
        except CheckpointError:
            pass  # the shapes imply no config: the fit problem says why
        if not fit:
            print("keys and shapes: those of the RBPN generator of that config (loads strictly)")
    elif "net.0.weight" in sd:
        print("SRGAN discriminator" + ("" if fit else "; keys and shapes match (loads strictly)"))
    if fit:
        problems.append(fit)
    if meta and _is_state_dict(meta.get("discriminator")):
        fit = _fit_problem(f"{path} (discriminator)", strip_prefix(meta["discriminator"]), examples=_INFO_EXAMPLES)
        if fit:
            problems.append(fit)
    for problem in problems:
        print(f"problem: {problem}")
    return 1 if problems else 0


def _convert(src: str, dst: str, plain: bool, trust_pickle: bool, extra: Optional[dict] = None) -> None:
    sd, meta = read_checkpoint(src, trust_pickle=trust_pickle, check_weights=False)
    _refuse_bad_weights(src, sd.items())  # only the network that is written matters
    problem = _fit_problem(src, sd)
    if problem:
        raise CheckpointError(f"{problem}; convert writes only checkpoints that load strictly, so fix the keys of "
                              f"the state_dict first")
    kept = {k: meta[k] for k in ("residual", "note") if meta is not None and meta.get(k)}
    extra = dict(kept, **(extra or {}))
    if plain:
        atomic_torch_save(sd, dst)
    elif "feat0.conv.weight" in sd:
        save_checkpoint(dst, "generator", sd, infer_rbpn_config(sd), extra)
    elif "net.0.weight" in sd:
        save_checkpoint(dst, "discriminator", sd, {})
    else:
        raise CheckpointError(f"{src} is neither an RBPN generator nor an SRGAN discriminator; use --plain")
    print(f"wrote {dst}")


def main(argv: Optional[list] = None) -> int:
    parser = argparse.ArgumentParser(description="Inspect or convert iSeeBetter/RBPN checkpoints.")
    sub = parser.add_subparsers(dest="command", required=True)
    p_info = sub.add_parser("info", help="print what a checkpoint holds, the RBPN config it implies, and anything "
                                         "that makes the loaders refuse it (then the exit status is 1)")
    p_info.add_argument("path")
    p_conv = sub.add_parser("convert", help="rewrite a checkpoint in the project format (or plain with --plain); "
                                            "refuses one that does not load strictly or has NaN/inf weights")
    p_conv.add_argument("src")
    p_conv.add_argument("dst")
    p_conv.add_argument("--plain", action="store_true", help="write a bare state_dict (original-compatible)")
    p_conv.add_argument("--trust-pickle", action="store_true",
                        help="allow unpickling a whole saved model (only for files you trust)")
    p_conv.add_argument("--residual", nargs="?", const="pil", choices=("pil", "matlab"), default=None,
                        help="record that the generator's output is added to a bicubic upscale of its input "
                             "(iSeeBetterTrain.py --residual; the method is its --degradation, default pil)")
    p_conv.add_argument("--note", default=None, help="free text stored in the checkpoint (e.g. how it was trained)")
    args = parser.parse_args(argv)
    if args.command == "info":
        return _info(args.path)
    extra = {"residual": args.residual} if args.residual else {}
    if args.note:
        extra["note"] = args.note
    _convert(args.src, args.dst, args.plain, args.trust_pickle, extra)
    return 0


if __name__ == "__main__":
    run_cli(main)
