"""iSeeBetter tester: upscale any video or frame folder (``--upscale_only``), evaluate on HR clips, or denoise
consecutive SPM/AFM scans (``--denoise``).

Upscaling: ``python iSeeBetterTest.py -u --input clip.mp4 --output out/`` (default weights: the shipped
``weights/iSeeBetter_x4_psnr.pth``) writes ``out/clip/00001.png ...``, ``out/clip.mp4`` (source frame rate) and
``out/clip_compare.png`` (bicubic | SR).

Evaluation (the standard VSR protocol): every HR frame is modcropped, degraded (``--degradation matlab|pil``),
super-resolved and compared on the Y channel (PSNR, SSIM). ``--model bicubic`` evaluates the bicubic baseline.
Writes ``metrics.json``, ``per_frame.csv`` and, per clip, ``<clip>_psnr.png`` and ``<clip>_compare.png``.

Inputs: ``--input`` (a video file, a frame folder, or a folder of clip folders / videos), or the original's
``--data_dir`` + ``--file_list`` (one frame path per line relative to data_dir, e.g. ``foliage/001.png``; a line
may also name a whole clip folder).

Denoising: ``python iSeeBetterTest.py --denoise --input scan.asd --output out/ -m denoiser.pth`` normalises each
movie (``denoise_data.preprocess``), runs the denoising generator over nFrames windows (``inference.denoise_clip``)
(or, with ``--method auto``, the default, the best of the model and the classic methods by their SURE score on the
movie, ``denoise_methods``) and writes ``out/scan.npy`` (the input's units and shape), ``out/scan/00000.png ...``
(16-bit, from 0), ``out/scan.mp4``, ``out/scan_compare.png`` (raw | denoised | removed) and ``out/metrics.json``.

This script holds the options and ``main``; the jobs live in ``clips.py`` (which clips and frames are read, which
files are written, and the guards against overwriting), ``upscale.py`` (upscaling and evaluation) and
``denoise_job.py`` (``--denoise``).
"""

from __future__ import annotations

import argparse
import os
import time
from typing import List, Optional, Tuple

import logger
from errors import run_cli
from options import (
    DEFAULT_OVERLAP,
    DEFAULT_WEIGHTS,
    DEGRADATIONS,
    EDGE_MODES,
    FLOW_BACKENDS,
    PRECISIONS,
    PROJECT_ROOT,
    add_bool,
    check_positive,
)
from video_io import CODECS, PRESETS

# torch and the job modules built on it (clips, upscale, denoise_job) are imported in main, after the option checks,
# so that ``-h`` and option errors are instant.

TINY_TILE = 32  # LR tiles smaller than this (or mostly overlap) make tiled inference many times slower
# Tile overlaps under these change the output by more than 1% of its range near the seams: the largest |tiled - whole|
# on a random 64x64 frame, tiles 16-32 px, with the tiny test RBPN and the shipped models (docs/testing.md).
MIN_OVERLAP = 12  # super-resolution (tile centres kept): overlap 8 differs by up to 4.5%, 10 by 1.4%, 12 by 0.4%
MIN_OVERLAP_BLEND = 16  # --denoise (tiles cross-faded): overlap 12 differs by up to 2.2%, 14 by 2.1%, 16 by 1.0%
SEAM_ERROR = "49% with no overlap, 18% at 4 px, 4.5% at 8 px, 1.4% at 10 px"  # measured, super-resolution
SEAM_ERROR_BLEND = "42% with no overlap, 16% at 4 px, 6% at 8 px, 2% at 12-14 px"  # measured, --denoise
DEFAULT_DENOISE_WEIGHTS = os.path.join("weights", "iSeeBetter_denoise_afm.pth")  # relative to PROJECT_ROOT
MAX_FINETUNE_MINUTES = 1440  # --finetune: one day at most

# --------------------------------------------------------------------------------------------------------- options


