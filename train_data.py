"""A training run's data: the training set and its loader (random patches: SR frames of ``data``, or the
``--denoise`` movies), the whole-frame evaluation set of ``--eval_dir``, and the log lines that say what validation
measures.
"""

from __future__ import annotations

import argparse
import os
from contextlib import contextmanager
from typing import Dict, Iterator, List, Optional, Tuple

import torch
from torch import nn

import checkpoint
import data
import dataset
import logger
import training
from checks import check_eval_frames, check_vgg_size, gan_drop_last
from denoise_data import mean_base
from denoise_movies import PreparedMovie, augmented_movies, build_denoise_set, check_movie_channels, read_movies
from errors import UserError

# What the validation target of each --target is, for the log.
TARGET_MEANING = {
    "n2n": "a neighbouring noisy scan (independent noise): a no-reference proxy, not a clean ground truth",
    "select": "the window's scan with the least streak noise: a no-reference proxy, not a clean ground truth",
    "median": "the median of nFrames aligned scans between the network's frames: a less noisy proxy, still no "
              "clean ground truth",
    "interleaved": "the mean of the two scans just before and after the input, which the network never sees (its "
                   "frames are 2 scans apart): the no-reference score of iSeeBetterTest.py --denoise",
}


def build_train_set(args: argparse.Namespace, config: Dict, movies: Optional[List[PreparedMovie]] = None):
    """The training set: ``DenoiseDataset`` of ``movies`` with ``--denoise``, else the SR datasets of ``data``."""
    if args.denoise:
        return build_denoise_set(augmented_movies(movies, args.temporal_bin, args.spatial_scale), args, config, True,
                                 "--data_dir")
    return data.get_training_set(
        args.data_dir, args.nFrames, args.upscale_factor, args.data_augmentation, args.file_list,
        args.other_dataset, args.patch_size, args.future_frame, degradation=args.degradation,
        flow_cache=args.flow_cache, flow_threads=args.flow_threads,
    )


def build_train_loader(args: argparse.Namespace, train_set, netD: Optional[nn.Module], config: Dict,
                       dist: training.DistInfo) -> torch.utils.data.DataLoader:
    """The training loader, after the checks on the size of G's outputs: the perceptual VGG's smallest input, and
    batches D's BatchNorm can train on (a last batch of 1 sample is skipped when needed)."""
    out_scale = checkpoint.generator_output_scale(config)
    check_vgg_size(args, train_set, out_scale)
    drop_last = netD is not None and gan_drop_last(args, netD, train_set, out_scale, dist.world_size)
    if drop_last and dist.is_main:
        logger.info("GAN training on small patches: the last batch of 1 sample is skipped every epoch (the "
                    "discriminator's BatchNorm needs more than 1 value per channel)")
    return training.make_train_loader(train_set, args.batchSize, args.threads, dist, args.seed, drop_last)


def build_eval_set(args: argparse.Namespace, config: Dict):
    """Whole-frame evaluation set: a frame list (``--eval_file_list``) or a video / frame folder, no augmentation;
    with ``--denoise`` a ``DenoiseDataset`` of the movies at ``--eval_dir``, with the training's target.

    With ``--eval_max_frames N`` only N evenly spaced samples are kept.
    """
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


def build_eval_loader(args: argparse.Namespace, config: Dict) -> Optional[torch.utils.data.DataLoader]:
    """The loader of ``build_eval_set`` (None without ``--eval_dir``)."""
    eval_set = build_eval_set(args, config)
    if eval_set is None:
        return None
    return torch.utils.data.DataLoader(eval_set, batch_size=args.testBatchSize, shuffle=False,
                                       num_workers=min(args.threads, 2))


def log_data(train_set, loader, eval_loader: Optional[torch.utils.data.DataLoader]) -> None:
    """The sizes of the training and evaluation sets."""
    logger.info(f"training samples: {len(train_set)}, batches per epoch: {len(loader)}")
    if eval_loader is None:
        logger.info("no --eval_dir: validation skipped, no best checkpoint is kept")
    else:
        logger.info(f"evaluation samples: {len(eval_loader.dataset)}")


