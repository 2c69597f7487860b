"""Checks a script runs before any work: option ranges and modes, data and output folders, and the sizes the data
must have for validation, the perceptual VGG and the discriminator. Each refusal is a one-line ``UserError`` that names
the option and says what to do.

Free of torch at import, so that a script can check its options before it loads torch; the few checks that look at
a dataset or a network import what they need when called.
"""

from __future__ import annotations

import argparse
import math
import os
from typing import Iterator, Optional, Sequence, Tuple

import atomic
import logger
from errors import UserError, describe_os_error

# ---------------------------------------------------------------------------------------------------------------
# Options


def check_numbers(args: argparse.Namespace, at_least_one: Sequence[str] = (), at_least_zero: Sequence[str] = (),
                  above_zero: Sequence[str] = ()) -> None:
    """One line naming the first numeric option (attribute names) out of its range; NaN and infinite values are
    refused too."""
    rules = ([(name, "must be at least 1", lambda v: v >= 1) for name in at_least_one]
             + [(name, "must be 0 or more", lambda v: v >= 0) for name in at_least_zero]
             + [(name, "must be greater than 0", lambda v: v > 0) for name in above_zero])
    for name, rule, ok in rules:
        value = getattr(args, name)
        if not (math.isfinite(value) and ok(value)):
            raise UserError(f"--{name} {rule}, got {value}")


def check_mode(args: argparse.Namespace) -> None:
    """The trainer's two modes: resolve ``--upscale_factor`` (4 for super-resolution, 1 with ``--denoise``) and refuse
    options of the other mode: 1 without ``--denoise``, a changed ``--denoise`` option without it, and
    ``--eval_file_list`` with it. With ``--denoise``, ``--residual`` adds the input frame itself to G's output (G
    learns the correction)."""
    if args.upscale_factor is None:
        args.upscale_factor = 1 if args.denoise else 4
    if not args.denoise:
        if args.upscale_factor == 1:
            raise UserError("--upscale_factor 1 is for --denoise only; super-resolution takes 2, 4 or 8")
        changed = (("--target", args.target != "n2n"), ("--warping", args.warping), ("--flows", args.flows != "pyflow"),
                   ("--temporal_bin", args.temporal_bin != [1]), ("--spatial_scale", args.spatial_scale != [1.0]),
                   ("--residual_base", args.residual_base != "frame"),
                   ("--channel", args.channel is not None), ("--no-level", not args.level))
        for flag, given in changed:
            if given:
                raise UserError(f"{flag} only applies with --denoise; add --denoise or leave {flag} out")
        return
    if args.eval_file_list:
        raise UserError("--eval_file_list lists super-resolution frames; with --denoise, --eval_dir is a movie or a "
                        "folder of movies and needs no list")
    if any(k < 1 for k in args.temporal_bin):
        raise UserError(f"--temporal_bin takes factors of 1 or more, got {args.temporal_bin}")
    if any(not 0 < s <= 1 for s in args.spatial_scale):
        raise UserError(f"--spatial_scale takes factors in (0, 1], got {args.spatial_scale}")
    if args.residual_base != "frame" and not args.residual:
        raise UserError("--residual_base only applies with --residual; add --residual or leave it out")


# ---------------------------------------------------------------------------------------------------------------
# Devices

DEVICE_CHOICES = "cpu, cuda, cuda:N or auto"
_warned_unused_flow_device = set()


def parse_device(text: str, option: str):
    """``text`` as a ``torch.device`` of type cpu or cuda; one line naming ``option`` for anything else."""
    import torch

    try:
        device = torch.device(text)
    except (RuntimeError, ValueError) as exc:
        raise UserError(f"unknown {option} {text!r}; use {DEVICE_CHOICES}") from exc
    if device.type not in ("cpu", "cuda") or (device.index is not None and device.index < 0):
        raise UserError(f"unknown {option} {text!r}; use {DEVICE_CHOICES}")
    return device


def check_cuda_device(device, option: str, fix: str) -> None:
    """A CUDA ``device`` must exist: one line naming ``option`` and saying ``fix`` when it does not."""
    import torch

    if device.type != "cuda":
        return
    if not torch.cuda.is_available():
        raise UserError(f"{option} {device} asks for CUDA but no CUDA GPU is available; {fix}")
    if device.index is not None and device.index >= torch.cuda.device_count():
        raise UserError(f"{option} {device} does not exist: {torch.cuda.device_count()} CUDA device(s) visible; "
                        f"{fix}")