def _add_model_options(p: argparse.ArgumentParser) -> None:
    model = p.add_argument_group("model")
    model.add_argument("-m", "--model", default=None,
                       help="generator checkpoint (original state_dict with/without 'module.', or project checkpoint); "
                            f"'bicubic' for the bicubic baseline (default: the shipped {DEFAULT_WEIGHTS})")
    model.add_argument("-s", "--upscale_factor", type=int, default=None,
                       help="super resolution upscale factor (default: the checkpoint's; 4 for bicubic)")
    model.add_argument("-r", "--residual", nargs="?", const="pil", choices=("pil", "matlab"), default=None,
                       help="add a bicubic upscale of the input to the output: -r = Pillow's (the original), "
                            "-r matlab; automatic for project checkpoints trained with --residual")
    model.add_argument("--nFrames", type=int, default=None, help="frames per window (default: the checkpoint's)")
    model.add_argument("--model_type", default="RBPN", help="only RBPN is supported")


def _add_input_options(p: argparse.ArgumentParser) -> None:
    inputs = p.add_argument_group("input and output")
    inputs.add_argument("-i", "--input", default=None,
                        help="video file, frame folder, or folder of clip folders/videos (overrides "
                             "--data_dir/--file_list)")
    inputs.add_argument("--data_dir", default="./Vid4", help="root of the frames named in --file_list")
    inputs.add_argument("--file_list", default="foliage_test.txt", help="list of frames (relative to --data_dir)")
    add_bool(inputs, "other_dataset", True, "file_list lines are frame paths; off: Vimeo septuplet folders, only the "
             "middle frame is evaluated")
    inputs.add_argument("-o", "--output", default="Results/", help="Location to save test results")
    inputs.add_argument("-u", "--upscale_only", action="store_true", help="Upscale mode - without downscaling.")
    add_bool(inputs, "save_frames", True, "save the SR frames as PNG when evaluating (always saved with "
             "--upscale_only)")
    add_bool(inputs, "progress", True, "show a tqdm progress bar per clip or movie")
    inputs.add_argument("-d", "--debug", action="store_true", help="Print debug spew.")


def _add_inference_options(p: argparse.ArgumentParser) -> None:
    run = p.add_argument_group("inference")
    run.add_argument("-c", "--gpu_mode", action="store_true", help="Use a CUDA compatible GPU (error if none)")
    run.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda or cuda:N")
    run.add_argument("--precision", choices=PRECISIONS, default="auto",
                     help="auto (bf16 where the CPU/GPU has native bf16, else fp16 on CUDA, fp32 on CPU), fp32, "
                          "bf16 (CPU or CUDA) or fp16 (CUDA) autocast")
    run.add_argument("--tile", type=int, default=0, help="LR tile size for bounded-memory inference (0 = whole frame)")
    run.add_argument("--tile_overlap", type=int, default=DEFAULT_OVERLAP, help="LR pixels shared by adjacent tiles")
    run.add_argument("--chop_forward", action="store_true",
                     help="the original's recursive quadrant chop (bounded memory); see also --tile")
    add_bool(run, "future_frame", True, "use past and future neighbours; off: past frames only")
    run.add_argument("--edge", choices=EDGE_MODES, default="centre",
                     help="neighbours beyond the clip ends: centre frame (original), reflect or clamp")
    run.add_argument("--flow_backend", choices=FLOW_BACKENDS, default="auto",
                     help="optical flow: cpp (exact C++ pyflow on the CPU), torch (batched pyflow.torch_flow, for "
                          "GPUs) or auto (torch when the model runs on CUDA, else cpp)")
    run.add_argument("--flow_device", default=None, help="device of the torch flow (default: the model's)")
    run.add_argument("--threads", type=int, default=0, help="threads for the optical flow (0 = all cores)")
    run.add_argument("--seed", type=int, default=123, help="random seed")
    run.add_argument("--testBatchSize", type=int, default=1, help="kept for compatibility (frames run one at a time)")
    run.add_argument("--gpus", type=int, default=1, help="kept for compatibility (inference uses one device)")


def _add_evaluation_options(p: argparse.ArgumentParser) -> None:
    score = p.add_argument_group("evaluation (without -u)")
    score.add_argument("--degradation", choices=DEGRADATIONS, default="matlab",
                       help="HR -> LR bicubic for evaluation: matlab (imresize, the published protocol) or pil "
                            "(training)")
    score.add_argument("--metric", choices=("y", "rgb"), default="y",
                       help="y: PSNR/SSIM on Y (BT.601); rgb: also the original's RGB PSNR (unclamped, s+1/s border)")
    score.add_argument("--crop_border", type=int, default=0, help="pixels removed on each side before measuring")
    score.add_argument("--skip_frames", type=int, default=0,
                       help="leave the first and last N frames out of the metrics")


