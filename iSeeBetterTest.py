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
and writes ``out/scan.npy`` (the input's units and shape), ``out/scan/00001.png ...`` (16-bit), ``out/scan.mp4``,
``out/scan_compare.png`` (raw | denoised) and ``out/metrics.json`` (no-reference scores, ``denoise_eval``).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from fractions import Fraction
from typing import TYPE_CHECKING, Callable, Dict, Iterator, List, Optional, Sequence, Set, Tuple

import numpy as np

import atomic
import logger
import metrics
from errors import UserError, run_cli, user_error_from_os
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
from video_io import (
    CODECS,
    PRESETS,
    find_video_sources,
    is_image_file,
    is_video_file,
    iter_video_timed,
    list_frames,
    load_rgb,
    save_rgb,
    video_extension,
    video_info,
    write_video,
)

if TYPE_CHECKING:
    import torch

# torch and the modules built on it (dataset, inference, checkpoint) are imported where they are used, so that ``-h``
# and option errors are instant.

BICUBIC = "bicubic"
TINY_TILE = 32  # LR tiles smaller than this (or mostly overlap) make tiled inference many times slower
DEFAULT_DENOISE_WEIGHTS = os.path.join("weights", "iSeeBetter_denoise_afm.pth")  # relative to PROJECT_ROOT
DEFAULT_MOVIE_FPS = Fraction(10)  # --denoise preview rate when a movie gives no frame time
COMPARE_FRAMES = 3  # frames shown in <movie>_compare.png


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="iSeeBetter: upscale a video/frames (-u) or evaluate PSNR/SSIM on HR clips")
    # The original's options (same names, short flags and defaults unless noted).
    p.add_argument("-m", "--model", default=None,
                   help="generator checkpoint (original state_dict with/without 'module.', or project checkpoint); "
                        f"'bicubic' for the bicubic baseline (default: the shipped {DEFAULT_WEIGHTS})")
    p.add_argument("-o", "--output", default="Results/", help="Location to save test results")
    p.add_argument("-s", "--upscale_factor", type=int, default=None,
                   help="super resolution upscale factor (default: the checkpoint's; 4 for bicubic)")
    p.add_argument("-r", "--residual", nargs="?", const="pil", choices=("pil", "matlab"), default=None,
                   help="add a bicubic upscale of the input to the output: -r = Pillow's (the original), -r matlab; "
                        "automatic for project checkpoints trained with --residual")
    p.add_argument("-c", "--gpu_mode", action="store_true", help="Use a CUDA compatible GPU (error if none)")
    p.add_argument("--testBatchSize", type=int, default=1, help="kept for compatibility (frames run one at a time)")
    p.add_argument("--chop_forward", action="store_true",
                   help="the original's recursive quadrant chop (bounded memory); see also --tile")
    p.add_argument("--threads", type=int, default=0, help="threads for the optical flow (0 = all cores)")
    p.add_argument("--seed", type=int, default=123, help="random seed")
    p.add_argument("--gpus", type=int, default=1, help="kept for compatibility (inference uses one device)")
    p.add_argument("--data_dir", default="./Vid4", help="root of the frames named in --file_list")
    p.add_argument("--file_list", default="foliage_test.txt", help="list of frames (relative to --data_dir)")
    add_bool(p, "other_dataset", True, "file_list lines are frame paths; off: Vimeo septuplet folders, only the "
             "middle frame is evaluated")
    add_bool(p, "future_frame", True, "use past and future neighbours; off: past frames only")
    p.add_argument("--nFrames", type=int, default=None, help="frames per window (default: the checkpoint's)")
    p.add_argument("--model_type", default="RBPN", help="only RBPN is supported")
    p.add_argument("-d", "--debug", action="store_true", help="Print debug spew.")
    p.add_argument("-u", "--upscale_only", action="store_true", help="Upscale mode - without downscaling.")
    # New options.
    p.add_argument("-i", "--input", default=None,
                   help="video file, frame folder, or folder of clip folders/videos (overrides --data_dir/--file_list)")
    p.add_argument("--tile", type=int, default=0, help="LR tile size for bounded-memory inference (0 = whole frame)")
    p.add_argument("--tile_overlap", type=int, default=DEFAULT_OVERLAP, help="LR pixels shared by adjacent tiles")
    p.add_argument("--precision", choices=PRECISIONS, default="auto",
                   help="auto (bf16 where the CPU/GPU has native bf16, else fp16 on CUDA, fp32 on CPU), fp32, "
                        "bf16 (CPU or CUDA) or fp16 (CUDA) autocast")
    p.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda or cuda:N")
    p.add_argument("--flow_backend", choices=FLOW_BACKENDS, default="auto",
                   help="optical flow: cpp (exact C++ pyflow on the CPU), torch (batched pyflow.torch_flow, for "
                        "GPUs) or auto (torch when the model runs on CUDA, else cpp)")
    p.add_argument("--flow_device", default=None, help="device of the torch flow (default: the model's)")
    p.add_argument("--degradation", choices=DEGRADATIONS, default="matlab",
                   help="HR -> LR bicubic for evaluation: matlab (imresize, the published protocol) or pil (training)")
    p.add_argument("--metric", choices=("y", "rgb"), default="y",
                   help="y: PSNR/SSIM on Y (BT.601); rgb: also the original's RGB PSNR (unclamped, s+1/s border)")
    p.add_argument("--crop_border", type=int, default=0, help="pixels removed on each side before measuring")
    p.add_argument("--skip_frames", type=int, default=0, help="leave the first and last N frames out of the metrics")
    p.add_argument("--edge", choices=EDGE_MODES, default="centre",
                   help="neighbours beyond the clip ends: centre frame (original), reflect or clamp")
    add_bool(p, "progress", True, "show a tqdm progress bar per clip or movie")
    add_bool(p, "save_frames", True, "save the SR frames as PNG when evaluating (always saved with --upscale_only)")
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
    denoise = p.add_argument_group("denoising (--denoise): consecutive SPM/AFM scans or any movie")
    denoise.add_argument("--denoise", action="store_true",
                         help="denoise each movie of --input (.asd, .npy (T,H,W[,C]), frame folder or video) with a "
                              f"denoising generator (default -m: {DEFAULT_DENOISE_WEIGHTS}); writes <movie>.npy in the "
                              "input's units, 16-bit PNG frames, an mp4 preview, <movie>_compare.png and metrics.json")
    denoise.add_argument("--channel", default=None, metavar="NAME",
                         help=".asd channel to denoise: index or name (topography, error, phase; default: the one the "
                              "checkpoint was trained on, else the first)")
    denoise.add_argument("--level", dest="level", action="store_true", default=None,
                         help="subtract each scan line's median first (default: as the checkpoint was trained, else "
                              "on; --no-level for photographs and renderings)")
    denoise.add_argument("--no-level", dest="level", action="store_false", help=argparse.SUPPRESS)
    denoise.add_argument("--reference", default=None, metavar="CLEAN",
                         help="a clean movie of the input's shape and units: adds PSNR/SSIM of the output and of the "
                              "raw input against it to metrics.json")
    add_bool(denoise, "eval", True, "score the output in metrics.json without a clean frame (an extra pass over the "
             "even frames; see README)")
    return p


