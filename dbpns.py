"""DBPN-S: the small single-image back-projection network that RBPN uses as its SISR branch (``rbpn.Net.DBPN``).

Signature as in the original: ``Net(base_filter, feat, num_stages, scale_factor)``. It maps ``base_filter`` LR
feature channels to ``feat`` HR feature channels through a fixed 3 up- and 2 down-projections;
``num_stages`` only sets the width of the output conv (it concatenates the 3 HR stages, so keep it at 3).
With ``scale_factor=1`` (the denoising fork) every projection is a 3x3 stride-1 conv/deconv, so "HR" is the input size.
"""

import torch
from torch import nn

from base_networks import ConvBlock, DownBlock, UpBlock, init_weights, projection_params


class Net(nn.Module):
    def __init__(self, base_filter: int, feat: int, num_stages: int, scale_factor: int):
        super().__init__()
        kernel, stride, padding = projection_params(scale_factor)
        if num_stages != 3:
            raise ValueError(f"num_stages must be 3 (DBPN-S has 3 fixed up-projection stages), got {num_stages}")
        self.feat1 = ConvBlock(base_filter, feat, 1, 1, 0)
        self.up1 = UpBlock(feat, kernel, stride, padding)
        self.down1 = DownBlock(feat, kernel, stride, padding)
        self.up2 = UpBlock(feat, kernel, stride, padding)
        self.down2 = DownBlock(feat, kernel, stride, padding)
        self.up3 = UpBlock(feat, kernel, stride, padding)
        self.output = ConvBlock(num_stages * feat, feat, 1, 1, 0, activation=None)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.feat1(x)
        h1 = self.up1(x)
        h2 = self.up2(self.down1(h1))
        h3 = self.up3(self.down2(h2))
        return self.output(torch.cat((h3, h2, h1), dim=1))
