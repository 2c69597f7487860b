"""Training building blocks for ``iSeeBetterTrain.py``: devices and DDP, seeding, the GAN/pixel step, checkpoints.

The GAN step (``Trainer.gan_step``) does what iSeeBetter intends, in an order that is correct on modern torch:

1. ``fake = G(x, neighbours, flows)`` once (plus the bicubic image with ``--residual``).
2. D step: ``d_loss = 1 - mean D(real) + mean D(fake.detach())`` (``SRGAN.loss.discriminator_loss``: no BCE, as
   the original / leftthomas SRGAN).
3. G step: a fresh ``D(fake)`` through the just-updated D, fed to the four-fold ``GeneratorLoss``; D's parameters
   are frozen for this pass so that no D gradients are computed.

The original reused the pre-update D output in the G loss after ``retain_graph=True``, which raises an in-place
modification error on torch >= 1.5.
"""

import contextlib
import glob
import math
import os
import random
import re
import time
from dataclasses import dataclass
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.distributed as torch_dist
from torch import nn

import hardware
from errors import UserError
from SRGAN.loss import discriminator_loss

MODEL_KEYS = ("num_channels", "base_filter", "feat", "num_stages", "n_resblock", "nFrames", "scale_factor")
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
STATE_FORMAT = "iSeeBetterTrain"
STATE_VERSION = 1


class TrainingDiverged(UserError):
    """A loss became NaN or infinite."""


# ----------------------------------------------------------------------------------------------------------------
# Devices, distributed runs, seeding


@dataclass
class DistInfo:
    """Where this process runs: rank / world size (1 without torchrun) and its torch device."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def setup_distributed(gpu_mode: bool = True, backend: Optional[str] = None) -> DistInfo:
    """Pick the device and, under ``torchrun`` (WORLD_SIZE > 1), join the process group (nccl on GPU, gloo on CPU)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = gpu_mode and torch.cuda.is_available()
    if use_cuda:
        device = torch.device("cuda", local_rank % torch.cuda.device_count())
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if world_size > 1 and not torch_dist.is_initialized():
        torch_dist.init_process_group(backend=backend or ("nccl" if use_cuda else "gloo"))
    return DistInfo(rank, world_size, local_rank, device)


def cleanup_distributed() -> None:
    if torch_dist.is_available() and torch_dist.is_initialized():
        torch_dist.destroy_process_group()


def barrier(dist: DistInfo) -> None:
    if dist.distributed:
        torch_dist.barrier()


def epoch_seed(seed: int, epoch: int, rank: int = 0) -> int:
    """A 63-bit seed that depends only on (seed, epoch, rank), so any epoch can be replayed after a resume."""
    return int(np.random.SeedSequence([seed, epoch, rank]).generate_state(2, dtype=np.uint64)[0] >> 1)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_states() -> Dict:
    """Current states of every RNG the training loop touches, as tensors and plain values (``weights_only``-safe)."""
    version, keys, pos = random.getstate()[0], random.getstate()[1], random.getstate()[2]
    name, np_keys, np_pos, has_gauss, gauss = np.random.get_state()
    states = {
        "python": {"version": version, "state": torch.tensor(keys, dtype=torch.int64), "gauss": pos},
        "numpy": {"name": name, "keys": torch.from_numpy(np_keys.astype(np.int64)), "pos": int(np_pos),
                  "has_gauss": int(has_gauss), "gauss": float(gauss)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: Dict) -> None:
    py = states["python"]
    random.setstate((py["version"], tuple(int(k) for k in py["state"].tolist()), py["gauss"]))
    n = states["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available() and len(states["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(states["cuda"])


def resolve_precision(precision: str, device: torch.device) -> str:
    """``precision`` made concrete for training on ``device`` ('auto' -> bf16 where the hardware has native bf16,
    else fp32; see ``hardware.resolve_precision``, which also warns once about an emulated bf16/fp16)."""
    if precision != "auto" and precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; use auto, {', '.join(PRECISIONS)}")
    return hardware.resolve_precision(precision, device, training=True)


def autocast(device: torch.device, precision: str):
    """``torch.autocast`` for bf16/fp16 on the device, or a no-op context for fp32 ('auto' is resolved first)."""
    if precision == "auto":
        precision = resolve_precision(precision, device)
    dtype = PRECISIONS[precision]
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def unwrap(model: nn.Module) -> nn.Module:
    """The bare module inside DistributedDataParallel / DataParallel."""
    return model.module if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)) else model


