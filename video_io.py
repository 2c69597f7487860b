"""Reading and writing frames and videos (OpenCV), RGB uint8 HxWx3 everywhere.

Every failure a user can cause (missing file, corrupt image, unreadable video) raises ``VideoError`` naming the file.
Writers are atomic: they write a temporary file next to the target and ``os.replace`` it.
"""

import os
import re
import shutil
from typing import Iterable, Iterator, List, Tuple

import cv2
import numpy as np

import atomic
from errors import UserError, describe_os_error

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


class VideoError(UserError):
    """A frame or video file that cannot be read or written."""


def is_video_file(path: str) -> bool:
    return os.path.splitext(path)[1].lower() in VIDEO_EXTENSIONS


def is_image_file(path: str) -> bool:
    return os.path.splitext(path)[1].lower() in IMAGE_EXTENSIONS


def _to_rgb(img: np.ndarray, path: str) -> np.ndarray:
    """OpenCV BGR / gray / BGRA (8 or 16 bit) -> RGB uint8 HxWx3."""
    if img.dtype == np.uint16:
        img = (img.astype(np.float64) / 257.0).round().astype(np.uint8)
    elif img.dtype != np.uint8:
        raise VideoError(f"{path}: unsupported pixel type {img.dtype}; convert the image to 8-bit RGB")
    if img.ndim == 2:
        return np.ascontiguousarray(np.repeat(img[:, :, None], 3, axis=2))
    if img.shape[2] == 4:
        return cv2.cvtColor(img, cv2.COLOR_BGRA2RGB)
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def load_rgb(path: str) -> np.ndarray:
    """Read an image file as RGB uint8 HxWx3; ``VideoError`` if it is missing or cannot be decoded."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise VideoError(f"frame not found: {path}")
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as exc:
        raise VideoError(describe_os_error(exc, "cannot read frame")) from exc
    img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if img is None:
        raise VideoError(f"cannot decode image {path} (corrupt or not an image); replace or remove it")
    return _to_rgb(img, path)


def save_rgb(path: str, array: np.ndarray) -> None:
    """Write an RGB uint8 HxWx3 (or HxW gray) image atomically; the format follows the extension."""
    path = os.fspath(path)
    arr = np.asarray(array)
    if arr.dtype != np.uint8:
        raise VideoError(f"save_rgb({path}): expected uint8, got {arr.dtype}")
    if arr.ndim == 3 and arr.shape[2] == 3:
        arr = cv2.cvtColor(arr, cv2.COLOR_RGB2BGR)
    elif arr.ndim != 2:
        raise VideoError(f"save_rgb({path}): expected HxWx3 or HxW, got shape {arr.shape}")
    ext = os.path.splitext(path)[1].lower()
    if ext not in IMAGE_EXTENSIONS:
        raise VideoError(f"save_rgb({path}): unknown image extension {ext!r}; use one of {', '.join(IMAGE_EXTENSIONS)}")
    ok, buf = cv2.imencode(ext, arr, [cv2.IMWRITE_PNG_COMPRESSION, 3] if ext == ".png" else [])
    if not ok:
        raise VideoError(f"cannot encode image {path}")
    try:
        atomic.write_bytes(path, buf.tobytes())
    except OSError as exc:
        raise VideoError(f"cannot write {path}: {exc.strerror or exc}") from exc


def natural_key(name: str) -> list:
    """Sort key that orders 'f2.png' before 'f10.png'."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def list_frames(folder: str) -> List[str]:
    """Image files in ``folder`` (full paths), natural sort; ``VideoError`` if the folder is missing or has none."""
    folder = os.fspath(folder)
    if not os.path.isdir(folder):
        raise VideoError(f"frame folder not found: {folder}")
    names = [n for n in os.listdir(folder) if is_image_file(n) and not n.startswith(".")]
    if not names:
        raise VideoError(f"no image files ({', '.join(IMAGE_EXTENSIONS)}) in {folder}")
    return [os.path.join(folder, n) for n in sorted(names, key=natural_key)]


def find_video_sources(data_dir: str) -> List[str]:
    """Videos and frame folders in ``data_dir`` (or ``data_dir`` itself when it is a video or a frame folder)."""
    data_dir = os.fspath(data_dir)
    if os.path.isfile(data_dir):
        return [data_dir] if is_video_file(data_dir) else []
    if not os.path.isdir(data_dir):
        return []
    names = sorted(os.listdir(data_dir), key=natural_key)
    if any(is_image_file(n) for n in names):
        return [data_dir]
    sources = []
    for n in names:
        p = os.path.join(data_dir, n)
        if n.startswith("."):
            continue
        if os.path.isfile(p) and is_video_file(p):
            sources.append(p)
        elif os.path.isdir(p) and any(is_image_file(m) for m in os.listdir(p)):
            sources.append(p)
    return sources


