"""Fine-tune a denoising generator on one movie, the movie it is about to denoise (the tester's ``--finetune``).

There is no clean frame, so the training target is the one the shipped denoisers were trained with: ``interleaved``
(``denoise_data.make_sample``): the network sees the frames at offsets 0, +-2, +-4, ... and the target is the mean
of the frames at -1 and +1, which it never sees. Their noise is independent of its input, so the loss is the true
error plus a constant (Noise2Noise), and no clean frame is needed.

**Held-out windows.** A few windows spread over the movie are never trained on (``split_windows``): nor are the
windows whose target frames are theirs. Their Noise2Noise error on whole frames is the stopping score, in dB
(``10 log10(1 / MSE)``, peak 1 on the movie's normalised range). It includes the target's own noise, so it is lower
than the true PSNR and its changes are smaller than the true ones, but it goes down, like the true error, once the
network starts to learn the movie's noise. It is computed before training and every ``EVAL_SECONDS`` (or a fifth of
the budget, if shorter); the best state is kept, and the model is returned only if it beat the start.

**Settings.** The model's recorded flows (pyflow flows are computed once per frame pair on whole frames and kept in
memory), warping and residual base are used as in its training; random patches of ``PATCH`` px with flips, no gamma
(it would bias the mean target). bf16 autocast where ``training.resolve_precision`` gives it. Seeded: the same
number of steps gives the same weights (the budget is wall time, so the number of steps is not fixed).
"""

from __future__ import annotations

import copy
import random
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch.utils.data import default_collate

import training
from denoise_data import MEMORY, DenoiseDataset, window_length

PATCH = 64  # px, training patch (smaller frames: the whole frame)
BATCH = 4
LR = 1e-5  # Adam: small, the weights are already trained
EVAL_SECONDS = 20.0  # held-out score at least this often
HELD_OUT_EVERY = 7  # one window in 7 is held out ...
MAX_HELD_OUT = 8  # ... at most this many (each costs one whole-frame pass per evaluation)
MIN_FRAMES = 12  # usable frames a movie needs for fine-tuning

Batch = Tuple[torch.Tensor, torch.Tensor, List[torch.Tensor], List[torch.Tensor], torch.Tensor]


def too_short(data: np.ndarray, blank: Sequence[int], n_frames: int) -> Optional[str]:
    """Why a movie cannot be fine-tuned on (too few usable frames or windows, an even nFrames), or None."""
    if n_frames % 2 == 0:
        return f"the model's nFrames is {n_frames}; the interleaved target needs an odd nFrames"
    usable = len(data) - len(set(blank))
    if usable < MIN_FRAMES:
        return f"{usable} usable frames are too few (at least {MIN_FRAMES})"
    length = window_length("interleaved", n_frames)
    skip = set(int(t) for t in blank)
    starts = [s for s in range(len(data) - length + 1) if not skip & set(range(s, s + length))]
    if len(starts) < 3:
        return f"{len(starts)} runs of {length} usable frames are too few (at least 3)"
    return None


