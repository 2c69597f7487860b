"""Coarse2Fine optical flow in PyTorch: batched, on any device, close to ``pyflow.coarse2fine_flow``.

Two entry points:

* ``flow_batch(im1, im2, **params) -> flow``: tensors (N, C, H, W) in [0, 1] (C = 3 RGB or 1 gray; uint8 is divided
  by 255) on any device; returns the flow (N, 2, H, W) on that device, channel 0 = u, 1 = v, float32 by default. All
  N pairs are solved together (one batched pyramid, one batched solver), nothing goes through the host. ``im1`` may
  have batch size 1 and is then used for every pair (one centre frame, N neighbours).
* ``coarse2fine_flow(im1, im2, alpha, ratio, minWidth, nOuterFPIterations, nInnerFPIterations, nSORIterations,
  colType, device=None)``: a drop-in for ``pyflow.coarse2fine_flow`` (same arguments, defaults, input checks and
  error messages, same outputs: numpy float64 u, v (H, W) and im2W). ``device=None`` means the CPU (safe inside
  DataLoader worker processes); pass ``device="cuda"`` to use the GPU.

The algorithm is the reference's (shared/reference/pyflow-algorithm.md, pyflow/csrc): the same pyramid (level sizes,
the pyramid-ratio quirk, truncated Gaussian radii, levels beyond n made from level i - n, the (j + 1) / s - 1
bilinear sampling grid), the same 5-channel (RGB) or 3-channel (gray) feature images with the colType quirk, the
flow upscale times 1 / ratio, the bilinear inner warp with the frame-1 fallback, the [0.02, 0.11, 0.74, 0.11, 0.02]
pre-smoothing, the 0.4 / 0.6 blend, per-channel Charbonnier weights averaged over channels, forward-difference
smoothness weights owned by the right / lower edge, the 0.05 alpha damping, omega = 1.8, nOuter + k outer
iterations and nSOR + 3k sweeps at level k, and the final bicubic Hermite warp of the original Im2.

Differences from the reference, and why:

* Red-black SOR instead of lexicographic SOR. The reference's in-place row-by-row sweep is sequential; a red-black
  (checkerboard) sweep updates half of the pixels at once (du first, then dv with the new du, as the reference does per
  pixel), with the same omega (1.8) and damping. The SOR stops long before convergence (nSOR + 3k sweeps), so the
  ordering changes the flow slightly. With RBPN_PARAMS the mean end-point error against the C++ flow is 4e-5 to
  6e-4 px on the reference pairs with small motion and 0.03 px on the 112x64 Vimeo pair with 5 px motion (a few
  pixels at motion boundaries land on another solution; max 3.4 px there). This is the only difference that matters:
  with a lexicographic sweep swapped in, float64 reproduces the C++ flow to 1e-13 px (tests/test_torch_flow.py).
* ``sor_sweeps`` (default 1.0) scales the sweeps per inner iteration: round(sor_sweeps * (nSORIterations + 3k)). The
  reference's count is also the closest to its flow: 0.9x and 1.1x are about as close, 1.25x to 2x move away (they
  converge the linear system further than the truncated lexicographic solve does). Larger values cost time linearly.
* float32 by default (``dtype=torch.float64`` for checking). The reference works in float64; on the reference pairs
  float32 changes the flow by 4e-7 to 2e-5 px mean end-point error.
* Interpolation: the inner warp is the reference's bilinear formula (gathers of the four clamped corners, not
  ``grid_sample``, whose normalised coordinates add rounding and have no frame-1 fallback), the final warp its bicubic
  Hermite patch. Where the flow points within rounding error of the image border, the inside/outside decision can
  differ, so single ``im2W`` pixels may take Im1's value instead of Im2's (or the reverse).
* All pairs of a batch share the pyramid sizes (they have the same size). The pairs' systems are independent: on the
  CPU a pair's flow in a batch is bitwise its flow alone.
* Small images never crash (as in ``pyflow``: at least one pyramid level, and a level of zero height is dropped).
* The reference's unused computations (noise estimate, in-image mask) are not done.
"""

from __future__ import annotations

import math
from typing import Union

import numpy as np
import torch

from . import _check_params, _check_range, _prepare

