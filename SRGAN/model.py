"""SRGAN discriminator as used by iSeeBetter (leftthomas/SRGAN layout, so its checkpoints load strictly).

Eight 3x3 convs (64-64-128-128-256-256-512-512 channels, stride 2 on every second one), BatchNorm after all but
the first, LeakyReLU(0.2); then global average pooling and two 1x1 convs (512 -> 1024 -> 1). ``forward`` returns
one probability per image, shape (B,), for any input size.

``Discriminator(num_channels=1)`` takes grey images (``--denoise`` on height data); only the first conv's input
channels change, the parameter names stay.
"""

import torch
from torch import nn

# (in channels, out channels, stride) of the eight feature convs; the first conv's in channels are the image's.
_FEATURE_CONVS = ((3, 64, 1), (64, 64, 2), (64, 128, 1), (128, 128, 2),
                  (128, 256, 1), (256, 256, 2), (256, 512, 1), (512, 512, 2))


class Discriminator(nn.Module):
    def __init__(self, num_channels: int = 3):
        super().__init__()
        if num_channels < 1:
            raise ValueError(f"num_channels must be at least 1 (1 grey, 3 colour), got {num_channels}")
        self.num_channels = num_channels
        layers = []
        for i, (cin, cout, stride) in enumerate(_FEATURE_CONVS):
            cin = num_channels if i == 0 else cin
            layers.append(nn.Conv2d(cin, cout, kernel_size=3, stride=stride, padding=1))
            if i > 0:
                layers.append(nn.BatchNorm2d(cout))
            layers.append(nn.LeakyReLU(0.2))
        layers += [
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(512, 1024, kernel_size=1),
            nn.LeakyReLU(0.2),
            nn.Conv2d(1024, 1, kernel_size=1),
        ]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.num_channels:
            raise ValueError(f"Discriminator expects a (B, {self.num_channels}, H, W) image batch, got shape "
                             f"{tuple(x.shape)}")
        return torch.sigmoid(self.net(x).view(x.shape[0]))