def _add_video_options(p: argparse.ArgumentParser) -> None:
    video = p.add_argument_group("video output (--upscale_only with a video input)")
    video.add_argument("--codec", choices=tuple(CODECS), default="h264",
                       help="h264 (browser-playable mp4, default), h265 (smaller mp4) or ffv1 (lossless, mkv)")
    video.add_argument("--crf", type=int, default=18, help="quality for h264/h265: 0 (best) .. 51 (default 18)")
    video.add_argument("--preset", choices=PRESETS, default="medium", help="x264/x265 speed preset (default medium)")
    video.add_argument("--frames", default=None, metavar="START:END",
                       help="only frames START..END (1-based, inclusive, as the output names 00001.png...; either "
                            "may be left out: 101: or :50); audio is cut to match")
    video.add_argument("--resume", action="store_true",
                       help="continue an interrupted upscale: frames already written (complete, right size) are kept, "
                            "the others computed, then the video is assembled")


def _add_denoise_options(p: argparse.ArgumentParser) -> None:
    denoise = p.add_argument_group("denoising (--denoise): consecutive SPM/AFM scans or any movie")
    denoise.add_argument("--denoise", action="store_true",
                         help="denoise each movie of --input (.asd, .npy (T,H,W[,C]), frame folder or video) with a "
                              f"denoising generator (default -m: {DEFAULT_DENOISE_WEIGHTS}); writes <movie>.npy in the "
                              "input's units, 16-bit PNG frames, an mp4 preview, <movie>_compare.png and metrics.json")
    denoise.add_argument("--channel", default=None, metavar="NAME",
                         help=".asd channel to denoise: index or name (topography, error, phase; default: the one the "
                              "checkpoint was trained on, else the first)")
    denoise.add_argument("--keep_truncated", action="store_true",
                         help="an .asd file cut short: keep its complete frames instead of refusing it")
    denoise.add_argument("--level", dest="level", action="store_true", default=None,
                         help="subtract each scan line's median first (default: as the checkpoint was trained, else "
                              "on; --no-level for photographs and renderings)")
    denoise.add_argument("--no-level", dest="level", action="store_false", help=argparse.SUPPRESS)
    denoise.add_argument("--reference", default=None, metavar="CLEAN",
                         help="a clean movie of the input's shape and units: adds PSNR/SSIM of the output and of the "
                              "raw input against it to metrics.json")
    denoise.add_argument("--method", default="auto", metavar="NAME",
                         help="what makes the output: auto (default: the model and the classic methods are scored on "
                              "the movie itself (SURE) and the best is written), model, or a classic method: raw, "
                              "mean3 ... mean21, mean5+blur1.0, mean3+tv, mean3+nlm, auto-local (see docs/denoise.md)")
    denoise.add_argument("--tiff", action="store_true",
                         help="also write <movie>.tif: a float32 ImageJ stack in the input's units, with pixel size, "
                              "frame interval and a record of what made it (method, model hash, options, scores)")
    denoise.add_argument("--gwy", action="store_true",
                         help="also write <movie>.gwy (Gwyddion: one channel per frame, SI units, the same record)")
    denoise.add_argument("--pixel_size", type=float, default=None, metavar="SIZE",
                         help="lateral size of a pixel for --tiff/--gwy (default: the .asd header's, in nm)")
    denoise.add_argument("--pixel_unit", default="nm", help="unit of --pixel_size (default nm)")
    denoise.add_argument("--units", default=None, metavar="UNIT",
                         help="height unit for --tiff/--gwy when the input has none (.npy, images), e.g. nm")
    denoise.add_argument("--fps", type=float, default=None,
                         help="frame rate of the preview video and the TIFF's frame interval (default: the .asd "
                              "frame time, a video's rate, else 10)")
    denoise.add_argument("--finetune", type=float, default=0.0, metavar="MINUTES",
                         help="fine-tune a copy of the model on each movie itself for up to MINUTES (self-supervised, "
                              "stopped on held-out frame pairs) and offer it as method model-finetuned (default 0: "
                              "off; see docs/denoise.md)")
    add_bool(denoise, "eval", True, "score the output in metrics.json without a clean frame (an extra pass over the "
             "even frames; see README)")


