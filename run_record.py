"""What made the frames of an output clip folder: a small JSON record beside it, ``<out>/.<clip>.iseebetter_run.json``.

A tester run replaces an earlier record before it writes its first frame, and adds each frame it writes once the
frame is on disk, so the record never claims a frame that it did not make. A later run reads it to tell its own
frames from foreign files, and plans a rerun or ``--resume`` from the frames really decoded and written, never from
a video header's frame count. ``--resume`` refuses frames that another model or other options made
(``differences``).

The record holds:

- ``input``: the clip's input (real path; a video's size and modification time, a frame list's names digest),
- ``settings``: the model (file name and SHA-256) and every option that changes the frames (scale, nFrames,
  precision, tile, flow backend, residual, ...),
- ``frames``: the frames written with these settings, as 0-based index ranges ``[[start, stop], ...]``,
- ``frame_count``: the number of frames the clip decoded to, once a run read it to its end (else null).
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Dict, Iterable, List, Optional, Sequence, Set

import atomic

RECORD_SUFFIX = ".iseebetter_run.json"
VERSION = 1


def record_path(folder: str) -> str:
    """The record of the clip folder ``folder``: beside it, hidden (``out/clip`` -> ``out/.clip.iseebetter_run.json``),
    so that the folder holds only frames."""
    folder = os.path.normpath(folder)
    return os.path.join(os.path.dirname(folder), "." + os.path.basename(folder) + RECORD_SUFFIX)


def file_sha256(path: str) -> str:
    """SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def input_identity(video: Optional[str], frames: Optional[Sequence[str]]) -> dict:
    """What a clip reads: a video's real path, size and modification time; or the real folder of a frame list and a
    digest of its frame paths (frames added, removed or renamed change it)."""
    if video is not None:
        st = os.stat(video)
        return {"video": os.path.realpath(video), "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    names = "\n".join(os.path.realpath(p) for p in frames)
    return {"frames": os.path.dirname(os.path.realpath(frames[0])) if frames else "", "count": len(frames),
            "names_sha256": hashlib.sha256(names.encode("utf-8")).hexdigest()}


_HASHES: Dict[tuple, str] = {}  # (real path, size, mtime) -> SHA-256: each checkpoint is read once per run


def model_identity(model: str) -> dict:
    """The model as the record names it: ``bicubic``, or a checkpoint's file name and SHA-256."""
    if model.lower() == "bicubic":
        return {"file": "bicubic"}
    st = os.stat(model)
    key = (os.path.realpath(model), st.st_size, st.st_mtime_ns)
    if key not in _HASHES:
        _HASHES[key] = file_sha256(model)
    return {"file": os.path.basename(model), "sha256": _HASHES[key]}


def to_ranges(indices: Iterable[int]) -> List[List[int]]:
    """Sorted 0-based indices as ``[[start, stop], ...]`` (stop exclusive)."""
    ranges: List[List[int]] = []
    for t in sorted(set(indices)):
        if ranges and ranges[-1][1] == t:
            ranges[-1][1] = t + 1
        else:
            ranges.append([t, t + 1])
    return ranges


def from_ranges(ranges: Iterable[Sequence[int]]) -> Set[int]:
    """The indices of ``to_ranges`` output."""
    return {t for start, stop in ranges for t in range(int(start), int(stop))}


def read(folder: str) -> Optional[dict]:
    """The record of ``folder``, or None when there is none or it cannot be read (a foreign or damaged file)."""
    try:
        with open(record_path(folder), encoding="utf-8") as f:
            record = json.load(f)
    except (OSError, ValueError):
        return None
    wanted = {"version": int, "input": dict, "settings": dict, "frames": list}
    if not isinstance(record, dict) or any(not isinstance(record.get(k), t) for k, t in wanted.items()):
        return None
    if record["version"] != VERSION:
        return None
    try:
        from_ranges(record["frames"])
    except (TypeError, ValueError):
        return None
    return record


def remove(folder: str) -> None:
    """Delete the record of ``folder`` (its frames are about to be replaced by a run that keeps none)."""
    try:
        os.remove(record_path(folder))
    except FileNotFoundError:
        pass


def recorded_frames(record: Optional[dict]) -> Set[int]:
    return from_ranges(record["frames"]) if record is not None else set()


def recorded_count(record: Optional[dict]) -> Optional[int]:
    count = record.get("frame_count") if record is not None else None
    return count if isinstance(count, int) and count >= 0 else None


def _show(value) -> str:
    if isinstance(value, dict):  # a model identity
        sha = value.get("sha256")
        return value.get("file", "?") + (f" (sha256 {sha[:12]})" if sha else "")
    return "unset" if value is None else str(value)


def differences(recorded: Dict[str, object], current: Dict[str, object]) -> List[str]:
    """``name was X, now Y`` for every setting that differs (a setting only one side has included)."""
    names = list(current) + [k for k in recorded if k not in current]
    return [f"{name} was {_show(recorded.get(name))}, now {_show(current.get(name))}" for name in names
            if recorded.get(name) != current.get(name)]


class Recorder:
    """Keeps a folder's record up to date while a run writes frames (each change rewritten atomically).

    An earlier record is replaced at once (its frames may be about to be overwritten); otherwise the record is
    first written with the first frame, so a run that writes nothing leaves nothing behind."""

    def __init__(self, folder: str, input_id: dict, settings: dict, kept: Iterable[int] = (),
                 frame_count: Optional[int] = None) -> None:
        self.folder = folder
        self.record = {"version": VERSION, "input": input_id, "settings": settings, "frames": to_ranges(kept),
                       "frame_count": frame_count}
        if os.path.lexists(record_path(folder)):
            self._save()

    def _save(self) -> None:
        atomic.write_text(record_path(self.folder), json.dumps(self.record, indent=1) + "\n")

    def add(self, t: int) -> None:
        """Frame ``t`` is on disk, made with these settings (frames come in order: the ranges grow at their end)."""
        ranges = self.record["frames"]
        if ranges and ranges[-1][1] == t:
            ranges[-1][1] = t + 1
        elif not ranges or ranges[-1][1] < t:
            ranges.append([t, t + 1])
        else:
            self.record["frames"] = to_ranges(from_ranges(ranges) | {t})
        self._save()

    def set_count(self, count: int) -> None:
        """The clip decoded to its end: it has ``count`` frames (saved once the record exists)."""
        self.record["frame_count"] = int(count)
        if os.path.lexists(record_path(self.folder)):
            self._save()
