"""Shared test fixtures: tiny network configs and small real-looking clips made on the fly.

Helpers may add fixtures here; existing ones keep their meaning.
"""

import os
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import hardware  # noqa: E402,F401  (caps oneDNN below AMX before any test runs a convolution)

# A tiny RBPN that runs in milliseconds on CPU; same code path as the full model.
TINY_NET = dict(num_channels=3, base_filter=8, feat=8, num_stages=3, n_resblock=1, nFrames=3, scale_factor=4)


@pytest.fixture(autouse=True, scope="session")
def _few_threads():
    """Keep torch from oversubscribing the 2-core CI machine."""
    import torch

    torch.set_num_threads(2)


@pytest.fixture
def one_thread():
    """Tiny models gain nothing from threads, and OpenMP spinning makes them many times slower on a busy machine.
    Test files use it with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def run_torchrun(tmp_path, args, preamble: str = "", processes: int = 2, timeout: int = 300):
    """``iSeeBetterTrain.py args`` under ``torch.distributed.run`` with ``processes`` CPU processes (one thread
    each); ``preamble`` is Python run first in every process (e.g. a patch). Returns the CompletedProcess."""
    import subprocess

    runner = tmp_path / "runner.py"
    runner.write_text(f"import sys\nsys.path.insert(0, {ROOT!r})\n" + preamble
                      + "import iSeeBetterTrain\nfrom errors import run_cli\nrun_cli(iSeeBetterTrain.main)\n")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
           str(runner)] + [str(a) for a in args]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)


def net_inputs(num_channels: int, neighbours: int, h: int = 6, w: int = 5, batch: int = 2, seed: int = 0):
    """Seeded random (x, neighbours, flows) for an RBPN generator: frames in [0, 1], flows ~ N(0, 1)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    x = torch.rand(batch, num_channels, h, w, generator=g)
    nbs = [torch.rand(batch, num_channels, h, w, generator=g) for _ in range(neighbours)]
    flows = [torch.randn(batch, 2, h, w, generator=g) for _ in range(neighbours)]
    return x, nbs, flows


@pytest.fixture
def tiny_net_config() -> dict:
    return dict(TINY_NET)


@pytest.fixture
def tiny_ckpt(tmp_path) -> str:
    """A project checkpoint of the tiny RBPN (seeded random weights)."""
    import torch

    import checkpoint
    import rbpn

    torch.manual_seed(0)
    path = tmp_path / "tiny.pth"
    checkpoint.save_generator(str(path), rbpn.Net(**TINY_NET))
    return str(path)


def run_tester(argv, capsys):
    """Run iSeeBetterTest.py as from the command line; returns (exit status, stderr)."""
    import logging

    import iSeeBetterTest
    from errors import run_cli

    for handler in logging.getLogger("root").handlers:  # log to this test's captured stderr
        if getattr(handler, "_iseebetter_console", False):
            handler.stream = sys.stderr
    with pytest.raises(SystemExit) as exc:
        run_cli(iSeeBetterTest.main, argv)
    return exc.value.code, capsys.readouterr().err


def moving_frames(n: int = 8, height: int = 64, width: int = 96, seed: int = 0) -> list:
    """Frames of a smooth textured pattern translating by (2, 1) px per frame, RGB uint8."""
    rng = np.random.default_rng(seed)
    big = rng.random((height + 4 * n, width + 4 * n, 3))
    # Smooth the noise so that it looks like natural texture and has usable gradients.
    for _ in range(3):
        big = (big + np.roll(big, 1, 0) + np.roll(big, 1, 1) + np.roll(big, -1, 0) + np.roll(big, -1, 1)) / 5
    big = (big - big.min()) / (big.max() - big.min())
    frames = []
    for t in range(n):
        y, x = t, 2 * t
        frames.append((big[y : y + height, x : x + width] * 255).round().astype(np.uint8))
    return frames