# ----------------------------------------------------------------------------------------------------------- clips


def unique_stems(paths: List[str]) -> List[str]:
    """Output names for ``paths``: the stem (name without extension), or ``stem_ext`` where stems collide
    (``b.mp4`` beside ``b.avi`` -> ``b_mp4``, ``b_avi``; a folder ``b/`` keeps ``b``)."""
    stems = [os.path.splitext(os.path.basename(os.path.normpath(p)))[0] if os.path.isfile(p)
             else os.path.basename(os.path.normpath(p)) for p in paths]
    counts = Counter(stems)
    names = []
    for path, stem in zip(paths, stems):
        ext = os.path.splitext(path)[1].lstrip(".") if os.path.isfile(path) else ""
        names.append(f"{stem}_{ext}" if counts[stem] > 1 and ext else stem)
    repeated = [n for n, c in Counter(names).items() if c > 1]
    if repeated:
        raise UserError(f"two inputs would share the output name {repeated[0]!r}; rename one of them")
    return names


@dataclass
class Clip:
    """One sequence to process: a video file or an ordered list of frame files."""

    name: str
    video: Optional[str] = None
    frames: Optional[List[str]] = None
    targets: Optional[Set[int]] = None  # frame indices to produce (None = all)
    fps: Fraction = Fraction(25)
    frame_names: List[str] = field(default_factory=list)  # unique output names of ``frames``
    frame_count: Optional[int] = None  # known frame count (--denoise movies), else from the frames / video header

    def __post_init__(self) -> None:
        if self.frames is not None:
            self.frame_names = unique_stems(self.frames)

    def count(self) -> Optional[int]:
        if self.frame_count is not None:
            return self.frame_count
        if self.frames is not None:
            return len(self.frames)
        return video_info(self.video)["frame_count"] or None

    def frame_name(self, t: int) -> str:
        if self.frames is not None:
            return self.frame_names[t]
        return f"{t + 1:05d}"

    def inputs(self) -> List[str]:
        """The files this clip reads."""
        return [self.video] if self.video is not None else list(self.frames)

    def iter_frames(self) -> Iterator[Tuple[np.ndarray, Optional[Fraction]]]:
        """(frame, source time in seconds or None for frame files)."""
        if self.video is not None:
            yield from iter_video_timed(self.video)
        else:
            for path in self.frames:
                yield load_rgb(path), None


def _clip_from_path(path: str, name: str) -> Clip:
    if os.path.isdir(path):
        return Clip(name, frames=list_frames(path))
    info = video_info(path)  # read once: count() would otherwise reopen the video each time
    return Clip(name, video=path, fps=info["rate"], frame_count=info["frame_count"] or None)


def clips_from_input(path: str) -> List[Clip]:
    """A video file, a frame folder, or a folder whose entries are frame folders and/or videos."""
    if not os.path.exists(path):
        raise UserError(f"input not found: {path}")
    if os.path.isfile(path):
        if not is_video_file(path):
            raise UserError(f"{path} is not a video file (mp4, avi, mov, mkv, ...); for images pass their folder")
        return [_clip_from_path(path, unique_stems([path])[0])]
    sources = find_video_sources(path)
    if not sources:
        raise UserError(f"no frames, clip folders or videos in {path}; pass a video file or a folder of frames")
    return [_clip_from_path(s, name) for s, name in zip(sources, unique_stems(sources))]


def septuplet_target(nFrames: int, future_frame: bool, count: int) -> int:
    """Index of the evaluated frame of a Vimeo septuplet folder, as the original: im4 with future frames (any
    nFrames), im{nFrames} with past frames only."""
    return min(3 if future_frame else nFrames - 1, count - 1)


def clips_from_file_list(data_dir: str, file_list: str, other_dataset: bool, nFrames: int,
                         future_frame: bool = True) -> List[Clip]:
    """The original's list: frame paths (grouped by folder into clips) or clip folders, relative to data_dir."""
    list_path = file_list if os.path.isfile(file_list) else os.path.join(data_dir, file_list)
    if not os.path.isfile(list_path):
        raise UserError(f"file list {list_path} not found; pass --input VIDEO|FOLDER, or --data_dir and --file_list "
                        f"of an existing list")
    from dataset import read_list_file

    clips: Dict[str, Clip] = {}
    for line in read_list_file(list_path):
        path = os.path.join(data_dir, line)
        if os.path.isdir(path):
            frames = list_frames(path)
            name = os.path.normpath(line)
            targets = None if other_dataset else {septuplet_target(nFrames, future_frame, len(frames))}
            clips[name] = Clip(name, frames=frames, targets=targets)
            continue
        if not is_image_file(path):
            raise UserError(f"{list_path}: line {line!r} is neither an image nor a folder")
        if not os.path.isfile(path):
            raise UserError(f"{list_path}: frame {path} not found")
        folder = os.path.dirname(path)
        name = os.path.normpath(os.path.dirname(line)) if os.path.dirname(line) else os.path.basename(data_dir)
        if name not in clips:
            clips[name] = Clip(name, frames=list_frames(folder), targets=set())
        index = [os.path.normpath(f) for f in clips[name].frames].index(os.path.normpath(path))
        clips[name].targets.add(index)
    return list(clips.values())


def resolve_clips(args: argparse.Namespace, nFrames: int) -> List[Clip]:
    if args.input:
        return clips_from_input(args.input)
    return clips_from_file_list(args.data_dir, args.file_list, args.other_dataset, nFrames, args.future_frame)


# ---------------------------------------------------------------------------------------------------------- output


def _real(path: str) -> str:
    return os.path.realpath(os.path.abspath(path))


def planned_outputs(clip: Clip, args: argparse.Namespace) -> Tuple[Optional[str], List[str]]:
    """(folder of output frames or None, other files) that processing ``clip`` writes under ``--output``."""
    out = args.output
    files = [os.path.join(out, clip.name + "_compare.png")]
    if args.denoise:
        files += [os.path.join(out, clip.name + ".npy"), os.path.join(out, clip.name + video_extension(args.codec))]
        return os.path.join(out, clip.name), files
    if args.upscale_only:
        if clip.video is not None:
            files.append(os.path.join(out, clip.name + video_extension(args.codec)))
    else:
        files.append(os.path.join(out, clip.name + "_psnr.png"))
    save = args.upscale_only or args.save_frames
    return (os.path.join(out, clip.name) if save else None), files


def _planned_frame_files(clip: Clip, frames: Optional[range]) -> Optional[Set[str]]:
    """Names of the SR frames the clip writes into its folder; None when a video does not say how many it has."""
    count = clip.count()
    if count is None:
        return None
    indices = range(count) if clip.targets is None else clip.targets
    if frames is not None:
        indices = [t for t in indices if t in frames]
    return {clip.frame_name(t) + ".png" for t in indices}


