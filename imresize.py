"""MATLAB-compatible ``imresize(A, scale, 'bicubic')`` (with antialiasing when shrinking), written from its definition.

What MATLAB does, and what this module reproduces:

* cubic kernel with a = -0.5: ``1.5|x|^3 - 2.5|x|^2 + 1`` for |x| <= 1, ``-0.5|x|^3 + 2.5|x|^2 - 4|x| + 2`` for
  1 < |x| <= 2, else 0;
* when shrinking (scale < 1) the kernel is stretched: ``h(x) = scale * cubic(scale * x)`` and its width becomes
  ``4 / scale`` (antialiasing); when enlarging it is the plain cubic of width 4;
* output pixel ``i`` (1-based) maps to input coordinate ``u = i / scale + 0.5 * (1 - 1 / scale)``; it takes the
  ``ceil(width) + 2`` input pixels from ``floor(u - width / 2)``, weighted by ``h(u - j)`` normalised to sum 1;
* out-of-range input indices are mirrored symmetrically (``[1..n, n..1]`` repeated);
* output size ``ceil(scale * n)``; with a scale the weights use that scale, with an output size they use out / in;
* the two dimensions are resized one after the other, the one with the smaller scale first (rows first on a tie);
* for uint8 input MATLAB's resize kernel returns uint8 after each dimension, rounding half away from zero and
  saturating to [0, 255]; this module does the same (``exact_uint8=True``). Float input stays float64 throughout.
"""

import math
from typing import Optional, Sequence, Tuple, Union

import numpy as np

from errors import UserError


def cubic(x: np.ndarray) -> np.ndarray:
    """MATLAB's bicubic kernel (a = -0.5)."""
    ax = np.abs(x)
    ax2 = ax * ax
    ax3 = ax2 * ax
    inner = (1.5 * ax3 - 2.5 * ax2 + 1.0) * (ax <= 1)
    outer = (-0.5 * ax3 + 2.5 * ax2 - 4.0 * ax + 2.0) * ((ax > 1) & (ax <= 2))
    return inner + outer


def resize_matrix(in_length: int, out_length: int, scale: float, antialiasing: bool = True) -> np.ndarray:
    """The (out_length, in_length) matrix M with ``out = M @ in`` along one dimension (MATLAB's weights)."""
    kernel_width = 4.0
    shrink = scale < 1 and antialiasing
    if shrink:
        kernel_width = kernel_width / scale
    x = np.arange(1, out_length + 1, dtype=np.float64)
    u = x / scale + 0.5 * (1.0 - 1.0 / scale)
    left = np.floor(u - kernel_width / 2.0)
    taps = int(math.ceil(kernel_width)) + 2
    indices = left[:, None] + np.arange(taps, dtype=np.float64)[None, :]  # 1-based input positions
    distance = u[:, None] - indices
    weights = scale * cubic(scale * distance) if shrink else cubic(distance)
    weights = weights / weights.sum(axis=1, keepdims=True)
    # Symmetric padding: index sequence 1..n, n..1, repeated.
    mirror = np.concatenate([np.arange(in_length), np.arange(in_length - 1, -1, -1)])
    idx = mirror[np.mod(indices.astype(np.int64) - 1, 2 * in_length)]
    matrix = np.zeros((out_length, in_length), dtype=np.float64)
    rows = np.repeat(np.arange(out_length), taps)
    np.add.at(matrix, (rows, idx.ravel()), weights.ravel())
    return matrix


def _round_matlab_uint8(x: np.ndarray) -> np.ndarray:
    """Round half away from zero and saturate, as MATLAB's conversion to uint8."""
    return np.clip(np.floor(np.abs(x) + 0.5) * np.sign(x), 0, 255).astype(np.uint8)


def _resize_dim(img: np.ndarray, dim: int, matrix: np.ndarray) -> np.ndarray:
    moved = np.moveaxis(img.astype(np.float64, copy=False), dim, 0)
    out = np.tensordot(matrix, moved, axes=([1], [0]))
    return np.moveaxis(out, 0, dim)


def output_size_and_scale(
    shape: Tuple[int, int], scale: Optional[Union[float, Sequence[float]]], output_shape: Optional[Sequence[int]]
) -> Tuple[Tuple[int, int], Tuple[float, float]]:
    """MATLAB's rule: size = ceil(scale * n) from a scale; scale = out / in from a size."""
    if (scale is None) == (output_shape is None):
        raise UserError("imresize: give exactly one of scale or output_shape")
    if scale is not None:
        scales = (float(scale), float(scale)) if np.isscalar(scale) else tuple(float(s) for s in scale)
        if len(scales) != 2 or min(scales) <= 0:
            raise UserError(f"imresize: scale must be a positive number or a pair of them, got {scale}")
        size = tuple(int(math.ceil(s * n - 1e-9)) for s, n in zip(scales, shape))
    else:
        size = tuple(int(n) for n in output_shape)
        if len(size) != 2 or min(size) <= 0:
            raise UserError(f"imresize: output_shape must be two positive integers, got {output_shape}")
        scales = tuple(o / n for o, n in zip(size, shape))
    return size, scales


def imresize(
    img: np.ndarray,
    scale: Optional[Union[float, Sequence[float]]] = None,
    output_shape: Optional[Sequence[int]] = None,
    antialiasing: bool = True,
    exact_uint8: bool = True,
) -> np.ndarray:
    """Resize an HxW or HxWxC image like MATLAB ``imresize(img, scale, 'bicubic')``.

    uint8 in gives uint8 out (rounded like MATLAB, also between the two passes when ``exact_uint8``); any other
    dtype is computed and returned as float64.
    """
    arr = np.asarray(img)
    if arr.ndim not in (2, 3) or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise UserError(f"imresize: expected an HxW or HxWxC image, got shape {arr.shape}")
    is_uint8 = arr.dtype == np.uint8
    if not is_uint8:
        arr = arr.astype(np.float64)
    size, scales = output_size_and_scale(arr.shape[:2], scale, output_shape)
    order = sorted(range(2), key=lambda d: (scales[d], d))
    out = arr
    for dim in order:
        if size[dim] == out.shape[dim] and scales[dim] == 1.0:
            continue
        matrix = resize_matrix(out.shape[dim], size[dim], scales[dim], antialiasing)
        out = _resize_dim(out, dim, matrix)
        if is_uint8 and exact_uint8:
            out = _round_matlab_uint8(out)
    if is_uint8:
        return out if out.dtype == np.uint8 else _round_matlab_uint8(out)
    return out