# ----------------------------------------------------------------------------------------------------------------
# Data loading


def seed_dataset(dataset, seed: int) -> None:
    """Reseed a dataset's own random generator (patch corners, augmentation), if it keeps one."""
    while isinstance(dataset, torch.utils.data.Subset):
        dataset = dataset.dataset
    if hasattr(dataset, "reseed"):
        dataset.reseed(seed)
    elif isinstance(getattr(dataset, "_rng", None), random.Random):
        dataset._rng.seed(seed)


def _worker_init(worker_id: int) -> None:
    info = torch.utils.data.get_worker_info()
    seed_dataset(info.dataset, info.seed)


def make_train_loader(dataset, batch_size: int, workers: int, dist: DistInfo, seed: int, drop_last: bool = False):
    """A DataLoader whose order and augmentation are a function of (seed, epoch): call ``set_loader_epoch`` first.

    Every sample is used unless ``drop_last`` (then an incomplete last batch is skipped). Under DDP a
    DistributedSampler shards the data; its last shard is padded by repeating samples, as DistributedSampler does.
    """
    generator = torch.Generator()
    if dist.distributed:
        sampler = torch.utils.data.DistributedSampler(
            dataset, num_replicas=dist.world_size, rank=dist.rank, shuffle=True, seed=seed, drop_last=False
        )
    else:
        sampler = torch.utils.data.RandomSampler(dataset, generator=generator)
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        generator=generator,
        worker_init_fn=_worker_init,
        pin_memory=dist.device.type == "cuda",
        drop_last=drop_last,
        persistent_workers=False,
    )
    return loader


def batchnorm_values_per_channel(model: nn.Module, batch: int, height: int, width: int) -> int:
    """The fewest values per channel that a BatchNorm of ``model`` sees in training on a (batch, C, height, width)
    input: the batch times its feature map size there. For plain conv stacks such as the SRGAN discriminator, whose
    layers run in the order they are registered; BatchNorm cannot train on 1 value per channel."""
    fewest = batch * height * width
    for module in unwrap(model).modules():
        if isinstance(module, nn.Conv2d):
            k, s, p, d = module.kernel_size, module.stride, module.padding, module.dilation
            height = (height + 2 * p[0] - d[0] * (k[0] - 1) - 1) // s[0] + 1
            width = (width + 2 * p[1] - d[1] * (k[1] - 1) - 1) // s[1] + 1
        elif isinstance(module, nn.modules.batchnorm._BatchNorm):
            fewest = min(fewest, batch * height * width)
    return fewest


def set_loader_epoch(loader, seed: int, epoch: int, dist: DistInfo) -> None:
    """Reseed the loader's sampler/worker generator and the global RNGs for ``epoch`` (makes resume exact)."""
    s = epoch_seed(seed, epoch, dist.rank)
    loader.generator.manual_seed(s)
    if isinstance(loader.sampler, torch.utils.data.DistributedSampler):
        loader.sampler.set_epoch(epoch)
    seed_everything(s)
    seed_dataset(loader.dataset, s)


def to_device(batch: Sequence, device: torch.device, channels_last: bool = False):
    """Move a (input, target, neighbours, flows, bicubic) batch to the device as float32 (NHWC with channels_last)."""
    inp, target, neighbours, flows, bicubic = batch
    layout = torch.channels_last if channels_last else torch.contiguous_format

    def move(t: torch.Tensor) -> torch.Tensor:
        return t.to(device, dtype=torch.float32, non_blocking=True).contiguous(memory_format=layout)

    return move(inp), move(target), [move(n) for n in neighbours], [move(f) for f in flows], move(bicubic)


# ----------------------------------------------------------------------------------------------------------------
# The training step