def metric_label(args: argparse.Namespace, config: Dict) -> str:
    """How the validation PSNR is named in the log: Y-PSNR (RGB) or PSNR (grey), and its target with --denoise."""
    name = "Y-PSNR" if config["num_channels"] == 3 else "PSNR"
    return f"{name} vs the {args.target} target" if args.denoise else name


class RawInput(nn.Module):
    """The do-nothing denoiser: the input frame as it is."""

    def forward(self, x, neighbours, flows):
        return x


class ZeroOutput(nn.Module):
    """An output of zeros at ``scale`` times the input's size: with a residual upscale (SR) or base (``--denoise``)
    added, validation scores that upscale or base alone."""

    def __init__(self, scale: int = 1) -> None:
        super().__init__()
        self.scale = scale

    def forward(self, x, neighbours, flows):
        return x.new_zeros(x.shape[0], x.shape[1], x.shape[2] * self.scale, x.shape[3] * self.scale)


class TemporalMean(nn.Module):
    """The mean of the frames the network sees (the input and its neighbours), as ``--residual_base mean``."""

    def forward(self, x, neighbours, flows):
        return mean_base(x, neighbours)


@contextmanager
def flows_skipped(eval_loader, skip: bool = True) -> Iterator[None]:
    """Zero flows in the evaluation set while a baseline that does not use them is scored (no pyflow work)."""
    eval_set = eval_loader.dataset
    eval_set = eval_set.dataset if isinstance(eval_set, torch.utils.data.Subset) else eval_set
    before = getattr(eval_set, "skip_flows", False)
    eval_set.skip_flows = skip or before
    try:
        yield
    finally:
        eval_set.skip_flows = before


def log_denoise_validation(args: argparse.Namespace, eval_loader, dist: training.DistInfo, psnr: str) -> None:
    """Say what ``--denoise`` validation measures, and log the do-nothing baseline: the raw input frame scored
    against the same targets (a denoiser that helps scores above it). ``psnr`` names the PSNR (PSNR / Y-PSNR)."""
    logger.info(f"validation (--denoise): {psnr}/SSIM on the [0, 1] scale against the --target {args.target} "
                f"target, {TARGET_MEANING[args.target]}")
    with flows_skipped(eval_loader):  # the targets keep their alignment flows; the input needs none
        scores = training.validate(RawInput(), eval_loader, dist.device, 1, "fp32", None, args.eval_max_frames,
                                   args.channels_last, denoise=True)
    if scores:
        logger.info(f"validation baseline, the raw input frame against the same targets: {psnr} "
                    f"{scores['val_psnr']:.3f} dB, SSIM {scores['val_ssim']:.4f}")


def validation_baseline(args: argparse.Namespace, eval_loader, dist: training.DistInfo, config: Dict
                        ) -> Tuple[str, Dict[str, float]]:
    """(name, scores) of the baseline a trained G must beat, scored by ``training.validate`` like G: the bicubic
    upscale of the LR input (``--eval_degradation``'s method) for super-resolution; with ``--denoise`` the temporal
    mean of the frames the network sees (warped with ``--warping``)."""
    if args.denoise:
        name, model, scale, residual = "temporal mean", TemporalMean(), 1, None
    else:
        scale = config["scale_factor"]
        name, model, residual = "bicubic", ZeroOutput(scale), args.eval_degradation
    with flows_skipped(eval_loader, skip=not (args.denoise and args.warping)):
        scores = training.validate(model, eval_loader, dist.device, scale, "fp32", residual, args.eval_max_frames,
                                   args.channels_last, denoise=args.denoise)
    return name, scores


def log_validation_baseline(args: argparse.Namespace, eval_loader, dist: training.DistInfo, config: Dict,
                            label: str) -> Optional[Tuple[str, Dict[str, float]]]:
    """Score ``validation_baseline`` once and log it, e.g. "baseline (bicubic): 27.100 dB Y-PSNR, SSIM 0.8000";
    returns (name, scores), None when nothing was scored."""
    name, scores = validation_baseline(args, eval_loader, dist, config)
    if not scores:
        return None
    line = f"baseline ({name}): {scores['val_psnr']:.3f} dB {label}, SSIM {scores['val_ssim']:.4f}"
    if args.denoise:
        line += ", the plain mean of the frames G sees"
        if args.residual and args.residual_base == "mean":
            line += " (G's start with --residual_base mean)"
    logger.info(line)
    return name, scores
