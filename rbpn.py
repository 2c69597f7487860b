"""RBPN generator (Haris et al. 2019) as used by iSeeBetter, parameter-for-parameter compatible with the original.

``Net(...)(x, neighbor, flow)``: ``x`` is the LR target frame (B, C, h, w), ``neighbor`` a list of nFrames-1 LR
neighbour frames and ``flow`` the matching list of (B, 2, h, w) flows (LR pixel units, centre -> neighbour).
Returns the SR frame (B, C, scale*h, scale*w), not clamped and without a bicubic skip (as in the original).

Denoising (the AFM-denoise fork): ``Net(scale_factor=1)`` makes every projection a 3x3 stride-1 layer, and
``Net2(scale_factor=2|4|8)`` works at ``scale`` times the size inside but reconstructs through a strided ``output``
conv; both return a frame of the input's size. ``num_channels=1`` takes grey frames (``feat1`` then sees 1 + 1 + 2
flow channels). Parameter names never change, so the fork's checkpoints load strictly.
``from_config(config)`` builds the right class from a config dict with an ``"arch"`` entry ("Net" or "Net2").

The losses are not here (the original's rbpn.py also held them): ``from SRGAN.loss import GeneratorLoss, TVLoss``.
Building or loading a generator for inference imports no loss code.
"""

from typing import List, Mapping, Sequence, Tuple

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from base_networks import ConvBlock, DeconvBlock, ResnetBlock, init_weights, projection_params
from dbpns import Net as DBPNS

__all__ = ["Net", "Net2", "from_config", "ARCHS", "SUPPORTED_SCALES", "NET2_SCALES", "DEFAULT_CONFIG"]

# Scale 1 is the denoising fork's (every projection keeps the size); 2, 4 and 8 are RBPN's.
SUPPORTED_SCALES = (1, 2, 4, 8)
# Net2 reduces by its scale in the output conv, so scale 1 would make it exactly a Net.
NET2_SCALES = (2, 4, 8)

# The configuration every original script and released checkpoint uses (plus scale_factor, which varies).
DEFAULT_CONFIG = dict(num_channels=3, base_filter=256, feat=64, num_stages=3, n_resblock=5, nFrames=7)