__all__ = ["coarse2fine_flow", "flow_batch", "level_sizes", "warp_bicubic"]

_SMOOTH5 = (0.02, 0.11, 0.74, 0.11, 0.02)  # pre-smoothing of both frames before the derivatives
_DERIV5 = (1.0 / 12, -8.0 / 12, 0.0, 8.0 / 12, -1.0 / 12)  # five-point derivative, applied as a correlation
_HALF_DIFF = (-0.5, 0.0, 0.5)  # central difference of the final bicubic warp
_EPS2 = 1e-6  # epsilon^2 of both Charbonnier penalties
_OMEGA = 1.8  # SOR relaxation factor
_DAMPING = 0.05  # Tikhonov damping of the increment, times alpha
# Largest alpha the solver's sums hold without overflow in float32; the flow there is already about 1e-32 px, so a
# larger alpha (the C++ flow, in float64, takes up to 1e300) is solved with this one: the same zero flow.
_MAX_ALPHA_FP32 = 1e30

Device = Union[str, torch.device, None]


# ----------------------------------------------------------------------------------------------------------------------
# pyramid geometry (float64 Python arithmetic, evaluated exactly as the C++ does)


def _pyramid_ratio(ratio: float) -> float:
    """The ratio the pyramid actually uses (the reference replaces ratios outside [0.4, 0.98] by 0.75)."""
    return 0.75 if (ratio > 0.98 or ratio < 0.4) else ratio


def _levels_per_octave(pr: float) -> int:
    """n: levels up to n are made from the original image, deeper ones from level i - n."""
    return int(math.log(0.25) / math.log(pr))


def level_sizes(height: int, width: int, ratio: float = 0.5, minWidth: float = 40) -> list[tuple[int, int]]:
    """(H, W) of every pyramid level, finest first, exactly as pyflow computes them (at least one level)."""
    pr = _pyramid_ratio(float(ratio))
    n_levels = math.log(float(minWidth) / width) / math.log(pr)
    n_levels = 1 if not n_levels >= 1 else min(int(n_levels), 1000)
    n = _levels_per_octave(pr)
    sizes = [(height, width)]
    for i in range(1, n_levels):
        if i <= n:
            s = math.pow(pr, i)
            h, w = int(height * s), int(width * s)
        else:
            src_h, src_w = sizes[i - n]
            rate = math.pow(pr, i) * width / src_w
            h, w = int(src_h * rate), int(src_w * rate)
        if h < 1 or w < 1:
            break
        sizes.append((h, w))
    return sizes


def _gaussian_taps(sigma: float) -> tuple[float, ...]:
    """Normalised Gaussian taps of radius trunc(3 sigma) (the truncation gives radii 0, 1, 2, 3 for ratio 0.75)."""
    r = int(sigma * 3)
    taps = [math.exp(-float(l * l) / (2 * sigma * sigma)) for l in range(-r, r + 1)]
    total = 0.0
    for t in taps:
        total += t
    return tuple(t / total for t in taps)


# ----------------------------------------------------------------------------------------------------------------------
# elementary tensor operations on (N, C, H, W)


def _clamped_index(n: int, lo: int, hi: int, device: torch.device) -> torch.Tensor:
    return torch.arange(lo, hi, device=device).clamp_(0, n - 1)


def _filter(x: torch.Tensor, taps: tuple[float, ...], dim: int) -> torch.Tensor:
    """1-D correlation along dim (-1 horizontal, -2 vertical) with a replicated border, taps summed in order."""
    r = len(taps) // 2
    if r == 0:
        return x * taps[0]
    n = x.shape[dim]
    padded = x.index_select(dim, _clamped_index(n, -r, n + r, x.device))
    out = None
    for t, h in enumerate(taps):
        if h == 0.0:
            continue
        window = padded.narrow(dim, t, n)
        out = window * h if out is None else out.add_(window, alpha=h)
    return out


def _smooth(x: torch.Tensor, taps: tuple[float, ...]) -> torch.Tensor:
    """Separable filter: horizontal pass, then vertical pass."""
    return _filter(_filter(x, taps, -1), taps, -2)


