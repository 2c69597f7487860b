"""Running the generator on frames: one SR frame (whole, tiled or chopped) and a memory-bounded per-clip driver.

``super_resolve`` runs RBPN on one LR frame with its neighbours and flows. With ``tile > 0`` the LR frame, every
neighbour and every flow are cut into overlapping ``tile x tile`` pieces; each piece is super-resolved on its own
and only its centre part (half the overlap away from every cut edge) is pasted into the output. ``chop=True`` is the
original's ``--chop_forward`` (EDSR-style recursive quadrants with an 8 px shave until a piece is < 2000 LR px).
Flows are always computed on the whole LR frame and only cropped per tile, as in the original, so tiles agree on
motion; they are in pixel units, so a crop of a flow field is the flow of the crop.

``super_resolve_clip`` streams a clip: it keeps only the frames of the current nFrames window in memory, computes
the flows of the next frame in a background thread while the model runs on the current one, and yields one SR
frame at a time.

``denoise_clip`` does the same for denoising generators (``--denoise``) on normalised float frames (grey or colour):
flows from ``denoise_data.compute_flows`` (or zero flows), optional warping of the neighbours onto the frame, blank
frames passed through, and tiles cross-faded over their overlap (``blend``) instead of cut at their centres.
"""

from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from typing import Callable, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

import denoise_data
import hardware
from checks import flow_backend_for
from dataset import bicubic_upscale, compute_flows, neighbour_offsets
from errors import UserError
from options import DEFAULT_OVERLAP, EDGE_MODES, FLOW_BACKENDS, PRECISIONS  # noqa: F401  (re-exported)

CHOP_SHAVE = 8
CHOP_MIN_SIZE = 2000

Image = Union[np.ndarray, torch.Tensor]


class InferenceError(UserError):
    """Bad inference settings or inputs (sizes, precision, device)."""


# ----------------------------------------------------------------------------------------------------------------------
# devices and precision


def parse_device(device: str) -> torch.device:
    """``device`` ('cpu', 'cuda', 'cuda:1') as a ``torch.device``; a one-line error for a name torch does not know."""
    try:
        return torch.device(device)
    except RuntimeError as exc:
        raise InferenceError(f"unknown device {device!r}; use cpu, cuda, cuda:N or auto") from exc


def resolve_device(device: Optional[str] = None, gpu_mode: bool = False, option: str = "--device") -> torch.device:
    """``device`` as given ('cpu', 'cuda', 'cuda:1', 'auto' or None = auto: CUDA when available, else CPU).

    ``gpu_mode`` (the original's ``-c``) insists on CUDA and fails clearly when there is none. ``option``: the
    command-line option that chose ``device`` (``--device`` or ``--flow_device``), named in the errors.
    """
    if device in (None, "", "auto"):
        device = "cuda" if (gpu_mode or torch.cuda.is_available()) else "cpu"
    dev = parse_device(device)
    if gpu_mode and dev.type != "cuda":
        raise InferenceError(f"--gpu_mode asks for CUDA but --device is {device}; drop one of them")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            if option == "--device":
                raise InferenceError("CUDA was requested (--gpu_mode/--device cuda) but no CUDA GPU is available; "
                                     "use --device cpu")
            raise InferenceError(f"CUDA was requested ({option} {device}) but no CUDA GPU is available; use {option} "
                                 "cpu (or auto)")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            where = "" if option == "--device" else f"{option} "
            raise InferenceError(f"{where}{device} does not exist: {torch.cuda.device_count()} CUDA device(s) "
                                 "visible")
    return dev


def check_precision(precision: str, device: torch.device) -> str:
    """Validate ``precision`` for ``device`` and return it made concrete ('auto' -> fp32/bf16/fp16 for this
    hardware, see ``hardware.resolve_precision``; a forced bf16/fp16 that the hardware emulates warns once)."""
    if precision not in PRECISIONS:
        raise InferenceError(f"unknown precision {precision!r}; use one of {', '.join(PRECISIONS)}")
    device = torch.device(device)
    if precision == "fp16" and device.type == "cpu":
        raise InferenceError("fp16 is for CUDA; on CPU use --precision auto, bf16 or fp32")
    return hardware.resolve_precision(precision, device, training=False)


