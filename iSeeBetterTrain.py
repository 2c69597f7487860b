"""Train iSeeBetter: RBPN generator + SRGAN discriminator with the four-fold loss (or a pixel loss for pre-training).

Keeps the original's options and defaults; boolean options take ``--x``/``--no-x`` (and the original ``--x False``).
Resumable (``--resume``), seeded, multi-GPU / multi-node with ``torchrun`` (DDP), mixed precision, activation
checkpointing, per-epoch validation (Y-PSNR/SSIM) with the best generator kept. See the README's training section.

``--denoise`` trains a denoiser for consecutive SPM/AFM scans instead: ``--data_dir`` is a movie or a folder of
movies (``scans.find_movies``), each preprocessed per movie (``denoise_data.preprocess``) and cut into samples by
``denoise_data.DenoiseDataset`` (``--target``); the generator is ``rbpn.Net`` at scale 1, or ``rbpn.Net2`` with
``--upscale_factor 2|4|8`` (that factor inside, output of the input's size).

    python iSeeBetterTrain.py --data_dir vimeo_septuplet/sequences --file_list sep_trainlist.txt \\
        --pretrained --pretrained_sr RBPN_4x.pth --nEpochs 4
    torchrun --nproc_per_node=4 iSeeBetterTrain.py ... --precision bf16
    python iSeeBetterTrain.py --denoise --data_dir afm_movies/ --eval_dir afm_eval.asd --nFrames 3
"""

from __future__ import annotations

import argparse
import json
import math
import os
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Dict, Iterator, List, Optional, Tuple

import atomic
import logger
from errors import UserError, describe_os_error, run_cli
from options import FLOW_BACKENDS, PRECISIONS, add_bool

if TYPE_CHECKING:  # torch and the modules that import it load after parse_args, so that -h and option errors are fast
    import numpy as np
    from torch import nn

    import denoise_data
    import training

# Numeric options and the values they accept (argparse only checks the type).
AT_LEAST_ONE = ("batchSize", "testBatchSize", "nEpochs", "snapshots", "eval_every", "gpus", "base_filter", "feat")
AT_LEAST_ZERO = ("patch_size", "threads", "seed", "keep_last", "n_resblock", "flow_threads", "eval_max_frames",
                 "max_steps_per_epoch", "lr_step", "mse_weight", "adv_weight", "perceptual_weight", "tv_weight")
ABOVE_ZERO = ("lr", "lr_gamma")