def _sum_over_processes(values: Dict[str, torch.Tensor], n: int, dist: DistInfo, epoch: int,
                        step: int) -> Tuple[Dict[str, float], int]:
    """One step's ``value * batch size`` per key and the batch size ``n``, summed over all processes; raises
    ``TrainingDiverged`` (on every rank) when any process has a NaN/inf value."""
    keys = sorted(values)
    vec = torch.stack([values[k].float().reshape(()) for k in keys]).cpu().double()
    finite = torch.isfinite(vec).all().double().reshape(1)
    packed = torch.cat([vec * n, torch.tensor([float(n)], dtype=torch.float64), finite])
    if dist.distributed:
        finite_any = packed[-1:].clone()
        torch_dist.all_reduce(packed, op=torch_dist.ReduceOp.SUM)
        torch_dist.all_reduce(finite_any, op=torch_dist.ReduceOp.MIN)
        packed[-1] = finite_any[0]
    if packed[-1] < 1:
        shown = ", ".join(f"{k}={v:.4g}" for k, v in zip(keys, vec.tolist()))
        raise TrainingDiverged(
            f"a training loss became NaN/inf at epoch {epoch}, step {step} ({shown}); training stopped and "
            "nothing was saved for this epoch. Resume from the last checkpoint with a lower --lr, "
            "--precision fp32, or check the data"
        )
    return dict(zip(keys, packed[: len(keys)].tolist())), int(packed[len(keys)].item())


def _progress_postfix(sums: Dict[str, float], count: int, elapsed: float) -> Dict[str, str]:
    """The progress bar's running averages (G, and D, D(x), D(G(z)) in the GAN mode) and samples/s."""
    postfix = {"G": sums["g_loss"] / count}
    if "d_loss" in sums:
        postfix.update(D=sums["d_loss"] / count, Dx=sums["d_x"] / count, DGz=sums["d_g_z"] / count)
    postfix["samples/s"] = count / elapsed
    return {k: f"{v:.4g}" for k, v in postfix.items()}