def autocast_context(precision: str, device: torch.device):
    """Mixed-precision context for ``precision``: weights stay fp32, convolutions run in bf16/fp16."""
    if precision == "auto":
        precision = hardware.resolve_precision(precision, device, training=False)
    if precision == "fp32":
        return nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def prepare_model(model: torch.nn.Module, device: torch.device, channels_last: bool = True) -> torch.nn.Module:
    """Eval mode, on ``device``, and channels_last (faster convolutions with oneDNN and cuDNN)."""
    model = model.eval().to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


# ----------------------------------------------------------------------------------------------------------------------
# one frame


def _as_batch(img: Image, device: torch.device, channels_last: bool, flow: bool = False) -> torch.Tensor:
    """HxWx3 uint8 / HxWxC float in [0, 1] / (C,H,W) tensor / (2,H,W) flow array -> (1,C,H,W) float32 on ``device``."""
    if isinstance(img, np.ndarray):
        if flow:
            t = torch.from_numpy(np.ascontiguousarray(img, dtype=np.float32))
        elif img.dtype == np.uint8 and img.ndim == 3:
            t = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).float().div_(255.0)
        elif np.issubdtype(img.dtype, np.floating) and img.ndim == 3:
            t = torch.from_numpy(np.ascontiguousarray(img, dtype=np.float32)).permute(2, 0, 1)
        else:
            raise InferenceError(f"expected an HxWx3 uint8 or HxWxC float frame, got {img.dtype} {img.shape}")
    else:
        t = img.float()
    if t.dim() == 3:
        t = t.unsqueeze(0)
    t = t.to(device)
    return t.contiguous(memory_format=torch.channels_last) if channels_last else t


def _axis_tiles(length: int, tile: int, overlap: int) -> List[Tuple[int, int, int, int]]:
    """Tiles along one axis as (start, end, keep_start, keep_end); kept parts cover [0, length) exactly once."""
    if length <= tile:
        return [(0, length, 0, length)]
    stride = tile - overlap
    starts = list(range(0, length - tile, stride)) + [length - tile]
    tiles = []
    for i, s in enumerate(starts):
        e = s + tile
        keep_s = 0 if i == 0 else (s + starts[i - 1] + tile) // 2
        keep_e = length if i == len(starts) - 1 else (starts[i + 1] + e) // 2
        tiles.append((s, e, keep_s, keep_e))
    return tiles


def tile_boxes(height: int, width: int, tile: int, overlap: int) -> List[Tuple[Tuple[int, int, int, int], ...]]:
    """2-D tiling of an LR frame: a list of ((y0, y1, ky0, ky1), (x0, x1, kx0, kx1)) pairs."""
    if tile <= 0:
        raise InferenceError(f"tile size must be positive, got {tile}")
    if not 0 <= overlap < tile:
        raise InferenceError(f"tile overlap must be in [0, tile) = [0, {tile}), got {overlap}")
    return [(ty, tx) for ty in _axis_tiles(height, tile, overlap) for tx in _axis_tiles(width, tile, overlap)]


Runner = Callable[[torch.Tensor, List[torch.Tensor], List[torch.Tensor]], torch.Tensor]


def _tiled(run: Runner, x: torch.Tensor, nbs: List[torch.Tensor], fls: List[torch.Tensor], tile: int,
           overlap: int) -> torch.Tensor:
    h, w = x.shape[-2:]
    out = None
    for (y0, y1, ky0, ky1), (x0, x1, kx0, kx1) in tile_boxes(h, w, tile, overlap):
        piece = run(x[..., y0:y1, x0:x1], [n[..., y0:y1, x0:x1] for n in nbs], [f[..., y0:y1, x0:x1] for f in fls])
        s = piece.shape[-1] // (x1 - x0)
        if out is None:
            out = torch.empty(piece.shape[0], piece.shape[1], h * s, w * s, dtype=torch.float32)
        out[..., ky0 * s : ky1 * s, kx0 * s : kx1 * s] = piece[..., (ky0 - y0) * s : (ky1 - y0) * s,
                                                            (kx0 - x0) * s : (kx1 - x0) * s].float().cpu()
    return out


