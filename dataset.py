"""Training and test datasets: Vimeo-90K septuplets, frame lists ("other dataset"), and folders of videos.

Each sample is ``(input, target, neighbors, flows, bicubic)`` as in the original iSeeBetter/RBPN:
``input`` LR centre frame [3, h, w], ``target`` HR centre frame [3, s*h, s*w], ``neighbors`` list of nFrames-1 LR
frames, ``flows`` list of nFrames-1 float32 [2, h, w] flows (centre -> neighbour, LR pixels, u then v) and
``bicubic`` the bicubic upscale of ``input``. Images are float32 tensors in [0, 1] (``transform``).

Pipeline per training sample (as the original): modcrop the HR frames, degrade to LR (Pillow bicubic by default,
MATLAB ``imresize`` with ``degradation="matlab"``), take a random LR patch of ``patch_size`` and the aligned HR
patch, augment (top-bottom flip, left-right mirror, rotation by 180 degrees, each with p = 0.5, the same for every
frame), then compute the flows on the augmented LR patches (or read them from a flow cache, see flow_cache.py).
"""

import os
import random
import re
import warnings
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np
import torch
from PIL import Image

from errors import UserError
from flow_cache import FlowCache, cache_key, crop_and_augment
from imresize import imresize
from options import DEGRADATIONS
from video_io import (
    VIDEO_EXTENSIONS,
    VideoError,
    find_video_sources,
    iter_video,
    list_frames,
    load_rgb,
    read_frames,
    video_info,
)


class DataError(UserError):
    """Bad training/test data: missing list file, missing or corrupt frame, inconsistent sizes, unreadable video.

    When raised inside a DataLoader worker, torch re-raises it in the main process as ``DataError(<worker
    traceback text>)``; the constructor then keeps only the original one-line message.
    """

    def __init__(self, message: str = ""):
        message = str(message)
        if message.startswith("Caught ") and "Original Traceback" in message:
            self.worker_traceback = message
            last = [line for line in message.strip().splitlines() if line.strip()][-1]
            message = re.sub(r"^[\w.]*DataError: ", "", last.strip())
        super().__init__(message)


# ----------------------------------------------------------------------------------------------------------------
# Image helpers (numpy RGB uint8 HxWx3)


def modcrop(img: np.ndarray, scale: int) -> np.ndarray:
    """Crop the top-left part whose height and width are multiples of ``scale``."""
    h, w = img.shape[:2]
    return img[: h - h % scale, : w - w % scale]