class Net(nn.Module):
    """Recurrent Back-Projection Network.

    For each neighbour j (in list order): ``h0 = DBPN(L)`` (SISR branch), ``h1 = res_feat1(feat1(x, nb_j, flow_j))``
    (MISR branch), ``H_j = h0 + res_feat2(h0 - h1)``, ``L = res_feat3(H_j)``; the output conv fuses all ``H_j``.
    ``nFrames=1`` is the single-frame form (the ``--denoise`` baseline): it takes no neighbours and runs one projection
    with the frame itself as the neighbour and a zero flow; its parameters have the shapes of ``nFrames=2``.

    ``config`` holds the constructor arguments plus ``arch`` ("Net") and ``task`` ("sr", or "denoise" for scale 1);
    rebuild with ``from_config(config)``.
    """

    ARCH = "Net"

    def __init__(self, num_channels: int = 3, base_filter: int = 256, feat: int = 64, num_stages: int = 3,
                 n_resblock: int = 5, nFrames: int = 7, scale_factor: int = 4):
        super().__init__()
        self._check_scale(scale_factor)
        if nFrames < 1:
            raise ValueError(f"nFrames must be at least 1 (the target frame, plus its neighbours), got {nFrames}")
        if num_channels < 1:
            raise ValueError(f"num_channels must be at least 1 (1 grey, 3 colour), got {num_channels}")
        kernel, stride, padding = projection_params(scale_factor)
        self.nFrames = nFrames
        self.scale_factor = scale_factor
        self.config = dict(num_channels=num_channels, base_filter=base_filter, feat=feat, num_stages=num_stages,
                           n_resblock=n_resblock, nFrames=nFrames, scale_factor=scale_factor, arch=self.ARCH,
                           task="denoise" if self.output_scale == 1 else "sr")
        self.grad_checkpointing = False

        # Feature extraction: target frame alone, and target + neighbour + flow (C + C + 2 channels).
        self.feat0 = ConvBlock(num_channels, base_filter, 3, 1, 1)
        self.feat1 = ConvBlock(2 * num_channels + 2, base_filter, 3, 1, 1)
        # SISR branch.
        self.DBPN = DBPNS(base_filter, feat, num_stages, scale_factor)
        # MISR branch (LR -> HR), residual between the branches (HR), and back to the LR state (HR -> LR).
        self.res_feat1 = nn.Sequential(*[ResnetBlock(base_filter) for _ in range(n_resblock)],
                                       DeconvBlock(base_filter, feat, kernel, stride, padding))
        self.res_feat2 = nn.Sequential(*[ResnetBlock(feat) for _ in range(n_resblock)],
                                       ConvBlock(feat, feat, 3, 1, 1))
        self.res_feat3 = nn.Sequential(*[ResnetBlock(feat) for _ in range(n_resblock)],
                                       ConvBlock(feat, base_filter, kernel, stride, padding))
        # Reconstruction from all the HR projections (nFrames 1 makes one, from the frame itself).
        self.output = self._output_block(max(nFrames - 1, 1) * feat, num_channels)
        init_weights(self)

    @staticmethod
    def _check_scale(scale_factor: int) -> None:
        if scale_factor not in SUPPORTED_SCALES:
            raise ValueError(f"unsupported scale factor {scale_factor!r}; RBPN supports {SUPPORTED_SCALES}")

    def _output_block(self, in_channels: int, out_channels: int) -> ConvBlock:
        """The reconstruction conv: 3x3, stride 1 (the output has the size of the HR features)."""
        return ConvBlock(in_channels, out_channels, 3, 1, 1, activation=None)

    @property
    def output_scale(self) -> int:
        """Output size / input size: the scale factor for Net, 1 for Net2."""
        return self.scale_factor

    def set_grad_checkpointing(self, enabled: bool = True) -> "Net":
        """Recompute each recurrent projection step in backward instead of storing its activations.

        Saves most of the training memory for about one extra forward pass; outputs and gradients are unchanged,
        and so is the state_dict. Only active while autograd is recording.
        """
        self.grad_checkpointing = bool(enabled)
        return self

    def _step(self, state: torch.Tensor, x: torch.Tensor, nb: torch.Tensor, fl: torch.Tensor,
              need_next: bool) -> Tuple[torch.Tensor, torch.Tensor]:
        """One recurrent projection: returns the HR projection H_j and the next LR state (or H_j twice)."""
        h0 = self.DBPN(state)
        # Neighbours/flows may come as float64 (numpy flow); compute in x's dtype.
        h1 = self.res_feat1(self.feat1(torch.cat((x, nb.to(x.dtype), fl.to(x.dtype)), dim=1)))
        h = h0 + self.res_feat2(h0 - h1)
        # The original also computes the next state after the last neighbour and then discards it; skip that.
        return h, (self.res_feat3(h) if need_next else h)

    def forward(self, x: torch.Tensor, neighbor: Sequence[torch.Tensor],
                flow: Sequence[torch.Tensor]) -> torch.Tensor:
        self._check_inputs(x, neighbor, flow)
        if self.nFrames == 1:  # the single-frame form: the frame is its own neighbour, with a zero flow
            neighbor, flow = [x], [x.new_zeros((x.shape[0], 2) + tuple(x.shape[2:]))]
        state = self.feat0(x)
        use_checkpoint = self.grad_checkpointing and torch.is_grad_enabled()
        projections: List[torch.Tensor] = []
        last = len(neighbor) - 1
        for j, (nb, fl) in enumerate(zip(neighbor, flow)):
            if use_checkpoint:
                h, state = checkpoint(self._step, state, x, nb, fl, j < last, use_reentrant=False)
            else:
                h, state = self._step(state, x, nb, fl, j < last)
            projections.append(h)
        return self.output(torch.cat(projections, dim=1))

    def _check_inputs(self, x: torch.Tensor, neighbor: Sequence[torch.Tensor], flow: Sequence[torch.Tensor]) -> None:
        channels = self.config["num_channels"]
        if not isinstance(x, torch.Tensor) or x.dim() != 4 or x.shape[1] != channels:
            got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"x must be a (B, {channels}, h, w) tensor, got {got}")
        if not x.is_floating_point():
            raise ValueError(f"x must be a floating-point tensor in [0, 1], got dtype {x.dtype}")
        expected = self.nFrames - 1
        for name, items in (("neighbor", neighbor), ("flow", flow)):
            if not isinstance(items, (list, tuple)):
                raise ValueError(f"{name} must be a list of {expected} tensors, got {type(items).__name__}")
            if len(items) != expected:
                raise ValueError(f"{name} has {len(items)} tensors but this model (nFrames={self.nFrames}) "
                                 f"needs nFrames-1 = {expected}")
        b, _, h, w = x.shape
        for j, nb in enumerate(neighbor):
            if not isinstance(nb, torch.Tensor) or tuple(nb.shape) != (b, channels, h, w):
                got = tuple(nb.shape) if isinstance(nb, torch.Tensor) else type(nb).__name__
                raise ValueError(f"neighbor[{j}] must have shape {(b, channels, h, w)} like x, got {got}")
        for j, fl in enumerate(flow):
            if not isinstance(fl, torch.Tensor) or tuple(fl.shape) != (b, 2, h, w):
                got = tuple(fl.shape) if isinstance(fl, torch.Tensor) else type(fl).__name__
                raise ValueError(f"flow[{j}] must have shape {(b, 2, h, w)} (u, v at LR size), got {got}")
        for name, items in (("neighbor", neighbor), ("flow", flow)):
            for j, t in enumerate(items):
                if not t.is_floating_point():
                    raise ValueError(f"{name}[{j}] must be a floating-point tensor, got dtype {t.dtype}")