def check_output(clips: List[Clip], args: argparse.Namespace, extra_inputs: Sequence[str] = ()) -> None:
    """Before any work: ``--output`` is a writable folder, no output path resolves to an input (symlinks included)
    and no clip folder holds frames of an earlier run that this one would leave mixed in. Removes our own stale
    temporary files (a killed earlier run).

    ``extra_inputs``: more files or folders that are read (a ``--reference`` movie, the ``--input`` folder); a folder
    among the inputs is protected like a frame folder."""
    out = args.output
    if os.path.exists(out) and not os.path.isdir(out):
        raise UserError(f"--output {out} is a file; pass a folder (it is created if missing)")
    try:
        os.makedirs(out, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=atomic.TEMP_PREFIX, dir=out)
        os.close(fd)
        os.remove(probe)
    except OSError as exc:  # name the folder, not our probe file
        raise user_error_from_os(OSError(exc.errno, exc.strerror, out), "cannot write to --output") from exc

    inputs = [p for clip in clips for p in clip.inputs()] + list(extra_inputs)
    input_files = {_real(p) for p in inputs}
    input_folders = {os.path.dirname(_real(p)) for clip in clips if clip.frames is not None for p in clip.frames}
    input_folders |= {_real(p) for p in inputs if os.path.isdir(p)}
    fixed = [] if args.upscale_only else [os.path.join(out, "metrics.json"), os.path.join(out, "per_frame.csv")]
    if args.denoise:
        fixed = [os.path.join(out, "metrics.json")]
    for path in fixed:
        if os.path.isdir(path):
            raise UserError(f"{path} is a folder; remove it or choose another --output")
    for clip in clips:
        folder, files = planned_outputs(clip, args)
        for path in files + fixed:
            real = _real(path)
            if real in input_files or os.path.dirname(real) in input_folders:
                what = "is" if real in input_files else "would be written into the frame folder of"
                raise UserError(f"--output {out}: {path} {what} an input of this run; choose an --output folder "
                                "apart from the inputs (nothing was written)")
        if folder is None:
            continue
        if _real(folder) in input_folders or _real(folder) in input_files:
            raise UserError(f"--output {out}: the output frames of {clip.name} would go into {folder}, which holds "
                            "input frames; choose an --output folder apart from the inputs (nothing was written)")
        if os.path.isfile(folder):
            raise UserError(f"{folder} is a file but the output frames of {clip.name} go into a folder of that "
                            "name; remove it or choose another --output")
        if os.path.isdir(folder):
            atomic.remove_stale_temps(folder)
            existing = {n for n in os.listdir(folder) if not n.startswith(".")}
            planned = _planned_frame_files(clip, parse_frames(args.frames))
            extra = sorted(existing - planned) if planned is not None else sorted(existing)
            if extra:
                raise UserError(f"{folder} already holds {len(extra)} file(s) that this run would not replace "
                                f"({', '.join(extra[:3])}{', ...' if len(extra) > 3 else ''}), from an earlier run or "
                                "another clip; empty that folder or choose another --output so results do not mix")
    atomic.remove_stale_temps(out)


# ----------------------------------------------------------------------------------------------------------- model


def default_model_path() -> str:
    """The shipped weights, found relative to the project (not the current folder)."""
    return os.path.join(PROJECT_ROOT, DEFAULT_WEIGHTS)


def check_model_file(path: str, hint: str) -> None:
    """A one-line error when ``--model`` is a folder or does not exist (``hint`` says what to pass instead)."""
    if os.path.isdir(path):
        raise UserError(f"--model {path} is a folder; pass the checkpoint file inside it (PATH.pth)")
    if not os.path.isfile(path):
        raise UserError(f"model checkpoint {path} not found; {hint}")


def load_generator(args: argparse.Namespace) -> Tuple[Optional[torch.nn.Module], dict]:
    """(model, config) from --model; (None, {"scale_factor", "nFrames"}) for the bicubic baseline."""
    if args.model.lower() == BICUBIC:
        return None, {"scale_factor": args.upscale_factor or 4, "nFrames": 1}
    if args.model_type != "RBPN":
        raise UserError(f"--model_type {args.model_type} is not supported; only RBPN")
    check_model_file(args.model, "pass --model PATH.pth (original or project checkpoint) or --model bicubic for the "
                     "baseline (random weights are never used)")
    import checkpoint

    expect = {"task": "sr", "num_channels": 3}
    if args.upscale_factor is not None:
        expect["scale_factor"] = args.upscale_factor
    if args.nFrames is not None:
        expect["nFrames"] = args.nFrames
    model, config = checkpoint.build_generator(args.model, expect=expect)
    if config.get("residual") and not args.residual:
        args.residual = config["residual"]
        logger.info(f"{args.model} was trained with --residual: its output is added to the {args.residual} "
                    "bicubic upscale")
    logger.info(f"loaded {args.model}: RBPN x{config['scale_factor']}, nFrames={config['nFrames']}, "
                f"{sum(p.numel() for p in model.parameters()):,} parameters")
    return model, config


# ------------------------------------------------------------------------------------------------------ processing


def _same_size(stream: Iterator[Tuple[np.ndarray, object]], clip: Clip) -> Iterator[Tuple[np.ndarray, object]]:
    size = None
    for k, (frame, payload) in enumerate(stream):
        if size is None:
            size = frame.shape[:2]
        elif frame.shape[:2] != size:
            raise UserError(f"clip {clip.name}: frame {k} ({clip.frame_name(k)}) is {frame.shape[1]}x"
                            f"{frame.shape[0]} but the first frame is {size[1]}x{size[0]}; all frames of a clip "
                            f"must have the same size")
        yield frame, payload


def parse_frames(text: Optional[str]) -> Optional[range]:
    """``--frames START:END`` (1-based, inclusive, either side optional) -> 0-based range; None for all frames."""
    if not text:
        return None
    parts = text.split(":")
    try:
        if len(parts) != 2:
            raise ValueError
        first = int(parts[0]) if parts[0].strip() else 1
        last = int(parts[1]) if parts[1].strip() else None
    except ValueError:
        raise UserError(f"--frames {text!r}: expected START:END with whole numbers, e.g. 1:100, 101: or :50") from None
    if first < 1 or (last is not None and last < first):
        raise UserError(f"--frames {text!r}: START must be >= 1 and END >= START (frames count from 1)")
    return range(first - 1, last if last is not None else 2**62)


def frame_selector(clip: Clip, frames: Optional[range], done: Set[int] = frozenset()) -> Callable[[int], bool]:
    """keep(t): frame t is a target of the clip, inside ``--frames`` and not already ``done``."""
    def keep(t: int) -> bool:
        return ((clip.targets is None or t in clip.targets) and (frames is None or t in frames)
                and t not in done)
    return keep


def _stop_after(items: Iterator, frames: Optional[range], nFrames: int) -> Iterator:
    """Stop decoding once the last selected frame and its future neighbours have been read."""
    for t, item in enumerate(items):
        if frames is not None and t >= frames.stop + nFrames:
            return
        yield item


