"""pyflow.torch_flow: end-point error against the C++ flow, API parity with pyflow, batching, errors."""

import glob
import json
import os

import numpy as np
import pytest
import torch

import pyflow
from pyflow import torch_flow

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "flow_ref")
PAIRS = sorted(glob.glob(os.path.join(DATA, "*.npz")))
MANIFEST = {p["file"]: p for p in json.load(open(os.path.join(DATA, "manifest.json")))["pairs"]}
EPE_LIMIT = 0.1  # px, mean end-point error against pyflow.coarse2fine_flow on an ordinary pair


def _pattern(h: int, w: int, dx: float, dy: float, c: int, seed: int) -> np.ndarray:
    """Sum of random sinusoids at (x - dx, y - dy), float64 (h, w, c) in [0, 1]: an exact sub-pixel translation."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    out = np.full((h, w, c), 0.5)
    for k in range(c):
        for _ in range(12):
            fx, fy = rng.uniform(-0.6, 0.6, 2)
            out[:, :, k] += rng.uniform(0.02, 0.06) * np.sin(fx * (xs - dx) + fy * (ys - dy) + rng.uniform(0, 6.3))
    return np.clip(out, 0, 1)


def _epe(a: tuple, b: tuple) -> np.ndarray:
    return np.hypot(a[0] - b[0], a[1] - b[1])


def _load(path: str) -> tuple[np.ndarray, np.ndarray]:
    d = np.load(path)
    return d["im1"].astype(np.float64) / 255.0, d["im2"].astype(np.float64) / 255.0


def _nchw(im: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(im)).permute(2, 0, 1)[None].float()


def test_reference_pairs_present():
    assert len(PAIRS) >= 4


@pytest.mark.parametrize("path", PAIRS, ids=[os.path.basename(p)[:-4] for p in PAIRS])
def test_reference_pairs_close_to_cpp(path):
    im1, im2 = _load(path)
    params = MANIFEST[os.path.basename(path)]["params"]  # RBPN_PARAMS (colType 1 for the gray pair)
    ref = pyflow.coarse2fine_flow(im1, im2, **params)
    got = torch_flow.coarse2fine_flow(im1, im2, **params)
    epe = _epe(got, ref)
    assert epe.mean() < EPE_LIMIT / 2, epe.mean()
    assert np.percentile(epe, 95) < EPE_LIMIT, np.percentile(epe, 95)
    assert np.abs(ref[0]).max() > 0.1  # a non-trivial flow


@pytest.mark.parametrize("dx, dy, c", [(2.0, 1.0, 3), (0.5, -1.5, 3), (-3.3, 2.2, 1), (6.0, -4.0, 3)])
def test_synthetic_shifts_close_to_cpp(dx, dy, c):
    im1, im2 = _pattern(48, 64, 0, 0, c, seed=3), _pattern(48, 64, dx, dy, c, seed=3)
    ref = pyflow.coarse2fine_flow(im1, im2, **pyflow.RBPN_PARAMS)
    got = torch_flow.coarse2fine_flow(im1, im2, **pyflow.RBPN_PARAMS)
    assert _epe(got, ref).mean() < EPE_LIMIT / 2
    inner = (slice(8, -8), slice(8, -8))
    assert abs(np.median(got[0][inner]) - dx) < 0.1 and abs(np.median(got[1][inner]) - dy) < 0.1


def test_defaults_close_to_cpp():
    im1, im2 = _pattern(48, 96, 0, 0, 3, seed=4), _pattern(48, 96, 1.5, 0.5, 3, seed=4)
    ref = pyflow.coarse2fine_flow(im1, im2)
    got = torch_flow.coarse2fine_flow(im1, im2)
    assert _epe(got, ref).mean() < 0.01
    explicit = torch_flow.coarse2fine_flow(im1, im2, 1, 0.5, 40, 3, 1, 20, 0)  # positional, the reference's order
    assert all(np.array_equal(x, y) for x, y in zip(got, explicit))


def _lexicographic_sor(coef: dict, masks, n_sweeps: int):
    """The reference's sequential sweep (rows top to bottom, columns left to right), for one pair, in Python."""
    c = {k: t[0, 0].tolist() for k, t in coef.items()}
    h, w = len(c["r1"]), len(c["r1"][0])
    du = [[0.0] * w for _ in range(h)]
    dv = [[0.0] * w for _ in range(h)]
    for _ in range(n_sweeps):
        for i in range(h):
            for j in range(w):
                su = sv = 0.0
                for (ii, jj), wq in (((i, j - 1), c["wl"]), ((i, j + 1), c["wr"]), ((i - 1, j), c["wu"]),
                                     ((i + 1, j), c["wd"])):
                    if 0 <= ii < h and 0 <= jj < w:
                        su += wq[i][j] * du[ii][jj]
                        sv += wq[i][j] * dv[ii][jj]
                du[i][j] = (1 - torch_flow._OMEGA) * du[i][j] + c["inv1"][i][j] * (
                    c["r1"][i][j] + su - c["a12"][i][j] * dv[i][j])
                dv[i][j] = (1 - torch_flow._OMEGA) * dv[i][j] + c["inv2"][i][j] * (
                    c["r2"][i][j] + sv - c["a12"][i][j] * du[i][j])
    return torch.tensor(du, dtype=torch.float64)[None, None], torch.tensor(dv, dtype=torch.float64)[None, None]