class Trainer:
    """Holds G (and D), the losses, optimizers and the GradScaler; runs one step or one epoch.

    ``mode`` is ``"gan"`` (four-fold GeneratorLoss + SRGAN discriminator) or ``"l1"`` / ``"mse"`` (pixel loss only,
    no discriminator: RBPN-style pre-training).
    """

    def __init__(
        self,
        netG: nn.Module,
        netD: Optional[nn.Module],
        criterion: Optional[nn.Module],
        mode: str,
        lr: float,
        dist: DistInfo,
        precision: str = "fp32",
        residual: bool = False,
        channels_last: bool = False,
        flow_fn: Optional[Callable] = None,
        prepare_fn: Optional[Callable] = None,
    ) -> None:
        if mode not in ("gan", "l1", "mse"):
            raise ValueError(f"unknown loss mode {mode!r}")
        if mode == "gan" and (netD is None or criterion is None):
            raise ValueError("the gan mode needs a discriminator and a GeneratorLoss")
        self.mode = mode
        self.dist = dist
        self.device = dist.device
        self.precision = resolve_precision(precision, self.device)
        self.residual = residual
        self.channels_last = channels_last
        self.flow_fn = flow_fn  # (inp, neighbours) -> flows: computed in the step (the batch's flows are ignored)
        # (inp, neighbours, flows, base) -> (neighbours, base), after flow_fn (--denoise: warping, the mean base)
        self.prepare_fn = prepare_fn
        self.netG = netG
        self.netD = netD
        self.criterion = criterion if mode == "gan" else (nn.L1Loss() if mode == "l1" else nn.MSELoss())
        self.optG = torch.optim.Adam(unwrap(netG).parameters(), lr=lr, betas=(0.9, 0.999), eps=1e-8)
        self.optD = None
        if netD is not None:
            self.optD = torch.optim.Adam(unwrap(netD).parameters(), lr=lr, betas=(0.9, 0.999), eps=1e-8)
        use_scaler = self.precision == "fp16" and self.device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=use_scaler)

    # -- one step ------------------------------------------------------------------------------------------------

    def _net_inputs(self, inp: torch.Tensor, neighbours: List[torch.Tensor], flows: List[torch.Tensor],
                    base: torch.Tensor) -> Tuple[List[torch.Tensor], List[torch.Tensor], torch.Tensor]:
        """``(neighbours, flows, base)`` G sees: with ``flow_fn`` the flows are computed here (the batch's are
        ignored), then ``prepare_fn`` (--denoise) warps the neighbours and rebuilds the residual base."""
        if self.flow_fn is None:
            return neighbours, flows, base
        flows = self.flow_fn(inp, neighbours)
        if self.prepare_fn is not None:
            neighbours, base = self.prepare_fn(inp, neighbours, flows, base)
        return neighbours, flows, base

    def _generate(self, inp, neighbours, flows, bicubic) -> torch.Tensor:
        """G's output, plus the base (bicubic upscale, or the --denoise base) with ``residual``."""
        neighbours, flows, bicubic = self._net_inputs(inp, neighbours, flows, bicubic)
        fake = self.netG(inp, neighbours, flows)
        if self.residual:
            fake = fake + bicubic
        return fake

    def pixel_step(self, batch) -> Dict[str, torch.Tensor]:
        inp, target, neighbours, flows, bicubic = to_device(batch, self.device, self.channels_last)
        self.optG.zero_grad(set_to_none=True)
        with autocast(self.device, self.precision):
            fake = self._generate(inp, neighbours, flows, bicubic)
        loss = self.criterion(fake.float(), target)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optG)
        self.scaler.update()
        return {"g_loss": loss.detach(), "pixel_loss": loss.detach()}

    def _discriminator_step(self, target: torch.Tensor, fake: torch.Tensor) -> Dict[str, torch.Tensor]:
        """D step on the detached fake with ``discriminator_loss`` (1 - mean D(x) + mean D(G(z)))."""
        self.optD.zero_grad(set_to_none=True)
        with autocast(self.device, self.precision):
            real_out = self.netD(target).float()
            fake_out = self.netD(fake.detach()).float()
            d_loss = discriminator_loss(real_out, fake_out)
        self.scaler.scale(d_loss).backward()
        self.scaler.step(self.optD)
        return {"d_loss": d_loss.detach(), "d_x": real_out.mean().detach(), "d_g_z": fake_out.mean().detach()}

    def _generator_step(self, target: torch.Tensor, fake: torch.Tensor) -> Dict[str, torch.Tensor]:
        """G step with a fresh D(fake) through the updated D, fed to the GeneratorLoss; D frozen meanwhile (its DDP
        wrapper is bypassed: no D gradients). Returns the total and the unweighted terms (``g_<term>``)."""
        netD_bare = unwrap(self.netD)
        self.optG.zero_grad(set_to_none=True)
        netD_bare.requires_grad_(False)
        try:
            with autocast(self.device, self.precision):
                g_loss, terms = self.criterion(netD_bare(fake).float(), fake, target)
            g_loss = g_loss.float()
        finally:
            netD_bare.requires_grad_(True)
        self.scaler.scale(g_loss).backward()
        self.scaler.step(self.optG)
        out = {"g_loss": g_loss.detach()}
        for name, value in terms.items():
            out[f"g_{name}"] = value.detach() if torch.is_tensor(value) else torch.tensor(float(value))
        return out

    def gan_step(self, batch) -> Dict[str, torch.Tensor]:
        """One G forward, then the D step on it, then the G step (see the module docstring)."""
        inp, target, neighbours, flows, bicubic = to_device(batch, self.device, self.channels_last)
        with autocast(self.device, self.precision):
            fake = self._generate(inp, neighbours, flows, bicubic)
        out = self._discriminator_step(target, fake)
        out.update(self._generator_step(target, fake))
        self.scaler.update()
        return out

    def step(self, batch) -> Dict[str, torch.Tensor]:
        return self.gan_step(batch) if self.mode == "gan" else self.pixel_step(batch)

    # -- one epoch -----------------------------------------------------------------------------------------------

    def train_epoch(self, loader, epoch: int, show_progress: bool = True, max_steps: int = 0) -> Dict[str, float]:
        """Train on every batch of ``loader``; return per-sample averages over all processes, plus samples/s.

        Raises ``TrainingDiverged`` (on every rank) as soon as a loss is NaN or infinite.
        """
        from tqdm import tqdm

        self.netG.train()
        if self.netD is not None:
            self.netD.train()
        sums: Dict[str, float] = {}
        count = 0
        start = time.perf_counter()
        bar = tqdm(loader, desc=f"epoch {epoch}", disable=not (show_progress and self.dist.is_main), leave=False,
                   dynamic_ncols=True)
        for step, batch in enumerate(bar, start=1):
            n = int(batch[0].shape[0])
            batch_sums, batch_count = _sum_over_processes(self.step(batch), n, self.dist, epoch, step)
            for k, v in batch_sums.items():
                sums[k] = sums.get(k, 0.0) + v
            count += batch_count
            bar.set_postfix(_progress_postfix(sums, count, max(time.perf_counter() - start, 1e-9)))
            if max_steps and step >= max_steps:
                break
        bar.close()
        if count == 0:
            raise UserError("the training set gave no batches; check --data_dir / --file_list")
        averages = {k: v / count for k, v in sums.items()}
        averages["samples"] = count
        averages["samples_per_s"] = count / max(time.perf_counter() - start, 1e-9)
        return averages

    # -- learning rate -------------------------------------------------------------------------------------------

    def decay_lr(self, gamma: float, include_d: bool = False) -> float:
        """Multiply G's learning rate (and D's when asked) by ``gamma``; return G's new rate."""
        optimizers = [self.optG] + ([self.optD] if include_d and self.optD is not None else [])
        for opt in optimizers:
            for group in opt.param_groups:
                group["lr"] *= gamma
        return self.optG.param_groups[0]["lr"]

    # -- state ---------------------------------------------------------------------------------------------------

    def save_state(self, path: str, config: Dict, epoch: int, extra: Dict) -> None:
        """Write the full training state (``checkpoint.save_training_state`` format) atomically."""
        import checkpoint

        extra = dict(extra, scaler=self.scaler.state_dict(), trainer=STATE_FORMAT, trainer_version=STATE_VERSION,
                     mode=self.mode)
        checkpoint.save_training_state(path, self.netG, self.netD, config, epoch, self.optG, self.optD, extra)

    def load_state(self, state: Dict) -> None:
        """Restore networks, optimizers and scaler from ``read_training_state``'s dict."""
        import checkpoint

        if state.get("mode") != self.mode and self.netD is not None and state.get("discriminator") is None:
            raise UserError("the training state has no discriminator (it was a --loss l1/mse run); start a GAN run "
                            "from its generator with --pretrained --pretrained_sr <netG file> instead of --resume")
        checkpoint.load_into(self.netG, state["state_dict"], what="generator")
        self.optG.load_state_dict(state["optimizer_g"])
        if self.netD is not None:
            checkpoint.load_into(self.netD, state["discriminator"], what="discriminator")
            self.optD.load_state_dict(state["optimizer_d"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])


