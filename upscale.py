"""Super-resolution jobs of the tester: upscale a clip (``-u``) or evaluate on HR clips.

Upscaling writes the SR frames as PNG (``--frames`` picks a range, ``--resume`` keeps finished frames), a video for
video input (source rate, timestamps and audio kept) and a bicubic | SR comparison. Evaluation degrades each HR frame,
super-resolves it and scores it on the Y channel (PSNR, SSIM); ``write_reports`` writes ``metrics.json``,
``per_frame.csv`` and a per-frame PSNR plot per clip.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
from typing import Callable, Dict, Iterator, List, Optional, Set, Tuple

import numpy as np
import torch
from tqdm import tqdm

import atomic
import checkpoint
import logger
import metrics
import plots
from clips import Clip, finished_frames, frame_selector, parse_frames
from dataset import bicubic_upscale, degrade, modcrop
from errors import UserError
from inference import resolve_flow_backend, sr_image, super_resolve_clip, torch_flow_compute, window_flows
from video_io import load_rgb, save_rgb, video_extension, write_video

BICUBIC = "bicubic"  # --model bicubic: the bicubic baseline instead of a network

# ----------------------------------------------------------------------------------------------------------- model


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


def flow_function(args: argparse.Namespace, device: torch.device) -> Optional[Callable]:
    """``flow_fn`` for ``super_resolve_clip``: None (the exact C++ pyflow) or the batched torch flow on
    ``--flow_device``, by ``--flow_backend`` (auto: torch when the model runs on CUDA)."""
    backend, flow_device = resolve_flow_backend(args.flow_backend, args.flow_device, device)
    if backend == "cpp":
        return None
    compute = torch_flow_compute(flow_device)
    return lambda centre, neighbours, same: window_flows(centre, neighbours, same, compute=compute)


# ---------------------------------------------------------------------------------------------------------- frames


def _same_size(stream: Iterator[Tuple[np.ndarray, object]], clip: Clip) -> Iterator[Tuple[np.ndarray, object]]:
    """Pass the clip's ``(frame, payload)`` items through; a frame of another size than the first is an error."""
    size = None
    for k, (frame, payload) in enumerate(stream):
        if size is None:
            size = frame.shape[:2]
        elif frame.shape[:2] != size:
            raise UserError(f"clip {clip.name}: frame {k} ({clip.frame_name(k)}) is {frame.shape[1]}x"
                            f"{frame.shape[0]} but the first frame is {size[1]}x{size[0]}; all frames of a clip "
                            f"must have the same size")
        yield frame, payload


def _stop_after(items: Iterator, frames: Optional[range], nFrames: int) -> Iterator:
    """Stop decoding once the last selected frame and its future neighbours have been read."""
    for t, item in enumerate(items):
        if frames is not None and t >= frames.stop + nFrames:
            return
        yield item


def _counted(items: Iterator, counter: Dict[int, object]) -> Iterator:
    """Pass ``(frame, time)`` items through, recording each frame's source time by index."""
    for t, (frame, stamp) in enumerate(items):
        counter[t] = stamp
        yield frame, stamp


def _sr_frames(clip: Clip, items: Iterator[Tuple[np.ndarray, object]], model, config: dict, args, device,
               keep: Callable[[int], bool]) -> Iterator[Tuple[int, object, np.ndarray, np.ndarray]]:
    """(t, payload, lr, SR as float HxWx3 on 0..255, unclamped) for every frame t with ``keep(t)``."""
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


def _progress(clip: Clip, keep: Callable[[int], bool], show: bool) -> tqdm:
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


# --------------------------------------------------------------------------------------------------------- upscale


def _resumed_frames(clip: Clip, folder: str, scale: int) -> Set[int]:
    """``--resume``: the frames already in ``folder`` at the SR size of the clip's first frame."""
    first = next(iter(_same_size(clip.iter_frames(), clip)))[0]
    done = finished_frames(folder, clip, (first.shape[0] * scale, first.shape[1] * scale))
    if done:
        logger.info(f"{clip.name}: --resume keeps {len(done)} frame(s) already in {folder}/")
    return done


def _write_clip_video(clip: Clip, saved: List[str], selected: List[int], times: Dict[int, object], cut: bool,
                      args: argparse.Namespace) -> str:
    """The video of the saved SR frames at the source rate, with the source timestamps and audio (cut to the
    selected frames when ``cut``, i.e. with ``--frames``); returns its path."""
    video = os.path.join(args.output, clip.name + video_extension(args.codec))
    stamps = [times[t] for t in selected]
    exact = all(stamp is not None for stamp in stamps)
    span = None
    if cut and exact:
        end = times.get(selected[-1] + 1, stamps[-1] + 1 / clip.fps)
        span = (stamps[0], end)
    write_video(video, (load_rgb(p) for p in saved), clip.fps, codec=args.codec, crf=args.crf, preset=args.preset,
                times=stamps if exact else None, audio_from=clip.video, time_range=span, log=logger.warning)
    return video


def upscale_clip(clip: Clip, model, config: dict, args, device) -> None:
    """SR frames as PNG in ``<output>/<clip>/``, a video for video input (source rate, timestamps and audio kept),
    and ``<clip>_compare.png`` (bicubic | SR)."""
    scale = config["scale_factor"]
    folder = os.path.join(args.output, clip.name)
    frames = parse_frames(args.frames)
    done = _resumed_frames(clip, folder, scale) if args.resume else set()
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
        video = _write_clip_video(clip, saved, selected, times, frames is not None, args)
        logger.info(f"{clip.name}: {len(saved)} frames -> {folder}/ and {video} ({args.codec}, {clip.fps} fps)")
    else:
        logger.info(f"{clip.name}: {len(saved)} frames -> {folder}/")
    shown = shown or last
    if shown is not None and model is not None:
        t, lr, sr8 = shown
        compare = os.path.join(args.output, clip.name + "_compare.png")
        plots.side_by_side(compare, [("bicubic", bicubic_upscale(lr, scale, "pil")), ("iSeeBetter", sr8)])
        logger.info(f"{clip.name}: side-by-side (bicubic | iSeeBetter) of frame {clip.frame_name(t)} -> {compare}")