def finished_frames(folder: str, clip: Clip, expected_hw: Tuple[int, int]) -> Set[int]:
    """Indices of SR frames already in ``folder`` that decode and have the expected size (for ``--resume``)."""
    import cv2

    done = set()
    if not os.path.isdir(folder):
        return done
    names = {n for n in os.listdir(folder) if n.endswith(".png")}
    count = clip.count() or 0
    for t in range(count):
        name = clip.frame_name(t) + ".png"
        if name in names:
            img = cv2.imread(os.path.join(folder, name), cv2.IMREAD_UNCHANGED)
            if img is not None and img.shape[:2] == expected_hw:
                done.add(t)
    return done


def flow_function(args: argparse.Namespace, device) -> Optional[Callable]:
    """``flow_fn`` for ``super_resolve_clip``: None (the exact C++ pyflow) or the batched torch flow on
    ``--flow_device``, by ``--flow_backend`` (auto: torch when the model runs on CUDA)."""
    from inference import resolve_flow_backend, torch_flow_compute, window_flows

    backend, flow_device = resolve_flow_backend(args.flow_backend, args.flow_device, device)
    if backend == "cpp":
        return None
    compute = torch_flow_compute(flow_device)
    return lambda centre, neighbours, same: window_flows(centre, neighbours, same, compute=compute)


def _sr_frames(clip: Clip, items: Iterator[Tuple[np.ndarray, object]], model, config: dict, args, device,
               keep: Callable[[int], bool]) -> Iterator[Tuple[int, object, np.ndarray, np.ndarray]]:
    """(t, payload, lr, SR as float HxWx3 on 0..255, unclamped) for every frame t with ``keep(t)``."""
    from dataset import bicubic_upscale
    from inference import sr_image, super_resolve_clip

    scale = config["scale_factor"]
    if model is None:
        for t, (lr, payload) in enumerate(items):
            if keep(t):
                yield t, payload, lr, bicubic_upscale(lr, scale, args.degradation).astype(np.float64)
        return
    stream = super_resolve_clip(model, items, config["nFrames"], future_frame=args.future_frame, edge=args.edge,
                                tile=args.tile, overlap=args.tile_overlap, chop=args.chop_forward,
                                precision=args.precision, device=device, flow_threads=args.threads, keep=keep,
                                flow_fn=flow_function(args, device))
    for t, payload, lr, sr in stream:
        yield t, payload, lr, sr_image(sr, lr, scale, args.residual)


def _progress(clip: Clip, keep: Callable[[int], bool], show: bool):
    from tqdm import tqdm

    count = clip.count()
    total = sum(1 for t in range(count) if keep(t)) if count else None
    return tqdm(total=total, unit="frame", desc=clip.name, dynamic_ncols=True, leave=True, disable=not show)


def _warn_if_truncated(clip: Clip, decoded: int) -> None:
    """A video whose header promises more frames than decode: say so (the run still uses what decoded)."""
    if clip.video is None:
        return
    header = clip.count()
    if header is not None and decoded < header:
        logger.warning(f"{clip.name}: the video header says {header} frames but only {decoded} decoded "
                       f"(truncated or damaged file?); the output has {decoded} frames")


def _counted(items: Iterator, counter: Dict[int, object]) -> Iterator:
    """Pass ``(frame, time)`` items through, recording each frame's source time by index."""
    for t, (frame, stamp) in enumerate(items):
        counter[t] = stamp
        yield frame, stamp


def upscale_clip(clip: Clip, model, config: dict, args, device) -> None:
    """SR frames as PNG in ``<output>/<clip>/``, a video for video input (source rate, timestamps and audio kept),
    and ``<clip>_compare.png`` (bicubic | SR)."""
    from dataset import bicubic_upscale

    scale = config["scale_factor"]
    folder = os.path.join(args.output, clip.name)
    frames = parse_frames(args.frames)
    done: Set[int] = set()
    if args.resume:
        first = next(iter(_same_size(clip.iter_frames(), clip)))[0]
        done = finished_frames(folder, clip, (first.shape[0] * scale, first.shape[1] * scale))
        if done:
            logger.info(f"{clip.name}: --resume keeps {len(done)} frame(s) already in {folder}/")
    keep = frame_selector(clip, frames)
    compute = frame_selector(clip, frames, done)
    times: Dict[int, object] = {}
    items = _stop_after(_counted(_same_size(clip.iter_frames(), clip), times), frames, config["nFrames"])
    middle = (clip.count() or 1) // 2
    shown, last = None, None
    with _progress(clip, compute, args.progress) as bar:
        for t, _, lr, sr in _sr_frames(clip, items, model, config, args, device, compute):
            sr8 = metrics.to_uint8(sr)
            save_rgb(os.path.join(folder, clip.frame_name(t) + ".png"), sr8)
            last = (t, lr, sr8)
            if shown is None and t >= middle:
                shown = last
            bar.update(1)
    selected = [t for t in sorted(times) if keep(t)]
    if frames is None:
        _warn_if_truncated(clip, len(times))
    if not selected:
        raise UserError(f"clip {clip.name}: no frame selected (--frames {args.frames}, {len(times)} frames decoded)")
    saved = [os.path.join(folder, clip.frame_name(t) + ".png") for t in selected]
    if clip.video is not None:
        video = os.path.join(args.output, clip.name + video_extension(args.codec))
        stamps = [times[t] for t in selected]
        exact = all(stamp is not None for stamp in stamps)
        span = None
        if frames is not None and exact:
            end = times.get(selected[-1] + 1, stamps[-1] + 1 / clip.fps)
            span = (stamps[0], end)
        write_video(video, (load_rgb(p) for p in saved), clip.fps, codec=args.codec, crf=args.crf,
                    preset=args.preset, times=stamps if exact else None, audio_from=clip.video, time_range=span,
                    log=logger.warning)
        logger.info(f"{clip.name}: {len(saved)} frames -> {folder}/ and {video} ({args.codec}, {clip.fps} fps)")
    else:
        logger.info(f"{clip.name}: {len(saved)} frames -> {folder}/")
    shown = shown or last
    if shown is not None and model is not None:
        import plots

        t, lr, sr8 = shown
        bic = bicubic_upscale(lr, scale, "pil")
        compare = os.path.join(args.output, clip.name + "_compare.png")
        plots.side_by_side(compare, [("bicubic", bic), ("iSeeBetter", sr8)])
        logger.info(f"{clip.name}: side-by-side (bicubic | iSeeBetter) of frame {clip.frame_name(t)} -> {compare}")


