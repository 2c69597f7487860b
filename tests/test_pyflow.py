"""pyflow: exactness against the reference outputs, input handling, thread safety, convention."""

import glob
import json
import os
import threading

import numpy as np
import pytest
from conftest import ROOT

import pyflow

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "flow_ref")
PAIRS = sorted(glob.glob(os.path.join(DATA, "*.npz")))
MANIFEST = {p["file"]: p for p in json.load(open(os.path.join(DATA, "manifest.json")))["pairs"]}


def _textured(h, w, c=3, seed=0):
    """Smooth random texture in [0, 1], float64 (h, w, c)."""
    rng = np.random.default_rng(seed)
    img = rng.random((h + 8, w + 8, c))
    for _ in range(4):
        img = (img + np.roll(img, 1, 0) + np.roll(img, -1, 0) + np.roll(img, 1, 1) + np.roll(img, -1, 1)) / 5
    img = img[4 : 4 + h, 4 : 4 + w]
    return (img - img.min()) / (img.max() - img.min())


@pytest.fixture(scope="module")
def pair_small():
    d = np.load(os.path.join(DATA, "p01_vtest_lr64crop.npz"))
    return d["im1"], d["im2"]


def test_reference_pairs_present():
    assert len(PAIRS) >= 4


@pytest.mark.parametrize("path", PAIRS, ids=[os.path.basename(p)[:-4] for p in PAIRS])
def test_matches_reference(path):
    d = np.load(path)
    params = MANIFEST[os.path.basename(path)]["params"]
    im1 = np.ascontiguousarray(d["im1"].astype(np.float64) / 255.0)
    im2 = np.ascontiguousarray(d["im2"].astype(np.float64) / 255.0)
    u, v, im2w = pyflow.coarse2fine_flow(im1, im2, *params.values())  # positional, in the reference's order
    assert u.dtype == v.dtype == im2w.dtype == np.float64
    assert u.shape == v.shape == im1.shape[:2]
    epe = np.sqrt((u - d["u"]) ** 2 + (v - d["v"]) ** 2)
    assert epe.mean() <= 1e-4, epe.mean()
    assert np.abs(im2w.reshape(d["im2W"].shape) - d["im2W"]).max() <= 1e-4
    # The flow is non-trivial, so the comparison above means something.
    assert np.abs(d["u"]).max() > 0.1


def test_uint8_equals_float64_over_255(pair_small):
    im1, im2 = pair_small
    ref = pyflow.coarse2fine_flow(im1 / 255.0, im2 / 255.0, **pyflow.RBPN_PARAMS)
    got = pyflow.coarse2fine_flow(im1, im2, **pyflow.RBPN_PARAMS)
    for a, b in zip(ref, got):
        assert np.array_equal(a, b)


def test_float32_and_non_contiguous_accepted(pair_small):
    im1, im2 = pair_small[0][:32, :40], pair_small[1][:32, :40]
    f1, f2 = (im1 / 255.0).astype(np.float32), (im2 / 255.0).astype(np.float32)
    ref = pyflow.coarse2fine_flow(f1.astype(np.float64), f2.astype(np.float64), **pyflow.RBPN_PARAMS)
    got = pyflow.coarse2fine_flow(f1, f2, **pyflow.RBPN_PARAMS)
    assert all(np.array_equal(a, b) for a, b in zip(ref, got))
    fortran = pyflow.coarse2fine_flow(np.asfortranarray(f1), f2[:, :, :].copy(order="F"), **pyflow.RBPN_PARAMS)
    assert all(np.array_equal(a, b) for a, b in zip(ref, fortran))


def test_gray_2d_equals_hw1():
    a, b = _textured(40, 48, 1, seed=1), _textured(40, 48, 1, seed=2)
    u3, v3, w3 = pyflow.coarse2fine_flow(a, b, **pyflow.RBPN_PARAMS)
    u2, v2, w2 = pyflow.coarse2fine_flow(a[:, :, 0], b[:, :, 0], **pyflow.RBPN_PARAMS)
    assert w3.shape == (40, 48, 1) and w2.shape == (40, 48)
    assert np.array_equal(u2, u3) and np.array_equal(v2, v3) and np.array_equal(w2, w3[:, :, 0])


