"""Super-resolution jobs of the tester: upscale a clip (``-u``) or evaluate on HR clips.

Upscaling writes the SR frames as PNG (``--frames`` picks a range, ``--resume`` keeps finished frames), a video for
video input (source rate, timestamps and audio kept) and a bicubic | SR comparison. Evaluation degrades each HR frame,
super-resolves it and scores it on the Y channel (PSNR, SSIM); ``write_reports`` writes ``metrics.json``,
``per_frame.csv`` and a per-frame PSNR plot per clip.

Each clip folder of SR frames gets a run record (``run_record``): the model and options that made its frames, which
frames were written and how many the clip decoded to. Reruns and ``--resume`` plan from it, never from a video
header's frame count, and ``--resume`` refuses frames made by another model or other options (``check_resume``).
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
import run_record
from checks import flow_backend_for
from clips import Clip, clip_record, finished_frames, frame_selector, input_identity, parse_frames
from dataset import bicubic_upscale, degrade, modcrop
from errors import UserError
from inference import (
    resolve_flow_backend,
    sr_image,
    super_resolve_clip,
    torch_flow_compute,
    window_flows,
)
from video_io import VideoError, check_codec_size, load_rgb, save_rgb, video_extension, write_video

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


def check_flow_options(args: argparse.Namespace, device: torch.device) -> None:
    """``--flow_backend``/``--flow_device`` problems before any work (errors name ``--flow_device``). The C++ flow
    (``--flow_backend cpp``, or auto with the model on the CPU) runs on the CPU: a ``--flow_device`` other than
    auto/cpu is not used, and a warning says so (the run is still right, so it is no error)."""
    backend, _ = resolve_flow_backend(args.flow_backend, args.flow_device, device)
    if backend == "cpp" and args.flow_device not in (None, "", "auto", "cpu"):
        chosen = "--flow_backend cpp" if args.flow_backend == "cpp" else "--flow_backend auto with the model on the CPU"
        logger.warning(f"--flow_device {args.flow_device} is not used: {chosen} computes the optical flow with the "
                       f"C++ pyflow on the CPU; pass --flow_backend torch to compute it on {args.flow_device}")


def flow_function(args: argparse.Namespace, device: torch.device) -> Optional[Callable]:
    """``flow_fn`` for ``super_resolve_clip``: None (the exact C++ pyflow) or the batched torch flow on
    ``--flow_device``, by ``--flow_backend`` (auto: torch when the model runs on CUDA)."""
    backend, flow_device = resolve_flow_backend(args.flow_backend, args.flow_device, device)
    if backend == "cpp":
        return None
    compute = torch_flow_compute(flow_device)
    return lambda centre, neighbours, same: window_flows(centre, neighbours, same, compute=compute)


# ------------------------------------------------------------------------------------------- plans and run records


def check_video_output(clips: List[Clip], config: dict, args: argparse.Namespace) -> None:
    """Before any work (``-u``): the ``--codec`` can encode the SR frames of every video clip (their size from the
    video's header and the scale)."""
    if not args.upscale_only:
        return
    scale = config["scale_factor"]
    for clip in clips:
        if clip.video is not None and clip.size is not None:
            try:
                check_codec_size(args.codec, clip.size[0] * scale, clip.size[1] * scale)
            except VideoError as exc:
                raise VideoError(f"clip {clip.name}: {exc}") from None


def frame_settings(args: argparse.Namespace, config: dict, device: torch.device, mode: str) -> dict:
    """Everything that changes the frames a run writes (``mode``: upscale or evaluate), as its run record keeps
    them: the model file and hash, scale, nFrames, residual, precision, tiles, flow backend, ..."""
    settings = {"mode": mode, "model": run_record.model_identity(args.model), "scale": config["scale_factor"]}
    if args.model.lower() == BICUBIC:
        settings["degradation"] = args.degradation
        return settings
    settings.update(nFrames=config["nFrames"], residual=args.residual, precision=args.precision, tile=args.tile,
                    tile_overlap=args.tile_overlap if args.tile else None,
                    chop_forward=bool(args.chop_forward and not args.tile), future_frame=bool(args.future_frame),
                    edge=args.edge, flow_backend=flow_backend_for(args.flow_backend, device))
    if mode == "evaluate":
        settings["degradation"] = args.degradation
    return settings


def check_resume(clips: List[Clip], config: dict, args: argparse.Namespace, device: torch.device) -> None:
    """Before any work: ``--resume`` keeps only frames that this model with these options made (as each clip
    folder's run record says); frames of another model or other options are an error, never mixed in."""
    if not (args.resume and args.upscale_only):
        return
    settings = frame_settings(args, config, device, "upscale")
    for clip in clips:
        folder = os.path.join(args.output, clip.name)
        record = clip_record(clip, folder)
        if record is None or not record["frames"]:
            continue
        diffs = run_record.differences(record["settings"], settings)
        if diffs:
            shown = "; ".join(diffs[:4]) + ("; ..." if len(diffs) > 4 else "")
            raise UserError(f"--resume: the frames in {folder} were made with other settings ({shown}); resume with "
                            f"the same options, or use a fresh --output (or remove {folder}) to start again")


def _recorder(clip: Clip, folder: str, args: argparse.Namespace, config: dict, device: torch.device, mode: str,
              kept: Set[int]) -> run_record.Recorder:
    """The run record of this run's frames in ``folder`` (``kept``: frames of an earlier run that ``--resume``
    keeps; the clip's decoded frame count carried over from a record of the same input)."""
    count = run_record.recorded_count(clip_record(clip, folder))
    return run_record.Recorder(folder, input_identity(clip), frame_settings(args, config, device, mode), kept=kept,
                               frame_count=count)


def _read_to_end(decoded: int, frames: Optional[range], nFrames: int) -> bool:
    """Whether ``decoded`` frames are the whole clip: ``_stop_after`` did not stop decoding early."""
    return frames is None or decoded <= frames.stop + nFrames


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


def _tallied(items: Iterator, tally: List[int]) -> Iterator:
    """Pass items through, counting them in ``tally[0]``."""
    for item in items:
        tally[0] += 1
        yield item


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


def frames_to_compute(clip: Clip, frames: Optional[range], done: Set[int]) -> Optional[int]:
    """How many frames a run computes (for a progress total), counted without a loop over the clip's length; None
    when the clip's length is unknown (a video header's count is used only when plausible, ``Clip.hint``)."""
    count = clip.hint()
    if count is None:
        return None
    span = range(count) if frames is None else range(max(frames.start, 0), min(frames.stop, count))
    if clip.targets is not None:
        return sum(1 for t in clip.targets if t in span and t not in done)
    return max(len(span) - sum(1 for t in done if t in span), 0)


def _progress(clip: Clip, frames: Optional[range], done: Set[int], show: bool) -> tqdm:
    total = frames_to_compute(clip, frames, done) if show else None
    return tqdm(total=total, unit="frame", desc=clip.name, dynamic_ncols=True, leave=True, disable=not show)


def _warn_if_truncated(clip: Clip, decoded: int) -> None:
    """A video whose header promises more frames than decode: say so (the run still uses what decoded)."""
    if clip.video is None:
        return
    header = clip.header_count
    if header is not None and decoded < header:
        logger.warning(f"{clip.name}: the video header says {header} frames but only {decoded} decoded "
                       f"(truncated or damaged file?); the output has {decoded} frames")


# --------------------------------------------------------------------------------------------------------- upscale


def _resumed_frames(clip: Clip, folder: str, scale: int) -> Set[int]:
    """``--resume``: the frames the folder's run record lists (``check_resume`` checked what made them) that are on
    disk, decode and have the SR size of the clip's first frame."""
    recorded = run_record.recorded_frames(clip_record(clip, folder))
    if not recorded:
        return set()
    first = next(iter(_same_size(clip.iter_frames(), clip)))[0]
    done = finished_frames(folder, clip, (first.shape[0] * scale, first.shape[1] * scale), recorded)
    if done:
        logger.info(f"{clip.name}: --resume keeps {len(done)} frame(s) already in {folder}/")
    return done


def _frame_at(clip: Clip, t: int) -> np.ndarray:
    """Input frame ``t`` of the clip (a video is decoded up to it)."""
    if clip.frames is not None:
        return load_rgb(clip.frames[t])
    for k, (frame, _) in enumerate(clip.iter_frames()):
        if k == t:
            return frame
    raise UserError(f"clip {clip.name}: frame {t + 1} could not be decoded again")


def _write_compare(clip: Clip, shown: Optional[tuple], selected: List[int], folder: str, scale: int,
                   args: argparse.Namespace) -> None:
    """``<clip>_compare.png`` (bicubic | iSeeBetter) of ``shown`` = (t, lr, sr8), a frame computed by this run;
    when it computed none (``--resume`` found every frame), of the middle selected frame, read from disk."""
    if shown is None and selected:
        t = selected[len(selected) // 2]
        shown = (t, _frame_at(clip, t), load_rgb(os.path.join(folder, clip.frame_name(t) + ".png")))
    if shown is None:
        return
    t, lr, sr8 = shown
    compare = os.path.join(args.output, clip.name + "_compare.png")
    plots.side_by_side(compare, [("bicubic", bicubic_upscale(lr, scale, "pil")), ("iSeeBetter", sr8)])
    logger.info(f"{clip.name}: side-by-side (bicubic | iSeeBetter) of frame {clip.frame_name(t)} -> {compare}")


def _warn_leftovers(clip: Clip, folder: str, saved: List[str]) -> None:
    """Files in the clip folder that are not frames of this run (an earlier run, without a run record, of a longer
    clip of the same name): say so, since the folder then mixes two runs."""
    names = {os.path.basename(p) for p in saved}
    other = sorted(n for n in os.listdir(folder) if not n.startswith(".") and n not in names)
    if other:
        logger.warning(f"{clip.name}: {folder} also holds {len(other)} file(s) that are not frames of this run "
                       f"({', '.join(other[:3])}{', ...' if len(other) > 3 else ''}), from an earlier run; remove "
                       "them so results do not mix")


def _upscale_frames(clip: Clip, model, config: dict, args, device, frames: Optional[range], done: Set[int],
                    times: Dict[int, object], recorder: run_record.Recorder) -> Optional[tuple]:
    """Compute and save the SR frames that ``--frames`` selects and ``done`` lacks, each added to the run record;
    ``times`` gets every decoded frame's source time. Returns (t, lr, sr8) of the frame to show in the comparison
    (the first computed at or after the middle of the clip, else the last computed), None if none was computed."""
    compute = frame_selector(clip, frames, done)
    items = _stop_after(_counted(_same_size(clip.iter_frames(), clip), times), frames, config["nFrames"])
    middle = (clip.hint() or 1) // 2
    shown, last = None, None
    with _progress(clip, frames, done, args.progress) as bar:
        for t, _, lr, sr in _sr_frames(clip, items, model, config, args, device, compute):
            sr8 = metrics.to_uint8(sr)
            save_rgb(os.path.join(recorder.folder, clip.frame_name(t) + ".png"), sr8)
            recorder.add(t)
            last = (t, lr, sr8)
            if shown is None and t >= middle:
                shown = last
            bar.update(1)
    return shown or last


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
    """SR frames as PNG in ``<output>/<clip>/`` (with its run record), a video for video input (source rate,
    timestamps and audio kept), and ``<clip>_compare.png`` (bicubic | SR)."""
    scale = config["scale_factor"]
    folder = os.path.join(args.output, clip.name)
    frames = parse_frames(args.frames)
    done = _resumed_frames(clip, folder, scale) if args.resume else set()
    recorder = _recorder(clip, folder, args, config, device, "upscale", done)
    times: Dict[int, object] = {}
    shown = _upscale_frames(clip, model, config, args, device, frames, done, times, recorder)
    if _read_to_end(len(times), frames, config["nFrames"]):
        clip.decoded = len(times)
        recorder.set_count(len(times))
    keep = frame_selector(clip, frames)
    selected = [t for t in sorted(times) if keep(t)]
    if frames is None:
        _warn_if_truncated(clip, len(times))
    if not selected:
        raise UserError(f"clip {clip.name}: no frame selected (--frames {args.frames}, {len(times)} frames decoded)")
    saved = [os.path.join(folder, clip.frame_name(t) + ".png") for t in selected]
    _warn_leftovers(clip, folder, saved)
    if clip.video is not None:
        video = _write_clip_video(clip, saved, selected, times, frames is not None, args)
        logger.info(f"{clip.name}: {len(saved)} frames -> {folder}/ and {video} ({args.codec}, {clip.fps} fps)")
    else:
        logger.info(f"{clip.name}: {len(saved)} frames -> {folder}/")
    if model is not None:
        _write_compare(clip, shown, selected, folder, scale, args)


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
    count = len(clip.targets) if clip.targets is not None else clip.hint()
    middle = sorted(clip.targets)[len(clip.targets) // 2] if clip.targets else max((count or 1) - 1, 0) // 2
    folder = os.path.join(args.output, clip.name)
    recorder = _recorder(clip, folder, args, config, device, "evaluate", set()) if args.save_frames else None
    decoded = [0]
    items = _stop_after(_tallied(_degraded(clip, scale, args), decoded), frames, config["nFrames"])
    rows, shown, last = [], None, None
    with _progress(clip, frames, set(), args.progress) as bar:
        for t, hr, lr, sr in _sr_frames(clip, items, model, config, args, device, keep):
            sr8 = metrics.to_uint8(sr)
            row, bic = _score(clip, t, lr, sr, sr8, hr, scale, model is None, args)
            rows.append(row)
            if recorder is not None:
                save_rgb(os.path.join(folder, clip.frame_name(t) + ".png"), sr8)
                recorder.add(t)
            last = (bic if bic is not None else sr8, sr8, hr)
            if shown is None and t >= middle:
                shown = last
            bar.set_postfix(psnr_y=f"{row['psnr_y']:.2f}")
            bar.update(1)
    if _read_to_end(decoded[0], frames, config["nFrames"]):
        clip.decoded = decoded[0]
        if recorder is not None:
            recorder.set_count(decoded[0])
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
        rows = _skip(evaluate_clip(clip, model, config, args, device), args.skip_frames, clip.hint())
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
