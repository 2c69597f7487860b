"""iSeeBetter's four-fold generator loss (MSE + adversarial + VGG perceptual + TV) and the discriminator loss.

Faithful to the original: ``total = 1 * MSE(sr, hr) + 1e-3 * (-mean D(sr)) + 6e-3 * MSE(VGG(sr), VGG(hr))
+ 2e-8 * TV(sr)``, where VGG is torchvision's VGG16 ``features[:31]`` (the whole conv trunk, up to pool5) with
ImageNet weights, frozen, fed raw [0, 1] RGB without ImageNet mean/std normalisation.

Each term is a module that carries its weight (``ImageLoss``, ``AdversarialLoss``, ``PerceptualLoss``, ``TVLoss``):
``term.value(...)`` is the unweighted term, ``term.weight`` its weight; ``GeneratorLoss`` sums the weighted terms.
The default weights live in ``SRGAN.weights.DEFAULT_WEIGHTS``.

Grey images (``--denoise`` on height data) work too: the VGG sees the grey channel repeated three times, and the
MSE and TV terms average over whatever channels there are.
"""

import os
from typing import Dict, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

from checkpoint import CheckpointError, read_checkpoint
from errors import UserError
from SRGAN.weights import DEFAULT_WEIGHTS

VGG16_FILE = "vgg16-397923af.pth"  # torchvision's IMAGENET1K_V1 weights file


class VGGWeightsError(UserError):
    """The VGG16 weights for the perceptual loss cannot be had."""