def evaluate_clip(clip: Clip, model, config: dict, args, device) -> List[dict]:
    """Per-frame metrics of one clip (all frames; the caller applies --skip_frames)."""
    from dataset import bicubic_upscale, degrade, modcrop

    scale = config["scale_factor"]

    def items():
        for hr, _ in _same_size(clip.iter_frames(), clip):
            size = hr.shape[:2]
            hr = modcrop(hr, scale)
            if min(hr.shape[:2]) - 2 * args.crop_border < 11:
                raise UserError(f"clip {clip.name}: frames of {size[1]}x{size[0]} ({hr.shape[1]}x{hr.shape[0]} after "
                                f"cropping to a multiple of x{scale}) are too small to measure (SSIM needs 11x11 px "
                                f"after --crop_border {args.crop_border})")
            yield degrade(hr, scale, args.degradation), hr

    frames = parse_frames(args.frames)
    keep = frame_selector(clip, frames)
    count = len(clip.targets) if clip.targets is not None else clip.count()
    middle = sorted(clip.targets)[len(clip.targets) // 2] if clip.targets else max((count or 1) - 1, 0) // 2
    rows, shown, last = [], None, None
    with _progress(clip, keep, args.progress) as bar:
        for t, hr, lr, sr in _sr_frames(clip, _stop_after(items(), frames, config["nFrames"]), model, config, args,
                                        device, keep):
            sr8 = metrics.to_uint8(sr)
            row = {"clip": clip.name, "index": t, "frame": clip.frame_name(t),
                   "psnr_y": metrics.psnr_y(sr8, hr, args.crop_border),
                   "ssim_y": metrics.ssim_y(sr8, hr, args.crop_border)}
            bic = None
            if model is not None:
                bic = bicubic_upscale(lr, scale, args.degradation)
                row["psnr_y_bicubic"] = metrics.psnr_y(bic, hr, args.crop_border)
            if args.metric == "rgb":
                row["psnr_rgb"] = metrics.psnr_rgb_original(sr, hr, scale)
            rows.append(row)
            if args.save_frames:
                save_rgb(os.path.join(args.output, clip.name, clip.frame_name(t) + ".png"), sr8)
            last = (bic if bic is not None else sr8, sr8, hr)
            if shown is None and t >= middle:
                shown = last
            bar.set_postfix(psnr_y=f"{row['psnr_y']:.2f}")
            bar.update(1)
    if not rows:
        raise UserError(f"clip {clip.name}: no frame was evaluated")
    if frames is None and clip.targets is None:
        _warn_if_truncated(clip, len(rows))
    shown = shown or last
    import plots

    label = "iSeeBetter" if model is not None else "bicubic"
    plots.side_by_side(os.path.join(args.output, clip.name + "_compare.png"),
                       [("bicubic", shown[0]), (label, shown[1]), ("ground truth", shown[2])])
    return rows


def _skip(rows: List[dict], skip: int, count: Optional[int]) -> List[dict]:
    """Rows of frames that are not among the first or last ``skip`` frames of a clip of ``count`` frames."""
    if skip <= 0:
        return rows
    last = (count or max(r["index"] for r in rows) + 1) - 1
    return [r for r in rows if skip <= r["index"] <= last - skip]


def summarise(all_rows: Dict[str, List[dict]], args) -> dict:
    """metrics.json content: per-clip means and the benchmark average (mean of the per-clip means).

    A frame equal to its reference has PSNR ``metrics.PSNR_MAX_DB`` (100 dB); ``psnr_capped_frames`` counts them."""
    keys = ["psnr_y", "ssim_y"] + (["psnr_rgb"] if args.metric == "rgb" else [])
    if any("psnr_y_bicubic" in r for rows in all_rows.values() for r in rows):
        keys.append("psnr_y_bicubic")
    clips = {}
    for name, rows in all_rows.items():
        clip = {k: float(np.mean([r[k] for r in rows])) for k in keys}
        clip["frames"] = len(rows)
        clip["psnr_capped_frames"] = sum(metrics.is_capped(r["psnr_y"]) for r in rows)
        clips[name] = clip
    average = {k: metrics.mean_of_means(clips, k) for k in keys}
    average["psnr_capped_frames"] = sum(c["psnr_capped_frames"] for c in clips.values())
    return {"clips": clips, "average": average,
            "protocol": {"model": args.model, "degradation": args.degradation, "crop_border": args.crop_border,
                         "skip_frames": args.skip_frames, "channel": "Y (BT.601, MATLAB rgb2ycbcr)",
                         "sr_rounded_to_uint8": True, "average": "mean of per-clip means",
                         "psnr_cap_db": metrics.PSNR_MAX_DB}}


def write_reports(all_rows: Dict[str, List[dict]], args) -> dict:
    import plots

    summary = summarise(all_rows, args)
    atomic.write_text(os.path.join(args.output, "metrics.json"), json.dumps(summary, indent=2) + "\n")
    fields = ["clip", "index", "frame", "psnr_y", "ssim_y", "psnr_y_bicubic", "psnr_rgb"]
    fields = [f for f in fields if any(f in r for rows in all_rows.values() for r in rows)]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields)
    writer.writeheader()
    for rows in all_rows.values():
        for r in rows:
            writer.writerow({k: (f"{v:.6f}" if isinstance(v, float) else v) for k, v in r.items() if k in fields})
    atomic.write_text(os.path.join(args.output, "per_frame.csv"), buf.getvalue())
    label = "bicubic" if args.model.lower() == BICUBIC else "SR"
    for name, rows in all_rows.items():
        bic = [r["psnr_y_bicubic"] for r in rows] if rows and "psnr_y_bicubic" in rows[0] else None
        plots.plot_per_frame_psnr(os.path.join(args.output, name + "_psnr.png"), [r["index"] for r in rows],
                                  [r["psnr_y"] for r in rows], bic, title=name, label=label)
    return summary


# ------------------------------------------------------------------------------------------------------- denoising


def default_denoise_model_path() -> str:
    """The default denoising weights, found relative to the project (not the current folder)."""
    return os.path.join(PROJECT_ROOT, DEFAULT_DENOISE_WEIGHTS)


def check_denoise_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Option errors of ``--denoise`` (options that only upscaling has, a missing --input); sets the default model."""
    if not args.input:
        parser.error("--denoise needs --input (a movie: .asd, .npy, frame folder or video; or a folder of movies)")
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


@dataclass
class DenoiseSettings:
    """How a denoising generator was trained, as far as inference repeats it: read from its checkpoint's
    ``meta["denoise"]``; the fork's plain state_dicts record nothing and get the defaults."""

    warping: bool = False
    flows: str = "pyflow"
    level: bool = True
    channel: Optional[str] = None  # the channel it was trained on (the default for .asd inputs)
    recorded: bool = False  # whether the checkpoint recorded its settings

    def to_dict(self) -> dict:
        return {"warping": self.warping, "flows": self.flows, "level": self.level, "trained_channel": self.channel,
                "from_checkpoint": self.recorded}


def check_denoise_model(path: str) -> None:
    """A one-line error when ``--model`` is no checkpoint file (including a deleted default denoiser)."""
    if path.lower() == BICUBIC:
        raise UserError("--model bicubic is the upscaling baseline; with --denoise, metrics.json scores the raw frames "
                        "and temporal means as baselines: pass -m CHECKPOINT of a denoising generator")
    if not os.path.exists(path) and _real(path) == _real(default_denoise_model_path()):
        raise UserError(f"no -m given and the default denoising model {DEFAULT_DENOISE_WEIGHTS} is missing: restore "
                        "it (git checkout weights/), pass -m CHECKPOINT, or train one with iSeeBetterTrain.py "
                        "--denoise (see README)")
    check_model_file(path, "pass -m PATH.pth of a generator trained with iSeeBetterTrain.py --denoise")


