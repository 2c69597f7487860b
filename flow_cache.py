"""Optional on-disk cache of whole-frame LR optical flows (``--flow_cache DIR``).

The original computes six Coarse2Fine flows on every 64x64 LR patch of every sample, after augmentation. With a
cache, the flows between the whole LR centre frame and each whole LR neighbour are computed once per sequence,
stored as float16 ``(n_neighbours, 2, h, w)`` arrays, and each sample crops them with its patch and applies its
augmentation to the flow field: top-bottom flip reverses rows and negates v, left-right mirror reverses columns and
negates u, rotation by 180 degrees does both. Flow estimated on the whole frame is not bit-identical to flow estimated
on the patch (the coarse-to-fine pyramid and the borders differ); ``bench/bench_data.py`` measures how far apart.
"""

import hashlib
import os
import warnings
from typing import List, Optional, Sequence

import numpy as np

import atomic
from video_io import frame_file

CACHE_VERSION = "c2f-rbpn-v1"  # bump when the flow parameters or storage format change


def cache_key(frame_paths: Sequence[str], extra: str) -> str:
    """A stable name for the flows of one sequence: frame paths, the size and mtime of the files they read (a page of
    a TIFF stack: the stack file), and the degradation."""
    parts = [CACHE_VERSION, extra]
    for path in frame_paths:
        try:
            st = os.stat(frame_file(path))
            parts.append(f"{os.path.abspath(path)}:{st.st_size}:{st.st_mtime_ns}")
        except OSError:
            parts.append(f"{os.path.abspath(path)}:missing")
    return hashlib.sha1("\n".join(parts).encode()).hexdigest()


class FlowCache:
    """Flows of whole LR frames on disk, one ``.npy`` per sequence under ``<root>/<key[:2]>/<key>.npy``."""

    def __init__(self, root: str):
        self.root = os.fspath(root)
        os.makedirs(self.root, exist_ok=True)

    def path(self, key: str) -> str:
        return os.path.join(self.root, key[:2], key + ".npy")

    def load(self, key: str, n_flows: int, height: int, width: int) -> Optional[np.ndarray]:
        """The cached float16 array, or None when absent or unusable (a corrupt entry is recomputed)."""
        path = self.path(key)
        if not os.path.exists(path):
            return None
        try:
            arr = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            warnings.warn(f"flow cache entry {path} is unreadable ({exc}); recomputing it", stacklevel=2)
            return None
        if arr.shape != (n_flows, 2, height, width):
            warnings.warn(f"flow cache entry {path} has shape {arr.shape}; recomputing it", stacklevel=2)
            return None
        return arr

    def store(self, key: str, flows: List[np.ndarray]) -> np.ndarray:
        """Write flows (list of float32 (2, h, w)) atomically as float16; returns the stored array."""
        arr = np.stack(flows).astype(np.float16)
        path = self.path(key)
        with atomic.atomic_path(path, suffix=".npy") as tmp, open(tmp, "wb") as f:
            np.save(f, arr, allow_pickle=False)
        return arr


def crop_and_augment(flows: np.ndarray, y: int, x: int, size_h: int, size_w: int, aug: dict) -> List[np.ndarray]:
    """Crop cached whole-frame flows to a patch and apply the sample's augmentation to the vector field.

    ``aug`` holds the booleans ``flip`` (top-bottom), ``mirror`` (left-right) and ``rot180``, applied in that order
    as for the images.
    """
    out = []
    for flow in flows:
        f = flow[:, y : y + size_h, x : x + size_w].astype(np.float32)
        if aug.get("flip"):
            f = f[:, ::-1, :]
            f[1] = -f[1]
        if aug.get("mirror"):
            f = f[:, :, ::-1]
            f[0] = -f[0]
        if aug.get("rot180"):
            f = f[:, ::-1, ::-1]
            f = -f
        out.append(np.ascontiguousarray(f))
    return out