def degrade(hr: np.ndarray, scale: int, method: str = "pil") -> np.ndarray:
    """HR uint8 -> LR uint8 of size (h // scale, w // scale) by bicubic downscaling.

    ``pil``: Pillow ``Image.resize(..., BICUBIC)`` (antialiased, the original's degradation).
    ``matlab``: MATLAB ``imresize(hr, 1/scale, 'bicubic')`` (the degradation of the published Vid4/Vimeo test sets).
    """
    h, w = hr.shape[:2]
    if h < scale or w < scale:
        raise DataError(f"frame of {w}x{h} is smaller than the upscale factor {scale}")
    if method == "pil":
        return np.asarray(Image.fromarray(hr).resize((w // scale, h // scale), Image.BICUBIC))
    if method == "matlab":
        return imresize(hr[: h - h % scale, : w - w % scale], output_shape=(h // scale, w // scale))
    raise UserError(f"unknown degradation {method!r}; use one of {', '.join(DEGRADATIONS)}")


def bicubic_upscale(lr: np.ndarray, scale: int, method: str = "pil") -> np.ndarray:
    """LR uint8 -> bicubic upscale by ``scale`` (Pillow, or MATLAB imresize with ``method="matlab"``)."""
    h, w = lr.shape[:2]
    if method == "pil":
        return np.asarray(Image.fromarray(lr).resize((w * scale, h * scale), Image.BICUBIC))
    if method == "matlab":
        return imresize(lr, output_shape=(h * scale, w * scale))
    raise UserError(f"unknown degradation {method!r}; use one of {', '.join(DEGRADATIONS)}")


def to_tensor(img: np.ndarray) -> torch.Tensor:
    """RGB uint8 HxWx3 -> float32 tensor [3, H, W] in [0, 1] (what torchvision's ToTensor does)."""
    return torch.from_numpy(np.ascontiguousarray(img).transpose(2, 0, 1).copy()).float().div_(255.0)


def random_augment(rng: random.Random) -> dict:
    """Draw the original's augmentation: flip (top-bottom), mirror (left-right), rot180, each with p = 0.5."""
    return {"flip": rng.random() < 0.5, "mirror": rng.random() < 0.5, "rot180": rng.random() < 0.5}


def apply_augment(img: np.ndarray, aug: dict) -> np.ndarray:
    if aug.get("flip"):
        img = img[::-1, :]
    if aug.get("mirror"):
        img = img[:, ::-1]
    if aug.get("rot180"):
        img = img[::-1, ::-1]
    return np.ascontiguousarray(img)


def compute_flows(center: np.ndarray, neighbours: Sequence[np.ndarray], threads: int = 0) -> List[np.ndarray]:
    """Coarse2Fine flows centre -> each neighbour with the original's parameters (our ``pyflow``)."""
    try:
        import pyflow
    except ImportError as exc:
        raise UserError(f"the pyflow extension is not built ({exc}); run `make setup` or "
                        "`.venv/bin/python setup.py build_ext --inplace`") from exc
    flows = pyflow.rbpn_flows(center, list(neighbours), threads=threads)
    return [np.ascontiguousarray(f, dtype=np.float32) for f in flows]


# ----------------------------------------------------------------------------------------------------------------
# Neighbour choice


def neighbour_offsets(n_frames: int, future_frame: bool) -> List[int]:
    """Offsets of the neighbours relative to the target, in the original's order.

    future_frame: [-tt..-1, 1..tt] (odd nFrames) or [-tt..-1, 1..tt-1] (even); else [-1, -2, ..., -(nFrames-1)].
    """
    if n_frames < 2:
        raise UserError(f"nFrames must be at least 2, got {n_frames}")
    if future_frame:
        tt = n_frames // 2
        last = tt if n_frames % 2 else tt - 1
        return list(range(-tt, 0)) + list(range(1, last + 1))
    return [-i for i in range(1, n_frames)]


_NUMBER_RE = re.compile(r"^(.*?)(\d+)(\.[A-Za-z0-9]+)$")


def numbered_neighbour(path: str, offset: int) -> Optional[str]:
    """Path of frame ``number + offset`` for a name ending in digits (``foliage/001.png`` -> ``foliage/002.png``)."""
    m = _NUMBER_RE.match(path)
    if m is None:
        raise DataError(f"frame name {path!r} does not end in a frame number (expected e.g. 'clip/001.png')")
    prefix, digits, ext = m.groups()
    number = int(digits) + offset
    if number < 0:
        return None
    return f"{prefix}{number:0{len(digits)}d}{ext}"


def read_list_file(path: str) -> List[str]:
    """Non-empty stripped lines of a list file; DataError if it is missing or empty."""
    if not os.path.isfile(path):
        raise DataError(f"list file not found: {path}")
    with open(path, encoding="utf-8") as f:
        lines = [line.strip() for line in f if line.strip()]
    if not lines:
        raise DataError(f"list file is empty: {path}")
    return lines


def load_frame(path: str) -> np.ndarray:
    """``load_rgb`` with the error converted to DataError."""
    try:
        return load_rgb(path)
    except VideoError as exc:
        raise DataError(str(exc)) from None


# ----------------------------------------------------------------------------------------------------------------
# The sample pipeline shared by every dataset


class _SequenceDataset(torch.utils.data.Dataset):
    """Base class: subclasses implement ``__len__``, ``sequence_name`` and ``load_hr``."""

    def __init__(self, n_frames: int, upscale_factor: int, data_augmentation: bool, patch_size: int,
                 future_frame: bool, transform: Optional[Callable], degradation: str, flow_cache: Optional[str],
                 flow_threads: int, upscale_only: bool = False):
        if upscale_factor < 1:
            raise UserError(f"upscale_factor must be positive, got {upscale_factor}")
        if degradation not in DEGRADATIONS:
            raise UserError(f"unknown degradation {degradation!r}; use one of {', '.join(DEGRADATIONS)}")
        if patch_size < 0:
            raise UserError(f"patch_size must be >= 0 (0 = whole frames), got {patch_size}")
        self.nFrames = n_frames
        self.upscale_factor = upscale_factor
        self.data_augmentation = data_augmentation
        self.patch_size = patch_size
        self.future_frame = future_frame
        self.transform = transform if transform is not None else to_tensor
        self.degradation = degradation
        self.flow_cache = FlowCache(flow_cache) if flow_cache else None
        self.flow_threads = flow_threads
        self.upscale_only = upscale_only
        self.skip_flows = False  # True: zero flows here, the training step computes them (--flow_backend torch)
        self.offsets = neighbour_offsets(n_frames, future_frame)
        self._warned = set()
        self._rng = random.Random()

    # -- to implement --------------------------------------------------------------------------------------------
    def sequence_name(self, index: int) -> str:
        raise NotImplementedError

    def load_hr(self, index: int) -> Tuple[np.ndarray, List[Optional[np.ndarray]], List[str]]:
        """(target HR frame, neighbour HR frames or None when missing, frame paths for the flow-cache key)."""
        raise NotImplementedError

    # -- pipeline ------------------------------------------------------------------------------------------------
    def _warn_missing(self, index: int, missing: int) -> None:
        name = self.sequence_name(index)
        if name not in self._warned:
            self._warned.add(name)
            warnings.warn(f"{name}: {missing} neighbour frame(s) missing, replaced by the centre frame "
                          "(as the original)", stacklevel=3)

    def _check_sizes(self, index: int, target: np.ndarray, neighbours: List[Optional[np.ndarray]]) -> None:
        for offset, nb in zip(self.offsets, neighbours):
            if nb is not None and nb.shape != target.shape:
                raise DataError(f"{self.sequence_name(index)}: neighbour at offset {offset:+d} is "
                                f"{nb.shape[1]}x{nb.shape[0]} but the centre frame is "
                                f"{target.shape[1]}x{target.shape[0]}; all frames of a sequence must have one size")

    def lr_frames(self, index: int) -> Tuple[np.ndarray, np.ndarray, List[np.ndarray], List[str]]:
        """(HR target, LR centre, LR neighbours with missing ones replaced, frame paths) for a whole sequence."""
        target, neighbours, paths = self.load_hr(index)
        self._check_sizes(index, target, neighbours)
        missing = sum(nb is None for nb in neighbours)
        if missing:
            self._warn_missing(index, missing)
        if self.upscale_only:
            lr = target
            lr_nbs = [lr if nb is None else nb for nb in neighbours]
            return target, lr, lr_nbs, paths
        scale = self.upscale_factor
        target = modcrop(target, scale)
        if target.shape[0] < scale or target.shape[1] < scale:
            raise DataError(f"{self.sequence_name(index)}: frame is smaller than the upscale factor {scale}")
        lr = degrade(target, scale, self.degradation)
        lr_nbs = [lr if nb is None else degrade(modcrop(nb, scale), scale, self.degradation) for nb in neighbours]
        return target, lr, lr_nbs, paths

    def _flow_key(self, paths: List[str]) -> str:
        return cache_key(paths, f"{self.degradation}:x{self.upscale_factor}:up{int(self.upscale_only)}:"
                                f"{self.offsets}")

    def full_frame_flows(self, index: int, lr: Optional[np.ndarray] = None, lr_nbs=None, paths=None) -> np.ndarray:
        """Whole-LR-frame flows of a sequence from the cache, computing and storing them when absent."""
        if lr is None:
            _, lr, lr_nbs, paths = self.lr_frames(index)
        key = self._flow_key(paths)
        h, w = lr.shape[:2]
        flows = self.flow_cache.load(key, len(lr_nbs), h, w)
        if flows is None:
            flows = self.flow_cache.store(key, compute_flows(lr, lr_nbs, self.flow_threads))
        return flows

    def _patch_corner(self, index: int, lr: np.ndarray) -> Tuple[int, int]:
        ip = self.patch_size
        h, w = lr.shape[:2]
        if h < ip or w < ip:
            raise DataError(f"{self.sequence_name(index)}: LR frame {w}x{h} is smaller than patch_size {ip} "
                            f"(HR frames must be at least {ip * self.upscale_factor} px on each side)")
        return self._rng.randrange(0, h - ip + 1), self._rng.randrange(0, w - ip + 1)

    def make_sample(self, index: int, training: bool):
        target, lr, lr_nbs, paths = self.lr_frames(index)
        scale = self.upscale_factor
        aug = {}
        y = x = 0
        if training and self.patch_size > 0:
            y, x = self._patch_corner(index, lr)
            ip, tp = self.patch_size, self.patch_size * scale
            full_lr, full_nbs = lr, lr_nbs
            lr = lr[y : y + ip, x : x + ip]
            lr_nbs = [nb[y : y + ip, x : x + ip] for nb in lr_nbs]
            target = target[y * scale : y * scale + tp, x * scale : x * scale + tp]
        else:
            full_lr, full_nbs = lr, lr_nbs
        if training and self.data_augmentation:
            aug = random_augment(self._rng)
            lr = apply_augment(lr, aug)
            lr_nbs = [apply_augment(nb, aug) for nb in lr_nbs]
            target = apply_augment(target, aug)
        if self.skip_flows:
            flows = [np.zeros((2,) + lr.shape[:2], np.float32) for _ in lr_nbs]
        elif self.flow_cache is not None:
            cached = self.full_frame_flows(index, full_lr, full_nbs, paths)
            flows = crop_and_augment(cached, y, x, lr.shape[0], lr.shape[1], aug)
        else:
            flows = compute_flows(lr, lr_nbs, self.flow_threads)
        bicubic = bicubic_upscale(lr, scale, self.degradation)
        t = self.transform
        return (t(lr), t(target), [t(nb) for nb in lr_nbs], [torch.from_numpy(f) for f in flows], t(bicubic))

    def _getitem(self, index: int, training: bool):
        try:
            return self.make_sample(index, training)
        except UserError as exc:
            if isinstance(exc, DataError):
                raise
            raise DataError(str(exc)) from None
        except Exception as exc:  # anything else: name the sequence so the worker's re-raise stays readable
            raise DataError(f"{self.sequence_name(index)}: {type(exc).__name__}: {exc}") from exc

    def validate_first(self) -> None:
        """Cheap eager check: the first sequence exists, decodes and is large enough."""
        target, lr, lr_nbs, _ = self.lr_frames(0)
        if self.patch_size > 0 and not self.upscale_only:
            self._patch_corner(0, lr)


# ----------------------------------------------------------------------------------------------------------------
# Frame-list datasets (the original's)


class _ListDataset(_SequenceDataset):
    def __init__(self, image_dir, nFrames, upscale_factor, data_augmentation, file_list, other_dataset, patch_size,
                 future_frame, transform, degradation, flow_cache, flow_threads, upscale_only=False):
        super().__init__(nFrames, upscale_factor, data_augmentation, patch_size, future_frame, transform,
                         degradation, flow_cache, flow_threads, upscale_only)
        self.image_dir = os.fspath(image_dir)
        if not os.path.isdir(self.image_dir):
            raise DataError(f"data directory not found: {self.image_dir}")
        self.list_path = os.path.join(self.image_dir, file_list)
        self.entries = read_list_file(self.list_path)
        self.other_dataset = other_dataset
        if not other_dataset:
            center = nFrames if not future_frame else 4
            bad = [center + o for o in self.offsets if not 1 <= center + o <= 7]
            if bad:
                raise UserError(f"nFrames={nFrames} does not fit a Vimeo-90K septuplet (im1..im7) with "
                                f"future_frame={future_frame}")
            self.center = center
            # File names a septuplet folder must hold: the centre frame, then the neighbours in offset order.
            self.septuplet_frames = [f"im{center + o}.png" for o in [0] + self.offsets]
        self.check_listed_files()

    def __len__(self) -> int:
        return len(self.entries)

    def sequence_name(self, index: int) -> str:
        return os.path.join(self.image_dir, self.entries[index])

    def _entry_problem(self, entry: str) -> Optional[str]:
        """Why a list entry cannot be read (a short phrase), or None when its files are there."""
        path = os.path.join(self.image_dir, entry)
        if self.other_dataset:
            return None if os.path.isfile(path) else "not found"  # missing neighbours are allowed (as the original)
        if not os.path.isdir(path):
            return "no folder"
        try:
            names = set(os.listdir(path))
        except OSError as exc:
            return f"unreadable: {exc.strerror}"
        missing = [name for name in self.septuplet_frames if name not in names]
        return f"no {', '.join(missing)}" if missing else None

    def check_listed_files(self, shown: int = 5) -> None:
        """Check every listed sequence folder (with the frames nFrames needs) or listed frame up front: one DataError
        naming the first ``shown`` missing ones and their count, instead of a stop when a sample is drawn."""
        problems = []
        for entry in self.entries:
            problem = self._entry_problem(entry)
            if problem is not None:
                problems.append(f"{entry} ({problem})")
        if problems:
            what = "frames" if self.other_dataset else "sequences"
            more = ", ..." if len(problems) > shown else ""
            raise DataError(f"{len(problems)} of {len(self.entries)} {what} listed in {self.list_path} are missing "
                            f"or incomplete: {', '.join(problems[:shown])}{more}; fix the list or fetch the data again")

    def frame_paths(self, index: int) -> Tuple[str, List[str]]:
        entry = self.entries[index]
        if self.other_dataset:
            center = os.path.join(self.image_dir, entry)
            nbs = [numbered_neighbour(entry, o) for o in self.offsets]
            return center, [os.path.join(self.image_dir, n) if n is not None else "" for n in nbs]
        folder = os.path.join(self.image_dir, entry)
        if not os.path.isdir(folder):
            raise DataError(f"sequence folder not found: {folder} (listed in {self.list_path})")
        center, *neighbours = [os.path.join(folder, name) for name in self.septuplet_frames]
        return center, neighbours

    def load_hr(self, index: int):
        center, nb_paths = self.frame_paths(index)
        target = load_frame(center)
        neighbours = []
        for p in nb_paths:
            if self.other_dataset and (not p or not os.path.exists(p)):
                neighbours.append(None)  # the original replaces a missing neighbour by the centre frame
            else:
                neighbours.append(load_frame(p))
        return target, neighbours, [center] + [p for p in nb_paths if p]


class DatasetFromFolder(_ListDataset):
    """Training set from a Vimeo-90K ``sequences`` folder + list, or an "other dataset" frame list."""

    def __init__(self, image_dir: str, nFrames: int, upscale_factor: int, data_augmentation: bool, file_list: str,
                 other_dataset: bool, patch_size: int, future_frame: bool, transform: Optional[Callable] = None,
                 degradation: str = "pil", flow_cache: Optional[str] = None, flow_threads: int = 0):
        super().__init__(image_dir, nFrames, upscale_factor, data_augmentation, file_list, other_dataset, patch_size,
                         future_frame, transform, degradation, flow_cache, flow_threads)
        self.validate_first()

    def __getitem__(self, index: int):
        return self._getitem(index, training=True)


class DatasetFromFolderTest(_ListDataset):
    """Test set: whole frames, no augmentation; ``upscale_only`` feeds the listed frames as LR input unchanged."""

    def __init__(self, image_dir: str, nFrames: int, upscale_factor: int, file_list: str, other_dataset: bool,
                 future_frame: bool, transform: Optional[Callable] = None, upscale_only: bool = False,
                 degradation: str = "pil", flow_cache: Optional[str] = None, flow_threads: int = 0):
        super().__init__(image_dir, nFrames, upscale_factor, False, file_list, other_dataset, 0, future_frame,
                         transform, degradation, flow_cache, flow_threads, upscale_only)
        self.validate_first()

    def __getitem__(self, index: int):
        return self._getitem(index, training=False)


# ----------------------------------------------------------------------------------------------------------------
# Video folder dataset (new)


class VideoFolderDataset(_SequenceDataset):
    """Training from a folder of video files (mp4/avi/...) and/or frame folders, decoded with OpenCV.

    Every frame whose full window of nFrames exists (``neighbour_offsets``) is a sample centre. Videos are indexed
    once at construction (one decode pass to count frames, memory-bounded) and each sample decodes only its window.
    """

    CACHE_BYTES = 512 * 1024 * 1024

    def __init__(self, image_dir: str, nFrames: int, upscale_factor: int, data_augmentation: bool, patch_size: int,
                 future_frame: bool, transform: Optional[Callable] = None, degradation: str = "pil",
                 flow_cache: Optional[str] = None, flow_threads: int = 0, training: bool = True):
        super().__init__(nFrames, upscale_factor, data_augmentation, patch_size, future_frame, transform,
                         degradation, flow_cache, flow_threads)
        self.image_dir = os.fspath(image_dir)
        self.training = training
        sources = find_video_sources(self.image_dir)
        if not sources:
            raise DataError(f"no videos ({', '.join(VIDEO_EXTENSIONS)}) or frame folders found in {self.image_dir}")
        lo, hi = -min(min(self.offsets), 0), max(max(self.offsets), 0)
        self.sources = []  # (path, frame list or None for a video, frame count)
        self.samples = []  # (source index, centre frame index)
        for src in sources:
            frames = list_frames(src) if os.path.isdir(src) else None
            count = len(frames) if frames is not None else self._count_video_frames(src)
            if count < lo + hi + 1:
                warnings.warn(f"{src}: {count} frames, fewer than the {lo + hi + 1} needed for nFrames={nFrames}; "
                              "skipped", stacklevel=2)
                continue
            self.sources.append((src, frames, count))
            self.samples.extend((len(self.sources) - 1, c) for c in range(lo, count - hi))
        if not self.samples:
            raise DataError(f"no clip in {self.image_dir} has at least {lo + hi + 1} frames")
        self._video_cache = (None, None)
        self.validate_first()

    @staticmethod
    def _count_video_frames(path: str) -> int:
        try:
            return sum(1 for _ in iter_video(path))
        except VideoError as exc:
            raise DataError(str(exc)) from None

    def __len__(self) -> int:
        return len(self.samples)

    def sequence_name(self, index: int) -> str:
        src, centre = self.samples[index]
        return f"{self.sources[src][0]}#frame{centre}"

    def _video_window(self, src: int, first: int, count: int) -> List[np.ndarray]:
        """Frames first..first+count-1 of a video. A short video (< CACHE_BYTES decoded) is decoded once and kept
        (for the last video used); a long one is read by seeking to the window, so memory stays bounded."""
        path, _, total = self.sources[src]
        try:
            if self._video_cache[0] == path:
                return self._video_cache[1][first : first + count]
            info = video_info(path)
            if info["width"] * info["height"] * 3 * total <= self.CACHE_BYTES:
                frames = list(iter_video(path))
                if len(frames) != total:
                    raise DataError(f"{path}: decoded {len(frames)} frames, indexed {total}; did the file change?")
                self._video_cache = (path, frames)
                return frames[first : first + count]
            return read_frames(path, first, count)
        except VideoError as exc:
            raise DataError(str(exc)) from None

    def load_hr(self, index: int):
        src, centre = self.samples[index]
        path, frame_list, count = self.sources[src]
        wanted = [centre] + [centre + o for o in self.offsets]
        if frame_list is not None:
            frames = [load_frame(frame_list[i]) for i in wanted]
            paths = [frame_list[i] for i in wanted]
        else:
            first = min(wanted)
            window = self._video_window(src, first, max(wanted) - first + 1)
            frames = [window[i - first] for i in wanted]
            paths = [f"{path}#{i}" for i in wanted]
            paths[0] = path  # size/mtime of the video enter the cache key through its real path
        return frames[0], frames[1:], paths

    def __getitem__(self, index: int):
        return self._getitem(index, training=self.training)
