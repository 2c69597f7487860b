"""Which clips and frames a tester run reads, and which files it writes.

A ``Clip`` is one sequence: a video file or an ordered list of frame files. ``resolve_clips`` makes them from
``--input`` or from the original's ``--data_dir`` + ``--file_list``. ``planned_outputs`` names what processing a clip
writes under ``--output``, and ``check_output`` refuses, before any work, a run that would overwrite an input or mix
its frames with an earlier run's. ``parse_frames``, ``frame_selector`` and ``finished_frames`` pick the frames to
compute (``--frames``, the clip's targets, ``--resume``).

A video header's frame count is a hint (``Clip.hint``): it may be wrong (variable frame rate), missing (a webm
without Duration) or absurd (a damaged Duration), so nothing loops over it and no plan depends on it. What a clip
folder holds is judged from the frames a run really decoded and wrote, as its run record says (``run_record``).

Importing this module does not import torch, so that inputs are checked before the model is loaded.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Set, Tuple

import cv2
import numpy as np

import atomic
import run_record
from errors import UserError, user_error_from_os
from video_io import (
    find_video_sources,
    is_image_file,
    is_video_file,
    iter_video_timed,
    list_frames,
    load_rgb,
    natural_key,
    video_extension,
    video_info,
)

# ----------------------------------------------------------------------------------------------------------- clips

MAX_HINT = 10**7  # a header frame count above this (about 46 h at 60 fps) is not believed, even as a hint


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
    frame_count: Optional[int] = None  # exact frame count known before decoding (--denoise movies: the loaded movie)
    header_count: Optional[int] = None  # a video header's frame count: a hint only (may be wrong, 0 or absurd)
    size: Optional[Tuple[int, int]] = None  # a video's (width, height) as its header says
    decoded: Optional[int] = None  # frames this run decoded, once it read the whole clip

    def __post_init__(self) -> None:
        if self.frames is not None:
            self.frame_names = unique_stems(self.frames)
        self._index: Optional[Dict[str, int]] = None

    def count(self) -> Optional[int]:
        """The exact frame count, when known: given, the frame files, or decoded by this run; else None (a video
        header's count is only ``hint``)."""
        if self.frame_count is not None:
            return self.frame_count
        if self.frames is not None:
            return len(self.frames)
        return self.decoded

    def hint(self) -> Optional[int]:
        """``count``, else a plausible header count (for progress totals and the middle frame, never for plans)."""
        count = self.count()
        if count is not None:
            return count
        return self.header_count if self.header_count and 0 < self.header_count <= MAX_HINT else None

    def frame_name(self, t: int) -> str:
        if self.frames is not None:
            return self.frame_names[t]
        return f"{t + 1:05d}"

    def index_of(self, file_name: str) -> Optional[int]:
        """The index of the frame whose output file is ``file_name`` (a video's ``00012.png`` -> 11), or None when no
        frame of this clip has that name. Without an exact count, any index a video could have is one."""
        stem, ext = os.path.splitext(file_name)
        if ext != ".png":
            return None
        exact = self.frame_count if self.frame_count is not None else (len(self.frames) if self.frames is not None
                                                                         else None)
        if exact is not None:  # a real count (files, a loaded movie): every name is known
            if self._index is None:
                self._index = {self.frame_name(t): t for t in range(exact)}
            return self._index.get(stem)
        if not (stem.isascii() and stem.isdigit()):
            return None
        t = int(stem) - 1
        return t if t >= 0 and self.frame_name(t) == stem else None

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
    info = video_info(path)
    return Clip(name, video=path, fps=info["rate"], header_count=info["frame_count"] or None,
                size=(info["width"], info["height"]))


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
    from dataset import read_list_file  # here: dataset imports torch

    list_path = file_list if os.path.isfile(file_list) else os.path.join(data_dir, file_list)
    if not os.path.isfile(list_path):
        raise UserError(f"file list {list_path} not found; pass --input VIDEO|FOLDER, or --data_dir and --file_list "
                        f"of an existing list")
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
    """The clips of ``--input``, else of ``--data_dir`` + ``--file_list``."""
    if args.input:
        return clips_from_input(args.input)
    return clips_from_file_list(args.data_dir, args.file_list, args.other_dataset, nFrames, args.future_frame)


# ---------------------------------------------------------------------------------------------------------- frames


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


def finished_frames(folder: str, clip: Clip, expected_hw: Tuple[int, int], indices: Iterable[int]) -> Set[int]:
    """Those of ``indices`` (the frames a run record says were written) whose SR frame is in ``folder``, decodes and
    has the expected size (for ``--resume``)."""
    done = set()
    if not os.path.isdir(folder):
        return done
    names = {n for n in os.listdir(folder) if n.endswith(".png")}
    count = clip.count()
    for t in sorted(indices):
        if count is not None and t >= count:
            continue
        name = clip.frame_name(t) + ".png"
        if name in names:
            img = cv2.imread(os.path.join(folder, name), cv2.IMREAD_UNCHANGED)
            if img is not None and img.shape[:2] == expected_hw:
                done.add(t)
    return done


def input_identity(clip: Clip) -> dict:
    """What the clip reads, as run records name it."""
    return run_record.input_identity(clip.video, clip.frames)


def clip_record(clip: Clip, folder: str) -> Optional[dict]:
    """The run record of ``folder`` when it describes this clip's input as it is now, else None."""
    record = run_record.read(folder)
    if record is None or record["input"] != input_identity(clip):
        return None
    return record


# ---------------------------------------------------------------------------------------------------------- output


def real_path(path: str) -> str:
    """The absolute path with symlinks resolved, to compare inputs with outputs."""
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


def _replaced(clip: Clip, name: str, frames: Optional[range], count: Optional[int]) -> bool:
    """Whether this run writes (or, resuming, keeps) the frame file ``name`` of the clip's output folder: a frame of
    the clip (``count`` frames, when known), among its targets and inside ``--frames``."""
    t = clip.index_of(name)
    return (t is not None and (count is None or t < count) and (clip.targets is None or t in clip.targets)
            and (frames is None or t in frames))


def _check_writable(out: str) -> None:
    """``--output`` is a folder (created if missing) where files can be written."""
    if os.path.exists(out) and not os.path.isdir(out):
        raise UserError(f"--output {out} is a file; pass a folder (it is created if missing)")
    try:
        os.makedirs(out, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=atomic.TEMP_PREFIX, dir=out)
        os.close(fd)
        os.remove(probe)
    except OSError as exc:  # name the folder, not our probe file
        raise user_error_from_os(OSError(exc.errno, exc.strerror, out), "cannot write to --output") from exc


def _describe_input(identity: dict) -> str:
    return identity.get("video") or identity.get("frames") or "another input"


def _check_resumable(clip: Clip, folder: str, existing: List[str], record: Optional[dict]) -> None:
    """``--resume`` keeps only frames whose run record describes this clip's input as it is now."""
    if not existing or record is not None:
        return
    found = run_record.read(folder)
    if found is None:
        raise UserError(f"--resume: {folder} holds {len(existing)} file(s) but no record of the run that made them "
                        f"({run_record.record_path(folder)}), so they cannot be trusted; run without --resume to "
                        "compute them again, or choose another --output")
    then = _describe_input(found["input"])
    now = _describe_input(input_identity(clip))
    why = f"from {then}, not {now}" if then != now else f"from {now} before it changed"
    raise UserError(f"--resume: the frames in {folder} were made {why}; run without --resume to compute them "
                    "again, or choose another --output")


def _check_frame_folder(clip: Clip, folder: str, args: argparse.Namespace, input_files: Set[str],
                        input_folders: Set[str]) -> None:
    """The clip's output frame folder holds no inputs and no files of another run (our stale temporaries go).

    Which files are this run's own comes from the frames it will write and from the folder's run record (the frames
    an earlier run of the same input wrote, and how many frames that input decoded to), never from a video header."""
    out = args.output
    if real_path(folder) in input_folders or real_path(folder) in input_files:
        raise UserError(f"--output {out}: the output frames of {clip.name} would go into {folder}, which holds "
                        "input frames; choose an --output folder apart from the inputs (nothing was written)")
    if os.path.isfile(folder):
        raise UserError(f"{folder} is a file but the output frames of {clip.name} go into a folder of that "
                        "name; remove it or choose another --output")
    if os.path.isdir(folder):
        atomic.remove_stale_temps(folder)
        existing = sorted((n for n in os.listdir(folder) if not n.startswith(".")), key=natural_key)
        record = None if args.denoise else clip_record(clip, folder)
        if args.resume and args.upscale_only:
            _check_resumable(clip, folder, existing, record)
        count = clip.count() if clip.count() is not None else run_record.recorded_count(record)
        frames = parse_frames(args.frames)
        extra = [n for n in existing if not _replaced(clip, n, frames, count)]
        if extra:
            raise UserError(f"{folder} already holds {len(extra)} file(s) that this run would not replace "
                            f"({', '.join(extra[:3])}{', ...' if len(extra) > 3 else ''}), from an earlier run or "
                            "another clip; empty that folder or choose another --output so results do not mix")
    if args.denoise:  # --denoise replaces the frames and keeps no record: an upscale run's record would be wrong
        run_record.remove(folder)


def check_output(clips: List[Clip], args: argparse.Namespace, extra_inputs: Sequence[str] = ()) -> None:
    """Before any work: ``--output`` is a writable folder, no output path resolves to an input (symlinks included)
    and no clip folder holds frames of an earlier run that this one would leave mixed in. Removes our own stale
    temporary files (a killed earlier run).

    ``extra_inputs``: more files or folders that are read (a ``--reference`` movie, the ``--input`` folder); a folder
    among the inputs is protected like a frame folder."""
    out = args.output
    _check_writable(out)
    inputs = [p for clip in clips for p in clip.inputs()] + list(extra_inputs)
    input_files = {real_path(p) for p in inputs}
    input_folders = {os.path.dirname(real_path(p)) for clip in clips if clip.frames is not None for p in clip.frames}
    input_folders |= {real_path(p) for p in inputs if os.path.isdir(p)}
    fixed = [] if args.upscale_only else [os.path.join(out, "metrics.json"), os.path.join(out, "per_frame.csv")]
    if args.denoise:
        fixed = [os.path.join(out, "metrics.json")]
    for path in fixed:
        if os.path.isdir(path):
            raise UserError(f"{path} is a folder; remove it or choose another --output")
    for clip in clips:
        folder, files = planned_outputs(clip, args)
        for path in files + fixed:
            real = real_path(path)
            if real in input_files or os.path.dirname(real) in input_folders:
                what = "is" if real in input_files else "would be written into the frame folder of"
                raise UserError(f"--output {out}: {path} {what} an input of this run; choose an --output folder "
                                "apart from the inputs (nothing was written)")
        if folder is not None:
            _check_frame_folder(clip, folder, args, input_files, input_folders)
    atomic.remove_stale_temps(out)
