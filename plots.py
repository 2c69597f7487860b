"""Evaluation figures: a per-frame PSNR plot and side-by-side comparison crops (bicubic | SR | ground truth, or a
grid of raw | denoised frames).

Both are written atomically (temporary file + ``os.replace``). matplotlib runs with the Agg backend (no display).
"""

from typing import Optional, Sequence, Tuple

import cv2
import numpy as np

import atomic
from video_io import save_rgb


def plot_per_frame_psnr(path: str, frames: Sequence[int], psnr: Sequence[float],
                        bicubic: Optional[Sequence[float]] = None, title: str = "", label: str = "SR") -> None:
    """Line plot of PSNR (dB) per frame, with the bicubic baseline when given; saved as PNG at ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.5), dpi=100)
    ax.plot(list(frames), list(psnr), marker="o", markersize=3, label=f"{label} (mean {np.mean(psnr):.2f} dB)")
    if bicubic is not None and len(bicubic):
        ax.plot(list(frames), list(bicubic), marker=".", markersize=3, linestyle="--",
                label=f"bicubic (mean {np.mean(bicubic):.2f} dB)")
    ax.set_xlabel("frame")
    ax.set_ylabel("PSNR-Y (dB)")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    try:
        with atomic.atomic_path(path) as tmp:
            fig.savefig(tmp, format="png")
    finally:
        plt.close(fig)


def pick_crop(img: np.ndarray, size: int) -> Tuple[int, int, int, int]:
    """(y0, y1, x0, x1) of the ``size``x``size`` region with the most detail (highest local variance of grey)."""
    h, w = img.shape[:2]
    ch, cw = min(size, h), min(size, w)
    grey = img.astype(np.float64).mean(axis=2) if img.ndim == 3 else img.astype(np.float64)
    best, best_box = -1.0, (0, ch, 0, cw)
    step = max(8, size // 4)
    ys = sorted(set(list(range(0, h - ch + 1, step)) + [h - ch]))
    xs = sorted(set(list(range(0, w - cw + 1, step)) + [w - cw]))
    for y in ys:
        for x in xs:
            v = float(grey[y : y + ch, x : x + cw].var())
            if v > best:
                best, best_box = v, (y, y + ch, x, x + cw)
    return best_box


def side_by_side(path: str, panels: Sequence[Tuple[str, np.ndarray]], crop_size: int = 192,
                 box: Optional[Tuple[int, int, int, int]] = None, gap: int = 4) -> Tuple[int, int, int, int]:
    """Save the same crop of each (label, RGB uint8 image) next to each other, labels on top; returns the crop box.

    The crop is taken where the last panel (the ground truth) has the most detail unless ``box`` is given.
    """
    return panel_grid(path, [panels], crop_size, box, gap)


Box = Tuple[int, int, int, int]


def panel_grid(path: str, rows: Sequence[Sequence[Tuple[str, np.ndarray]]], crop_size: int = 192,
               box: Optional[Box] = None, gap: int = 4, zoom: int = 1) -> Box:
    """Save the same crop of every (label, RGB uint8 image) as a grid: one line of panels per row, each with its
    label on top; returns the crop box.

    All images must have one size. The crop is taken where the last panel of the middle row has the most detail
    unless ``box`` is given. ``zoom`` enlarges the crops by pixel repetition (small frames).
    """
    shapes = {p[1].shape for row in rows for p in row}
    if len(shapes) != 1:
        raise ValueError(f"panel_grid needs images of one size, got {sorted(shapes)}")
    if box is None:
        box = pick_crop(rows[len(rows) // 2][-1][1], crop_size)
    y0, y1, x0, x1 = box
    header = 22
    ch, cw = (y1 - y0) * zoom, (x1 - x0) * zoom
    columns = max(len(row) for row in rows)
    canvas = np.full((len(rows) * (ch + header) + (len(rows) - 1) * gap, columns * cw + (columns - 1) * gap, 3), 255,
                     np.uint8)
    for r, row in enumerate(rows):
        top = r * (ch + header + gap)
        for k, (label, img) in enumerate(row):
            left = k * (cw + gap)
            crop = img[y0:y1, x0:x1]
            if zoom > 1:
                crop = np.repeat(np.repeat(crop, zoom, axis=0), zoom, axis=1)
            canvas[top + header : top + header + ch, left : left + cw] = crop
            cv2.putText(canvas, label, (left + 4, top + header - 7), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1,
                        cv2.LINE_AA)
    save_rgb(path, canvas)
    return box