def ramp_weights(start: int, end: int, length: int, overlap: int) -> np.ndarray:
    """Blending weights of the tile ``[start, end)`` of an axis of ``length`` pixels (float64, one per pixel).

    Near an edge that is a cut (not the frame border) the weight is 0 for the outer ``overlap // 4`` pixels (the
    network saw the cut there), then rises as a raised cosine to 1 at ``overlap // 4`` pixels before the far end of
    the overlap; elsewhere it is 1. Where two tiles overlap by exactly ``overlap`` pixels their weights sum to 1;
    where they overlap by more (the last tile), every pixel still has a positive total weight.
    """
    dist = np.arange(end - start, dtype=np.float64)
    weights = np.ones(end - start)
    if overlap <= 0:
        return weights
    margin = overlap // 4
    rise = overlap - 2 * margin

    def ramp(d: np.ndarray) -> np.ndarray:
        return 0.5 - 0.5 * np.cos(np.pi * np.clip((d - margin + 0.5) / rise, 0.0, 1.0))

    if start > 0:
        weights *= ramp(dist)
    if end < length:
        weights *= ramp(dist[::-1])
    return weights


def _blended(run: Runner, x: torch.Tensor, nbs: List[torch.Tensor], fls: List[torch.Tensor], tile: int,
             overlap: int) -> torch.Tensor:
    """Tiled inference whose overlaps are cross-faded (``ramp_weights``) and divided by the weight sum: no seams."""
    h, w = x.shape[-2:]
    out = total = None
    for (y0, y1, _, _), (x0, x1, _, _) in tile_boxes(h, w, tile, overlap):
        piece = run(x[..., y0:y1, x0:x1], [n[..., y0:y1, x0:x1] for n in nbs], [f[..., y0:y1, x0:x1] for f in fls])
        piece = piece.float().cpu()
        s = piece.shape[-1] // (x1 - x0)
        if out is None:
            out = torch.zeros(piece.shape[0], piece.shape[1], h * s, w * s, dtype=torch.float32)
            total = torch.zeros(h * s, w * s, dtype=torch.float32)
        wy = ramp_weights(y0 * s, y1 * s, h * s, overlap * s)
        wx = ramp_weights(x0 * s, x1 * s, w * s, overlap * s)
        weight = torch.from_numpy(np.outer(wy, wx).astype(np.float32))
        out[..., y0 * s : y1 * s, x0 * s : x1 * s] += piece * weight
        total[y0 * s : y1 * s, x0 * s : x1 * s] += weight
    return out / total


def _chopped(run: Runner, x: torch.Tensor, nbs: List[torch.Tensor], fls: List[torch.Tensor],
             shave: int = CHOP_SHAVE, min_size: int = CHOP_MIN_SIZE) -> torch.Tensor:
    """The original's ``chop_forward``: 4 overlapping quadrants, recursively, centre parts pasted back."""
    h, w = x.shape[-2:]
    hh, wh = h // 2, w // 2
    hs, ws = hh + shave, wh + shave
    if hs >= h or ws >= w:  # too small to split (the original would slice past the edge here)
        return run(x, nbs, fls).float().cpu()
    outs = []
    for y0, x0 in ((0, 0), (0, w - ws), (h - hs, 0), (h - hs, w - ws)):
        cut = (slice(y0, y0 + hs), slice(x0, x0 + ws))
        args = (x[..., cut[0], cut[1]], [n[..., cut[0], cut[1]] for n in nbs], [f[..., cut[0], cut[1]] for f in fls])
        if hs * ws < min_size:
            outs.append(run(*args).float().cpu())
        else:
            outs.append(_chopped(run, *args, shave=shave, min_size=min_size))
    s = outs[0].shape[-1] // ws
    H, W, Hh, Wh, Hs, Ws = h * s, w * s, hh * s, wh * s, hs * s, ws * s
    out = torch.empty(outs[0].shape[0], outs[0].shape[1], H, W, dtype=torch.float32)
    out[..., :Hh, :Wh] = outs[0][..., :Hh, :Wh]
    out[..., :Hh, Wh:] = outs[1][..., :Hh, Ws - (W - Wh) :]
    out[..., Hh:, :Wh] = outs[2][..., Hs - (H - Hh) :, :Wh]
    out[..., Hh:, Wh:] = outs[3][..., Hs - (H - Hh) :, Ws - (W - Wh) :]
    return out