# ----------------------------------------------------------------------------------------------------------------
# Checkpoint files


def generator_path(folder: str, scale: int, epoch: int) -> str:
    return os.path.join(folder, f"netG_epoch_{scale}_{epoch}.pth")


def discriminator_path(folder: str, scale: int, epoch: int) -> str:
    return os.path.join(folder, f"netD_epoch_{scale}_{epoch}.pth")


def state_path(folder: str, scale: int, epoch: int) -> str:
    return os.path.join(folder, f"training_state_{scale}_{epoch}.pth")


def best_path(folder: str, scale: int) -> str:
    return os.path.join(folder, f"netG_best_{scale}.pth")


def list_states(folder: str, scale: Optional[int] = None) -> List[Tuple[int, str]]:
    """(epoch, path) of every training state in ``folder`` (for ``scale``, or any scale), oldest first."""
    pattern = re.compile(r"training_state_(\d+)_(\d+)\.pth$")
    found = []
    for path in glob.glob(os.path.join(folder, "training_state_*_*.pth")):
        m = pattern.search(os.path.basename(path))
        if m and (scale is None or int(m.group(1)) == scale):
            found.append((int(m.group(2)), path))
    return sorted(found)


def find_latest_state(folder: str, scale: Optional[int] = None) -> str:
    states = list_states(folder, scale)
    if not states:
        raise UserError(f"--resume: no training_state_*.pth in {folder!r}; pass the file with --resume PATH or "
                        "point --save_folder at the run's folder")
    return states[-1][1]