def build_parser() -> argparse.ArgumentParser:
    """The options, by group. The original's options keep their names, short flags and defaults (unless their help
    says otherwise)."""
    p = argparse.ArgumentParser(description="iSeeBetter: upscale a video/frames (-u) or evaluate PSNR/SSIM on HR clips")
    _add_model_options(p)
    _add_input_options(p)
    _add_inference_options(p)
    _add_evaluation_options(p)
    _add_video_options(p)
    _add_denoise_options(p)
    return p


# ---------------------------------------------------------------------------------------------------- option checks


def default_model_path() -> str:
    """The shipped weights, found relative to the project (not the current folder)."""
    return os.path.join(PROJECT_ROOT, DEFAULT_WEIGHTS)


def default_denoise_model_path() -> str:
    """The default denoising weights, found relative to the project (not the current folder)."""
    return os.path.join(PROJECT_ROOT, DEFAULT_DENOISE_WEIGHTS)


def check_denoise_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Option errors of ``--denoise`` (options that only upscaling has, a missing --input); sets the default model."""
    if not args.input:
        parser.error("--denoise needs --input (a movie: .asd, .npy, frame folder or video; or a folder of movies)")
    for name in ("pixel_size", "fps"):
        value = getattr(args, name)
        if value is not None and not (0 < value < float("inf")):
            parser.error(f"--{name} must be a positive number, got {value}")
    if not 0 <= args.finetune <= MAX_FINETUNE_MINUTES:
        parser.error(f"--finetune must be 0 (off) to {MAX_FINETUNE_MINUTES} minutes, got {args.finetune}")
    upscaling = [name for name, given in (("-u/--upscale_only", args.upscale_only),
                                          ("-s/--upscale_factor", args.upscale_factor is not None),
                                          ("--frames", args.frames is not None), ("--resume", args.resume),
                                          ("--chop_forward", args.chop_forward)) if given]
    if upscaling:
        parser.error(f"{', '.join(upscaling)} only apply to upscaling; --denoise processes whole movies at their size "
                     "(use --tile for bounded memory)")
    if args.reference and not args.eval:
        parser.error("--reference is scored by the evaluation; drop --no-eval")
    if args.model is None:
        args.model = default_denoise_model_path()


def check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Option errors (naming the option) before anything is loaded; sets the default model."""
    for name in ("tile", "tile_overlap", "crop_border", "skip_frames", "threads"):
        if getattr(args, name) < 0:
            parser.error(f"--{name} must be >= 0, got {getattr(args, name)}")
    check_positive(parser, args, ("upscale_factor", "nFrames"))
    if args.tile and args.tile_overlap >= args.tile:
        parser.error(f"--tile_overlap ({args.tile_overlap}) must be smaller than --tile ({args.tile})")
    if args.denoise:
        check_denoise_args(parser, args)
    else:
        given = [f"--{name}" for name in ("channel", "reference") if getattr(args, name) is not None]
        given += ["--level/--no-level"] if args.level is not None else []
        given += ["--keep_truncated"] if args.keep_truncated else []
        given += [f"--method {args.method}"] if args.method != "auto" else []
        given += [f"--{name}" for name in ("tiff", "gwy") if getattr(args, name)]
        given += [f"--{name}" for name in ("pixel_size", "units", "fps") if getattr(args, name) is not None]
        given += ["--no-eval"] if not args.eval else []
        given += [f"--finetune {args.finetune:g}"] if args.finetune else []
        if given:
            parser.error(f"{', '.join(given)} only apply with --denoise")
    if args.model is None:
        args.model = default_model_path()