@pytest.mark.parametrize("col_type, channels", [(0, 3), (1, 3), (1, 1)])
def test_everything_but_sor_order_is_exact(monkeypatch, col_type, channels):
    # With a lexicographic SOR in place of the red-black one, float64 reproduces the C++ flow to rounding: the
    # pyramid, features, warps, weights and system are the reference's; the SOR order is the only difference.
    d = np.load(os.path.join(DATA, "p04_bikes_vimeo112x64.npz"))
    im1, im2 = d["im1"][8:40, 30:70] / 255.0, d["im2"][8:40, 30:70] / 255.0
    if channels == 1:
        im1, im2 = im1[:, :, 1:2], im2[:, :, 1:2]
    params = dict(pyflow.RBPN_PARAMS, colType=col_type, nOuterFPIterations=3, nSORIterations=10)
    ref = pyflow.coarse2fine_flow(im1, im2, **params)
    monkeypatch.setattr(torch_flow, "_red_black_sor", _lexicographic_sor)
    got = torch_flow.coarse2fine_flow(im1, im2, **params, dtype=torch.float64)
    assert _epe(got, ref).max() < 1e-9
    assert np.abs(got[2] - ref[2]).max() < 1e-9
    assert np.abs(ref[0]).max() > 1  # deep enough into the pyramid to matter


def test_level_sizes_match_pyflow():
    for h, w in [(64, 64), (60, 80), (64, 112), (144, 180), (256, 448), (388, 584), (720, 1280), (2, 200), (1, 1)]:
        for ratio, min_width in [(0.75, 20), (0.5, 40), (0.3, 10), (0.9, 5)]:
            assert len(torch_flow.level_sizes(h, w, ratio, min_width)) == pyflow.pyramid_levels(h, w, ratio, min_width)
    assert torch_flow.level_sizes(256, 448, 0.75, 20)[-3:] == [(34, 59), (25, 44), (19, 33)]


def test_outputs_like_pyflow():
    rng = np.random.default_rng(0)
    im1 = (rng.random((20, 28, 3)) * 255).astype(np.uint8)
    im2 = np.roll(im1, 1, axis=1)
    for a, b in [(im1, im2), (im1 / 255.0, im2 / 255.0), (im1[:, :, 0], im2[:, :, 0]), (im1[:, :, :1], im2[:, :, :1])]:
        ref = pyflow.coarse2fine_flow(a, b, **pyflow.RBPN_PARAMS)
        got = torch_flow.coarse2fine_flow(a, b, **pyflow.RBPN_PARAMS)
        for x, y in zip(got, ref):
            assert isinstance(x, np.ndarray) and x.dtype == np.float64 and x.shape == y.shape
            assert x.flags["C_CONTIGUOUS"]
        assert got[2].min() >= 0 and got[2].max() <= 1


def test_flow_batch_equals_per_pair():
    im1 = _pattern(32, 48, 0, 0, 3, seed=5)
    neighbours = [_pattern(32, 48, dx, dy, 3, seed=5) for dx, dy in [(1, 0), (-2, 1.5), (0.3, -0.7)]]
    centre = _nchw(im1)
    batch = torch.cat([_nchw(nb) for nb in neighbours])
    flow = torch_flow.flow_batch(centre.expand(3, -1, -1, -1), batch, **pyflow.RBPN_PARAMS)
    assert flow.shape == (3, 2, 32, 48) and flow.dtype == torch.float32 and flow.device == batch.device
    broadcast = torch_flow.flow_batch(centre, batch, **pyflow.RBPN_PARAMS)  # one centre frame for all pairs
    assert torch.allclose(flow, broadcast, atol=1e-5)
    for k, nb in enumerate(neighbours):
        single = torch_flow.flow_batch(centre, _nchw(nb), **pyflow.RBPN_PARAMS)
        assert (flow[k] - single[0]).abs().max() < 1e-4
        u, v, _ = torch_flow.coarse2fine_flow(im1, nb, **pyflow.RBPN_PARAMS)
        assert np.abs(flow[k, 0].double().numpy() - u).max() < 1e-4
        assert np.abs(flow[k, 1].double().numpy() - v).max() < 1e-4