class WeightedTerm(nn.Module):
    """A loss term that carries its weight: ``value(...)`` is the unweighted term, calling it gives
    ``weight * value(...)``."""

    def __init__(self, weight: float):
        super().__init__()
        self.weight = weight

    def value(self, *inputs: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.weight * self.value(*inputs)


class ImageLoss(WeightedTerm):
    """The pixel term: ``MSE(out_images, target_images)``."""

    def __init__(self, weight: float = DEFAULT_WEIGHTS["image"]):
        super().__init__(weight)

    def value(self, out_images: torch.Tensor, target_images: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(out_images, target_images)


class AdversarialLoss(WeightedTerm):
    """The adversarial term ``-mean D(G(z))`` of the discriminator's outputs on the generated images (no BCE)."""

    def __init__(self, weight: float = DEFAULT_WEIGHTS["adversarial"]):
        super().__init__(weight)

    def value(self, out_labels: torch.Tensor) -> torch.Tensor:
        return -out_labels.mean()


class TVLoss(WeightedTerm):
    """Total variation ``2 * (sum(dh^2) / (C*(H-1)*W) + sum(dw^2) / (C*H*(W-1))) / B`` (``value``); calling it
    multiplies by ``tv_loss_weight``, as leftthomas/SRGAN's TVLoss."""

    def __init__(self, tv_loss_weight: float = 1.0):
        super().__init__(tv_loss_weight)

    def value(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        if h < 2 or w < 2:
            raise ValueError(f"TVLoss needs an image of at least 2x2 pixels, got {h}x{w}")
        h_tv = (x[:, :, 1:, :] - x[:, :, :-1, :]).pow(2).sum()
        w_tv = (x[:, :, :, 1:] - x[:, :, :, :-1]).pow(2).sum()
        count_h = c * (h - 1) * w
        count_w = c * h * (w - 1)
        return 2 * (h_tv / count_h + w_tv / count_w) / b


def vgg_input(images: torch.Tensor) -> torch.Tensor:
    """Images as the VGG16 trunk takes them: RGB unchanged, grey (B, 1, H, W) repeated to 3 equal channels."""
    if images.shape[1] == 1:
        return images.repeat(1, 3, 1, 1)
    if images.shape[1] != 3:
        raise ValueError(f"the perceptual loss takes grey or RGB images, got {images.shape[1]} channels")
    return images


def discriminator_loss(real_out: torch.Tensor, fake_out: torch.Tensor) -> torch.Tensor:
    """The original D loss ``1 - mean D(real) + mean D(fake)`` (no BCE, no labels)."""
    return 1 - real_out.mean() + fake_out.mean()


# VGG16 ("D") conv trunk: channels of each 3x3 conv + ReLU, "M" = 2x2 max-pool. 31 modules, ending after pool5.
_VGG16_TRUNK = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")


def _vgg16_trunk() -> nn.Sequential:
    """torchvision's ``vgg16().features`` layout (same parameter names ``N.weight``), without the big classifier."""
    layers, channels = [], 3
    for item in _VGG16_TRUNK:
        if item == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            conv = nn.Conv2d(channels, item, kernel_size=3, padding=1)
            nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")  # torchvision's VGG init
            nn.init.zeros_(conv.bias)
            layers += [conv, nn.ReLU(inplace=True)]
            channels = item
    return nn.Sequential(*layers)


def _load_trunk(state_dict: dict, source: str) -> nn.Sequential:
    """The VGG16 trunk with weights from a whole vgg16 state_dict (``features.N.*``) or a trunk-only one (``N.*``)."""
    features = _vgg16_trunk()
    if any(k.startswith("features.") for k in state_dict):
        state_dict = {k[len("features."):]: v for k, v in state_dict.items() if k.startswith("features.")}
    try:
        features.load_state_dict(state_dict, strict=True)
    except RuntimeError as exc:
        lines = str(exc).splitlines()
        first = lines[1].strip() if len(lines) > 1 else str(exc)
        raise VGGWeightsError(f"{source} is not a torchvision vgg16 state_dict ({first})") from None
    return features


def _vgg16_features(vgg: Union[str, "os.PathLike[str]"]) -> nn.Module:
    """VGG16 ``features[:31]`` with the requested weights: "imagenet", "random" or a path to a state_dict."""
    if vgg == "random":
        return _vgg16_trunk()
    if vgg == "imagenet":
        from torchvision.models import VGG16_Weights

        weights = VGG16_Weights.IMAGENET1K_V1
        try:  # torchvision's weights API: downloads once into torch.hub.get_dir()/checkpoints/
            state_dict = weights.get_state_dict(progress=True, check_hash=True)
        except (OSError, RuntimeError) as exc:
            target = os.path.join(torch.hub.get_dir(), "checkpoints", VGG16_FILE)
            detail = str(exc).splitlines()[0] if str(exc) else ""
            raise VGGWeightsError(
                f"cannot get the ImageNet VGG16 weights for the perceptual loss ({type(exc).__name__}: {detail}); "
                f"download {weights.url} and put it at {target}, or pass --vgg_weights PATH to a vgg16 "
                f"state_dict, or set the perceptual loss weight to 0") from None
        return _load_trunk(state_dict, weights.url)
    path = os.fspath(vgg)
    try:
        state_dict, _ = read_checkpoint(path)
    except CheckpointError as exc:
        raise VGGWeightsError(f"--vgg_weights: {exc}") from None
    return _load_trunk(state_dict, f"--vgg_weights {path}")


class PerceptualLoss(nn.Sequential):
    """The perceptual term ``MSE(VGG(out_images), VGG(target_images))``, with its ``weight``.

    It is the frozen VGG16 trunk itself (layers ``0`` .. ``30``, torchvision's names): calling it gives the features,
    and it stays in eval mode whatever ``train()`` asks.
    """

    def __init__(self, features: nn.Sequential, weight: float = DEFAULT_WEIGHTS["perception"]):
        super().__init__(*features)
        self.weight = weight
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> "PerceptualLoss":
        return super().train(False)

    def value(self, out_images: torch.Tensor, target_images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            target_features = self(vgg_input(target_images))
        return F.mse_loss(self(vgg_input(out_images)), target_features)


class GeneratorLoss(nn.Module):
    """``total = image_weight*MSE + adversarial_weight*(-mean D(G(z))) + perception_weight*VGG-MSE + tv_weight*TV``.

    ``vgg``: "imagenet" (torchvision's IMAGENET1K_V1 weights, downloaded on first use), "random" (random init, for
    tests only) or the path of a vgg16 state_dict. With ``perception_weight == 0`` no VGG is built at all
    (``loss_network`` is None). Default weights: ``SRGAN.weights.DEFAULT_WEIGHTS``.

    ``forward(out_labels, out_images, target_images)`` returns ``(total, terms)``; ``terms`` maps "image",
    "adversarial", "perception" and "tv" to the **unweighted** term values as detached 0-d tensors (call
    ``.item()`` to log them).
    """

    def __init__(self, vgg: Union[str, "os.PathLike[str]"] = "imagenet",
                 image_weight: float = DEFAULT_WEIGHTS["image"],
                 adversarial_weight: float = DEFAULT_WEIGHTS["adversarial"],
                 perception_weight: float = DEFAULT_WEIGHTS["perception"], tv_weight: float = DEFAULT_WEIGHTS["tv"]):
        super().__init__()
        self.image_loss = ImageLoss(image_weight)
        self.adversarial_loss = AdversarialLoss(adversarial_weight)
        # The perceptual term keeps the name loss_network (state-dict keys loss_network.N.*, as before).
        self.loss_network = None
        if perception_weight != 0:
            self.loss_network = PerceptualLoss(_vgg16_features(vgg), perception_weight)
        self.tv_loss = TVLoss(tv_weight)

    def forward(self, out_labels: torch.Tensor, out_images: torch.Tensor,
                target_images: torch.Tensor) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        if out_images.shape != target_images.shape:
            raise ValueError(f"SR output {tuple(out_images.shape)} and target {tuple(target_images.shape)} differ "
                             f"in shape")
        image = self.image_loss.value(out_images, target_images)
        adversarial = self.adversarial_loss.value(out_labels)
        total = self.image_loss.weight * image + self.adversarial_loss.weight * adversarial
        if self.loss_network is None:  # no VGG: the perceptual term is 0 and adds nothing
            perception = image.new_zeros(())
        else:
            perception = self.loss_network.value(out_images, target_images)
            total = total + self.loss_network.weight * perception
        tv = self.tv_loss.value(out_images)
        total = total + self.tv_loss.weight * tv
        terms = {"image": image.detach(), "adversarial": adversarial.detach(), "perception": perception.detach(),
                 "tv": tv.detach()}
        return total, terms
