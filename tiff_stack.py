"""Multi-page TIFF stacks (SPM and microscopy exports) read as frames, page by page, with tifffile.

One page is one frame (its samples are the colour channels); reduced-resolution pages (thumbnails, pyramid levels)
are skipped. A page is named by a *page path*, ``<stack file>/<stem>_<page number from 1, 5 digits or more>``: page 3
of ``scans/run.tif`` is ``scans/run.tif/run_00003``. Page paths are plain strings, so code that keeps lists of frame
paths (clips, datasets, output names from the path's last part) takes them unchanged; ``video_io.read_image`` reads
them. ``page_paths`` gives a single-page TIFF as its own path, read by OpenCV as before.
"""

import os
import re
from typing import List, Optional, Tuple

import numpy as np

from errors import UserError

STACK_EXTENSIONS = (".tif", ".tiff")
_REDUCED = 1  # NewSubfileType bit of a reduced-resolution page
_PHOTOMETRIC_GREY = 1  # MINISBLACK
_PHOTOMETRIC_RGB = 2


class StackError(UserError):
    """A page of a TIFF stack that cannot be read."""


def is_tiff(path: str) -> bool:
    """Whether ``path`` has a TIFF extension (.tif, .tiff, any case)."""
    return os.path.splitext(os.fspath(path))[1].lower() in STACK_EXTENSIONS


def main_pages(path: str) -> List[int]:
    """Indices of the full-resolution pages of a TIFF file; [] when tifffile cannot read it (OpenCV then reports
    the damage as for any other image)."""
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            return [k for k, page in enumerate(tif.pages) if not getattr(page, "subfiletype", 0) & _REDUCED]
    except (OSError, ValueError, IndexError, KeyError, AttributeError):
        return []


def is_stack(path: str) -> bool:
    """Whether ``path`` is a TIFF file with more than one full-resolution page."""
    path = os.fspath(path)
    return is_tiff(path) and os.path.isfile(path) and len(main_pages(path)) > 1


def page_paths(path: str) -> List[str]:
    """The page paths of a multi-page TIFF, in page order; ``[path]`` for any other file."""
    path = os.fspath(path)
    if not is_tiff(path):
        return [path]
    pages = main_pages(path)
    if len(pages) <= 1:
        return [path]
    stem = os.path.splitext(os.path.basename(path))[0]
    return [os.path.join(path, f"{stem}_{k + 1:05d}") for k in pages]


def split_page_path(path: str) -> Optional[Tuple[str, int]]:
    """``(stack file, page index from 0)`` of a page path; None for any other path."""
    stack, name = os.path.split(os.fspath(path))
    if not stack or not is_tiff(stack) or not os.path.isfile(stack):
        return None
    stem = os.path.splitext(os.path.basename(stack))[0]
    match = re.fullmatch(re.escape(stem) + r"_(\d+)", name)
    if match is None or int(match.group(1)) < 1:
        return None
    return stack, int(match.group(1)) - 1


def _as_opencv(arr: np.ndarray, axes: str, photometric: int, where: str) -> np.ndarray:
    """A page's array in OpenCV's layout: H x W, or H x W x channels with colour as BGR / BGRA."""
    if arr.ndim == 3 and axes.startswith("S"):
        arr = np.moveaxis(arr, 0, -1)  # planar (one plane per sample) -> interleaved
    if arr.ndim not in (2, 3):
        raise StackError(f"{where} has {arr.ndim} dimensions ({axes}); frames must be 2-D grey or colour pages")
    if photometric not in (_PHOTOMETRIC_GREY, _PHOTOMETRIC_RGB):
        raise StackError(f"{where} has TIFF photometric interpretation {photometric} (palette, inverted grey, ...); "
                         "save the stack with grey (min-is-black) or RGB pages")
    if arr.ndim == 3 and photometric == _PHOTOMETRIC_RGB and arr.shape[2] in (3, 4):
        order = [2, 1, 0, 3][: arr.shape[2]]
        arr = arr[:, :, order]
    return np.ascontiguousarray(arr)


def read_page(path: str, index: int) -> np.ndarray:
    """Page ``index`` (from 0) of the TIFF file ``path``, as OpenCV decodes an image (BGR / BGRA colour, grey as
    H x W, the stored dtype); ``StackError`` when it cannot be read."""
    import tifffile

    where = f"page {index + 1} of {path}"
    try:
        with tifffile.TiffFile(path) as tif:
            if index >= len(tif.pages):
                raise StackError(f"{path} has {len(tif.pages)} pages, not {index + 1}; was it replaced? list its "
                                 "frames again")
            page = tif.pages[index]
            return _as_opencv(page.asarray(), page.axes, int(page.photometric), where)
    except (OSError, ValueError, IndexError, KeyError) as exc:
        raise StackError(f"cannot read {where} ({exc}); the stack is damaged or not a TIFF tifffile reads") from exc
