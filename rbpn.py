"""RBPN generator (Haris et al. 2019) as used by iSeeBetter, parameter-for-parameter compatible with the original.

``Net(...)(x, neighbor, flow)``: ``x`` is the LR target frame (B, C, h, w), ``neighbor`` a list of nFrames-1 LR
neighbour frames and ``flow`` the matching list of (B, 2, h, w) flows (LR pixel units, centre -> neighbour).
Returns the SR frame (B, C, scale*h, scale*w), not clamped and without a bicubic skip (as in the original).

``GeneratorLoss`` and ``TVLoss`` are re-exported so that the original's ``from rbpn import Net as RBPN,
GeneratorLoss`` keeps working.
"""

from typing import List, Sequence, Tuple

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from base_networks import ConvBlock, DeconvBlock, ResnetBlock, init_weights, projection_params
from dbpns import Net as DBPNS
from SRGAN.loss import GeneratorLoss, TVLoss

__all__ = ["Net", "SUPPORTED_SCALES", "DEFAULT_CONFIG", "GeneratorLoss", "TVLoss"]

SUPPORTED_SCALES = (2, 4, 8)

# The configuration every original script and released checkpoint uses (plus scale_factor, which varies).
DEFAULT_CONFIG = dict(num_channels=3, base_filter=256, feat=64, num_stages=3, n_resblock=5, nFrames=7)


class Net(nn.Module):
    """Recurrent Back-Projection Network.

    For each neighbour j (in list order): ``h0 = DBPN(L)`` (SISR branch), ``h1 = res_feat1(feat1(x, nb_j, flow_j))``
    (MISR branch), ``H_j = h0 + res_feat2(h0 - h1)``, ``L = res_feat3(H_j)``; the output conv fuses all ``H_j``.
    """

    def __init__(self, num_channels: int = 3, base_filter: int = 256, feat: int = 64, num_stages: int = 3,
                 n_resblock: int = 5, nFrames: int = 7, scale_factor: int = 4):
        super().__init__()
        if scale_factor not in SUPPORTED_SCALES:
            raise ValueError(f"unsupported scale factor {scale_factor!r}; RBPN supports {SUPPORTED_SCALES}")
        if nFrames < 2:
            raise ValueError(f"nFrames must be at least 2 (the target frame plus one neighbour), got {nFrames}")
        kernel, stride, padding = projection_params(scale_factor)
        self.config = dict(num_channels=num_channels, base_filter=base_filter, feat=feat, num_stages=num_stages,
                           n_resblock=n_resblock, nFrames=nFrames, scale_factor=scale_factor)
        self.nFrames = nFrames
        self.scale_factor = scale_factor
        self.grad_checkpointing = False

        # Feature extraction: target frame alone, and target + neighbour + flow (3 + 3 + 2 channels).
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
        # Reconstruction from all the HR projections.
        self.output = ConvBlock((nFrames - 1) * feat, num_channels, 3, 1, 1, activation=None)
        init_weights(self)

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
