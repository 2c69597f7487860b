"""What a generator checkpoint records about how it was trained, so that the tester and a resumed run repeat it.

Every generator checkpoint and training state of a ``--denoise`` run carries ``meta["denoise"]``
(``denoise_record``), one entry per data option:

    target         --target (TARGETS): what G learned to output
    warping        --warping: the neighbours were warped onto the input before G
    flows          --flows (FLOW_METHODS): the optical flow of the samples
    level          --level: each scan line's median was subtracted before normalising
    channel        --channel: the .asd channel (None: the first)
    normalisation  how each movie was scaled to [0, 1] (NORMALISATION)
    residual_base  --residual_base (BASES): what G's output is added to with --residual
    temporal_bin   --temporal_bin: the time binnings trained on
    spatial_scale  --spatial_scale: the resizings trained on

and, with ``--residual``, ``meta["residual"]``: the base ("frame" or "mean"). A super-resolution generator records
``residual``: the bicubic method whose upscale is added to its output (None without ``--residual``).

Free of torch at import: the trainer's parser takes the ``--target``, ``--residual_base`` and ``--flows`` choices from
here (``denoise_data`` has the same tuples but imports torch).
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any, Dict, List, Optional

from errors import UserError

if TYPE_CHECKING:
    from denoise_movies import PreparedMovie

TARGETS = ("n2n", "select", "median", "interleaved")  # denoise_data.make_sample's modes
BASES = ("frame", "mean")  # what a --residual denoiser's output is added to
FLOW_METHODS = ("pyflow", "zero")
NORMALISATION = "per-movie robust percentiles 0.5/99.5"  # denoise_data.preprocess's defaults

# The data options a resumed --denoise run takes from its training state rather than from the command line.
KEPT_ON_RESUME = ("target", "warping", "flows", "level", "channel", "residual_base")


def denoise_record(args: argparse.Namespace) -> Dict[str, Any]:
    """The preprocessing and targets of a ``--denoise`` run, recorded as ``denoise`` in its checkpoints so that the
    tester prepares its input movies the same way (``channel`` None = the first .asd channel)."""
    return {"target": args.target, "warping": bool(args.warping), "flows": args.flows, "level": bool(args.level),
            "channel": args.channel, "normalisation": NORMALISATION, "residual_base": args.residual_base,
            "temporal_bin": list(args.temporal_bin), "spatial_scale": list(args.spatial_scale)}


def residual_upscale(args: argparse.Namespace) -> Optional[str]:
    """With ``--residual``, the bicubic method whose upscale G's output is added to (the dataset's, i.e.
    ``--degradation``); recorded in the generator checkpoints so that the tester adds the same one."""
    return args.degradation if args.residual else None


def generator_extra(args: argparse.Namespace) -> Dict[str, Any]:
    """Entries every generator checkpoint and training state of this run records besides its config."""
    if not args.denoise:
        return {}
    extra: Dict[str, Any] = {"denoise": denoise_record(args)}
    if args.residual:
        extra["residual"] = args.residual_base  # the tester adds G's output to the frame or the frames' mean
    return extra


def best_extra(args: argparse.Namespace) -> Dict[str, Any]:
    """What the best generator checkpoint records besides the scores: ``generator_extra`` for ``--denoise`` (its
    ``residual`` is the base, "frame" or "mean"), else the bicubic method of ``--residual`` (None without it)."""
    return generator_extra(args) if args.denoise else {"residual": residual_upscale(args)}


def state_extra(args: argparse.Namespace, movies: Optional[List[PreparedMovie]]) -> Dict[str, Any]:
    """What the training states record besides G, D and the optimizers: ``generator_extra``, and with ``--denoise``
    each training movie's path, length, blank scans and normalisation (``denoise_movies``)."""
    extra = generator_extra(args)
    if movies:
        extra["denoise_movies"] = [{"path": m.path, "frames": int(m.frames.shape[0]), "blank": list(m.blank),
                                    "normalisation": m.normalisation.to_dict()} for m in movies]
    return extra


def adopt_denoise_record(args: argparse.Namespace, state: Dict) -> List[str]:
    """A resumed ``--denoise`` run keeps the data options its training state recorded (``KEPT_ON_RESUME``), so that
    the recorded preprocessing stays true; returns the options that differed on the command line (e.g.
    "--target median")."""
    recorded = state.get("denoise") or {}
    changed = []
    for key in KEPT_ON_RESUME:
        if key in recorded and recorded[key] != getattr(args, key):
            setattr(args, key, recorded[key])
            changed.append(f"--{key} {recorded[key]}")
    return changed


def check_resumed_task(state: Dict, path: str, args: argparse.Namespace) -> None:
    """Refuse to continue a super-resolution training state with ``--denoise``, or a denoising one without it."""
    import checkpoint

    task = checkpoint.generator_task(state["config"])
    if task == "sr" and args.denoise:
        raise UserError(f"--resume: {path} is a super-resolution training state; leave out --denoise to continue it, "
                        "or start the denoising run in another --save_folder")
    if task == "denoise" and not args.denoise:
        raise UserError(f"--resume: {path} is a --denoise training state; add --denoise (and its movies as "
                        "--data_dir) to continue it")