@pytest.fixture
def frame_folder(tmp_path):
    """A folder of 8 PNG frames 001.png..008.png (96x64)."""
    import cv2

    folder = tmp_path / "clip"
    folder.mkdir()
    for i, frame in enumerate(moving_frames(), start=1):
        cv2.imwrite(str(folder / f"{i:03d}.png"), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    return folder


@pytest.fixture
def video_file(tmp_path):
    """An 8-frame 96x64 MJPG .avi at 10 fps."""
    import cv2

    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (96, 64))
    for frame in moving_frames():
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def make_av_clip(path, n=24, rate=None, size=(64, 48), audio=True, times=None, rotation=None, acodec="aac",
                 fmt=None):
    """Encode a real H.264 clip with PyAV: a moving pattern, optional 48 kHz stereo sine audio lasting as long as the
    video, optional per-frame ``times`` (variable frame rate) and display rotation (degrees counter-clockwise)."""
    from fractions import Fraction

    import av

    rate = rate or Fraction(24000, 1001)
    out = av.open(str(path), "w", format=fmt)
    video = out.add_stream("libx264", rate=rate)
    video.width, video.height = size
    video.pix_fmt = "yuv420p"
    time_base = Fraction(1, 90000) if times is not None else 1 / rate
    video.codec_context.time_base = time_base
    video.time_base = time_base
    if rotation is not None:
        video.set_display_rotation(rotation)
    sound = None
    if audio:
        sound = out.add_stream(acodec, rate=48000)
        sound.layout = "stereo"
    for i, frame in enumerate(moving_frames(n, size[1], size[0])):
        vf = av.VideoFrame.from_ndarray(frame, format="rgb24")
        t = times[i] if times is not None else Fraction(i) / rate
        vf.pts = int(round(t / time_base))
        vf.time_base = time_base
        for packet in video.encode(vf):
            out.mux(packet)
    for packet in video.encode(None):
        out.mux(packet)
    if sound is not None:
        end = (times[-1] + Fraction(1, 25)) if times is not None else Fraction(n) / rate
        total, pos = int(48000 * end), 0
        while pos < total:
            k = min(1024, total - pos)
            wave = (0.3 * np.sin(2 * np.pi * 440 * np.arange(pos, pos + k) / 48000)).astype(np.float32)
            af = av.AudioFrame.from_ndarray(np.stack([wave, wave]), format="fltp", layout="stereo")
            af.sample_rate = 48000
            af.pts = pos
            af.time_base = Fraction(1, 48000)
            for packet in sound.encode(af):
                out.mux(packet)
            pos += k
        for packet in sound.encode(None):
            out.mux(packet)
    out.close()
    return path


def l1_fit_losses(net, x, nbs, flows, target, steps: int = 8, lr: float = 1e-3) -> list:
    """The L1 losses of ``steps`` Adam steps fitting ``net(x, nbs, flows)`` to ``target`` (a net that learns lowers
    them)."""
    import torch

    opt = torch.optim.Adam(net.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        loss = torch.nn.functional.l1_loss(net(x, nbs, flows), target)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def tame(net, factor: float = 0.7):
    """Scale the conv weights down: randomly initialised tiny RBPNs at scale 1 blow values up to ~100 (a trained
    denoiser is contractive); scaled, the output stays on the [0, 1] scale, like a real denoiser's."""
    import torch

    with torch.no_grad():
        for p in net.parameters():
            if p.dim() == 4:
                p.mul_(factor)
    return net


def run_denoise(tmp_path, movie: str, model: str, capsys, *extra):
    """``iSeeBetterTest.py --denoise`` on one movie into ``tmp_path/out`` (no levelling, no scores, no bars); asserts
    it succeeds and returns (output folder, the movie's metrics.json entry, stderr)."""
    import json

    out = tmp_path / "out"
    code, err = run_tester(["--denoise", "-i", movie, "-o", str(out), "-m", model, "--no-level", "--no-eval",
                            "--no-progress", *extra], capsys)
    assert code == 0, err
    with open(out / "metrics.json") as f:
        return out, json.load(f)["movies"][os.path.splitext(os.path.basename(movie))[0]], err