def super_resolve(model: torch.nn.Module, lr: Image, neighbours: Sequence[Image], flows: Sequence[Image],
                  tile: int = 0, overlap: int = DEFAULT_OVERLAP, precision: str = "fp32",
                  device: Optional[Union[str, torch.device]] = None, chop: bool = False,
                  channels_last: bool = True, blend: bool = False) -> torch.Tensor:
    """Super-resolve (or denoise) one frame; returns the raw model output as float32 CPU tensor (C, s*H, s*W), not
    clamped (s = 1 for denoisers).

    ``lr`` and ``neighbours``: HxWx3 uint8 arrays, HxWxC float arrays or (C,H,W) float tensors in [0, 1]; ``flows``:
    (2,H,W) arrays or tensors in LR pixels. ``tile``: LR tile size (0 = whole frame), ``overlap``: LR pixels shared
    by adjacent tiles; only each tile's centre part is kept, or with ``blend`` the overlaps are cross-faded
    (``ramp_weights``).
    ``chop``: the original's recursive quadrant chop (used when ``tile`` is 0). ``precision``: auto, fp32, bf16 or
    fp16 (autocast; auto follows the hardware, ``hardware.resolve_precision``). ``device``: where to run (default:
    where the model's weights are). The model must be in eval mode (``prepare_model``).
    """
    if device is None:
        device = next(model.parameters()).device
    device = torch.device(device)
    precision = check_precision(precision, device)
    if len(neighbours) != len(flows):
        raise InferenceError(f"{len(neighbours)} neighbours but {len(flows)} flows; they must match one to one")
    x = _as_batch(lr, device, channels_last)
    nbs = [_as_batch(n, device, channels_last) for n in neighbours]
    fls = [_as_batch(f, device, channels_last, flow=True) for f in flows]
    for what, t in [("neighbour", n) for n in nbs] + [("flow", f) for f in fls]:
        if t.shape[-2:] != x.shape[-2:]:
            raise InferenceError(f"a {what} is {t.shape[-1]}x{t.shape[-2]} but the frame is "
                                 f"{x.shape[-1]}x{x.shape[-2]}; all frames of a clip must have the same size")

    def run(xx: torch.Tensor, nn_: List[torch.Tensor], ff: List[torch.Tensor]) -> torch.Tensor:
        with autocast_context(precision, device):
            return model(xx, nn_, ff)

    with torch.inference_mode():
        if tile > 0:
            out = (_blended if blend else _tiled)(run, x, nbs, fls, tile, overlap)
        elif chop:
            out = _chopped(run, x, nbs, fls)
        else:
            out = run(x, nbs, fls).float().cpu()
    return out[0].contiguous()


def to_image(sr: torch.Tensor) -> np.ndarray:
    """(3,H,W) float tensor in [0, 1] (unclamped) -> HxWx3 float64 array on the 0..255 scale (still unclamped)."""
    return sr.detach().cpu().permute(1, 2, 0).double().numpy() * 255.0


def sr_image(sr: torch.Tensor, lr: np.ndarray, scale: int, residual: Optional[str] = None) -> np.ndarray:
    """The SR frame a model's raw output stands for: ``to_image(sr)``, plus the ``residual`` ("pil" / "matlab")
    bicubic upscale of the LR frame for generators trained with ``--residual``. Float64 on 0..255, unclamped."""
    out = to_image(sr)
    if residual:
        out = out + bicubic_upscale(lr, scale, residual).astype(np.float64)
    return out


# ----------------------------------------------------------------------------------------------------------------------
# neighbours and flows


def neighbour_index(t: int, offset: int, count: int, edge: str = "centre") -> int:
    """Index of the neighbour ``t + offset`` in a clip of ``count`` frames, with the clip-edge rule ``edge``.

    centre (original): a missing neighbour is replaced by the centre frame itself (its flow is zero).
    clamp: the nearest existing frame. reflect: mirrored about the clip edge (-1 -> 1), then clamped.
    """
    i = t + offset
    if 0 <= i < count:
        return i
    if edge == "centre":
        return t
    if edge == "clamp":
        return min(max(i, 0), count - 1)
    if edge == "reflect":
        if i < 0:
            i = -i
        if i >= count:
            i = 2 * (count - 1) - i
        return min(max(i, 0), count - 1)
    raise InferenceError(f"unknown edge mode {edge!r}; use one of {', '.join(EDGE_MODES)}")


