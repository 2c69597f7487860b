"""Building blocks of RBPN: conv/deconv units, a residual block and the DBPN up/down projection units.

Only the blocks RBPN uses are here. Parameter names (``.conv``, ``.deconv``, ``.act``, ``conv1``/``conv2``,
``up_conv1..3``, ``down_conv1..3``) match the original so that its checkpoints load with ``strict=True``.
All convolutions have a bias, there is no normalisation, and every activation is a one-parameter PReLU (init 0.25).
"""

import math
from typing import Callable, Optional, Sequence

import torch
from torch import nn


def _prelu_or_none(activation: Optional[str]) -> Optional[nn.Module]:
    if activation is None:
        return None
    if activation != "prelu":
        raise ValueError(f"unsupported activation {activation!r}; RBPN only uses 'prelu' or None")
    return nn.PReLU()


class ConvBlock(nn.Module):
    """Conv2d followed by an optional PReLU."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1, padding: int = 1,
                 activation: Optional[str] = "prelu"):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, bias=True)
        self.act = _prelu_or_none(activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        return self.act(x) if self.act is not None else x


class DeconvBlock(nn.Module):
    """ConvTranspose2d followed by an optional PReLU."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 4, stride: int = 2, padding: int = 1,
                 activation: Optional[str] = "prelu"):
        super().__init__()
        self.deconv = nn.ConvTranspose2d(in_channels, out_channels, kernel_size, stride, padding, bias=True)
        self.act = _prelu_or_none(activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.deconv(x)
        return self.act(x) if self.act is not None else x


class ResnetBlock(nn.Module):
    """Two 3x3 convs with a skip: ``act(conv2(act(conv1(x))) + x)``; one PReLU shared by both activations."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, 1, 1, bias=True)
        self.conv2 = nn.Conv2d(channels, channels, 3, 1, 1, bias=True)
        self.act = nn.PReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act(self.conv1(x))
        y = self.conv2(y)
        return self.act(y + x)


class UpBlock(nn.Module):
    """DBPN up-projection (LR -> HR): project up, back down, and correct with the up-projected LR error."""

    def __init__(self, channels: int, kernel_size: int, stride: int, padding: int):
        super().__init__()
        self.up_conv1 = DeconvBlock(channels, channels, kernel_size, stride, padding)
        self.up_conv2 = ConvBlock(channels, channels, kernel_size, stride, padding)
        self.up_conv3 = DeconvBlock(channels, channels, kernel_size, stride, padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h0 = self.up_conv1(x)
        l0 = self.up_conv2(h0)
        h1 = self.up_conv3(l0 - x)
        return h1 + h0


class DownBlock(nn.Module):
    """DBPN down-projection (HR -> LR): project down, back up, and correct with the down-projected HR error."""

    def __init__(self, channels: int, kernel_size: int, stride: int, padding: int):
        super().__init__()
        self.down_conv1 = ConvBlock(channels, channels, kernel_size, stride, padding)
        self.down_conv2 = DeconvBlock(channels, channels, kernel_size, stride, padding)
        self.down_conv3 = ConvBlock(channels, channels, kernel_size, stride, padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        l0 = self.down_conv1(x)
        h0 = self.down_conv2(l0)
        l1 = self.down_conv3(h0 - x)
        return l1 + l0


def init_weights(module: nn.Module) -> None:
    """The original init: kaiming_normal_ (torch defaults) on every Conv2d / ConvTranspose2d weight, zero bias.

    PReLU weights keep their 0.25 default.
    """
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.kaiming_normal_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


# Kernel, stride and padding of every projection conv/deconv, per scale. The original supports 2, 4 and 8; scale 1
# (3/1/1: every projection keeps the size) is the denoising fork's, whose output has the input's size.
PROJECTION_PARAMS = {1: (3, 1, 1), 2: (6, 2, 2), 4: (8, 4, 2), 8: (12, 8, 2)}


def projection_params(scale_factor: int) -> tuple:
    """(kernel, stride, padding) of the up/down projections for ``scale_factor``; ValueError for other scales."""
    if scale_factor not in PROJECTION_PARAMS:
        supported = ", ".join(str(s) for s in PROJECTION_PARAMS)
        raise ValueError(f"unsupported scale factor {scale_factor!r}; RBPN supports {supported}")
    return PROJECTION_PARAMS[scale_factor]


def scale_to_unit_variance(model: nn.Module, run: Callable[[], object], skip: Sequence[nn.Module] = (),
                           tolerance: float = 0.1, rounds: int = 3) -> int:
    """Data-dependent init (LSUV, Mishkin & Matas 2016): scale each conv/deconv's weight and bias so that its output
    has unit standard deviation on the batch ``run()`` feeds through ``model``, in module order, until all are
    within ``tolerance`` (at most ``rounds`` passes). Modules in ``skip`` are left alone. Returns the number of
    rescalings.

    RBPN's kaiming init lets the recurrent features grow with every neighbour (about 200 at nFrames 3 and 5e5 at
    nFrames 5 for a small scale-1 net), which Adam cannot train from; after this they stay around 1.
    """
    convs = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)) and m not in skip]
    changed = 0
    for _ in range(rounds):
        changed_this_round = 0
        for conv in convs:
            stats: dict = {}

            def record(_module, _inputs, output, stats=stats):
                stats.setdefault("std", float(output.detach().float().std()))  # first call: the input-side use

            handle = conv.register_forward_hook(record)
            try:
                with torch.no_grad():
                    run()
            finally:
                handle.remove()
            std = stats.get("std")
            if std is None or not math.isfinite(std) or std == 0 or abs(std - 1.0) <= tolerance:
                continue
            with torch.no_grad():
                conv.weight.div_(std)
                if conv.bias is not None:
                    conv.bias.div_(std)
            changed_this_round += 1
        changed += changed_this_round
        if not changed_this_round:
            break
    return changed