def test_defaults_match_reference_signature():
    a, b = _textured(32, 48), _textured(32, 48, seed=3)
    explicit = pyflow.coarse2fine_flow(a, b, 1, 0.5, 40, 3, 1, 20, 0)
    default = pyflow.coarse2fine_flow(a, b)
    assert all(np.array_equal(x, y) for x, y in zip(explicit, default))


@pytest.mark.parametrize(
    "im1, im2, exc, words",
    [
        (np.zeros((8, 8, 3)), np.zeros((8, 9, 3)), ValueError, "same shape"),
        (np.full((8, 8, 3), np.nan), np.zeros((8, 8, 3)), ValueError, "NaN"),
        (np.zeros((8, 8, 3)), np.full((8, 8, 3), np.inf), ValueError, "NaN or infinite"),
        (np.zeros((2, 8, 8, 3)), np.zeros((2, 8, 8, 3)), ValueError, "dimensions"),
        (np.zeros(8), np.zeros(8), ValueError, "dimensions"),
        (np.zeros((0, 8, 3)), np.zeros((0, 8, 3)), ValueError, "empty"),
        (np.zeros((8, 8, 4)), np.zeros((8, 8, 4)), ValueError, "channels"),
        (np.zeros((8, 8, 3), np.int32), np.zeros((8, 8, 3), np.int32), TypeError, "dtype"),
        (np.zeros((8, 8, 3), bool), np.zeros((8, 8, 3), bool), TypeError, "dtype"),
        ([[0.0]], np.zeros((1, 1)), TypeError, "numpy array"),
    ],
)
def test_bad_input_clear_error(im1, im2, exc, words):
    with pytest.raises(exc, match=words):
        pyflow.coarse2fine_flow(im1, im2)