def prune_states(folder: str, scale: int, keep: int) -> None:
    """Delete all but the newest ``keep`` training states (``keep`` <= 0 keeps them all)."""
    if keep <= 0:
        return
    for _, path in list_states(folder, scale)[:-keep]:
        os.remove(path)


def best_after_resume(folder: str, scale: int, best: Dict, epoch: int) -> Dict:
    """The best-validation record a resumed run continues from: the training state's ``best``, or the record in
    netG_best when that one is better and from an epoch up to ``epoch`` (a state is saved before its epoch is
    validated, so the best checkpoint of the resumed epoch is newer than the state's record)."""
    import checkpoint

    path = best_path(folder, scale)
    if not os.path.isfile(path):
        return best
    try:
        meta = checkpoint.read_checkpoint(path)[1] or {}
    except checkpoint.CheckpointError:
        return best
    best_epoch, psnr = meta.get("epoch"), meta.get("val_psnr")
    if not isinstance(best_epoch, int) or not isinstance(psnr, float) or best_epoch > epoch:
        return best
    if psnr > best.get("val_psnr", float("-inf")):
        return {"epoch": best_epoch, "val_psnr": psnr, "val_ssim": meta.get("val_ssim")}
    return best


def read_training_state(path: str) -> Dict:
    """A training state written by ``Trainer.save_state`` (clear error for anything else)."""
    import checkpoint

    try:
        state = checkpoint.read_training_state(path)
    except checkpoint.CheckpointError as exc:
        raise UserError(f"--resume: {exc}. To start from a generator file use --pretrained --pretrained_sr PATH") \
            from None
    if state.get("trainer") != STATE_FORMAT or "optimizer_g" not in state:
        raise UserError(f"--resume: {path} was not written by iSeeBetterTrain.py; to start from its generator use "
                        "--pretrained --pretrained_sr PATH")
    return state


# ----------------------------------------------------------------------------------------------------------------
# Validation


def ssim_window() -> int:
    """Side of the SSIM window (px): validation frames must be at least this large."""
    import metrics

    return metrics.gaussian_window().shape[0]


def batch_flow_fn(device: torch.device) -> Callable:
    """Flows for a whole augmented batch on ``device`` with ``pyflow.torch_flow`` (RBPN parameters): every
    (input, neighbour k) pair of the batch in one solve, outside autocast and without gradients."""
    import pyflow
    from pyflow import torch_flow

    def flows_of(inp: torch.Tensor, neighbours: Sequence[torch.Tensor]) -> List[torch.Tensor]:
        if not neighbours:  # the single-frame model
            return []
        with torch.no_grad(), torch.autocast(device.type, enabled=False):
            k = len(neighbours)
            first = inp.float().clamp(0, 1).contiguous().repeat(k, 1, 1, 1)
            second = torch.cat([nb.float().clamp(0, 1).contiguous() for nb in neighbours])
            flow = torch_flow.flow_batch(first.to(device), second.to(device), **pyflow.RBPN_PARAMS)
        return list(flow.to(inp.device).chunk(k))

    return flows_of


def denoise_step_inputs(warping: bool, base: Optional[str]) -> Callable:
    """For ``--denoise`` with the torch flow: after the step computed the flows, warp the neighbours onto the input
    (``warping``) and rebuild the residual base from the frames G sees (``base`` "mean"), as the DataLoader does
    with the C++ flows. Returns ``(inp, neighbours, flows, base) -> (neighbours, base)``."""
    from denoise_data import mean_base, warp_backward_batch

    def prepare(inp: torch.Tensor, neighbours: Sequence[torch.Tensor], flows: Sequence[torch.Tensor],
                bicubic: torch.Tensor) -> Tuple[List[torch.Tensor], torch.Tensor]:
        nbs = [warp_backward_batch(nb, fl) for nb, fl in zip(neighbours, flows)] if warping else list(neighbours)
        if base == "mean":
            bicubic = mean_base(inp, nbs)
        return nbs, bicubic

    return prepare