def denoise_settings(args: argparse.Namespace) -> DenoiseSettings:
    """The checkpoint's recorded warping, flows, levelling and channel (``--level/--no-level`` overrides
    levelling)."""
    import checkpoint
    from denoise_data import FLOW_METHODS

    _, meta = checkpoint.read_checkpoint(args.model)
    recorded = (meta or {}).get("denoise")
    values = recorded if isinstance(recorded, dict) else {}
    flows = values.get("flows", "pyflow")
    if flows not in FLOW_METHODS:
        raise UserError(f"checkpoint {args.model} records flows {flows!r}, which this tester does not know "
                        f"({', '.join(FLOW_METHODS)})")
    level = bool(values.get("level", True)) if args.level is None else args.level
    channel = values.get("channel")
    return DenoiseSettings(warping=bool(values.get("warping", False)), flows=flows, level=level,
                           channel=str(channel) if channel else None, recorded=bool(values))


def load_denoiser(args: argparse.Namespace, channels: int) -> Tuple[torch.nn.Module, dict]:
    """(model, config) of the denoising checkpoint ``--model`` for data with ``channels`` channels; an upscaling
    checkpoint, or one for other channels, is the one-line error of ``checkpoint.build_generator``."""
    import checkpoint

    expect = {"task": "denoise", "num_channels": channels}
    if args.nFrames is not None:
        expect["nFrames"] = args.nFrames
    model, config = checkpoint.build_generator(args.model, expect=expect)
    logger.info(f"loaded {args.model}: {checkpoint.describe_generator(config)}, nFrames={config['nFrames']}, "
                f"{sum(p.numel() for p in model.parameters()):,} parameters")
    return model, config


@dataclass
class MovieJob:
    """One movie to denoise, as found before any work."""

    path: str
    name: str
    shape: Tuple[int, int, int, int]  # (T, H, W, C)
    squeeze: bool  # the output .npy is (T, H, W), like the input


Prepared = Tuple[object, np.ndarray, object, List[int]]  # (scans.Movie, frames in [0, 1], Normalisation, blank)


def prepare_movie(path: str, args: argparse.Namespace, settings: DenoiseSettings) -> Prepared:
    """Read a movie (``scans.read_movie``) and normalise it (``denoise_data.preprocess``): (movie, frames (T, H, W, C)
    in [0, 1], Normalisation, blank frame indices). An .asd file is read in ``--channel``, else in the channel the
    checkpoint was trained on."""
    import scans
    from denoise_data import preprocess

    if args.channel is None and settings.channel and path.lower().endswith(scans.ASD_EXTENSION):
        try:
            movie = scans.read_movie(path, settings.channel)
        except scans.ScanError as exc:
            raise UserError(f"{exc} (the checkpoint was trained on channel {settings.channel}; pass --channel to "
                            "choose one)") from None
    else:
        movie = scans.read_movie(path, args.channel)
    try:
        data, norm, blank = preprocess(movie.frames, level=settings.level, unit=movie.unit, extra_blank=movie.blank)
    except UserError as exc:
        raise UserError(f"{path}: {exc}") from None
    return movie, data, norm, blank


def _movie_job(path: str, name: str, prepared: Prepared, args: argparse.Namespace) -> MovieJob:
    """The job of a prepared movie, after the checks that need its size."""
    movie, data, _, _ = prepared
    t, h, w, c = data.shape
    if args.eval and min(h, w) < 11:
        raise UserError(f"{path}: frames of {w}x{h} px are too small to evaluate (SSIM needs 11x11 px); pass --no-eval")
    squeeze = c == 1
    if path.lower().endswith(".npy"):
        squeeze = np.load(path, mmap_mode="r").ndim == 3
    return MovieJob(path, name, (t, h, w, c), squeeze)


def _read_reference(args: argparse.Namespace, job: MovieJob):
    """The ``--reference`` movie, which must have the input's shape."""
    import scans

    channel = args.channel if args.reference.lower().endswith(".asd") else None
    reference = scans.read_movie(args.reference, channel)
    if reference.frames.shape != job.shape:
        raise UserError(f"--reference {args.reference} has shape {reference.frames.shape} but the input {job.path} "
                        f"has {job.shape} (T, H, W, C); pass the clean version of the same movie")
    return reference


def _frame_list(indices: Sequence[int], shown: int = 8) -> str:
    """'3, 7, 9' (1-based frame numbers, as the PNG names) or '3, 7, ... (12 in all)'."""
    numbers = [str(t + 1) for t in indices]
    if len(numbers) <= shown:
        return ", ".join(numbers)
    return f"{', '.join(numbers[:shown])}, ... ({len(numbers)} in all)"


def _denoise_array(frames: np.ndarray, blank: Sequence[int], loaded: Tuple[torch.nn.Module, dict],
                   args: argparse.Namespace, settings: DenoiseSettings, device, desc: str) -> np.ndarray:
    """The model's output for every frame of a normalised movie, clipped to [0, 1]; blank frames are the input."""
    from tqdm import tqdm

    from inference import denoise_clip

    model, config = loaded
    skip = set(blank)
    out = np.empty_like(frames)
    stream = denoise_clip(model, ((frame, None) for frame in frames), config["nFrames"],
                          future_frame=args.future_frame, edge=args.edge, tile=args.tile, overlap=args.tile_overlap,
                          precision=args.precision, device=device, flows=settings.flows, warping=settings.warping,
                          residual=config.get("residual") or args.residual, blank=skip,
                          flow_threads=args.threads,
                          flow_fn=flow_function(args, device) if settings.flows == "pyflow" else None)
    with tqdm(total=len(frames), unit="frame", desc=desc, dynamic_ncols=True, leave=True,
              disable=not args.progress) as bar:
        for t, _, _, result in stream:
            out[t] = result if t in skip else np.clip(result, 0.0, 1.0)
            bar.update(1)
    return out


def _to_rgb8(frame: np.ndarray) -> np.ndarray:
    """An (H, W, C) frame on [0, 1] as RGB uint8 (grey repeated)."""
    img = metrics.to_uint8(frame * 255.0)
    return np.ascontiguousarray(np.repeat(img, 3, axis=2) if img.shape[2] == 1 else img)


def save_png16(path: str, frame: np.ndarray) -> None:
    """Write an (H, W, C) frame on [0, 1] as a 16-bit grey or RGB PNG (0..65535), atomically."""
    import cv2

    values = np.round(np.clip(frame, 0.0, 1.0) * 65535.0).astype(np.uint16)
    values = values[:, :, 0] if values.shape[2] == 1 else values[:, :, ::-1]  # RGB -> OpenCV's BGR
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(values), [cv2.IMWRITE_PNG_COMPRESSION, 3])
    if not ok:
        raise UserError(f"cannot encode {path} as a 16-bit PNG")
    atomic.write_bytes(path, buf.tobytes())


def save_npy(path: str, array: np.ndarray) -> None:
    """``numpy.save`` atomically."""
    with atomic.atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, array)