# --denoise choices, as denoise_data.TARGETS and denoise_data.FLOW_METHODS (kept here: that module imports torch).
DENOISE_TARGETS = ("n2n", "select", "median", "interleaved")
DENOISE_BASES = ("frame", "mean")
DENOISE_FLOWS = ("pyflow", "zero")
# How each movie is normalised (denoise_data.preprocess's defaults); recorded in the generator checkpoints.
NORMALISATION = "per-movie robust percentiles 0.5/99.5"
# What the validation target of each --target is, for the log.
TARGET_MEANING = {
    "n2n": "a neighbouring noisy scan (independent noise): a no-reference proxy, not a clean ground truth",
    "select": "the window's scan with the least streak noise: a no-reference proxy, not a clean ground truth",
    "median": "the median of nFrames aligned scans between the network's frames: a less noisy proxy, still no "
              "clean ground truth",
    "interleaved": "the mean of the two scans just before and after the input, which the network never sees (its "
                   "frames are 2 scans apart): the no-reference score of iSeeBetterTest.py --denoise",
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Train iSeeBetter (RBPN + SRGAN discriminator).",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    g = p.add_argument_group("original options")
    g.add_argument("--upscale_factor", type=int, default=None, choices=(1, 2, 4, 8),
                   help="super resolution upscale factor: 2, 4 (default) or 8; with --denoise 1 (default, Net) or "
                        "2/4/8 (Net2: that factor inside, output of the input's size)")
    g.add_argument("--batchSize", type=int, default=2, help="training batch size (per process under torchrun)")
    g.add_argument("--testBatchSize", type=int, default=1, help="validation batch size")
    g.add_argument("--start_epoch", type=int, default=1, help="number of the first epoch (ignored with --resume)")
    g.add_argument("--nEpochs", type=int, default=150, help="number of the last epoch")
    g.add_argument("--snapshots", type=int, default=1, help="save checkpoints every N epochs (and after the last)")
    g.add_argument("--lr", type=float, default=1e-4, help="Adam learning rate of G and D")
    add_bool(g, "gpu_mode", True, "use CUDA when available")
    g.add_argument("--threads", type=int, default=8, help="DataLoader worker processes")
    g.add_argument("--seed", type=int, default=123, help="random seed (weights init, sampling, augmentation)")
    g.add_argument("--gpus", type=int, default=8, help="GPUs for --useDataParallel (use torchrun for DDP instead)")
    g.add_argument("--data_dir", default="./vimeo_septuplet/sequences", help="training data folder")
    g.add_argument("--file_list", default="sep_trainlist.txt", help="training list, relative to --data_dir")
    add_bool(g, "other_dataset", False, "--file_list lists frame paths instead of Vimeo-90K septuplet folders")
    add_bool(g, "future_frame", True, "use future frames as neighbours")
    g.add_argument("--nFrames", type=int, default=7, help="frames per sample (target + neighbours)")
    g.add_argument("--patch_size", type=int, default=64, help="LR patch size, 0 = whole frames")
    add_bool(g, "data_augmentation", True, "random flips / rotation")
    g.add_argument("--model_type", default="RBPN", choices=("RBPN",), help="generator architecture")
    add_bool(g, "residual", False, "add the bicubic-upscaled input (--degradation's bicubic) to G's output; with "
             "--denoise, the input frame itself")
    g.add_argument("--pretrained_sr", default="RBPN_4x.pth",
                   help="generator weights for --pretrained (a path, or a name inside --save_folder)")
    g.add_argument("--pretrained", action="store_true", help="start G from --pretrained_sr")
    g.add_argument("--save_folder", default="weights/", help="where checkpoints and logs are written")
    g.add_argument("--prefix", default="F7", help="free-form run tag, recorded in the logs and training state")
    g.add_argument("--APITLoss", action="store_true", help="four-fold GAN loss (same as --loss gan, the default)")
    g.add_argument("--useDataParallel", action="store_true", help="single-process DataParallel over --gpus GPUs")
    g.add_argument("-v", "--debug", action="store_true", help="Print debug spew.")

    g = p.add_argument_group("loss")
    g.add_argument("--loss", choices=("gan", "l1", "mse"), default=None,
                   help="gan: D + four-fold G loss (default; with --denoise the default is l1); l1/mse: pixel loss "
                        "only, no D (pre-training)")
    g.add_argument("--mse_weight", type=float, default=1.0, help="weight of the MSE image term")
    g.add_argument("--adv_weight", type=float, default=1e-3, help="weight of the adversarial term")
    g.add_argument("--perceptual_weight", type=float, default=6e-3, help="weight of the VGG16 term (0: no VGG)")
    g.add_argument("--tv_weight", type=float, default=2e-8, help="weight of the total-variation term")
    g.add_argument("--vgg_weights", default=None, help="VGG16 weights file (default: torchvision ImageNet weights)")
    g.add_argument("--vgg", choices=("imagenet", "random"), default="imagenet",
                   help="'random' = untrained VGG, for tests only")

    g = p.add_argument_group("model size (recorded in the checkpoints)")
    g.add_argument("--base_filter", type=int, default=256)
    g.add_argument("--feat", type=int, default=64)
    g.add_argument("--num_stages", type=int, default=3, choices=(3,),
                   help="fixed at 3: RBPN's DBPN-S branch has 3 up-projection stages (kept for the original's "
                        "command lines)")
    g.add_argument("--n_resblock", type=int, default=5)

    g = p.add_argument_group("data")
    g.add_argument("--degradation", choices=("pil", "matlab"), default="pil", help="HR -> LR downscaling")
    g.add_argument("--flow_cache", default=None, help="folder caching optical flows between runs")
    g.add_argument("--flow_threads", type=int, default=0, help="threads for optical flow per sample (0: auto)")
    g.add_argument("--flow_backend", choices=FLOW_BACKENDS, default="auto",
                   help="training flows: cpp (exact C++ pyflow in the DataLoader, --flow_cache applies), torch "
                        "(pyflow.torch_flow on --flow_device for the whole augmented batch inside the step) or auto "
                        "(torch when training on CUDA); super-resolution only")
    g.add_argument("--flow_device", default=None, help="device of the torch flow (default: the training device)")

    g = p.add_argument_group("denoising consecutive SPM/AFM scans (--denoise)")
    g.add_argument("--denoise", action="store_true",
                   help="train a denoiser: --data_dir / --eval_dir are movies (.asd, .npy, videos, PNG/TIFF frame "
                        "folders) or folders of movies; --patch_size is in input pixels")
    g.add_argument("--target", choices=DENOISE_TARGETS, default="n2n",
                   help="training target: n2n (a neighbouring scan), select (the cleanest scan of the window), "
                        "median (median of nFrames aligned scans) or interleaved (network frames 2 scans apart, "
                        "target: the mean of the two scans around the input); see denoise_data.make_sample")
    g.add_argument("--residual_base", choices=DENOISE_BASES, default="frame",
                   help="with --residual: add G's output to the input frame, or to the mean of the frames G sees "
                        "(G then starts as the plain temporal mean and learns to improve on it)")
    add_bool(g, "warping", False, "warp each neighbour onto the input with its optical flow before the network")
    g.add_argument("--flows", choices=DENOISE_FLOWS, default="pyflow", help="optical flow: pyflow, or zero flows")
    g.add_argument("--channel", default=None, help=".asd channel to train on, by name or index (default: the first)")
    add_bool(g, "level", True, "subtract each scan line's median before normalising (SPM line levelling)")
    g.add_argument("--temporal_bin", type=int, nargs="+", default=[1], metavar="K",
                   help="also train on each movie binned in time by K (the mean of K consecutive scans: noise / "
                        "sqrt(K), K times the motion), e.g. 1 2; 1 = the movies as they are")
    g.add_argument("--spatial_scale", type=float, nargs="+", default=[1.0], metavar="S",
                   help="also train on each movie (and each binned one) resized by S <= 1 with area averaging "
                        "(smaller features, less pixel noise), e.g. 1 0.5; 1 = the movies as they are")

    g = p.add_argument_group("validation")
    g.add_argument("--eval_dir", default=None, help="evaluation data folder (or a video / frame folder)")
    g.add_argument("--eval_file_list", default=None, help="evaluation list inside --eval_dir (frame paths)")
    g.add_argument("--eval_every", type=int, default=1, help="validate every N epochs")
    g.add_argument("--eval_max_frames", type=int, default=0, help="frames to evaluate, 0 = all")
    g.add_argument("--eval_degradation", choices=("pil", "matlab"), default="matlab",
                   help="HR -> LR downscaling of the evaluation frames")

    g = p.add_argument_group("run control")
    g.add_argument("--resume", nargs="?", const="auto", default=None, metavar="PATH",
                   help="continue from a training state (without PATH: the newest in --save_folder)")
    g.add_argument("--keep_last", type=int, default=2, help="training states to keep, 0 = all")
    g.add_argument("--lr_step", type=float, default=0,
                   help="divide G's lr after epochs where (epoch+1) %% lr_step == 0 (0: nEpochs/2, as the original)")
    g.add_argument("--lr_gamma", type=float, default=0.1, help="lr decay factor")
    g.add_argument("--lr_decay_d", action="store_true", help="decay D's lr too (the original never does)")
    g.add_argument("--precision", choices=PRECISIONS, default="auto",
                   help="autocast precision; auto: bf16 where the CPU/GPU has native bf16, else fp32")
    g.add_argument("--grad_checkpoint", action="store_true", help="activation checkpointing in G (less memory)")
    add_bool(g, "channels_last", True, "NHWC memory format for G, D and the batches (faster convolutions)")
    g.add_argument("--log_dir", default=None, help="logs, metrics and curves (default: --save_folder)")
    add_bool(g, "progress", True, "show the tqdm progress bar")
    g.add_argument("--max_steps_per_epoch", type=int, default=0, help="cut each epoch after N steps (smoke tests)")
    g.add_argument("--dist_backend", default=None, choices=("nccl", "gloo"), help="torchrun backend (default: auto)")
    return p


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    args = build_parser().parse_args(argv)
    if args.loss is None:
        args.loss = "gan" if args.APITLoss or not args.denoise else "l1"
    elif args.APITLoss and args.loss != "gan":
        raise UserError(f"--APITLoss selects the GAN loss but --loss {args.loss} was given; use one of them")
    check_numbers(args)
    check_mode(args)
    if args.nFrames < 1 and args.denoise:
        raise UserError(f"--nFrames must be at least 1 with --denoise (1 = the single-frame model), got "
                        f"{args.nFrames}")
    if args.nFrames < 2 and not args.denoise:
        raise UserError("--nFrames must be at least 2 (the target frame and one neighbour)")
    if args.denoise and args.target == "interleaved" and args.nFrames % 2 == 0:
        raise UserError(f"--target interleaved needs an odd --nFrames (neighbours at +-2, +-4, ... scans), got "
                        f"{args.nFrames}")
    if args.start_epoch < 1 or args.start_epoch > args.nEpochs:
        raise UserError(f"--start_epoch must be between 1 and --nEpochs ({args.nEpochs}), got {args.start_epoch}")
    return args


def check_mode(args: argparse.Namespace) -> None:
    """Resolve ``--upscale_factor`` (4 for super-resolution, 1 with ``--denoise``) and refuse options of the other
    mode: 1 without ``--denoise``, a changed ``--denoise`` option without it, and ``--eval_file_list`` with it.
    With ``--denoise``, ``--residual`` adds the input frame itself to G's output (G learns the correction)."""
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


def check_numbers(args: argparse.Namespace) -> None:
    """One line naming the first numeric option out of its range (``AT_LEAST_ONE``, ``AT_LEAST_ZERO``,
    ``ABOVE_ZERO``); NaN and infinite values are refused too."""
    rules = ([(name, "must be at least 1", lambda v: v >= 1) for name in AT_LEAST_ONE]
             + [(name, "must be 0 or more", lambda v: v >= 0) for name in AT_LEAST_ZERO]
             + [(name, "must be greater than 0", lambda v: v > 0) for name in ABOVE_ZERO])
    for name, rule, ok in rules:
        value = getattr(args, name)
        if not (math.isfinite(value) and ok(value)):
            raise UserError(f"--{name} {rule}, got {value}")


def residual_upscale(args: argparse.Namespace) -> Optional[str]:
    """With ``--residual``, the bicubic method whose upscale G's output is added to (the dataset's, i.e.
    ``--degradation``); recorded in the generator checkpoints so that the tester adds the same one."""
    return args.degradation if args.residual else None


def step_flow_fn(args: argparse.Namespace, device, main: bool):
    """The training step's flow function for ``--flow_backend torch`` (None: the DataLoader's C++ flows)."""
    import training
    from inference import resolve_flow_backend

    if args.denoise and args.flows == "zero":
        return None
    backend, flow_device = resolve_flow_backend(args.flow_backend, args.flow_device, device)
    if backend == "cpp":
        return None
    if args.denoise and args.target != "interleaved" and main:
        logger.info(f"--flow_backend torch with --target {args.target}: the neighbours' flows come from the torch flow "
                    "in the step; the target's alignment flows still come from the C++ pyflow in the DataLoader")
    elif args.flow_cache and main:
        logger.warning("--flow_cache is for the C++ flows; with --flow_backend torch it is not used")
    if main:
        logger.info(f"flows: pyflow.torch_flow on {flow_device}, for the whole batch inside each step")
    return training.batch_flow_fn(flow_device)


def start_as_identity(netG: nn.Module) -> None:
    """Zero the reconstruction conv of a ``--denoise --residual`` generator, so that training starts from its base
    (the input frame, or the frames' mean with ``--residual_base mean``) instead of RBPN's random output."""
    import torch

    with torch.no_grad():
        netG.output.conv.weight.zero_()
        if netG.output.conv.bias is not None:
            netG.output.conv.bias.zero_()


def unit_variance_start(netG: nn.Module, train_set, trainer, args: argparse.Namespace, dist, main: bool) -> None:
    """Rescale a fresh ``--denoise`` generator's convs to unit-variance outputs on a few training samples
    (``base_networks.scale_to_unit_variance``; the reconstruction conv is left as it is, zero with ``--residual``).
    RBPN's original init makes the recurrent features explode with nFrames at scale 1; SR training keeps the
    original init. Every rank computes the same samples; rank 0's weights are then broadcast to be sure."""
    import random

    import torch

    import training
    from base_networks import scale_to_unit_variance

    rng = random.Random(args.seed)
    indices = sorted(rng.sample(range(len(train_set)), min(8, len(train_set))))
    train_set.reseed(args.seed)
    batch = torch.utils.data.default_collate([train_set[i] for i in indices])
    inp, _, neighbours, flows, _ = training.to_device(batch, dist.device, args.channels_last)
    if trainer.flow_fn is not None:
        flows = trainer.flow_fn(inp, neighbours)
    was_training = netG.training
    netG.eval()
    try:
        changed = scale_to_unit_variance(netG, lambda: netG(inp, neighbours, flows), skip=[netG.output.conv])
    finally:
        netG.train(was_training)
    if dist.world_size > 1:
        for tensor in netG.state_dict().values():
            torch.distributed.broadcast(tensor, src=0)
    if main:
        logger.info(f"--denoise from scratch: {changed} conv rescalings to unit-variance features on {len(indices)} "
                    "training samples (RBPN's init lets its recurrent features explode at scale 1)")


def model_config(args: argparse.Namespace, num_channels: int = 3) -> Dict:
    """The generator's config (``rbpn.from_config``): ``Net``, or ``Net2`` for ``--denoise`` with a factor > 1."""
    arch = "Net2" if args.denoise and args.upscale_factor > 1 else "Net"
    return dict(num_channels=num_channels, base_filter=args.base_filter, feat=args.feat, num_stages=args.num_stages,
                n_resblock=args.n_resblock, nFrames=args.nFrames, scale_factor=args.upscale_factor, arch=arch)


def best_extra(args: argparse.Namespace) -> Dict[str, Any]:
    """What the best generator checkpoint records besides the scores: ``generator_extra`` for ``--denoise`` (its
    ``residual`` is the base, "frame" or "mean"), else the bicubic method of ``--residual`` (None without it)."""
    return generator_extra(args) if args.denoise else {"residual": residual_upscale(args)}


def denoise_record(args: argparse.Namespace) -> Dict[str, Any]:
    """The preprocessing and targets of a ``--denoise`` run, recorded as ``denoise`` in its checkpoints so that the
    tester prepares its input movies the same way (``channel`` None = the first .asd channel)."""
    return {"target": args.target, "warping": bool(args.warping), "flows": args.flows, "level": bool(args.level),
            "channel": args.channel, "normalisation": NORMALISATION, "residual_base": args.residual_base,
            "temporal_bin": list(args.temporal_bin), "spatial_scale": list(args.spatial_scale)}


def generator_extra(args: argparse.Namespace) -> Dict[str, Any]:
    """Entries every generator checkpoint and training state of this run records besides its config."""
    if not args.denoise:
        return {}
    extra: Dict[str, Any] = {"denoise": denoise_record(args)}
    if args.residual:
        extra["residual"] = args.residual_base  # the tester adds G's output to the frame or the frames' mean
    return extra


def adopt_denoise_record(args: argparse.Namespace, state: Dict) -> List[str]:
    """A resumed ``--denoise`` run keeps the data options its training state recorded, so that the recorded
    preprocessing stays true; returns the options that differed on the command line (e.g. "--target median")."""
    recorded = state.get("denoise") or {}
    changed = []
    for key in ("target", "warping", "flows", "level", "channel", "residual_base"):
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


# ------------------------------------------------------------------------------------------------------------------
# --denoise data


@dataclass
class PreparedMovie:
    """One movie read with ``scans.read_movie`` and normalised with ``denoise_data.preprocess``."""

    path: str
    frames: np.ndarray  # float32 (T, H, W, C) in [0, 1]
    blank: List[int]
    normalisation: denoise_data.Normalisation
    channel: str

    @property
    def channels(self) -> int:
        return int(self.frames.shape[3])

    def describe(self) -> str:
        t, h, w, c = self.frames.shape
        norm = self.normalisation
        unit = f" {norm.unit}" if norm.unit else ""
        levelled = "levelled, " if norm.levelled else ""
        return (f"{self.path}: {t} frames of {w}x{h} px, {c} channel{'s' if c > 1 else ''} ({self.channel}), "
                f"{len(self.blank)} blank; {levelled}[{norm.lo:.6g}, {norm.hi:.6g}]{unit} -> [0, 1]")


def read_movies(path: str, option: str, args: argparse.Namespace) -> List[PreparedMovie]:
    """Every movie at ``path`` (``scans.find_movies``), read with ``--channel`` and preprocessed with ``--level``.

    All movies must have the same number of channels. Errors name ``option`` and the movie.
    """
    import denoise_data
    import scans

    try:
        paths = scans.find_movies(path)
    except UserError as exc:
        raise UserError(f"{option}: {exc}") from None
    movies = []
    for movie_path in paths:
        movie = scans.read_movie(movie_path, channel=args.channel)  # its errors name the file
        try:
            frames, norm, blank = denoise_data.preprocess(movie.frames, level=args.level, unit=movie.unit,
                                                          extra_blank=movie.blank)
        except UserError as exc:
            raise UserError(f"{option} {movie_path}: {exc}") from None
        movies.append(PreparedMovie(movie_path, frames, blank, norm, movie.channel))
    kinds = {m.channels: m for m in movies}
    if len(kinds) > 1:
        shown = "; ".join(f"{m.path} has {m.channels} channel{'s' if m.channels > 1 else ''}"
                          for m in kinds.values())
        raise UserError(f"{option}: the movies mix grey and colour data ({shown}); train on one kind: keep them in "
                        "separate folders")
    return movies


def augmented_movies(movies: List[PreparedMovie], bins: List[int], scales: List[float]) -> List[PreparedMovie]:
    """The training movies for every combination of ``--temporal_bin`` (``denoise_data.temporal_bin``) and
    ``--spatial_scale`` (``denoise_data.spatial_scale``); (1, 1) is the movies as they are. A version too short or
    too small for any sample is left to the dataset, which skips it with a warning."""
    import denoise_data

    out = []
    for factor in sorted(set(bins)):
        binned = [(m, *denoise_data.temporal_bin(m.frames, m.blank, factor)) for m in movies]
        for scale in sorted(set(scales), reverse=True):
            for m, frames, blank in binned:
                if not len(frames):
                    continue
                frames = denoise_data.spatial_scale(frames, scale)
                tag = "".join(([f"#bin{factor}"] if factor > 1 else []) + ([f"#scale{scale:g}"] if scale < 1 else []))
                out.append(PreparedMovie(m.path + tag, frames, blank, m.normalisation, m.channel))
    if not out:
        raise UserError(f"--temporal_bin {' '.join(map(str, bins))}: every movie is shorter than one bin")
    return out


def check_movie_lengths(movies: List[PreparedMovie], option: str, args: argparse.Namespace, n_frames: int) -> None:
    """Refuse movies that are all shorter than one sample's window of consecutive frames."""
    import denoise_data

    needed = denoise_data.window_length(args.target, n_frames)
    longest = max(movies, key=lambda m: m.frames.shape[0])
    count = longest.frames.shape[0]
    if count >= needed:
        return
    which = f"{option} {longest.path}: the movie has" if len(movies) == 1 else \
        f"{option}: every movie is too short (the longest, {longest.path}, has"
    close = "" if len(movies) == 1 else ")"
    raise UserError(f"{which} {count} frames{close}, but --target {args.target} with --nFrames {n_frames} needs "
                    f"{needed} consecutive frames per sample; use longer movies or a smaller --nFrames")


def build_denoise_set(movies: List[PreparedMovie], args: argparse.Namespace, config: Dict, training: bool,
                      option: str) -> denoise_data.DenoiseDataset:
    """A ``DenoiseDataset`` of the movies: random patches and augmentation for training, whole frames otherwise.

    The dataset's warnings (a movie skipped for want of consecutive non-blank frames) go to the log.
    """
    import denoise_data

    check_movie_lengths(movies, option, args, config["nFrames"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            data = denoise_data.DenoiseDataset(
                [m.frames for m in movies], blanks=[m.blank for m in movies], names=[m.path for m in movies],
                n_frames=config["nFrames"], target=args.target, patch_size=args.patch_size if training else 0,
                training=training, data_augmentation=args.data_augmentation and training, warping=args.warping,
                flows=args.flows, flow_cache=args.flow_cache, flow_threads=args.flow_threads,
                base=args.residual_base if args.residual else "frame",
            )
        except UserError as exc:
            raise UserError(f"{option}: {exc}") from None
    for warning in caught:
        logger.warning(f"{option}: {warning.message}")
    return data


def check_movie_channels(movies: List[PreparedMovie], option: str, channels: int, what: str) -> None:
    """Refuse movies whose channel count differs from the generator's (``what`` names the generator)."""
    def kind(n: int) -> str:
        return f"{'grey' if n == 1 else 'colour'} ({n} channel{'s' if n > 1 else ''})"

    if movies[0].channels != channels:
        raise UserError(f"{option}: the movies are {kind(movies[0].channels)} but {what} is {kind(channels)}; use "
                        "movies of the same kind")


# ------------------------------------------------------------------------------------------------------------------


def resolve_pretrained(args: argparse.Namespace) -> str:
    """The original loads ``save_folder + pretrained_sr``; also accept a plain path."""
    for path in (args.pretrained_sr, os.path.join(args.save_folder, args.pretrained_sr)):
        if os.path.isfile(path):
            return path
    raise UserError(f"--pretrained: {args.pretrained_sr!r} not found (nor in --save_folder {args.save_folder!r}); "
                    "download RBPN_4x.pth (see weights/README.md) or pass the file with --pretrained_sr PATH")


def init_net2_from_sr(netG: nn.Module, source: str) -> bool:
    """Initialise a denoising ``Net2`` from a super-resolution RBPN of the same factor, as the fork did (x2): load
    every tensor but ``output.conv.weight`` (its kernel differs), which keeps its fresh initialisation. Returns False,
    loading nothing, unless the keys are the same and every other shape matches."""
    import checkpoint

    skipped = "output.conv.weight"
    sd, _ = checkpoint.read_checkpoint(source)
    expected = netG.state_dict()
    if set(sd) != set(expected) or any(tuple(sd[k].shape) != tuple(v.shape) for k, v in expected.items()
                                       if k != skipped):
        return False
    missing, unexpected = netG.load_state_dict({k: v for k, v in sd.items() if k != skipped}, strict=False)
    if list(missing) != [skipped] or unexpected:  # cannot happen after the checks above
        raise checkpoint.CheckpointError(f"checkpoint {source}: partial load left {missing} / {unexpected}")
    return True


def load_pretrained(netG: nn.Module, source: str, args: argparse.Namespace, config: Dict, main: bool) -> Optional[Dict]:
    """Load ``--pretrained`` weights into G strictly; returns the checkpoint's meta (None for a plain state_dict).

    With ``--denoise`` the checkpoint must be a denoiser for the data's channels (``checkpoint.build_generator``'s
    one-line errors), except that a ``Net2`` may start from a super-resolution RBPN of its factor and channels
    (``init_net2_from_sr``).
    """
    import checkpoint

    if args.denoise:
        expect = {"task": "denoise", "num_channels": config["num_channels"]}
        try:
            checkpoint.build_generator(source, expect=expect)
        except checkpoint.CheckpointError:
            if config.get("arch") != "Net2" or not init_net2_from_sr(netG, source):
                raise
            if main:
                logger.info(f"initialised the denoising Net2 x{config['scale_factor']} from the super-resolution "
                            f"checkpoint {source}: every tensor but output.conv.weight (the strided output conv "
                            "keeps its fresh initialisation)")
            return None
    return checkpoint.load_into(netG, source, what="generator")


def build_criterion(args: argparse.Namespace):
    from SRGAN.loss import GeneratorLoss

    if args.perceptual_weight == 0:
        vgg = "random"  # not built: no VGG is needed without the perceptual term
    elif args.vgg_weights:
        if not os.path.isfile(args.vgg_weights):
            raise UserError(f"--vgg_weights: {args.vgg_weights!r} does not exist")
        vgg = args.vgg_weights
    else:
        vgg = args.vgg
    return GeneratorLoss(vgg=vgg, image_weight=args.mse_weight, adversarial_weight=args.adv_weight,
                         perception_weight=args.perceptual_weight, tv_weight=args.tv_weight)


def check_data_dir(args: argparse.Namespace) -> None:
    """A missing dataset is a one-line error that says how to get one."""
    import data

    list_path = os.path.join(args.data_dir, args.file_list)
    if os.path.isfile(list_path) or (os.path.exists(args.data_dir) and data.uses_video_folder(args.data_dir,
                                                                                             args.file_list)):
        return
    raise UserError(f"training data not found: neither {list_path!r} nor videos / frame folders in "
                    f"{args.data_dir!r}. Fetch a dataset with `python DatasetFetcher.py` (or build a small one with "
                    "`python DatasetFetcher.py --sample`), or point --data_dir at your own videos")


def build_train_set(args: argparse.Namespace, config: Dict, movies: Optional[List[PreparedMovie]] = None):
    """The training set: ``DenoiseDataset`` of ``movies`` with ``--denoise``, else the SR datasets of ``data``."""
    import data

    if args.denoise:
        return build_denoise_set(augmented_movies(movies, args.temporal_bin, args.spatial_scale), args, config, True,
                                 "--data_dir")
    return data.get_training_set(
        args.data_dir, args.nFrames, args.upscale_factor, args.data_augmentation, args.file_list,
        args.other_dataset, args.patch_size, args.future_frame, degradation=args.degradation,
        flow_cache=args.flow_cache, flow_threads=args.flow_threads,
    )


def build_eval_set(args: argparse.Namespace, config: Dict):
    """Whole-frame evaluation set: a frame list (``--eval_file_list``) or a video / frame folder, no augmentation;
    with ``--denoise`` a ``DenoiseDataset`` of the movies at ``--eval_dir``, with the training's target.

    With ``--eval_max_frames N`` only N evenly spaced samples are kept.
    """
    import torch

    import data
    import dataset

    if not args.eval_dir:
        return None
    if not os.path.exists(args.eval_dir):
        raise UserError(f"--eval_dir {args.eval_dir!r} does not exist")
    common = dict(degradation=args.eval_degradation, flow_cache=args.flow_cache, flow_threads=args.flow_threads)
    if args.denoise:
        movies = read_movies(args.eval_dir, "--eval_dir", args)
        check_movie_channels(movies, "--eval_dir", config["num_channels"], "the generator")
        for movie in movies:
            logger.info(f"evaluation movie {movie.describe()}")
        eval_set = build_denoise_set(movies, args, config, False, "--eval_dir")
    elif args.eval_file_list:
        eval_set = data.get_test_set(args.eval_dir, config["nFrames"], config["scale_factor"], args.eval_file_list,
                                     True, args.future_frame, **common)
    else:
        eval_set = dataset.VideoFolderDataset(args.eval_dir, config["nFrames"], config["scale_factor"], False, 0,
                                              args.future_frame, training=False, **common)
    if args.eval_max_frames and len(eval_set) > args.eval_max_frames:
        n = args.eval_max_frames
        step = len(eval_set) / n
        eval_set = torch.utils.data.Subset(eval_set, [int(i * step + step / 2) for i in range(n)])
    check_eval_frames(eval_set, args.eval_dir, 1 if args.denoise else config["scale_factor"])
    return eval_set


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
    frame folder) used, or each listed frame; for ``--denoise`` each movie used."""
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


def gan_drop_last(args: argparse.Namespace, netD: nn.Module, train_set, scale: int, world_size: int) -> bool:
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


def wrap_parallel(model: nn.Module, args: argparse.Namespace, dist: training.DistInfo) -> nn.Module:
    import torch
    from torch import nn

    if dist.distributed:
        ids = [dist.device.index] if dist.device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(model, device_ids=ids)
    if args.useDataParallel and dist.device.type == "cuda" and torch.cuda.device_count() > 1:
        return nn.DataParallel(model, device_ids=list(range(min(args.gpus, torch.cuda.device_count()))))
    return model


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# ------------------------------------------------------------------------------------------------------------------


def save_checkpoints(trainer: training.Trainer, args, config: Dict, epoch: int, best: Dict,
                     state_extra: Optional[Dict] = None) -> str:
    """Write netG/netD (plain state_dicts, the original's names) then the full training state (plus ``state_extra``);
    prune old states. A ``--denoise`` netG is written in the project format, with its config and ``denoise`` record
    (the original scripts cannot run a denoiser anyway)."""
    import checkpoint
    import training

    scale = config["scale_factor"]
    folder = args.save_folder
    netG = training.unwrap(trainer.netG)
    if args.denoise:
        checkpoint.save_generator(training.generator_path(folder, scale, epoch), netG, config,
                                  extra=dict(generator_extra(args), epoch=epoch))
    else:
        checkpoint.save_plain_state_dict(training.generator_path(folder, scale, epoch), netG)
    if trainer.netD is not None:
        netD = training.unwrap(trainer.netD)
        checkpoint.save_plain_state_dict(training.discriminator_path(folder, scale, epoch), netD)
    path = training.state_path(folder, scale, epoch)
    extra = dict(state_extra or {}, args=vars(args), best=best, rng=training.rng_states())
    trainer.save_state(path, config, epoch, extra=extra)
    training.prune_states(folder, scale, args.keep_last)
    return path


def lr_decay_due(epoch: int, args: argparse.Namespace) -> bool:
    step = args.lr_step if args.lr_step > 0 else args.nEpochs / 2
    return (epoch + 1) % step == 0


def train(args: argparse.Namespace, dist: training.DistInfo) -> int:
    import torch

    import checkpoint
    import rbpn
    import training

    main = dist.is_main
    if not args.denoise:
        check_data_dir(args)  # before anything is built or written
    log_dir = args.log_dir or args.save_folder
    if main:
        check_writable_folder(args.save_folder, "--save_folder")
        if log_dir != args.save_folder:
            check_writable_folder(log_dir, "--log_dir")
    state = None
    if args.resume:
        path = args.resume
        if path == "auto":
            path = training.find_latest_state(args.save_folder, args.upscale_factor)
        state = training.read_training_state(path)
        check_resumed_task(state, path, args)
    adopted = adopt_denoise_record(args, state) if state and args.denoise else []
    movies = read_movies(args.data_dir, "--data_dir", args) if args.denoise else None
    channels = movies[0].channels if movies else 3
    config = dict(state["config"]) if state else model_config(args, channels)
    if state and movies:
        check_movie_channels(movies, "--data_dir", config["num_channels"], f"the generator of {path}")
    if state and "residual" in (state.get("args") or {}):
        args.residual = bool(state["args"]["residual"])  # a resumed run keeps its generator's output mode
    if state and dict({"arch": "Net"}, **config) != model_config(args, channels) and main:
        logger.warning(f"--resume: using the checkpoint's model configuration {config}")
    args.nFrames = config["nFrames"]  # the data follows the generator (a resumed run keeps its nFrames)
    scale = config["scale_factor"]
    out_scale = checkpoint.generator_output_scale(config)
    state_extra = generator_extra(args)
    if movies:
        state_extra["denoise_movies"] = [{"path": m.path, "frames": int(m.frames.shape[0]), "blank": list(m.blank),
                                          "normalisation": m.normalisation.to_dict()} for m in movies]
    run_log = logger.RunLogger(log_dir, enabled=main, resume_epoch=state["epoch"] if state else None)
    try:
        if main:
            for folder in dict.fromkeys((args.save_folder, log_dir)):
                remove_stale_temps(folder)
            logger.info(f"iSeeBetterTrain run {args.prefix!r}, options: {json.dumps(vars(args), sort_keys=True)}")
            logger.info(f"device {dist.device}, world size {dist.world_size}, precision {args.precision}, "
                        f"loss {args.loss}")
            for change in adopted:
                logger.warning(f"--resume: {path} continues with its recorded data option {change}")
            for movie in movies or []:
                logger.info(f"training movie {movie.describe()}")

        # Models (weights initialised from the seed, so every rank builds the same ones).
        training.seed_everything(args.seed)
        netG = rbpn.from_config(config)
        if args.denoise and args.residual and not args.pretrained and not state:
            start_as_identity(netG)
        if args.grad_checkpoint:
            netG.set_grad_checkpointing(True)
        if args.pretrained and not state:
            source = resolve_pretrained(args)
            meta = load_pretrained(netG, source, args, config, main)
            if main:
                logger.info(f"loaded pretrained generator {source}")
            if meta is not None and meta.get("residual") and not args.residual and not args.denoise:
                args.residual = True
                if main:
                    logger.info(f"{source} was trained with --residual: this run uses --residual too")
            method = meta.get("residual") if meta is not None else None
            if args.residual and isinstance(method, str) and method != args.degradation and main:
                logger.warning(f"{source} adds a {method} bicubic upscale to its output, but this run's "
                               f"--degradation {args.degradation} makes it a {args.degradation} one")
        netD = None
        criterion = None
        if args.loss == "gan":
            from SRGAN.model import Discriminator

            netD = Discriminator(num_channels=config["num_channels"])
            criterion = build_criterion(args).to(dist.device)
        if main:
            logger.info(f"generator parameters: {count_parameters(netG):,} {config}")
            if netD is not None:
                logger.info(f"discriminator parameters: {count_parameters(netD):,}")
            logger.debug(str(netG))
        layout = torch.channels_last if args.channels_last else torch.contiguous_format
        netG = wrap_parallel(netG.to(dist.device, memory_format=layout), args, dist)
        if netD is not None:
            netD = wrap_parallel(netD.to(dist.device, memory_format=layout), args, dist)
        flow_fn = step_flow_fn(args, dist.device, main)
        prepare_fn = None
        if flow_fn is not None and args.denoise:
            prepare_fn = training.denoise_step_inputs(args.warping, args.residual_base if args.residual else None)
        trainer = training.Trainer(netG, netD, criterion, args.loss, args.lr, dist, args.precision, args.residual,
                                   args.channels_last, flow_fn=flow_fn, prepare_fn=prepare_fn)

        start_epoch, best = args.start_epoch, {}
        if state:
            trainer.load_state(state)
            training.set_rng_states(state["rng"])
            start_epoch = state["epoch"] + 1
            best = training.best_after_resume(args.save_folder, scale, dict(state.get("best") or {}), state["epoch"])
            if main:
                lr = trainer.optG.param_groups[0]["lr"]
                logger.info(f"resumed from {path} (epoch {state['epoch']}, G lr {lr:g})")
        if start_epoch > args.nEpochs:
            if main:
                logger.info(f"nothing to do: the checkpoint is at epoch {start_epoch - 1}, --nEpochs {args.nEpochs}")
            return 0

        train_set = build_train_set(args, config, movies)
        if flow_fn is not None:
            train_set.skip_flows = True  # the DataLoader does no flow work
        if args.denoise and not args.pretrained and not state:
            unit_variance_start(training.unwrap(netG), train_set, trainer, args, dist, main)
        check_vgg_size(args, train_set, out_scale)
        drop_last = netD is not None and gan_drop_last(args, netD, train_set, out_scale, dist.world_size)
        if drop_last and main:
            logger.info("GAN training on small patches: the last batch of 1 sample is skipped every epoch (the "
                        "discriminator's BatchNorm needs more than 1 value per channel)")
        loader = training.make_train_loader(train_set, args.batchSize, args.threads, dist, args.seed, drop_last)
        eval_set = build_eval_set(args, config) if main else None
        eval_loader = None
        if eval_set is not None:
            eval_loader = torch.utils.data.DataLoader(eval_set, batch_size=args.testBatchSize, shuffle=False,
                                                      num_workers=min(args.threads, 2))
        if main:
            logger.info(f"training samples: {len(train_set)}, batches per epoch: {len(loader)}")
            if eval_set is None:
                logger.info("no --eval_dir: validation skipped, no best checkpoint is kept")
            else:
                logger.info(f"evaluation samples: {len(eval_set)}")
        label = metric_label(args, config)
        if eval_loader is not None and args.denoise:
            log_denoise_validation(args, eval_loader, dist, label.split()[0])

        last_saved = None
        for epoch in range(start_epoch, args.nEpochs + 1):
            training.set_loader_epoch(loader, args.seed, epoch, dist)
            lr = trainer.optG.param_groups[0]["lr"]
            averages = trainer.train_epoch(loader, epoch, show_progress=args.progress,
                                           max_steps=args.max_steps_per_epoch)
            record = {"epoch": epoch, "lr": lr, **averages}
            if lr_decay_due(epoch, args):
                new_lr = trainer.decay_lr(args.lr_gamma, include_d=args.lr_decay_d)
                if main:
                    logger.info(f"learning rate decayed to {new_lr:g}")
            # Save before validating: a failing validation must not lose the epoch. The best generator follows.
            save_due = epoch % args.snapshots == 0 or epoch == args.nEpochs
            if main and save_due:
                last_saved = save_checkpoints(trainer, args, config, epoch, best, state_extra)
            if eval_loader is not None and (epoch % args.eval_every == 0 or epoch == args.nEpochs):
                record.update(training.validate(training.unwrap(netG), eval_loader, dist.device, scale,
                                                args.precision, residual_upscale(args), args.eval_max_frames,
                                                args.channels_last, denoise=args.denoise))
            if main:
                if "val_psnr" in record and record["val_psnr"] > best.get("val_psnr", float("-inf")):
                    best = {"epoch": epoch, "val_psnr": record["val_psnr"], "val_ssim": record.get("val_ssim")}
                    checkpoint.save_generator(training.best_path(args.save_folder, scale), training.unwrap(netG),
                                              config, extra=dict(best, **best_extra(args)))
                run_log.log_epoch(record)
                logger.info(epoch_line(record, last_saved if save_due else None, label))
            training.barrier(dist)
        if main:
            if best:
                logger.info(f"best: epoch {best['epoch']}, {label} {best['val_psnr']:.3f} dB -> "
                            f"{training.best_path(args.save_folder, scale)}")
            logger.info(f"done; logs in {log_dir}")
        return 0
    finally:
        run_log.close()


def metric_label(args: argparse.Namespace, config: Dict) -> str:
    """How the validation PSNR is named in the log: Y-PSNR (RGB) or PSNR (grey), and its target with --denoise."""
    name = "Y-PSNR" if config["num_channels"] == 3 else "PSNR"
    return f"{name} vs the {args.target} target" if args.denoise else name


def log_denoise_validation(args: argparse.Namespace, eval_loader, dist: training.DistInfo, psnr: str) -> None:
    """Say what ``--denoise`` validation measures, and log the do-nothing baseline: the raw input frame scored
    against the same targets (a denoiser that helps scores above it). ``psnr`` names the PSNR (PSNR / Y-PSNR)."""
    from torch import nn

    import training

    class RawInput(nn.Module):
        def forward(self, x, neighbours, flows):
            return x

    class ZeroCorrection(nn.Module):
        def forward(self, x, neighbours, flows):
            return x * 0

    logger.info(f"validation (--denoise): {psnr}/SSIM on the [0, 1] scale against the --target {args.target} "
                f"target, {TARGET_MEANING[args.target]}")
    scores = training.validate(RawInput(), eval_loader, dist.device, 1, "fp32", None, args.eval_max_frames,
                               args.channels_last, denoise=True)
    if scores:
        logger.info(f"validation baseline, the raw input frame against the same targets: {psnr} "
                    f"{scores['val_psnr']:.3f} dB, SSIM {scores['val_ssim']:.4f}")
    if args.residual and args.residual_base == "mean":
        scores = training.validate(ZeroCorrection(), eval_loader, dist.device, 1, "fp32", "mean",
                                   args.eval_max_frames, args.channels_last, denoise=True)
        if scores:
            logger.info(f"validation baseline, the plain mean of the frames G sees (G's start): {psnr} "
                        f"{scores['val_psnr']:.3f} dB, SSIM {scores['val_ssim']:.4f}")


def epoch_line(record: Dict, saved: Optional[str], metric: str = "Y-PSNR") -> str:
    parts = [f"epoch {record['epoch']}"]
    for key, label in (("g_loss", "G"), ("d_loss", "D"), ("d_x", "D(x)"), ("d_g_z", "D(G(z))")):
        if key in record:
            parts.append(f"{label} {record[key]:.4f}")
    if "val_psnr" in record:
        parts.append(f"val {metric} {record['val_psnr']:.3f} dB SSIM {record['val_ssim']:.4f}")
    parts.append(f"{record['samples_per_s']:.2f} samples/s")
    if saved:
        parts.append(f"saved {saved}")
    return ", ".join(parts)


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    logger.initLogger(args.debug)
    import training

    dist = training.setup_distributed(args.gpu_mode, args.dist_backend)
    args.precision = training.resolve_precision(args.precision, dist.device)
    if args.precision == "fp16" and dist.device.type == "cpu":
        logger.warning("fp16 autocast on CPU runs without a GradScaler; bf16 is the safer CPU choice")
    try:
        return train(args, dist)
    finally:
        training.cleanup_distributed()


if __name__ == "__main__":
    run_cli(main)