@pytest.mark.parametrize("kwargs", [dict(alpha=0), dict(ratio=-0.5), dict(minWidth=0), dict(nSORIterations=-1)])
def test_bad_params_clear_error(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        pyflow.coarse2fine_flow(np.zeros((8, 8, 3)), np.zeros((8, 8, 3)), **kwargs)


def test_bad_param_type():
    with pytest.raises(TypeError, match="nOuterFPIterations"):
        pyflow.coarse2fine_flow(np.zeros((8, 8, 3)), np.zeros((8, 8, 3)), nOuterFPIterations=2.5)


@pytest.mark.parametrize("shape", [(1, 1, 3), (8, 8, 3), (64, 26, 3), (26, 27, 1), (2, 200, 3), (200, 2, 3)])
def test_small_and_narrow_images_do_not_crash(shape):
    h, w, c = shape
    a, b = _textured(h, w, c, seed=4), _textured(h, w, c, seed=5)
    u, v, im2w = pyflow.coarse2fine_flow(a, b, **pyflow.RBPN_PARAMS)
    assert u.shape == (h, w) and im2w.shape == shape
    assert np.isfinite(u).all() and np.isfinite(v).all() and np.isfinite(im2w).all()
    assert im2w.min() >= 0 and im2w.max() <= 1


def test_pyramid_levels():
    # Table of pyflow-algorithm.md 3.2 (ratio 0.75, minWidth 20); widths <= 26 get a single level.
    for (h, w), levels in {(64, 64): 4, (60, 80): 4, (64, 112): 5, (144, 176): 7, (480, 640): 12}.items():
        assert pyflow.pyramid_levels(h, w, 0.75, 20) == levels
    assert pyflow.pyramid_levels(64, 26, 0.75, 20) == 1
    assert pyflow.pyramid_levels(1, 1, 0.75, 20) == 1
    assert pyflow.pyramid_levels(2, 200, 0.75, 20) == 3  # heights 2, 1, 1; the next one would be 0


def test_silent(capfd, pair_small):
    pyflow.coarse2fine_flow(pair_small[0], pair_small[1], **pyflow.RBPN_PARAMS)
    pyflow.coarse2fine_flow_batch(pair_small[0], [pair_small[1]] * 2, threads=2, **pyflow.RBPN_PARAMS)
    out, err = capfd.readouterr()
    assert out == "" and err == ""


def test_batch_equals_sequential_and_uses_threads(pair_small, monkeypatch):
    centre = pair_small[0]
    rng = np.random.default_rng(0)
    noisy = np.clip(pair_small[1] + rng.integers(0, 3, pair_small[1].shape), 0, 255).astype(np.uint8)
    neighbours = [pair_small[1], np.roll(pair_small[1], 1, axis=1), noisy]
    seq = [pyflow.coarse2fine_flow(centre, nb, **pyflow.RBPN_PARAMS) for nb in neighbours]

    seen = set()
    real = pyflow._pyflow.coarse2fine_flow

    def spy(*args):
        seen.add(threading.get_ident())
        return real(*args)

    monkeypatch.setattr(pyflow._pyflow, "coarse2fine_flow", spy)
    batch = pyflow.coarse2fine_flow_batch(centre, neighbours, threads=3, **pyflow.RBPN_PARAMS)
    assert threading.get_ident() not in seen and len(seen) >= 1
    assert len(batch) == len(neighbours)
    for s, b in zip(seq, batch):
        assert all(np.array_equal(x, y) for x, y in zip(s, b))
    assert pyflow.coarse2fine_flow_batch(centre, [], threads=0) == []


def test_batch_reports_bad_neighbour():
    a = np.zeros((8, 8, 3))
    with pytest.raises(ValueError, match="neighbour 1"):
        pyflow.coarse2fine_flow_batch(a, [a, np.zeros((8, 9, 3))])
    with pytest.raises(TypeError, match="list"):
        pyflow.coarse2fine_flow_batch(a, a)
    with pytest.raises(ValueError, match="threads"):
        pyflow.coarse2fine_flow_batch(a, [a], threads=-1)


def test_rbpn_flows_layout(pair_small):
    centre, nb = pair_small
    flows = pyflow.rbpn_flows(centre, [nb, nb], threads=2)
    u, v, _ = pyflow.coarse2fine_flow(centre, nb, **pyflow.RBPN_PARAMS)
    assert len(flows) == 2
    assert flows[0].dtype == np.float32 and flows[0].shape == (2,) + centre.shape[:2]
    assert np.array_equal(flows[0][0], u.astype(np.float32)) and np.array_equal(flows[0][1], v.astype(np.float32))


def test_concurrent_calls_identical(pair_small):
    im1, im2 = pair_small
    ref = pyflow.coarse2fine_flow(im1, im2, **pyflow.RBPN_PARAMS)
    results = [None] * 4
    other = _textured(64, 64, seed=9)

    def work(k):
        # Interleave a different problem so that shared state, if any, would corrupt the results.
        if k % 2:
            pyflow.coarse2fine_flow(other, other[::-1].copy(), **pyflow.RBPN_PARAMS)
        results[k] = pyflow.coarse2fine_flow(im1, im2, **pyflow.RBPN_PARAMS)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for r in results:
        assert all(np.array_equal(x, y) for x, y in zip(ref, r))


def test_translation_recovered_with_sign_convention():
    # Im2 is Im1 shifted right by 2 px and down by 1 px: Im1(x, y) = Im2(x + 2, y + 1), so u = +2, v = +1.
    big = _textured(80, 100, seed=11)
    im1 = big[10:74, 10:90]
    im2 = big[9:73, 8:88]
    u, v, im2w = pyflow.coarse2fine_flow(im1, im2, **pyflow.RBPN_PARAMS)
    inner = (slice(8, -8), slice(8, -8))
    assert abs(np.median(u[inner]) - 2) < 0.1 and abs(np.median(v[inner]) - 1) < 0.1
    assert np.abs(im2w[inner] - im1[inner]).mean() < np.abs(im2[inner] - im1[inner]).mean() / 5


def test_import_from_other_directory(tmp_path):
    import subprocess
    import sys

    code = "import pyflow, numpy as np; z = np.zeros((8, 8, 3)); print(pyflow.coarse2fine_flow(z, z)[0].shape)"
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "(8, 8)"


@pytest.mark.parametrize(
    "scale, offset, dtype",
    [(255.0, 0.0, np.float64), (255.0, 0.0, np.float32), (1e300, 0.0, np.float64), (1.0, -0.5, np.float64),
     (1.0, 1e-4, np.float32)],
)
def test_float_input_outside_unit_range_rejected(scale, offset, dtype):
    # P10: a 0..255 float image used to give a different flow silently, and 1e300 an all-zero one.
    good = _textured(16, 20)
    bad = (good * scale + offset).astype(dtype)
    with pytest.raises(ValueError, match=r"Im1 has values .* outside \[0, 1\].*divide .* by 255"):
        pyflow.coarse2fine_flow(bad, good, **pyflow.RBPN_PARAMS)
    with pytest.raises(ValueError, match=r"Im2 has values"):
        pyflow.coarse2fine_flow(good, bad, **pyflow.RBPN_PARAMS)
    with pytest.raises(ValueError, match=r"neighbour 1: Im2 has values"):
        pyflow.coarse2fine_flow_batch(good, [good, bad], **pyflow.RBPN_PARAMS)
    with pytest.raises(ValueError, match=r"Im1 has values"):
        pyflow.rbpn_flows(bad, [good])


def test_float_rounding_error_at_range_ends_accepted():
    # Arithmetic on [0, 1] images can land a hair outside; up to 1e-6 is tolerated (and passed through unchanged).
    a, b = _textured(16, 20), _textured(16, 20, seed=1)
    a[0, 0, 0], b[0, 0, 0] = 1 + 1e-9, -1e-9
    u, v, _ = pyflow.coarse2fine_flow(a, b, **pyflow.RBPN_PARAMS)
    assert np.isfinite(u).all() and np.isfinite(v).all()


@pytest.mark.parametrize("col_type", [7, -3, 2])
def test_bad_coltype_rejected(col_type):
    # P13: any integer used to be accepted (and silently treated as 0).
    a = np.zeros((8, 8, 3))
    with pytest.raises(ValueError, match=rf"colType must be 0 .* or 1 .*got {col_type}"):
        pyflow.coarse2fine_flow(a, a, colType=col_type)
    with pytest.raises(ValueError, match="colType"):
        pyflow.coarse2fine_flow_batch(a, [a], colType=col_type)


def test_coltype_one_accepted_and_differs_for_colour():
    a, b = _textured(32, 40, seed=2), _textured(32, 40, seed=3)
    params = dict(pyflow.RBPN_PARAMS)
    rgb = pyflow.coarse2fine_flow(a, b, **dict(params, colType=0))
    bgr = pyflow.coarse2fine_flow(a, b, **dict(params, colType=1))
    assert not np.array_equal(rgb[0], bgr[0])


@pytest.mark.parametrize("batch", [False, True])
def test_ctrl_c_stops_the_cpp_flow(batch):
    """G09: SIGINT stops a flow at the allowed maximum iterations (hours of work) within moments, single and batch."""
    import signal
    import subprocess
    import sys
    import time

    call = ("pyflow.coarse2fine_flow_batch(a, [b, b, b], threads=2, **big)" if batch
            else "pyflow.coarse2fine_flow(a, b, **big)")
    script = ("import signal, sys, numpy as np\n"
              f"sys.path.insert(0, {ROOT!r})\n"
              "import pyflow\n"
              "signal.signal(signal.SIGINT, signal.default_int_handler)\n"
              "a = np.random.default_rng(0).random((24, 32, 1)); b = np.roll(a, 1, 1)\n"
              "big = dict(nOuterFPIterations=100000, nSORIterations=100000)\n"
              "print('started', flush=True)\n"
              "try:\n"
              f"    {call}\n"
              "except KeyboardInterrupt:\n"
              "    print('interrupted', flush=True)\n")
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "started"
        time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=20)
    finally:
        proc.kill()
    assert proc.returncode == 0 and out.strip() == "interrupted"


def test_cancel_running_stops_only_computations_started_before():
    epoch = pyflow._pyflow.cancel_epoch()
    pyflow._pyflow.cancel_running()
    a = np.random.default_rng(0).random((8, 8, 1))
    with pytest.raises(RuntimeError, match="cancelled"):
        pyflow._pyflow.coarse2fine_flow(a, a, 1.0, 0.5, 4.0, 1, 1, 1, 0, epoch)
    u, v, _ = pyflow._pyflow.coarse2fine_flow(a, a, 1.0, 0.5, 4.0, 1, 1, 1, 0)
    assert np.isfinite(u).all() and np.isfinite(v).all()