def _movie_rate(movie) -> Fraction:
    """Preview frame rate: the scan's frame time (.asd), a video's rate, else ``DEFAULT_MOVIE_FPS``."""
    ms = movie.info.get("frame_time_ms")
    if isinstance(ms, (int, float)) and np.isfinite(ms) and ms > 0:
        return Fraction(round(1000.0 / ms, 3)).limit_denominator(1000)
    if movie.info.get("format") == "video":
        return video_info(movie.source)["rate"]
    return DEFAULT_MOVIE_FPS


def _evaluate_movie(job: MovieJob, prepared: Prepared, out: np.ndarray, reference, loaded, args: argparse.Namespace,
                    settings: DenoiseSettings, device) -> dict:
    """metrics.json entries of one movie: the no-reference scores (an extra pass of the model over the even frames),
    the fork's scores, and with ``reference`` PSNR/SSIM against it."""
    import denoise_eval
    from denoise_data import preprocess

    _, data, norm, blank = prepared
    scores: dict = {}
    if len(data) >= 3:
        sub, sub_blank = denoise_eval.subsample(data, blank)
        model_sub = _denoise_array(sub, sub_blank, loaded, args, settings, device, f"{job.name} (eval)")
        scores["no_reference"] = denoise_eval.no_reference_scores(data, blank, model_sub)
        scores["ssim_to_cleanest"] = denoise_eval.ssim_to_cleanest(data, blank, model_sub)
    else:
        logger.warning(f"{job.name}: {len(data)} frame(s) are too few for the no-reference scores (they need 3)")
    scores["noise_blur"] = denoise_eval.noise_blur_scores(data, out, blank)
    if reference is not None:
        try:
            ref01, ref_norm, ref_blank = preprocess(reference.frames, level=settings.level, unit=reference.unit,
                                                    extra_blank=reference.blank)
        except UserError as exc:
            raise UserError(f"--reference {args.reference}: {exc}") from None
        output = ref_norm.forward(norm.inverse(out))
        raw = ref_norm.forward(norm.inverse(data))  # the input as the network saw it: levelled, clipped
        skip = sorted(set(blank) | set(ref_blank))
        scores["reference"] = denoise_eval.reference_scores(output, raw, ref01, skip)
    return scores