class Net2(Net):
    """RBPN whose reconstruction conv ``output`` is strided with the scale's kernel/stride/padding (the fork's
    multi-frame denoiser): it works at ``scale_factor`` times the size inside and returns a frame of the input's size.

    Same parameter names as ``Net``; only ``output.conv.weight`` has the projection kernel instead of 3x3.
    """

    ARCH = "Net2"

    @staticmethod
    def _check_scale(scale_factor: int) -> None:
        if scale_factor not in NET2_SCALES:
            raise ValueError(f"unsupported scale factor {scale_factor!r} for Net2; it supports {NET2_SCALES} "
                             f"(for scale 1 use Net, which is then the same network)")

    def _output_block(self, in_channels: int, out_channels: int) -> ConvBlock:
        """The reconstruction conv, reducing the HR features back to the input size."""
        kernel, stride, padding = projection_params(self.scale_factor)
        return ConvBlock(in_channels, out_channels, kernel, stride, padding, activation=None)

    @property
    def output_scale(self) -> int:
        return 1


ARCHS = {"Net": Net, "Net2": Net2}
# Entries of a generator config that describe the network but are no constructor argument.
_DERIVED_KEYS = ("arch", "task", "residual")


def from_config(config: Mapping) -> Net:
    """Build the generator a config describes: ``Net`` or ``Net2`` after ``config["arch"]`` (default "Net").

    ``task`` is checked against the network when present; ``residual`` (a checkpoint's output mode) is ignored.
    Other keys go to the constructor. ValueError for an unknown arch, a task that does not fit or a bad config.
    """
    arch = config.get("arch", "Net")
    if arch not in ARCHS:
        raise ValueError(f"unknown generator arch {arch!r}; expected one of {', '.join(ARCHS)}")
    net = ARCHS[arch](**{k: v for k, v in config.items() if k not in _DERIVED_KEYS})
    task = config.get("task")
    if task is not None and task != net.config["task"]:
        raise ValueError(f"config says task {task!r} but {arch} x{net.scale_factor} is a {net.config['task']!r} "
                         f"network")
    return net