def resolve_train_device(device: Optional[str], gpu_mode: bool, world_size: int = 1):
    """The trainer's ``torch.device`` for ``--device`` and ``--gpu_mode``: ``--device`` wins; auto (or None) is the
    original's rule, CUDA when ``gpu_mode`` and a GPU is available, else the CPU. ``cuda`` without an index stays
    without one (each torchrun process then takes cuda:LOCAL_RANK); ``cuda:N`` is for a single process."""
    import torch

    if device in (None, "", "auto"):
        return torch.device("cuda" if gpu_mode and torch.cuda.is_available() else "cpu")
    dev = parse_device(device, "--device")
    if dev.index is not None and world_size > 1:
        raise UserError(f"--device {device} picks one GPU, but under torchrun each process takes cuda:LOCAL_RANK; "
                        "use --device cuda (or auto)")
    check_cuda_device(dev, "--device", "use --device cpu (or auto)")
    return dev


def flow_backend_for(backend: str, model_device) -> str:
    """``--flow_backend`` made concrete: auto is torch when the model runs on CUDA (the C++ flow would be the
    bottleneck there), else cpp, the exact C++ pyflow."""
    import torch

    if backend not in ("auto", "cpp", "torch"):
        raise UserError(f"unknown --flow_backend {backend!r}; use auto, cpp or torch")
    if backend == "auto":
        return "torch" if torch.device(model_device).type == "cuda" else "cpp"
    return backend


def resolve_flow_device(flow_device: Optional[str], backend: str, model_device):
    """The ``torch.device`` of the torch optical flow for ``--flow_device`` (None, '' or 'auto': the model's device).

    ``backend`` is ``--flow_backend`` (auto: torch when ``model_device`` is CUDA, else cpp). The C++ flow never uses
    the device: a ``--flow_device`` other than auto/cpu then warns once and the model's device is returned. A CUDA
    flow device without a GPU is refused with a line that names ``--flow_device``.
    """
    import torch

    model_device = torch.device(model_device)
    if flow_device in (None, "", "auto"):
        return model_device
    device = parse_device(flow_device, "--flow_device")
    if flow_backend_for(backend, model_device) == "cpp":
        if device.type != "cpu" and flow_device not in _warned_unused_flow_device:
            _warned_unused_flow_device.add(flow_device)
            logger.warning(f"--flow_device {flow_device} is not used: the C++ flow (--flow_backend cpp, or auto "
                           "with the model on the CPU) runs on the CPU; leave --flow_device out")
        return model_device
    check_cuda_device(device, "--flow_device", "use --flow_device cpu (or auto)")
    return device


# ---------------------------------------------------------------------------------------------------------------
# Folders


def check_data_dir(data_dir: str, file_list: str) -> None:
    """A missing super-resolution dataset is a one-line error that says how to get one."""
    import data

    list_path = os.path.join(data_dir, file_list)
    if os.path.isfile(list_path) or (os.path.exists(data_dir) and data.uses_video_folder(data_dir, file_list)):
        return
    raise UserError(f"training data not found: neither {list_path!r} nor videos / frame folders in "
                    f"{data_dir!r}. Fetch a dataset with `python DatasetFetcher.py` (or build a small one with "
                    "`python DatasetFetcher.py --sample`), or point --data_dir at your own videos")


def check_writable_folder(folder: str, option: str) -> None:
    """Create ``folder`` if needed and write and remove a probe file in it; one line naming ``option`` if that fails."""
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise UserError(f"{option} {folder} is a file, not a folder; choose another path")
    try:
        os.makedirs(folder, exist_ok=True)
        probe = os.path.join(folder, ".iseebetter_write_test")
        atomic.write_bytes(probe, b"")
        os.remove(probe)
    except OSError as exc:
        raise UserError(f"{option} {folder}: {describe_os_error(exc, 'cannot write in')}") from exc


def format_bytes(n: int) -> str:
    """``n`` bytes for a log line: "123 bytes" below 1 MB, else "1.2 MB"."""
    return f"{n} bytes" if n < 1_000_000 else f"{n / 1e6:.1f} MB"


def remove_stale_temps(folder: str) -> None:
    """Delete the temporary files that killed runs left in ``folder`` (``atomic.remove_stale_temps``); log the count
    and the space freed."""
    try:
        sizes = {entry.path: entry.stat(follow_symlinks=False).st_size for entry in os.scandir(folder)
                 if entry.name.startswith(atomic.TEMP_PREFIX)}
    except OSError:
        sizes = {}
    removed = atomic.remove_stale_temps(folder)
    if removed:
        freed = sum(sizes.get(path, 0) for path in removed)
        plural = "s" if len(removed) > 1 else ""
        logger.info(f"removed {len(removed)} stale temporary file{plural} ({format_bytes(freed)}) left in {folder} "
                    "by an interrupted run")


# ---------------------------------------------------------------------------------------------------------------
# Image sizes: validation frames, the perceptual VGG, the discriminator's BatchNorm