def iter_windows(items: Iterable, offsets: Sequence[int],
                 edge: str = "centre") -> Iterator[Tuple[int, object, list, list]]:
    """Stream ``(t, item_t, neighbour items, neighbour indices)`` over a clip, holding only the window's frames.

    ``items`` is consumed lazily (a video decoder, a generator of loaded frames): at most
    ``max(offsets) + max(-offsets) + 1`` items are held at once (more only for very short clips with 'reflect').
    """
    ahead = max([o for o in offsets if o > 0], default=0)
    behind = max([-o for o in offsets if o < 0], default=0)
    if edge == "reflect":  # reflection at the start can reach up to `behind` frames ahead, and vice versa
        ahead, behind = max(ahead, behind), max(ahead, behind)
    source = iter(items)
    buffer = {}
    count = None  # known once the source is exhausted
    loaded = 0

    def fill(upto: int) -> None:
        nonlocal count, loaded
        while count is None and loaded <= upto:
            try:
                buffer[loaded] = next(source)
                loaded += 1
            except StopIteration:
                count = loaded

    t = 0
    while True:
        fill(t + ahead)
        if count is not None and t >= count:
            return
        n = count if count is not None else loaded + 10**9  # not at the end yet: every index <= t+ahead exists
        idx = [neighbour_index(t, o, n, edge) for o in offsets]
        yield t, buffer[t], [buffer[i] for i in idx], idx
        for k in [k for k in buffer if k < t + 1 - behind]:
            del buffer[k]
        t += 1


def window_flows(centre: np.ndarray, neighbours: Sequence[np.ndarray], same: Sequence[bool], threads: int = 0,
                 compute: Optional[Callable] = None) -> List[np.ndarray]:
    """RBPN flows (centre -> neighbour, (2,H,W) float32) for one window: one batched, parallel pyflow call.

    Neighbours that are the centre frame itself (``same``, the original's clip-edge substitute) get an exact zero
    flow without running pyflow. ``compute(centre, others, threads=...)`` computes the other flows (default
    ``dataset.compute_flows`` for RGB uint8 frames; ``denoise_data.compute_flows`` takes normalised float frames).
    """
    compute = compute or compute_flows
    h, w = centre.shape[:2]
    todo = [n for n, s in zip(neighbours, same) if not s]
    computed = iter(compute(centre, todo, threads=threads) if todo else [])
    return [np.zeros((2, h, w), np.float32) if s else next(computed) for s in same]


def resolve_flow_backend(backend: str, flow_device: Optional[str], model_device: torch.device
                         ) -> Tuple[str, torch.device]:
    """(``cpp`` or ``torch`` (``checks.flow_backend_for``), device for the torch flow): ``flow_device`` (errors name
    ``--flow_device``), by default the model's. The C++ flow runs on the CPU: ``flow_device`` is not used (only its
    name is checked), and the model's device is returned."""
    backend = flow_backend_for(backend, model_device)
    if backend == "cpp":
        if flow_device and flow_device != "auto":
            parse_device(flow_device)
        return backend, model_device
    device = resolve_device(flow_device, option="--flow_device") if flow_device else model_device
    return backend, device


def torch_flow_compute(device: torch.device) -> Callable:
    """A ``compute(centre, others, threads=0)`` for ``window_flows`` that solves all the window's pairs in one batch
    with ``pyflow.torch_flow`` on ``device`` (RGB uint8 frames, or normalised float (H, W, C) frames of the denoise
    mode; the original's RBPN parameters)."""
    import pyflow
    from pyflow import torch_flow

    def as_input(frame: np.ndarray) -> np.ndarray:  # uint8 as is; normalised float frames clipped to [0, 1]
        frame = np.asarray(frame)
        return frame if frame.dtype == np.uint8 else np.clip(frame, 0.0, 1.0).astype(np.float32)

    def compute(centre: np.ndarray, others: Sequence[np.ndarray], threads: int = 0) -> List[np.ndarray]:
        c = torch.from_numpy(np.ascontiguousarray(as_input(centre))).permute(2, 0, 1)[None].to(device)
        o = torch.from_numpy(np.stack([as_input(f) for f in others])).permute(0, 3, 1, 2).to(device)
        flow = torch_flow.flow_batch(c, o, **pyflow.RBPN_PARAMS)
        return [np.ascontiguousarray(f, dtype=np.float32) for f in flow.float().cpu().numpy()]

    return compute