def _open_capture(path: str) -> "cv2.VideoCapture":
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise VideoError(f"video not found: {path}")
    cap = cv2.VideoCapture(path)
    if not cap.isOpened():
        cap.release()
        raise VideoError(f"cannot open video {path} (corrupt or unsupported codec); convert it to mp4 or frames")
    return cap


def iter_video(path: str) -> Iterator[np.ndarray]:
    """Yield the frames of a video one by one as RGB uint8 (memory-bounded); ``VideoError`` if none decode."""
    cap = _open_capture(path)
    count = 0
    try:
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            count += 1
            yield _to_rgb(frame, path)
    finally:
        cap.release()
    if count == 0:
        raise VideoError(f"no frame could be decoded from video {path} (corrupt or unsupported codec)")


def read_frames(path: str, start: int, count: int) -> List[np.ndarray]:
    """``count`` consecutive frames from frame index ``start`` (seeks, then decodes only those frames)."""
    cap = _open_capture(path)
    frames = []
    try:
        if start > 0:
            cap.set(cv2.CAP_PROP_POS_FRAMES, start)
        for _ in range(count):
            ok, frame = cap.read()
            if not ok:
                break
            frames.append(_to_rgb(frame, path))
    finally:
        cap.release()
    if len(frames) != count:
        raise VideoError(f"{path}: could not decode frames {start}..{start + count - 1} (got {len(frames)})")
    return frames


def video_info(path: str) -> dict:
    """``{"width", "height", "fps", "frame_count"}`` from the container header (frame_count may be approximate)."""
    cap = _open_capture(path)
    try:
        info = {
            "width": int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)),
            "height": int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)),
            "fps": float(cap.get(cv2.CAP_PROP_FPS) or 0.0),
            "frame_count": int(cap.get(cv2.CAP_PROP_FRAME_COUNT)),
        }
    finally:
        cap.release()
    if info["width"] <= 0 or info["height"] <= 0:
        raise VideoError(f"video {path} reports no frame size (corrupt or unsupported codec)")
    return info


def read_video(path: str) -> Tuple[List[np.ndarray], float]:
    """All frames of a video (RGB uint8) and its frame rate (25.0 when the container does not say)."""
    cap = _open_capture(path)
    fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
    cap.release()
    frames = list(iter_video(path))
    return frames, (fps if fps > 0 else 25.0)


def write_video(path: str, frames: Iterable[np.ndarray], fps: float) -> int:
    """Write RGB uint8 frames to an mp4 (mp4v fourcc) atomically; returns the number of frames written."""
    path = os.fspath(path)
    if fps <= 0:
        raise VideoError(f"write_video({path}): fps must be positive, got {fps}")
    writer = None
    count = 0
    size = None
    with atomic.atomic_path(path) as tmp:  # the extension stays: OpenCV picks the container from it
        try:
            for frame in frames:
                frame = np.asarray(frame)
                if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
                    raise VideoError(f"write_video({path}): frames must be uint8 HxWx3, got {frame.dtype} "
                                     f"{frame.shape}")
                if writer is None:
                    size = (frame.shape[1], frame.shape[0])
                    writer = cv2.VideoWriter(tmp, cv2.VideoWriter_fourcc(*"mp4v"), float(fps), size)
                    if not writer.isOpened():
                        raise VideoError(f"cannot open a video writer for {path} (mp4v codec unavailable?)")
                elif (frame.shape[1], frame.shape[0]) != size:
                    raise VideoError(f"write_video({path}): frame {count} is {frame.shape[1]}x{frame.shape[0]}, "
                                     f"expected {size[0]}x{size[1]}")
                writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
                count += 1
            if writer is None:
                raise VideoError(f"write_video({path}): no frames to write")
        finally:
            if writer is not None:
                writer.release()
        _check_written(tmp, path, count)
    return count


def _check_written(tmp: str, path: str, count: int) -> None:
    """``VideoError`` unless the freshly written ``tmp`` opens and holds ``count`` frames (OpenCV's writer does not
    report failed writes, e.g. on a full disk); the caller's atomic write then leaves nothing under ``path``."""
    cap = cv2.VideoCapture(tmp)
    try:
        written = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) if cap.isOpened() else 0
    finally:
        cap.release()
    if written != count:
        folder = os.path.dirname(os.path.abspath(path))
        raise VideoError(f"writing {path} failed ({written} of {count} frames readable back; is the disk full? "
                         f"{shutil.disk_usage(folder).free / 1e6:.1f} MB free in {folder}); nothing was written "
                         "under that name")