def _image_size(path: str) -> Optional[Tuple[int, int]]:
    """(width, height) from an image file's header; None when it cannot be read (the dataset reports that)."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            return img.size
    except (OSError, ValueError):
        return None


def eval_frame_sizes(eval_set) -> Iterator[Tuple[str, Tuple[int, int]]]:
    """(source, (width, height)) of the evaluation frames, from file headers: the first frame of each clip (video or
    frame folder) used, or each listed frame; for a ``DenoiseDataset`` each movie used."""
    import torch

    import dataset
    import denoise_data
    from video_io import video_info

    indices = range(len(eval_set))
    if isinstance(eval_set, torch.utils.data.Subset):
        eval_set, indices = eval_set.dataset, eval_set.indices
    if isinstance(eval_set, denoise_data.DenoiseDataset):
        for m in sorted({eval_set.samples[i][0] for i in indices}):
            height, width = eval_set.movies[m].shape[1:3]
            yield eval_set.names[m], (width, height)
        return
    if isinstance(eval_set, dataset.VideoFolderDataset):
        for src in sorted({eval_set.samples[i][0] for i in indices}):
            path, frames, _ = eval_set.sources[src]
            if frames is not None:
                size = _image_size(frames[0])
            else:
                info = video_info(path)
                size = (info["width"], info["height"])
            if size is not None:
                yield path, size
        return
    for i in indices:
        centre = eval_set.frame_paths(i)[0]
        size = _image_size(centre)
        if size is not None:
            yield centre, size


def check_eval_frames(eval_set, eval_dir: str, scale: int) -> None:
    """Refuse evaluation frames smaller than the SSIM window (after the crop to a multiple of the scale) before
    training, instead of failing at the first validation."""
    import training

    window = training.ssim_window()
    smallest = math.ceil(window / scale) * scale
    for source, (width, height) in eval_frame_sizes(eval_set):
        cropped = (width - width % scale, height - height % scale)
        if min(cropped) >= window:
            continue
        where = "" if os.path.abspath(source) == os.path.abspath(eval_dir) else f" ({source})"
        after = "" if cropped == (width, height) else f", {cropped[0]}x{cropped[1]} after the crop to x{scale}"
        at = f" at x{scale}" if scale > 1 else ""
        raise UserError(f"--eval_dir {eval_dir}: frames of {width}x{height} px{where}{after} are too small to "
                        f"validate: SSIM uses an {window}x{window} px window, so frames must be at least "
                        f"{smallest}x{smallest} px{at}; use larger frames or leave out --eval_dir")


def hr_training_size(args: argparse.Namespace, train_set, scale: int) -> Tuple[int, int]:
    """(width, height) of the HR images D sees in training: the patch, or the first whole frame (``--patch_size 0``).

    ``scale`` is G's output size / input size (1 for ``--denoise``).
    """
    if args.patch_size > 0:
        return args.patch_size * scale, args.patch_size * scale
    if args.denoise:
        height, width = train_set.movies[train_set.samples[0][0]].shape[1:3]
        return width * scale, height * scale
    target = train_set.lr_frames(0)[0]
    return target.shape[1], target.shape[0]


def check_vgg_size(args: argparse.Namespace, train_set, scale: int) -> None:
    """The perceptual term's VGG16 halves its input 5 times: refuse training images under 32 px up front."""
    width, height = hr_training_size(args, train_set, scale)
    if args.loss != "gan" or args.perceptual_weight == 0 or min(width, height) >= 32:
        return
    patch = math.ceil(32 / scale)
    raise UserError(f"--loss gan: the perceptual term's VGG16 needs training images of at least 32x32 px, but G's "
                    f"outputs are {width}x{height} px; use --patch_size {patch} or more, or --perceptual_weight 0")


def gan_drop_last(args: argparse.Namespace, netD, train_set, scale: int, world_size: int) -> bool:
    """Make sure D's BatchNorm never sees a single value per channel (it cannot train on one): refuse batches of
    1 such image, and return True when only a last batch of 1 sample would, so that the loader skips it."""
    import training

    width, height = hr_training_size(args, train_set, scale)
    if training.batchnorm_values_per_channel(netD, 1, height, width) > 1:
        return False
    if args.batchSize == 1:
        if args.patch_size > 0:
            patch = args.patch_size + 1
            while training.batchnorm_values_per_channel(netD, 1, patch * scale, patch * scale) <= 1:
                patch += 1
            images = f"--patch_size {args.patch_size} (HR patches of {width}x{height} px)"
            fix = f"use --batchSize 2 or more, or --patch_size {patch} or more"
        else:
            images = f"--patch_size 0 (whole HR frames of {width}x{height} px)"
            fix = "use --batchSize 2 or more"
        raise UserError(f"--loss gan with --batchSize 1 and {images}: the discriminator's last BatchNorm would see "
                        f"1 value per channel, which it cannot train on; {fix}")
    per_process = math.ceil(len(train_set) / world_size)
    if per_process % args.batchSize != 1:
        return False
    if per_process == 1:
        raise UserError(f"--loss gan on HR images of {width}x{height} px needs batches of 2 or more samples, but "
                        "the training set has 1 sample per process; add data or use a larger --patch_size")
    return True