def tile_warning(tile: int, overlap: int, blend: bool = False) -> Optional[str]:
    """A warning when tiles are so small, or overlap so much, that tiled inference repeats most of its work, or when
    the overlap is too small for the output to match the whole frame (``blend``: tiles cross-faded, --denoise)."""
    if not tile:
        return None
    redundancy = (tile / (tile - overlap)) ** 2
    reasons = []
    if redundancy > 4:
        reasons.append(f"computes each pixel about {redundancy:.0f}x (tile step {tile - overlap} px)")
    if tile < TINY_TILE:
        reasons.append(f"runs the network once per {tile}x{tile} px tile (tiles under {TINY_TILE} px waste most of "
                       "each call)")
    least, error = (MIN_OVERLAP_BLEND, SEAM_ERROR_BLEND) if blend else (MIN_OVERLAP, SEAM_ERROR)
    parts = []
    if reasons:
        parts.append(f"{' and '.join(reasons)}: this is many times slower; use --tile 128 or more (or 0 = whole "
                     "frame) if memory allows")
    if overlap < least:
        parts.append(f"changes the output: with overlaps under {least} px, pixels near the tile seams differ from the "
                     f"whole-frame output by more than 1% of its range (measured: {error}); use --tile_overlap "
                     f"{least} or more")
    return f"--tile {tile} with --tile_overlap {overlap} {'; it also '.join(parts)}" if parts else None


def warn_about_options(args: argparse.Namespace) -> None:
    """Warnings for options that make the run slow, change its output or are ignored."""
    warning = tile_warning(args.tile, args.tile_overlap, blend=args.denoise)
    if warning:
        logger.warning(warning)
    if args.gpus > 1 or args.testBatchSize > 1:
        logger.warning("--gpus/--testBatchSize > 1 are ignored: inference runs one frame at a time on one device")


# ------------------------------------------------------------------------------------------------------------ main


def _nframes_before_model(args: argparse.Namespace) -> Tuple[bool, Optional[int]]:
    """(whether the clips can be planned before the model is loaded, the nFrames to plan them with). Only Vimeo
    septuplets evaluated with past frames only need the checkpoint's nFrames (it picks their evaluated frame)."""
    if args.model.lower() == "bicubic":
        return True, 1
    needs = not args.input and not args.other_dataset and not args.future_frame and args.nFrames is None
    return not needs, args.nFrames


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    check_args(parser, args)
    logger.initLogger(args.debug)
    from clips import check_output, resolve_clips  # no torch yet: a missing input is reported at once

    early, nFrames = _nframes_before_model(args)
    clips = resolve_clips(args, nFrames) if early and not args.denoise else None
    import torch

    import denoise_job
    import upscale
    from inference import check_precision, prepare_model, resolve_device

    torch.manual_seed(args.seed)
    warn_about_options(args)
    device = resolve_device(args.device, args.gpu_mode)
    args.precision = check_precision(args.precision, device)
    upscale.check_flow_options(args, device)
    if args.denoise:  # movies in, denoised movies and no-reference scores out
        denoise_job.check_denoise_model(args.model, DEFAULT_DENOISE_WEIGHTS)
        return denoise_job.denoise_movies(args, device)

    if clips is not None:
        check_output(clips, args)  # before the model is loaded
    model, config = upscale.load_generator(args)  # None for the bicubic baseline
    if clips is None:
        clips = resolve_clips(args, config["nFrames"])
        check_output(clips, args)
    upscale.check_video_output(clips, config, args)
    upscale.check_resume(clips, config, args, device)
    if model is not None:
        model = prepare_model(model, device)
    logger.info(f"{len(clips)} clip(s), x{config['scale_factor']}, device {device}, precision {args.precision}"
                + (f", tile {args.tile}/{args.tile_overlap}" if args.tile else "")
                + (", chop_forward" if args.chop_forward and not args.tile else ""))
    start = time.time()
    if args.upscale_only:  # own video in, SR frames and video out
        for clip in clips:
            upscale.upscale_clip(clip, model, config, args, device)
        logger.info(f"done in {time.time() - start:.1f} s")
    else:  # HR clips in: degrade, super-resolve, score, report
        all_rows = upscale.evaluate_clips(clips, model, config, args, device)
        upscale.write_reports(all_rows, args)
    return 0


if __name__ == "__main__":
    run_cli(main)