def _checked(items: Iterable[Tuple[np.ndarray, object]],
             check_frame: Callable[[int, np.ndarray], None]) -> Iterator[Tuple[np.ndarray, object]]:
    """Pass ``(frame, payload)`` items through after ``check_frame(k, frame)``; every frame must have the size and
    the channel count of the first one."""
    first = None
    for k, (frame, payload) in enumerate(items):
        check_frame(k, frame)
        if first is None:
            first = frame.shape
        elif frame.shape[:2] != first[:2]:
            raise InferenceError(f"frame {k} is {frame.shape[1]}x{frame.shape[0]} but the clip's first frame is "
                                 f"{first[1]}x{first[0]}; all frames of a clip must have the same size")
        elif frame.shape[2:] != first[2:]:
            raise InferenceError(f"frame {k} has {frame.shape[2]} channel(s) but the clip's first frame has "
                                 f"{first[2]}; all frames of a clip must have the same channels")
        yield frame, payload


def _run_windows(windows: Iterable[tuple], job: Callable[[tuple], object], finish: Callable[[tuple, object], tuple],
                 keep: Optional[Callable[[int], bool]], prefetch: bool) -> Iterator[tuple]:
    """``finish(window, job(window))`` for each window (``iter_windows``) whose centre ``keep`` selects, in order.

    With ``prefetch`` the job of the next window (its flows) runs in a background thread while the current window
    is finished (the model runs).
    """
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = None
        for window in windows:
            if keep is not None and not keep(window[0]):
                continue
            if not prefetch:
                yield finish(window, job(window))
                continue
            future = pool.submit(job, window)
            if pending is not None:
                yield finish(pending[0], pending[1].result())
            pending = (window, future)
        if pending is not None:
            yield finish(pending[0], pending[1].result())


def super_resolve_clip(model: torch.nn.Module, items: Iterable[Tuple[np.ndarray, object]], nFrames: int, *,
                       future_frame: bool = True, edge: str = "centre", tile: int = 0,
                       overlap: int = DEFAULT_OVERLAP, chop: bool = False, precision: str = "fp32",
                       device: Optional[torch.device] = None, flow_threads: int = 0, prefetch: bool = True,
                       flow_fn: Optional[Callable] = None, keep: Optional[Callable[[int], bool]] = None,
                       ) -> Iterator[Tuple[int, object, np.ndarray, torch.Tensor]]:
    """Super-resolve a clip frame by frame; memory stays bounded by the nFrames window.

    ``items`` yields ``(lr_frame uint8 HxWx3, payload)``; the payload (a name, the HR frame, ...) is passed through.
    Yields ``(t, payload, lr, sr)`` with ``sr`` the raw (3, s*H, s*W) float32 output. With ``prefetch`` the flows of
    frame t+1 are computed in a background thread while the model runs on frame t. ``flow_fn(centre, neighbours,
    same)`` replaces the pyflow flows (tests). ``keep(t)`` selects the frames to produce (default: all); the others
    are only read as neighbours.
    """
    offsets = neighbour_offsets(nFrames, future_frame)
    precision = check_precision(precision, device if device is not None else next(model.parameters()).device)

    def check_rgb(k: int, lr: np.ndarray) -> None:
        if lr.ndim != 3 or lr.shape[2] != 3 or lr.dtype != np.uint8:
            raise InferenceError(f"frame {k} is not an RGB uint8 image ({lr.dtype} {lr.shape})")

    flows_of = flow_fn or (lambda c, nbs, same: window_flows(c, nbs, same, threads=flow_threads))

    def job(window):
        t, (lr, _), nbs, idx = window
        return flows_of(lr, [n[0] for n in nbs], [i == t for i in idx])

    def finish(window, flows):
        t, (lr, payload), nbs, _ = window
        sr = super_resolve(model, lr, [n[0] for n in nbs], flows, tile=tile, overlap=overlap, precision=precision,
                           device=device, chop=chop)
        return t, payload, lr, sr

    windows = iter_windows(_checked(items, check_rgb), offsets, edge)
    yield from _run_windows(windows, job, finish, keep, prefetch)