@pytest.mark.parametrize("channels", [1, 3])
def test_flow_batch_grey_and_colour(channels):
    im1, im2 = _pattern(40, 56, 0, 0, channels, seed=6), _pattern(40, 56, 1.2, -0.8, channels, seed=6)
    ref = pyflow.coarse2fine_flow(im1, im2, **pyflow.RBPN_PARAMS)
    flow = torch_flow.flow_batch(_nchw(im1), _nchw(im2), **pyflow.RBPN_PARAMS)
    got = flow[0, 0].double().numpy(), flow[0, 1].double().numpy()
    assert _epe(got, ref).mean() < EPE_LIMIT / 2
    as_uint8 = torch_flow.flow_batch((_nchw(im1) * 255).round().to(torch.uint8),
                                     (_nchw(im2) * 255).round().to(torch.uint8), **pyflow.RBPN_PARAMS)
    assert as_uint8.dtype == torch.float32 and (as_uint8 - flow).abs().mean() < 0.05


def test_flow_batch_float64_and_empty():
    im = _nchw(_pattern(16, 24, 0, 0, 3, seed=7))
    flow = torch_flow.flow_batch(im.double(), im.double(), dtype=torch.float64)
    assert flow.dtype == torch.float64 and flow.abs().max() < 1e-6
    assert torch_flow.flow_batch(im[:0], im[:0]).shape == (0, 2, 16, 24)


@pytest.mark.parametrize(
    "im1, im2",
    [
        (np.zeros((8, 8, 3)), np.zeros((8, 9, 3))),
        (np.full((8, 8, 3), np.nan), np.zeros((8, 8, 3))),
        (np.zeros((8, 8, 3)), np.full((8, 8, 3), np.inf)),
        (np.zeros((2, 8, 8, 3)), np.zeros((2, 8, 8, 3))),
        (np.zeros(8), np.zeros(8)),
        (np.zeros((0, 8, 3)), np.zeros((0, 8, 3))),
        (np.zeros((8, 8, 4)), np.zeros((8, 8, 4))),
        (np.zeros((8, 8, 3), np.int32), np.zeros((8, 8, 3), np.int32)),
        (np.zeros((8, 8, 3), bool), np.zeros((8, 8, 3), bool)),
        ([[0.0]], np.zeros((1, 1))),
        (np.full((8, 8, 3), 255.0), np.zeros((8, 8, 3))),
        (np.zeros((8, 8, 3)), np.full((8, 8, 3), -0.5, np.float32)),
    ],
)
def test_bad_input_same_error_as_pyflow(im1, im2):
    with pytest.raises((TypeError, ValueError)) as ref:
        pyflow.coarse2fine_flow(im1, im2)
    with pytest.raises(ref.type) as got:
        torch_flow.coarse2fine_flow(im1, im2)
    assert str(got.value) == str(ref.value)


@pytest.mark.parametrize(
    "kwargs",
    [dict(alpha=0), dict(ratio=-0.5), dict(minWidth=0), dict(nSORIterations=-1), dict(nOuterFPIterations=2.5),
     dict(colType=2), dict(colType=-3), dict(alpha=float("nan"))],
)
def test_bad_params_same_error_as_pyflow(kwargs):
    a = np.zeros((8, 8, 3))
    with pytest.raises((TypeError, ValueError)) as ref:
        pyflow.coarse2fine_flow(a, a, **kwargs)
    with pytest.raises(ref.type) as got:
        torch_flow.coarse2fine_flow(a, a, **kwargs)
    assert str(got.value) == str(ref.value)
    with pytest.raises(ref.type, match=next(iter(kwargs))):
        torch_flow.flow_batch(torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 8), **kwargs)


@pytest.mark.parametrize(
    "im1, im2, exc, words",
    [
        (np.zeros((1, 3, 8, 8)), torch.zeros(1, 3, 8, 8), TypeError, "Im1 must be a torch tensor"),
        (torch.zeros(3, 8, 8), torch.zeros(3, 8, 8), ValueError, "dimensions"),
        (torch.zeros(1, 3, 0, 8), torch.zeros(1, 3, 0, 8), ValueError, "empty"),
        (torch.zeros(1, 4, 8, 8), torch.zeros(1, 4, 8, 8), ValueError, "channels"),
        (torch.zeros(1, 3, 8, 8, dtype=torch.int32), torch.zeros(1, 3, 8, 8), TypeError, "dtype"),
        (torch.zeros(2, 3, 8, 8), torch.zeros(3, 3, 8, 8), ValueError, "same shape"),
        (torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 9), ValueError, "same shape"),
        (torch.zeros(1, 3, 8, 8), torch.full((1, 3, 8, 8), float("nan")), ValueError, "Im2 contains NaN"),
        (torch.full((1, 3, 8, 8), 255.0), torch.zeros(1, 3, 8, 8), ValueError, r"outside \[0, 1\]"),
    ],
)
def test_flow_batch_bad_input(im1, im2, exc, words):
    with pytest.raises(exc, match=words):
        torch_flow.flow_batch(im1, im2)