def _resample_axis(x: torch.Tensor, n_out: int, scale: float, dim: int) -> torch.Tensor:
    """Clamped bilinear resampling along dim: output k samples the input at (k + 1) / scale - 1."""
    n = x.shape[dim]
    pos = (np.arange(n_out, dtype=np.float64) + 1) / scale - 1
    i0 = np.trunc(pos)
    frac = np.clip(pos - i0, 0.0, 1.0)
    i0 = i0.astype(np.int64)
    lo = torch.from_numpy(np.clip(i0, 0, n - 1)).to(x.device)
    hi = torch.from_numpy(np.clip(i0 + 1, 0, n - 1)).to(x.device)
    f = torch.from_numpy(frac).to(device=x.device, dtype=x.dtype)
    if dim == -2:
        f = f[:, None]
    return x.index_select(dim, lo) * (1 - f) + x.index_select(dim, hi) * f


def _resample(x: torch.Tensor, height: int, width: int, sx: float, sy: float) -> torch.Tensor:
    """Bilinear resampling to (height, width) on the reference's (j + 1) / s - 1 grid (separable: x, then y)."""
    return _resample_axis(_resample_axis(x, width, sx, -1), height, sy, -2)


def _build_pyramid(img: torch.Tensor, ratio: float, minWidth: float) -> list[torch.Tensor]:
    """Image pyramid of a batch (N, C, H, W), finest first."""
    pr = _pyramid_ratio(ratio)
    sizes = level_sizes(img.shape[-2], img.shape[-1], ratio, minWidth)
    n = _levels_per_octave(pr)
    sigma_b = 1 / pr - 1
    width = img.shape[-1]
    pyramid = [img]
    for i in range(1, len(sizes)):
        if i <= n:
            src, sigma, rate = img, sigma_b * i, math.pow(pr, i)
        else:
            src, sigma = pyramid[i - n], sigma_b * n
            rate = math.pow(pr, i) * width / src.shape[-1]
        taps = _gaussian_taps(sigma)
        if len(taps) > 1:
            src = _smooth(src, taps)
        pyramid.append(_resample(src, sizes[i][0], sizes[i][1], rate, rate))
    return pyramid


def _features(p: torch.Tensor, bgr_weights: bool) -> torch.Tensor:
    """Feature image: RGB -> [g, Dx g, Dy g, G - R, G - B] (5 channels); gray -> [I, Dx I, Dy I]."""
    if p.shape[1] == 3:
        w0, w2 = (0.114, 0.299) if bgr_weights else (0.299, 0.114)
        g = p[:, 0:1] * w0 + p[:, 1:2] * 0.587 + p[:, 2:3] * w2
        extra = [p[:, 1:2] - p[:, 0:1], p[:, 1:2] - p[:, 2:3]]
    else:
        g, extra = p, []
    return torch.cat([g, _filter(g, _DERIV5, -1), _filter(g, _DERIV5, -2)] + extra, dim=1)


def _sample_grid(u: torch.Tensor, v: torch.Tensor) -> tuple:
    """Where each pixel's flow points (j + u, i + v): fractional parts (fx, fy), whether the point is inside the
    image, and the corner indices (x0, y0, x1, y1), clamped to the image."""
    _, _, height, width = u.shape
    jj = torch.arange(width, device=u.device, dtype=u.dtype)
    ii = torch.arange(height, device=u.device, dtype=u.dtype)[:, None]
    x = jj + u
    y = ii + v
    inside = (x >= 0) & (x <= width - 1) & (y >= 0) & (y <= height - 1)
    x0 = x.clamp(0, width - 1).floor()
    y0 = y.clamp(0, height - 1).floor()
    x0i, y0i = x0.long(), y0.long()
    x1i = (x0i + 1).clamp_(max=width - 1)
    y1i = (y0i + 1).clamp_(max=height - 1)
    return x - x0, y - y0, inside, (x0i, y0i, x1i, y1i)