# -------------------------------------------------------------------------------------------------------- evaluate


def _degraded(clip: Clip, scale: int, args: argparse.Namespace) -> Iterator[Tuple[np.ndarray, np.ndarray]]:
    """(LR, HR) per frame: the HR frame modcropped to a multiple of ``scale``, LR its ``--degradation``."""
    for hr, _ in _same_size(clip.iter_frames(), clip):
        size = hr.shape[:2]
        hr = modcrop(hr, scale)
        if min(hr.shape[:2]) - 2 * args.crop_border < 11:
            raise UserError(f"clip {clip.name}: frames of {size[1]}x{size[0]} ({hr.shape[1]}x{hr.shape[0]} after "
                            f"cropping to a multiple of x{scale}) are too small to measure (SSIM needs 11x11 px "
                            f"after --crop_border {args.crop_border})")
        yield degrade(hr, scale, args.degradation), hr


def _score(clip: Clip, t: int, lr: np.ndarray, sr: np.ndarray, sr8: np.ndarray, hr: np.ndarray, scale: int,
           baseline: bool, args: argparse.Namespace) -> Tuple[dict, Optional[np.ndarray]]:
    """(per_frame.csv row of frame t, its bicubic upscale or None when the model is the bicubic baseline)."""
    row = {"clip": clip.name, "index": t, "frame": clip.frame_name(t),
           "psnr_y": metrics.psnr_y(sr8, hr, args.crop_border), "ssim_y": metrics.ssim_y(sr8, hr, args.crop_border)}
    bic = None
    if not baseline:
        bic = bicubic_upscale(lr, scale, args.degradation)
        row["psnr_y_bicubic"] = metrics.psnr_y(bic, hr, args.crop_border)
    if args.metric == "rgb":
        row["psnr_rgb"] = metrics.psnr_rgb_original(sr, hr, scale)
    return row, bic


def evaluate_clip(clip: Clip, model, config: dict, args, device) -> List[dict]:
    """Per-frame metrics of one clip (all frames; the caller applies --skip_frames)."""
    scale = config["scale_factor"]
    frames = parse_frames(args.frames)
    keep = frame_selector(clip, frames)
    count = len(clip.targets) if clip.targets is not None else clip.count()
    middle = sorted(clip.targets)[len(clip.targets) // 2] if clip.targets else max((count or 1) - 1, 0) // 2
    items = _stop_after(_degraded(clip, scale, args), frames, config["nFrames"])
    rows, shown, last = [], None, None
    with _progress(clip, keep, args.progress) as bar:
        for t, hr, lr, sr in _sr_frames(clip, items, model, config, args, device, keep):
            sr8 = metrics.to_uint8(sr)
            row, bic = _score(clip, t, lr, sr, sr8, hr, scale, model is None, args)
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


def evaluate_clips(clips: List[Clip], model, config: dict, args: argparse.Namespace,
                   device: torch.device) -> Dict[str, List[dict]]:
    """Per-frame metrics of every clip without its ``--skip_frames`` edge frames; logs each clip's means."""
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
    return all_rows


# --------------------------------------------------------------------------------------------------------- reports


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


def _per_frame_csv(all_rows: Dict[str, List[dict]]) -> str:
    """per_frame.csv: one row per measured frame, floats with 6 decimals."""
    fields = ["clip", "index", "frame", "psnr_y", "ssim_y", "psnr_y_bicubic", "psnr_rgb"]
    fields = [f for f in fields if any(f in r for rows in all_rows.values() for r in rows)]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields)
    writer.writeheader()
    for rows in all_rows.values():
        for r in rows:
            writer.writerow({k: (f"{v:.6f}" if isinstance(v, float) else v) for k, v in r.items() if k in fields})
    return buf.getvalue()


def write_reports(all_rows: Dict[str, List[dict]], args) -> dict:
    """Write metrics.json, per_frame.csv and ``<clip>_psnr.png`` per clip, log the average; returns the summary."""
    summary = summarise(all_rows, args)
    path = os.path.join(args.output, "metrics.json")
    atomic.write_text(path, json.dumps(summary, indent=2) + "\n")
    atomic.write_text(os.path.join(args.output, "per_frame.csv"), _per_frame_csv(all_rows))
    label = "bicubic" if args.model.lower() == BICUBIC else "SR"
    for name, rows in all_rows.items():
        bic = [r["psnr_y_bicubic"] for r in rows] if rows and "psnr_y_bicubic" in rows[0] else None
        plots.plot_per_frame_psnr(os.path.join(args.output, name + "_psnr.png"), [r["index"] for r in rows],
                                  [r["psnr_y"] for r in rows], bic, title=name, label=label)
    avg = summary["average"]
    extra = f", PSNR-RGB(original) {avg['psnr_rgb']:.2f} dB" if args.metric == "rgb" else ""
    logger.info(f"average over {len(all_rows)} clip(s): PSNR-Y {avg['psnr_y']:.2f} dB, SSIM-Y {avg['ssim_y']:.4f}"
                f"{extra} -> {path}")
    return summary