def tensor_to_uint8(img: torch.Tensor) -> np.ndarray:
    """(C, H, W) float in [0, 1] -> HxWxC uint8, clamped and rounded (exact for dataset frames, which are k/255)."""
    return (img.detach().float().clamp(0, 1) * 255).round().byte().permute(1, 2, 0).cpu().numpy()


def tensor_to_float255(img: torch.Tensor) -> np.ndarray:
    """(C, H, W) float in [0, 1] -> HxWxC float64 on the 0..255 scale, clamped, not rounded (denoising targets are
    normalised measurements, not 8-bit frames)."""
    return img.detach().float().clamp(0, 1).permute(1, 2, 0).cpu().double().numpy() * 255.0


def image_scores(pred: np.ndarray, gt: np.ndarray) -> Tuple[float, float]:
    """(PSNR, SSIM) of two HxWxC images on the 0..255 scale: on the Y channel for RGB (the VSR protocol), on the
    single plane for grey (peak 255 here is peak 1.0 on the [0, 1] scale)."""
    import metrics

    if pred.shape[2] == 1:
        return metrics.psnr(pred[..., 0], gt[..., 0]), metrics.ssim(pred[..., 0], gt[..., 0])
    return metrics.psnr_y(pred, gt), metrics.ssim_y(pred, gt)


@torch.no_grad()
def validate(
    model: nn.Module,
    samples: Iterable,
    device: torch.device,
    scale: int,
    precision: str = "fp32",
    residual: Optional[str] = None,
    max_frames: int = 0,
    channels_last: bool = False,
    denoise: bool = False,
) -> Dict[str, float]:
    """Mean PSNR / SSIM of the model on eval samples (Y channel for RGB, the plane for grey; ``image_scores``).

    Super-resolution (default): measured like ``iSeeBetterTest.py`` (8-bit output, no border crop); ``residual`` is
    the bicubic method ("pil" / "matlab") whose upscale of the LR input is added to G's output, as in training
    (``--residual`` with ``--degradation``), or None.
    ``denoise``: the output has the input's size and is compared with the sample's target on the float [0, 1] scale
    (times 255, not rounded); a truthy ``residual`` then adds the sample's base (its ``bicubic`` slot: the input
    frame, or the frames' mean with ``--residual_base mean``).
    """
    import metrics
    from inference import sr_image

    window = ssim_window()
    was_training = model.training
    model.eval()
    precision = resolve_precision(precision, device)
    psnrs: List[float] = []
    ssims: List[float] = []
    try:
        for batch in samples:
            inp, target, neighbours, flows, bicubic = to_device(batch, device, channels_last)
            with autocast(device, precision):
                sr = model(inp, neighbours, flows)
            sr = sr.float()
            for i in range(sr.shape[0]):
                if denoise:
                    pred = tensor_to_float255(sr[i] + bicubic[i] if residual else sr[i])
                    gt = tensor_to_float255(target[i])
                else:
                    pred = metrics.to_uint8(sr_image(sr[i], tensor_to_uint8(inp[i]), scale, residual))
                    gt = tensor_to_uint8(target[i])
                if min(gt.shape[:2]) < window:
                    raise UserError(f"--eval_dir: a validation frame of {gt.shape[1]}x{gt.shape[0]} px is smaller "
                                    f"than the {window}x{window} px SSIM window; use larger evaluation frames")
                psnr, ssim = image_scores(pred, gt)
                psnrs.append(psnr)
                ssims.append(ssim)
                if max_frames and len(psnrs) >= max_frames:
                    break
            if max_frames and len(psnrs) >= max_frames:
                break
    finally:
        model.train(was_training)
    if not psnrs:
        return {}
    finite = [p for p in psnrs if math.isfinite(p)]
    return {"val_psnr": float(np.mean(finite)) if finite else float("inf"), "val_ssim": float(np.mean(ssims)),
            "val_frames": len(psnrs)}