def split_windows(starts: Sequence[int]) -> Tuple[List[int], List[int]]:
    """(held-out, training) positions in ``starts`` (window start frames): every ``HELD_OUT_EVERY``-th window, at
    most ``MAX_HELD_OUT`` spread evenly, is held out; a window whose target frames are a held-out window's (its
    start 0 or 2 frames away) is not trained on either."""
    count = min(MAX_HELD_OUT, max(1, len(starts) // HELD_OUT_EVERY))
    held = sorted({int(k) for k in np.linspace(0, len(starts) - 1, count + 2)[1:-1].round()})
    held_starts = {starts[k] for k in held}
    train = [k for k in range(len(starts)) if not any(abs(starts[k] - h) in (0, 2) for h in held_starts)]
    return held, train


def _forward(model: torch.nn.Module, batch: Batch, device: torch.device, residual: bool) -> torch.Tensor:
    """The model's estimate of the target (its correction plus the base with ``residual``), float32."""
    inp, _, neighbours, flows, base = (x.to(device) if torch.is_tensor(x) else [y.to(device) for y in x]
                                       for x in batch)
    out = model(inp, neighbours, flows).float()
    return out + base if residual else out


def held_out_score(model: torch.nn.Module, batches: Sequence[Batch], device: torch.device, residual: bool) -> float:
    """The Noise2Noise score of the held-out windows: ``10 log10(1 / MSE)`` against their targets (fp32)."""
    model.eval()
    errors = []
    with torch.no_grad():
        for batch in batches:
            out = _forward(model, batch, device, residual)
            errors.append(float(torch.mean((out - batch[1].to(device)) ** 2)))
    return float(10.0 * np.log10(1.0 / max(np.mean(errors), 1e-12)))


def _datasets(data: np.ndarray, blank: Sequence[int], n_frames: int, settings, base: str, patch: int
              ) -> Tuple[DenoiseDataset, DenoiseDataset]:
    """(training dataset: random patches, flips; held-out dataset: whole frames) of the movie."""
    flows = settings.flows
    cache = MEMORY if flows == "pyflow" else None
    common = dict(blanks=[list(blank)], names=["movie"], n_frames=n_frames, target="interleaved", gamma=None,
                  warping=settings.warping, flows=flows, flow_cache=cache, base=base)
    train = DenoiseDataset([data], patch_size=min(patch, *data.shape[1:3]), training=True, **common)
    held = DenoiseDataset([data], patch_size=0, training=False, **common)
    return train, held


def finetune(model: torch.nn.Module, config: dict, data: np.ndarray, blank: Sequence[int], minutes: float,
             device: torch.device, precision: str, settings, residual: Optional[str] = None, seed: int = 0,
             log: Callable[[str], None] = print, max_steps: int = 0, patch: int = PATCH, lr: float = LR
             ) -> Tuple[Optional[torch.nn.Module], Dict[str, object]]:
    """Fine-tune a copy of ``model`` on the normalised movie ``data`` (T, H, W, C) for up to ``minutes`` (and
    ``max_steps`` steps if > 0; ``patch`` px, Adam's ``lr``). ``settings``: the model's ``DenoiseSettings`` (flows,
    warping); ``residual``: its residual ("mean": the mean base, any other true value: the frame). Returns (the
    fine-tuned copy in eval mode, or None if it never beat the start; {"minutes", "steps", "score_before",
    "score_after", "kept", "precision", ...})."""
    training.seed_everything(seed)
    start = time.time()
    budget = 60.0 * minutes
    train_set, held_set = _datasets(data, blank, config["nFrames"], settings,
                                    "mean" if residual == "mean" else "frame", patch)
    train_set.reseed(seed)
    held, train = split_windows([s for _, s in train_set.samples])
    held_batches = [default_collate([held_set[k]]) for k in held]
    net = copy.deepcopy(model).to(device)
    precision = training.resolve_precision(precision, device)
    best = held_out_score(net, held_batches, device, bool(residual))
    before, best_state, steps, best_steps = best, None, 0, 0
    optimizer = torch.optim.Adam(net.parameters(), lr=lr)
    rng = random.Random(seed)
    interval = min(EVAL_SECONDS, budget / 5.0)
    next_eval = time.time() + interval
    while time.time() - start < budget and (max_steps <= 0 or steps < max_steps):
        net.train()
        batch = default_collate([train_set[rng.choice(train)] for _ in range(BATCH)])
        optimizer.zero_grad(set_to_none=True)
        with training.autocast(device, precision):
            out = _forward(net, batch, device, bool(residual))
        loss = torch.nn.functional.l1_loss(out, batch[1].to(device))
        loss.backward()
        optimizer.step()
        steps += 1
        last = time.time() - start >= budget or steps == max_steps
        if time.time() >= next_eval or last:
            score = held_out_score(net, held_batches, device, bool(residual))
            log(f"finetune: step {steps}, held-out score {score:.3f} dB (start {before:.3f})")
            if score > best:
                best, best_state, best_steps = score, copy.deepcopy(net.state_dict()), steps
            next_eval = time.time() + interval
    info = {"minutes": round((time.time() - start) / 60.0, 3), "steps": steps, "best_step": best_steps,
            "score_before": before, "score_after": best, "kept": best_state is not None, "precision": precision,
            "held_out_windows": len(held), "training_windows": len(train)}
    if best_state is None:
        return None, info
    net.load_state_dict(best_state)
    return net.eval(), info