def denoise_movie(job: MovieJob, prepared: Prepared, reference, loaded, args: argparse.Namespace,
                  settings: DenoiseSettings, device) -> dict:
    """Denoise one movie and write its outputs (see README); returns its metrics.json entry."""
    import plots

    movie, data, norm, blank = prepared
    if blank:
        logger.warning(f"{job.name}: blank (constant) frame(s) {_frame_list(blank)}: passed through unchanged, never "
                       "used as neighbours")
    out = _denoise_array(data, blank, loaded, args, settings, device, job.name)

    units = norm.inverse(out)
    for t in blank:
        units[t] = movie.frames[t]
    npy = os.path.join(args.output, job.name + ".npy")
    save_npy(npy, units[..., 0] if job.squeeze else units)
    folder = os.path.join(args.output, job.name)
    for t in range(len(out)):
        save_png16(os.path.join(folder, f"{t + 1:05d}.png"), out[t])
    video = os.path.join(args.output, job.name + video_extension(args.codec))
    rate = _movie_rate(movie)
    write_video(video, (_to_rgb8(f) for f in out), rate, codec=args.codec, crf=args.crf, preset=args.preset,
                log=logger.warning)
    usable = [t for t in range(len(out)) if t not in set(blank)] or list(range(len(out)))
    shown = sorted({usable[(len(usable) * k) // (COMPARE_FRAMES + 1)] for k in range(1, COMPARE_FRAMES + 1)})
    rows = [[(f"raw {t + 1}", _to_rgb8(data[t])), (f"denoised {t + 1}", _to_rgb8(out[t]))] for t in shown]
    zoom = max(1, min(4, 128 // max(1, min(data.shape[1:3]))))
    compare = os.path.join(args.output, job.name + "_compare.png")
    plots.panel_grid(compare, rows, crop_size=192, zoom=zoom)
    logger.info(f"{job.name}: {len(out)} frames -> {npy} ({movie.unit or 'input units'}), {folder}/ (16-bit PNG), "
                f"{video} ({float(rate):g} fps) and {compare}")

    result = {"source": job.path, "frames": job.shape[0], "height": job.shape[1], "width": job.shape[2],
              "channels": job.shape[3], "channel": movie.channel, "unit": movie.unit,
              "blank_frames": [int(t) for t in blank], "normalisation": norm.to_dict()}
    if args.eval:
        result.update(_evaluate_movie(job, prepared, out, reference, loaded, args, settings, device))
        _log_scores(job.name, result)
    return result


def _log_scores(name: str, result: dict) -> None:
    n2n = result.get("no_reference", {}).get("n2n_psnr", {})
    if n2n and n2n.get("raw") is not None:
        parts = ", ".join(f"{m} {v:.2f}" for m, v in n2n.items() if v is not None)
        logger.info(f"{name}: no-reference PSNR against held-out frames (dB): {parts}")
    ref = result.get("reference")
    if ref:
        logger.info(f"{name}: against --reference: PSNR raw {ref['psnr']['raw']:.2f} dB -> model "
                    f"{ref['psnr']['model']:.2f} dB, SSIM raw {ref['ssim']['raw']:.4f} -> model "
                    f"{ref['ssim']['model']:.4f}")


def denoise_summary(results: Dict[str, dict], args: argparse.Namespace, settings: DenoiseSettings,
                    config: dict) -> dict:
    """metrics.json content of a --denoise run: per movie, the average over movies, and the protocol."""
    average: Dict[str, dict] = {}
    for section, key in (("no_reference", "n2n_psnr"), ("ssim_to_cleanest", "ssim")):
        values: Dict[str, List[float]] = {}
        for result in results.values():
            for method, value in result.get(section, {}).get(key, {}).items():
                if value is not None:
                    values.setdefault(method, []).append(value)
        if values:
            average[key] = {m: float(np.mean(v)) for m, v in values.items()}
    protocol = {
        "model": args.model, "arch": config.get("arch", "Net"), "nFrames": config["nFrames"],
        "settings": settings.to_dict(), "edge": args.edge, "future_frame": args.future_frame,
        "tile": args.tile, "tile_overlap": args.tile_overlap if args.tile else None, "precision": args.precision,
        "scale": "each movie's [0, 1] scale: its 0.5 and 99.5 percentiles (after levelling) map to 0 and 1",
        "n2n_psnr": "PSNR (peak 1) of each method's estimate of frame 2k, made from the even frames only, against "
                    "the mean of frames 2k-1 and 2k+1, which no method saw; mean over frames (denoise_eval)",
        "baselines": "raw: the frame; meanN: mean of N even frames centred on it; mean3_blur: mean3 then a Gaussian "
                     "blur (sigma 1 px)",
        "ssim_to_cleanest": "the fork's SSIM (grey, Gaussian 11x11) against the cleanest frame by streak score of "
                            "each 10-frame block: the cleanest odd frame, estimated from the cleanest even frame",
        "noise_blur": "means of metrics.streak_score (noise, lower = fewer streaks) and metrics.laplacian_variance "
                      "(blur, lower = smoother) of the raw and the denoised frames",
        "reference": "PSNR (peak 1) and SSIM of the output and of the raw input (as the network saw it: levelled "
                     "when levelling is on, clipped to its 0.5/99.5 percentiles) against --reference, all mapped "
                     "with the reference's own normalisation (its 0.5/99.5 percentiles to 0/1, clipped)",
        "psnr_cap_db": metrics.PSNR_MAX_DB,
    }
    return {"movies": results, "average": average, "protocol": protocol}


def denoise_movies(args: argparse.Namespace, device) -> int:
    """``--denoise``: every movie of ``--input`` is checked before any work, then denoised and written."""
    import checkpoint
    import scans
    from inference import prepare_model

    check_denoise_model(args.model)
    settings = denoise_settings(args)
    paths = scans.find_movies(args.input)
    if args.reference and len(paths) > 1:
        raise UserError(f"--reference is the clean version of one movie, but --input {args.input} holds "
                        f"{len(paths)}; pass that one movie")
    jobs: List[MovieJob] = []
    cached: Tuple[Optional[str], Optional[Prepared]] = (None, None)
    for path, name in zip(paths, unique_stems(paths)):
        prepared = prepare_movie(path, args, settings)
        jobs.append(_movie_job(path, name, prepared, args))
        cached = (path, prepared)
    reference = _read_reference(args, jobs[0]) if args.reference else None
    loaded: Dict[int, Tuple[torch.nn.Module, dict]] = {}
    for job in jobs:
        channels = job.shape[3]
        if channels not in loaded:
            model, config = load_denoiser(args, channels)
            loaded[channels] = (prepare_model(model, device), config)
    clips = [Clip(job.name, video=job.path, frame_count=job.shape[0]) for job in jobs]
    extra = [p for p in (args.reference, args.input) if p]
    check_output(clips, args, extra_inputs=extra)
    config = next(iter(loaded.values()))[1]
    logger.info(f"{len(jobs)} movie(s), {checkpoint.describe_generator(config)}, flows {settings.flows}, warping "
                f"{'on' if settings.warping else 'off'}, levelling {'on' if settings.level else 'off'}"
                f"{'' if settings.recorded else ' (defaults: the checkpoint records no denoise settings)'}, edge "
                f"{args.edge}, device {device}, precision {args.precision}"
                + (f", tile {args.tile}/{args.tile_overlap} (blended)" if args.tile else ""))
    start = time.time()
    results = {}
    for job in jobs:
        prepared = cached[1] if cached[0] == job.path else prepare_movie(job.path, args, settings)
        movie_channel = prepared[0].channel
        if settings.channel and movie_channel and settings.channel.lower() != str(movie_channel).lower():
            logger.warning(f"{job.name}: the model was trained on channel {settings.channel}, this is {movie_channel}")
        results[job.name] = denoise_movie(job, prepared, reference, loaded[job.shape[3]], args, settings, device)
    summary = denoise_summary(results, args, settings, config)
    path = os.path.join(args.output, "metrics.json")
    atomic.write_text(path, json.dumps(summary, indent=2) + "\n")
    logger.info(f"done in {time.time() - start:.1f} s -> {path}")
    return 0


# ------------------------------------------------------------------------------------------------------------ main


def check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Option errors (naming the option) before anything is loaded; a warning for tiles that would be slow."""
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
        given += ["--no-eval"] if not args.eval else []
        if given:
            parser.error(f"{', '.join(given)} only apply with --denoise")
    if args.model is None:
        args.model = default_model_path()


def tile_warning(tile: int, overlap: int) -> Optional[str]:
    """A warning when tiles are so small, or overlap so much, that tiled inference repeats most of its work."""
    if not tile:
        return None
    redundancy = (tile / (tile - overlap)) ** 2
    reasons = []
    if redundancy > 4:
        reasons.append(f"computes each pixel about {redundancy:.0f}x (tile step {tile - overlap} px)")
    if tile < TINY_TILE:
        reasons.append(f"runs the network once per {tile}x{tile} px tile (tiles under {TINY_TILE} px waste most of "
                       "each call)")
    if not reasons:
        return None
    return (f"--tile {tile} with --tile_overlap {overlap} {' and '.join(reasons)}: this is many times slower; use "
            "--tile 128 or more (or 0 = whole frame) if memory allows")


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    check_args(parser, args)
    logger.initLogger(args.debug)
    import torch

    from inference import check_precision, prepare_model, resolve_device

    torch.manual_seed(args.seed)
    warning = tile_warning(args.tile, args.tile_overlap)
    if warning:
        logger.warning(warning)
    if args.gpus > 1 or args.testBatchSize > 1:
        logger.warning("--gpus/--testBatchSize > 1 are ignored: inference runs one frame at a time on one device")
    device = resolve_device(args.device, args.gpu_mode)
    args.precision = check_precision(args.precision, device)
    if args.denoise:
        return denoise_movies(args, device)
    model, config = load_generator(args)
    if model is not None:
        model = prepare_model(model, device)
    clips = resolve_clips(args, config["nFrames"])
    check_output(clips, args)
    logger.info(f"{len(clips)} clip(s), x{config['scale_factor']}, device {device}, precision {args.precision}"
                + (f", tile {args.tile}/{args.tile_overlap}" if args.tile else "")
                + (", chop_forward" if args.chop_forward and not args.tile else ""))

    start = time.time()
    if args.upscale_only:
        for clip in clips:
            upscale_clip(clip, model, config, args, device)
        logger.info(f"done in {time.time() - start:.1f} s")
        return 0

    all_rows = {}
    for clip in clips:
        rows = _skip(evaluate_clip(clip, model, config, args, device), args.skip_frames, clip.count())
        if not rows:
            raise UserError(f"clip {clip.name}: --skip_frames {args.skip_frames} leaves no frame to measure")
        all_rows[clip.name] = rows
        extra = f", PSNR-RGB(original) {np.mean([r['psnr_rgb'] for r in rows]):.2f} dB" if args.metric == "rgb" else ""
        capped = sum(metrics.is_capped(r["psnr_y"]) for r in rows)
        if capped:
            extra += f", {capped} frame(s) equal to the reference (PSNR capped at {metrics.PSNR_MAX_DB:g} dB)"
        logger.info(f"{clip.name}: PSNR-Y {np.mean([r['psnr_y'] for r in rows]):.2f} dB, "
                    f"SSIM-Y {np.mean([r['ssim_y'] for r in rows]):.4f} ({len(rows)} frames){extra}")
    summary = write_reports(all_rows, args)
    avg = summary["average"]
    extra = f", PSNR-RGB(original) {avg['psnr_rgb']:.2f} dB" if args.metric == "rgb" else ""
    logger.info(f"average over {len(all_rows)} clip(s): PSNR-Y {avg['psnr_y']:.2f} dB, SSIM-Y {avg['ssim_y']:.4f}"
                f"{extra} -> {os.path.join(args.output, 'metrics.json')}")
    return 0


if __name__ == "__main__":
    run_cli(main)