def denoise_clip(model: torch.nn.Module, items: Iterable[Tuple[np.ndarray, object]], nFrames: int, *,
                 future_frame: bool = True, edge: str = "centre", tile: int = 0, overlap: int = DEFAULT_OVERLAP,
                 precision: str = "fp32", device: Optional[torch.device] = None, flows: str = "pyflow",
                 warping: bool = False, residual: Optional[str] = None, blank: Iterable[int] = (),
                 flow_threads: int = 0, prefetch: bool = True, flow_fn: Optional[Callable] = None,
                 keep: Optional[Callable[[int], bool]] = None) -> Iterator[Tuple[int, object, np.ndarray, np.ndarray]]:
    """Denoise a movie frame by frame with a denoising generator (its output has the input's size); memory stays
    bounded by the nFrames window, and flows are prefetched, as in ``super_resolve_clip``.

    ``items`` yields ``(frame, payload)``: float (H, W, C) frames, C = 1 or 3, normalised to [0, 1]
    (``denoise_data.preprocess``). Yields ``(t, payload, frame, out)`` with ``out`` the (H, W, C) float32 model output,
    not clipped. ``residual`` (generators trained to output a correction): "mean" adds the mean of the frame and the
    neighbours as the network saw them (warped with ``warping``); any other true value adds the frame itself.
    ``nFrames`` 1 is the single-frame form (no neighbours).

    - Neighbours beyond the movie ends follow ``edge`` (``neighbour_index``).
    - ``flows``: "pyflow" (``denoise_data.compute_flows`` on the normalised whole frames, also when tiled) or "zero".
    - ``warping``: each neighbour is backward-warped onto the frame with its flow before the network sees it
      (``denoise_data.warp_backward``); the flows are passed on unchanged, as in training.
    - ``blank``: indices of blank (constant) frames. A blank frame is not denoised (``out`` is the frame itself) and
      never serves as a neighbour: the centre frame stands in for it with a zero flow (the 'centre' edge rule).
    - ``tile > 0``: overlapping tiles, cross-faded over the overlap (``ramp_weights``), so no seams.

    ``flow_fn(centre, neighbours, same)`` replaces the flows (tests); ``keep(t)`` selects the frames to produce.
    """
    if flows not in denoise_data.FLOW_METHODS:
        raise InferenceError(f"unknown flow method {flows!r}; use one of {', '.join(denoise_data.FLOW_METHODS)}")
    offsets = [] if nFrames == 1 else neighbour_offsets(nFrames, future_frame)
    precision = check_precision(precision, device if device is not None else next(model.parameters()).device)
    blank = {int(t) for t in blank}

    def check_float(k: int, frame: np.ndarray) -> None:
        if frame.ndim != 3 or frame.shape[2] not in (1, 3) or not np.issubdtype(frame.dtype, np.floating):
            raise InferenceError(f"frame {k} is not a float (H, W, C) frame with C = 1 or 3 ({frame.dtype} "
                                 f"{frame.shape})")

    def compute(centre: np.ndarray, others: List[np.ndarray], threads: int = 0) -> List[np.ndarray]:
        if flows == "zero":
            return [np.zeros((2,) + centre.shape[:2], np.float32) for _ in others]
        return denoise_data.compute_flows(centre, others, threads=threads)

    flows_of = flow_fn or (lambda c, nbs, same: window_flows(c, nbs, same, threads=flow_threads, compute=compute))

    def without_blank(window):
        t, item, nbs, idx = window
        pairs = [(item, t) if i in blank else (n, i) for n, i in zip(nbs, idx)]
        return t, item, [n for n, _ in pairs], [i for _, i in pairs]

    def job(window):
        t, (frame, _), nbs, idx = window
        if t in blank:
            return None
        neighbours = [n[0] for n in nbs]
        window_flow = flows_of(frame, neighbours, [i == t for i in idx])
        if warping:
            neighbours = [denoise_data.warp_backward(n, f) for n, f in zip(neighbours, window_flow)]
        return neighbours, window_flow

    def finish(window, prepared):
        t, (frame, payload), _, _ = window
        if prepared is None:
            return t, payload, frame, np.array(frame, dtype=np.float32)
        neighbours, window_flow = prepared
        out = super_resolve(model, frame, neighbours, window_flow, tile=tile, overlap=overlap, precision=precision,
                            device=device, blend=True).permute(1, 2, 0).numpy()
        if out.shape != frame.shape:
            raise InferenceError(f"the model turned a {frame.shape} frame into {out.shape}; denoising needs a "
                                 "generator whose output has the input's size and channels")
        if residual == "mean":
            out = out + np.mean(np.stack([frame] + list(neighbours)), axis=0)
        elif residual:
            out = out + frame
        return t, payload, frame, out.astype(np.float32)

    windows = (without_blank(w) for w in iter_windows(_checked(items, check_float), offsets, edge))
    yield from _run_windows(windows, job, finish, keep, prefetch)