def test_bad_sor_sweeps_and_dtype():
    a = torch.zeros(1, 3, 8, 8)
    with pytest.raises(ValueError, match="sor_sweeps"):
        torch_flow.flow_batch(a, a, sor_sweeps=-1)
    with pytest.raises(ValueError, match="dtype"):
        torch_flow.flow_batch(a, a, dtype=torch.float16)


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_cuda_missing_is_one_line_error():
    a = np.zeros((8, 8, 3))
    with pytest.raises(RuntimeError, match=r"no CUDA GPU is available; use device='cpu'") as err:
        torch_flow.coarse2fine_flow(a, a, device="cuda")
    assert "\n" not in str(err.value)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU")
def test_cuda_matches_cpu():
    im1, im2 = _load(os.path.join(DATA, "p01_vtest_lr64crop.npz"))
    cpu = torch_flow.coarse2fine_flow(im1, im2, **pyflow.RBPN_PARAMS)
    gpu = torch_flow.coarse2fine_flow(im1, im2, **pyflow.RBPN_PARAMS, device="cuda")
    assert _epe(gpu, cpu).mean() < 1e-3
    flow = torch_flow.flow_batch(_nchw(im1).cuda(), _nchw(im2).cuda(), **pyflow.RBPN_PARAMS)
    assert flow.device.type == "cuda"


@pytest.mark.parametrize("shape", [(1, 1, 3), (8, 8, 3), (64, 26, 3), (26, 27, 1), (2, 200, 3), (200, 2, 3)])
def test_small_and_narrow_images_do_not_crash(shape):
    rng = np.random.default_rng(8)
    a, b = rng.random(shape), rng.random(shape)
    u, v, im2w = torch_flow.coarse2fine_flow(a, b, **pyflow.RBPN_PARAMS)
    assert u.shape == shape[:2] and im2w.shape == shape
    assert np.isfinite(u).all() and np.isfinite(v).all() and np.isfinite(im2w).all()


def test_tester_torch_flow_backend_matches_the_cpp_one(tmp_path, capsys):
    """iSeeBetterTest.py --flow_backend torch: the same SR frames as the exact C++ flow, to within a few levels."""
    from conftest import TINY_NET, moving_frames, run_tester

    import checkpoint
    import rbpn
    import video_io

    torch.manual_seed(0)
    ckpt = tmp_path / "tiny.pth"
    checkpoint.save_generator(str(ckpt), rbpn.Net(**TINY_NET))
    frames = tmp_path / "clip"
    frames.mkdir()
    for i, f in enumerate(moving_frames(4, 32, 40), start=1):
        video_io.save_rgb(str(frames / f"{i:03d}.png"), f)
    outs = {}
    for backend in ("cpp", "torch"):
        code, err = run_tester(["-u", "-i", str(frames), "-o", str(tmp_path / backend), "-m", str(ckpt),
                                "--precision", "fp32", "--flow_backend", backend], capsys)
        assert code == 0, err
        outs[backend] = [video_io.load_rgb(str(tmp_path / backend / "clip" / f"{i:03d}.png")).astype(int)
                         for i in range(1, 5)]
    for a, b in zip(outs["cpp"], outs["torch"]):
        diff = np.abs(a - b)  # a random tiny net amplifies the few pixels where the flows differ most
        assert diff.mean() < 0.5 and np.percentile(diff, 99) <= 3


def test_flow_backend_auto_follows_the_model_device():
    from inference import resolve_flow_backend

    assert resolve_flow_backend("auto", None, torch.device("cpu")) == ("cpp", torch.device("cpu"))
    assert resolve_flow_backend("auto", None, torch.device("cuda")) == ("torch", torch.device("cuda"))
    assert resolve_flow_backend("torch", "cpu", torch.device("cpu")) == ("torch", torch.device("cpu"))


@pytest.mark.parametrize("alpha", [1e38, 1e39, 1e300])
def test_huge_alpha_gives_the_zero_flow_like_the_cpp_flow(alpha):
    """G13: alpha >= 1e38 overflowed float32 into a raw index error; the flow is (numerically) zero, as in C++."""
    a = torch.rand(1, 1, 24, 32, generator=torch.Generator().manual_seed(0))
    flow = torch_flow.flow_batch(a, torch.roll(a, 1, 3), alpha=alpha)
    assert torch.isfinite(flow).all() and float(flow.abs().max()) < 1e-20