def _gather(img: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """img (N, C, H, W) sampled at flat pixel indices index (N, 1, H, W), all channels."""
    n, c, h, w = img.shape
    flat = index.reshape(n, 1, h * w).expand(n, c, h * w)
    return img.reshape(n, c, h * w).gather(2, flat).reshape(n, c, h, w)


def _warp_bilinear(f1: torch.Tensor, f2: torch.Tensor, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """F2 sampled bilinearly at (j + u, i + v); F1's pixel where that point is outside the image."""
    width = f2.shape[-1]
    fx, fy, inside, (x0, y0, x1, y1) = _sample_grid(u, v)
    out = _gather(f2, y0 * width + x0) * ((1 - fx) * (1 - fy))
    out += _gather(f2, y1 * width + x0) * ((1 - fx) * fy)
    out += _gather(f2, y0 * width + x1) * (fx * (1 - fy))
    out += _gather(f2, y1 * width + x1) * (fx * fy)
    return torch.where(inside, out, f1)


# ----------------------------------------------------------------------------------------------------------------------
# one pyramid level


def _charbonnier(x2: torch.Tensor) -> torch.Tensor:
    """0.5 / sqrt(x^2 + eps^2), given x^2."""
    return (x2 + _EPS2).rsqrt_().mul_(0.5)


def _shift_forward(x: torch.Tensor, dim: int) -> torch.Tensor:
    """x moved one pixel along dim (out[k] = x[k - 1]), with a zero entering at the border."""
    zero = torch.zeros_like(x.narrow(dim, 0, 1))
    return torch.cat([zero, x.narrow(dim, 0, x.shape[dim] - 1)], dim=dim)


def _edge_weights(phi: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Weights of the edges to the left, right, upper and lower neighbour (zero outside the image)."""
    wr = phi.clone()
    wr[..., -1] = 0
    wd = phi.clone()
    wd[..., -1, :] = 0
    return _shift_forward(wr, -1), wr, _shift_forward(wd, -2), wd


def _weighted_laplacian(f: torch.Tensor, wr: torch.Tensor, wd: torch.Tensor) -> torch.Tensor:
    """(L f)_p = sum over the 4-neighbours q of w_pq (f_p - f_q), Neumann border."""
    fx = (f[..., 1:] - f[..., :-1]) * wr[..., :-1]
    fy = (f[..., 1:, :] - f[..., :-1, :]) * wd[..., :-1, :]
    pad = torch.nn.functional.pad
    return pad(fx, (1, 0)) - pad(fx, (0, 1)) + pad(fy, (0, 0, 1, 0)) - pad(fy, (0, 0, 0, 1))


def _checkerboard(height: int, width: int, device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
    """Masks (1, 1, H, W) of the red ((i + j) even) and black pixels, as 0/1 values."""
    ii = torch.arange(height, device=device)[:, None]
    jj = torch.arange(width, device=device)
    red = ((ii + jj) % 2 == 0).to(dtype)[None, None]
    return red, 1 - red


def _red_black_sor(coef: dict, masks: tuple[torch.Tensor, ...], n_sweeps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Solve the level's 2x2-per-pixel system for (du, dv) from zero with n_sweeps red-black SOR sweeps.

    One sweep: red pixels (du, then dv with the new du), then black pixels. Each update is the reference's
    d <- (1 - omega) d + omega (R + alpha sum_q w_pq d_q - A12 d_other) / (A + 0.05 alpha + alpha sum_q w_pq).
    """
    r1, r2, a12 = coef["r1"], coef["r2"], coef["a12"]
    wl, wr, wu, wd = coef["wl"], coef["wr"], coef["wu"], coef["wd"]  # already times alpha
    n, _, height, width = r1.shape
    d = r1.new_zeros((n, 2, height + 2, width + 2))
    du = d[:, 0:1, 1:-1, 1:-1]
    dv = d[:, 1:2, 1:-1, 1:-1]
    # Per colour: keep = 1 - omega on that colour (1 elsewhere), inv = omega / diagonal on that colour (0 elsewhere).
    steps = []
    for mask in masks:
        keep = 1 - _OMEGA * mask
        steps.append((keep, coef["inv1"] * mask, coef["inv2"] * mask))
    for _ in range(n_sweeps):
        for keep, inv1, inv2 in steps:
            s = d[:, :, 1:-1, :-2] * wl
            s.addcmul_(d[:, :, 1:-1, 2:], wr).addcmul_(d[:, :, :-2, 1:-1], wu).addcmul_(d[:, :, 2:, 1:-1], wd)
            t = (r1 + s[:, 0:1]).addcmul_(a12, dv, value=-1)
            du.mul_(keep).addcmul_(inv1, t)
            t = (r2 + s[:, 1:2]).addcmul_(a12, du, value=-1)
            dv.mul_(keep).addcmul_(inv2, t)
    return du.clone(), dv.clone()


def _solve_level(f1: torch.Tensor, f2: torch.Tensor, f2w: torch.Tensor, u: torch.Tensor, v: torch.Tensor,
                 alpha: float, n_outer: int, n_inner: int, n_sweeps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Fixed-point iterations of one level (warp, linearise, IRLS weights, SOR); returns the refined (u, v)."""
    height, width = f1.shape[-2:]
    masks = _checkerboard(height, width, f1.device, f1.dtype)
    damping = _DAMPING * alpha
    s1 = _smooth(f1, _SMOOTH5)
    for outer in range(n_outer):
        s2 = _smooth(f2w, _SMOOTH5)
        blend = s1 * 0.4 + s2 * 0.6
        ix = _filter(blend, _DERIV5, -1)
        iy = _filter(blend, _DERIV5, -2)
        it = s2 - s1
        du = torch.zeros_like(u)
        dv = torch.zeros_like(v)
        for _ in range(n_inner):
            uu, vv = u + du, v + dv
            grad2 = torch.zeros_like(u)
            for f in (uu, vv):
                grad2[..., :-1] += (f[..., 1:] - f[..., :-1]) ** 2
                grad2[..., :-1, :] += (f[..., 1:, :] - f[..., :-1, :]) ** 2
            phi = _charbonnier(grad2)
            psi = _charbonnier((it + ix * du + iy * dv) ** 2)
            a11 = (psi * ix * ix).mean(1, keepdim=True)
            a12 = (psi * ix * iy).mean(1, keepdim=True)
            a22 = (psi * iy * iy).mean(1, keepdim=True)
            b1 = (psi * ix * it).mean(1, keepdim=True)
            b2 = (psi * iy * it).mean(1, keepdim=True)
            wl, wr, wu, wd = _edge_weights(phi)
            wsum = (wl + wr + wu + wd) * alpha
            coef = dict(
                r1=-(b1 + _weighted_laplacian(u, wr, wd) * alpha),
                r2=-(b2 + _weighted_laplacian(v, wr, wd) * alpha),
                a12=a12,
                inv1=_OMEGA / (a11 + damping + wsum),
                inv2=_OMEGA / (a22 + damping + wsum),
                wl=wl * alpha, wr=wr * alpha, wu=wu * alpha, wd=wd * alpha,
            )
            du, dv = _red_black_sor(coef, masks, n_sweeps)
        u = u + du
        v = v + dv
        if outer + 1 < n_outer:
            f2w = _warp_bilinear(f1, f2, u, v)
    return u, v


def _solve(im1: torch.Tensor, im2: torch.Tensor, alpha: float, ratio: float, minWidth: float, n_outer: int,
           n_inner: int, n_sor: int, col_type: int, sor_sweeps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Coarse-to-fine flow of a validated batch (N, C, H, W) in the working dtype; returns u, v (N, 1, H, W)."""
    pyr1 = _build_pyramid(im1, ratio, minWidth)
    pyr2 = _build_pyramid(im2, ratio, minWidth)
    n_levels = len(pyr1)
    u = v = None
    for k in range(n_levels - 1, -1, -1):
        bgr = k == 0 and col_type == 1
        f1 = _features(pyr1[k], bgr)
        f2 = _features(pyr2[k], bgr)
        height, width = f1.shape[-2:]
        if u is None:
            u = f1.new_zeros((f1.shape[0], 1, height, width))
            v = torch.zeros_like(u)
            f2w = f2
        else:
            sx, sy = width / u.shape[-1], height / u.shape[-2]
            u = _resample(u, height, width, sx, sy) * (1 / ratio)
            v = _resample(v, height, width, sx, sy) * (1 / ratio)
            f2w = _warp_bilinear(f1, f2, u, v)
        sweeps = max(0, int(round(sor_sweeps * (n_sor + 3 * k))))
        u, v = _solve_level(f1, f2, f2w, u, v, float(alpha), n_outer + k, n_inner, sweeps)
    return u, v


# ----------------------------------------------------------------------------------------------------------------------
# public API


@torch.no_grad()
def warp_bicubic(im1: torch.Tensor, im2: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """im2 (N, C, H, W) warped back onto im1 by flow (N, 2, H, W): the reference's bicubic Hermite warp.

    Slopes are central differences; where the flow points outside the image the result is im1's pixel; clamped
    to [0, 1]. Computed in im2's dtype.
    """
    width = im2.shape[-1]
    u, v = flow[:, 0:1].to(im2.dtype), flow[:, 1:2].to(im2.dtype)
    tx, ty, inside, (x0, y0, x1, y1) = _sample_grid(u, v)
    gx = _filter(im2, _HALF_DIFF, -1)
    gy = _filter(im2, _HALF_DIFF, -2)
    gxy = _filter(gx, _HALF_DIFF, -2)
    tx2, ty2 = tx * tx, ty * ty
    tx3, ty3 = tx2 * tx, ty2 * ty
    hx = (2 * tx3 - 3 * tx2 + 1, -2 * tx3 + 3 * tx2, tx3 - 2 * tx2 + tx, tx3 - tx2)
    hy = (2 * ty3 - 3 * ty2 + 1, -2 * ty3 + 3 * ty2, ty3 - 2 * ty2 + ty, ty3 - ty2)
    out = torch.zeros_like(im2)
    # Corner (x_a, y_b): value h_a h_b f + x-slope h_{a+2} h_b gx + y-slope h_a h_{b+2} gy + h_{a+2} h_{b+2} gxy.
    for a, xi in ((0, x0), (1, x1)):
        for b, yi in ((0, y0), (1, y1)):
            index = yi * width + xi
            out += _gather(im2, index) * (hx[a] * hy[b])
            out += _gather(gy, index) * (hx[a] * hy[b + 2])
            out += _gather(gx, index) * (hx[a + 2] * hy[b])
            out += _gather(gxy, index) * (hx[a + 2] * hy[b + 2])
    return torch.where(inside, out, im1.to(im2.dtype)).clamp_(0, 1)


def _check_tensor(im, name: str) -> torch.Tensor:
    """Validate one (N, C, H, W) batch; return it as a floating tensor in [0, 1] (uint8 divided by 255)."""
    how = "pass a torch tensor of shape (N, C, H, W), C = 3 (RGB) or 1 (gray), float in [0, 1] or uint8"
    if not isinstance(im, torch.Tensor):
        raise TypeError(f"{name} must be a torch tensor, got {type(im).__name__}; {how}")
    if im.dim() != 4:
        raise ValueError(f"{name} has {im.dim()} dimensions (shape {tuple(im.shape)}); {how}")
    if im.shape[2] == 0 or im.shape[3] == 0:
        raise ValueError(f"{name} is empty (shape {tuple(im.shape)}); {how}")
    if im.shape[1] not in (1, 3):
        raise ValueError(f"{name} has {im.shape[1]} channels (shape {tuple(im.shape)}); {how}")
    if im.dtype == torch.uint8:
        return im
    if not im.is_floating_point():
        raise TypeError(f"{name} has dtype {im.dtype}, which is not supported; {how}")
    if im.numel():
        _check_range(im, name)
    return im


def _resolve_device(device: Device) -> torch.device:
    """The compute device for coarse2fine_flow; a one-line error where CUDA is asked for and absent."""
    dev = torch.device("cpu") if device is None else torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device={str(dev)!r} asked for, but no CUDA GPU is available; use device='cpu'")
    return dev


def _check_sweeps(sor_sweeps) -> float:
    if isinstance(sor_sweeps, bool) or not isinstance(sor_sweeps, (int, float)) or not 0 <= sor_sweeps <= 100:
        raise ValueError(f"sor_sweeps must be a number between 0 and 100, got {sor_sweeps!r}")
    return float(sor_sweeps)


@torch.no_grad()
def flow_batch(
    im1: torch.Tensor,
    im2: torch.Tensor,
    alpha: float = 1,
    ratio: float = 0.5,
    minWidth: int = 40,
    nOuterFPIterations: int = 3,
    nInnerFPIterations: int = 1,
    nSORIterations: int = 20,
    colType: int = 0,
    sor_sweeps: float = 1.0,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Coarse2Fine flows of N pairs at once: im1, im2 (N, C, H, W) -> flow (N, 2, H, W) on their device.

    Channel 0 of the flow is u (horizontal), 1 is v (vertical): im1(x, y) ~ im2(x + u, y + v). im1 may have batch
    size 1 (one centre frame for all N neighbours). Parameters as in ``pyflow.coarse2fine_flow`` (pass
    ``**pyflow.RBPN_PARAMS`` for RBPN); ``sor_sweeps`` scales the red-black SOR sweep count; ``dtype`` is the working
    and output dtype (float32, or float64 for checking). Checking the [0, 1] range costs one device sync per image.
    """
    im1 = _check_tensor(im1, "Im1")
    im2 = _check_tensor(im2, "Im2")
    if im1.shape[1:] != im2.shape[1:] or im1.shape[0] not in (1, im2.shape[0]):
        raise ValueError(
            f"Im1 and Im2 must have the same shape (Im1 may have batch size 1), got {tuple(im1.shape)} and "
            f"{tuple(im2.shape)}"
        )
    if im1.device != im2.device:
        raise ValueError(f"Im1 and Im2 must be on the same device, got {im1.device} and {im2.device}")
    _check_params(alpha, ratio, minWidth, nOuterFPIterations, nInnerFPIterations, nSORIterations, colType)
    sweeps = _check_sweeps(sor_sweeps)
    if dtype not in (torch.float32, torch.float64):
        raise ValueError(f"dtype must be torch.float32 or torch.float64, got {dtype}")
    n, _, height, width = im2.shape
    if n == 0:
        return im2.new_zeros((0, 2, height, width), dtype=dtype)
    a = im1.to(dtype) / 255 if im1.dtype == torch.uint8 else im1.to(dtype)
    b = im2.to(dtype) / 255 if im2.dtype == torch.uint8 else im2.to(dtype)
    a = a.expand(n, -1, -1, -1).contiguous()
    if dtype == torch.float32:
        alpha = min(float(alpha), _MAX_ALPHA_FP32)
    u, v = _solve(a, b.contiguous(), float(alpha), float(ratio), float(minWidth), int(nOuterFPIterations),
                  int(nInnerFPIterations), int(nSORIterations), int(colType), sweeps)
    return torch.cat([u, v], dim=1)


@torch.no_grad()
def coarse2fine_flow(
    Im1: np.ndarray,
    Im2: np.ndarray,
    alpha: float = 1,
    ratio: float = 0.5,
    minWidth: int = 40,
    nOuterFPIterations: int = 3,
    nInnerFPIterations: int = 1,
    nSORIterations: int = 20,
    colType: int = 0,
    device: Device = None,
    sor_sweeps: float = 1.0,
    dtype: torch.dtype = torch.float32,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Drop-in for ``pyflow.coarse2fine_flow``: same inputs, checks and outputs (numpy float64 u, v, im2W).

    Computed by ``flow_batch`` on ``device`` (None = CPU). im2W is the bicubic warp of Im2, in float64.
    """
    a, b = _prepare(
        Im1, Im2, alpha, ratio, minWidth, nOuterFPIterations, nInnerFPIterations, nSORIterations, colType
    )
    dev = _resolve_device(device)
    t1 = torch.from_numpy(a).permute(2, 0, 1)[None].to(dev)
    t2 = torch.from_numpy(b).permute(2, 0, 1)[None].to(dev)
    flow = flow_batch(t1, t2, alpha, ratio, minWidth, nOuterFPIterations, nInnerFPIterations, nSORIterations,
                      colType, sor_sweeps=sor_sweeps, dtype=dtype)
    im2w = warp_bicubic(t1, t2, flow.to(torch.float64))[0].permute(1, 2, 0).cpu().numpy()
    u = flow[0, 0].to(torch.float64).cpu().numpy()
    v = flow[0, 1].to(torch.float64).cpu().numpy()
    if np.ndim(Im1) == 2:
        im2w = im2w[:, :, 0]
    return np.ascontiguousarray(u), np.ascontiguousarray(v), np.ascontiguousarray(im2w)
