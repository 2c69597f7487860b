"""Generator / discriminator losses against hand computations on tiny tensors."""

import os
import subprocess
import sys
import urllib.error

import pytest
import torch
from conftest import ROOT

from SRGAN.loss import GeneratorLoss, TVLoss, VGGWeightsError, discriminator_loss
from SRGAN.weights import DEFAULT_WEIGHTS


def test_tv_loss_hand_computed():
    x = torch.tensor([[[[0.0, 1.0], [3.0, 5.0]]]])
    # dh: (3-0)^2 + (5-1)^2 = 25 over C*(H-1)*W = 2; dw: (1-0)^2 + (5-3)^2 = 5 over C*H*(W-1) = 2; 2*(12.5+2.5)/B.
    assert TVLoss()(x).item() == pytest.approx(30.0)
    # Per-image mean: a batch of two copies gives the same value; the weight multiplies.
    assert TVLoss()(torch.cat([x, x])).item() == pytest.approx(30.0)
    assert TVLoss(tv_loss_weight=0.5)(x).item() == pytest.approx(15.0)


def test_tv_loss_counts_channels_and_sizes():
    x = torch.zeros(1, 2, 3, 4)
    x[0, 1, 1, 2] = 1.0  # one bright pixel in channel 1: 2 vertical + 2 horizontal unit differences
    count_h, count_w = 2 * 2 * 4, 2 * 3 * 3
    assert TVLoss()(x).item() == pytest.approx(2 * (2 / count_h + 2 / count_w))


def test_discriminator_loss_hand_computed():
    real = torch.tensor([0.9, 0.7])
    fake = torch.tensor([0.2, 0.4])
    assert discriminator_loss(real, fake).item() == pytest.approx(1 - 0.8 + 0.3)


@pytest.fixture(scope="module")
def random_vgg_loss():
    torch.manual_seed(0)
    return GeneratorLoss(vgg="random")


def test_generator_loss_terms_and_total(random_vgg_loss):
    loss = random_vgg_loss
    g = torch.Generator().manual_seed(1)
    sr = torch.rand(2, 3, 32, 32, generator=g)
    hr = torch.rand(2, 3, 32, 32, generator=g)
    labels = torch.tensor([0.25, 0.75])
    total, terms = loss(labels, sr, hr)

    image = ((sr - hr) ** 2).sum() / sr.numel()
    adversarial = -(0.25 + 0.75) / 2
    with torch.no_grad():
        f_sr, f_hr = loss.loss_network(sr), loss.loss_network(hr)
    assert f_sr.shape == (2, 512, 1, 1)  # features[:31] ends after pool5: 1/32 resolution
    perception = ((f_sr - f_hr) ** 2).mean()
    tv = TVLoss()(sr)

    assert terms["image"].item() == pytest.approx(image.item(), rel=1e-6)
    assert terms["adversarial"].item() == pytest.approx(adversarial)
    assert terms["perception"].item() == pytest.approx(perception.item(), rel=1e-5)
    assert terms["perception"].item() > 0
    assert terms["tv"].item() == pytest.approx(tv.item(), rel=1e-6)
    expected = image + 0.001 * adversarial + 0.006 * perception + 2e-8 * tv
    assert total.item() == pytest.approx(expected.item(), rel=1e-6)
    assert all(not t.requires_grad for t in terms.values())


def test_generator_loss_gradients_reach_image_and_labels_only(random_vgg_loss):
    sr = torch.rand(1, 3, 32, 32, requires_grad=True)
    hr = torch.rand(1, 3, 32, 32)
    labels = torch.tensor([0.5], requires_grad=True)
    total, _ = random_vgg_loss(labels, sr, hr)
    total.backward()
    assert sr.grad is not None and sr.grad.abs().sum() > 0
    assert labels.grad.item() == pytest.approx(-0.001)  # d(0.001 * -mean D)/dD for one image
    assert all(p.grad is None and not p.requires_grad for p in random_vgg_loss.loss_network.parameters())


def test_vgg_is_frozen_in_eval_even_after_train(random_vgg_loss):
    random_vgg_loss.train()
    assert random_vgg_loss.training and not random_vgg_loss.loss_network.training


def test_custom_weights_and_no_vgg_when_perception_weight_zero(monkeypatch):
    def no_download(*args, **kwargs):
        raise AssertionError("VGG must not be fetched when the perceptual weight is 0")

    monkeypatch.setattr("torchvision.models._api.load_state_dict_from_url", no_download)
    loss = GeneratorLoss(vgg="imagenet", image_weight=2.0, adversarial_weight=0.5, perception_weight=0.0,
                         tv_weight=0.0)
    assert loss.loss_network is None
    sr, hr = torch.ones(1, 3, 4, 4), torch.zeros(1, 3, 4, 4)
    total, terms = loss(torch.tensor([0.2]), sr, hr)
    assert terms["perception"].item() == 0.0
    assert total.item() == pytest.approx(2.0 * 1.0 + 0.5 * -0.2)


def test_imagenet_weights_offline_error_names_file_and_folder(monkeypatch, tmp_path):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr("torchvision.models._api.load_state_dict_from_url", offline)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with pytest.raises(VGGWeightsError) as info:
        GeneratorLoss(vgg="imagenet")
    message = str(info.value)
    assert "vgg16-397923af.pth" in message
    assert os.path.join(str(tmp_path / "hub"), "checkpoints") in message
    assert "--vgg_weights" in message


def test_vgg_weights_from_file(tmp_path, random_vgg_loss):
    # A whole-vgg16-style state_dict (features.N.* keys; the classifier part is ignored).
    sd = {f"features.{k}": v.clone() for k, v in random_vgg_loss.loss_network.state_dict().items()}
    sd["classifier.0.bias"] = torch.zeros(4)
    path = tmp_path / "vgg16.pth"
    torch.save(sd, path)
    loss = GeneratorLoss(vgg=str(path))
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loss.loss_network(x), random_vgg_loss.loss_network(x))


def test_vgg_weights_bad_file(tmp_path):
    with pytest.raises(VGGWeightsError, match="does not exist"):
        GeneratorLoss(vgg=str(tmp_path / "missing.pth"))
    path = tmp_path / "other.pth"
    torch.save({"0.weight": torch.zeros(2, 2)}, path)
    with pytest.raises(VGGWeightsError, match="not a torchvision vgg16 state_dict"):
        GeneratorLoss(vgg=str(path))


def test_shape_mismatch_is_value_error(random_vgg_loss):
    with pytest.raises(ValueError, match="differ in shape"):
        random_vgg_loss(torch.tensor([0.5]), torch.rand(1, 3, 32, 32), torch.rand(1, 3, 16, 16))


def test_default_weights_live_in_srgan_weights(random_vgg_loss):
    assert DEFAULT_WEIGHTS == {"image": 1.0, "adversarial": 1e-3, "perception": 6e-3, "tv": 2e-8}
    loss = random_vgg_loss
    weights = (loss.image_loss.weight, loss.adversarial_loss.weight, loss.loss_network.weight, loss.tv_loss.weight)
    assert weights == (1.0, 1e-3, 6e-3, 2e-8)
    code = "import sys, SRGAN.weights; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "False", out.stderr  # parsers read it without torch


def test_each_term_carries_its_weight_and_total_sums_weighted_terms():
    torch.manual_seed(0)
    loss = GeneratorLoss(vgg="random", image_weight=2.0, adversarial_weight=0.5, perception_weight=0.25,
                         tv_weight=3.0)
    g = torch.Generator().manual_seed(2)
    sr, hr = torch.rand(1, 3, 32, 32, generator=g), torch.rand(1, 3, 32, 32, generator=g)
    labels = torch.tensor([0.4])
    total, terms = loss(labels, sr, hr)
    parts = {"image": (loss.image_loss, (sr, hr)), "adversarial": (loss.adversarial_loss, (labels,)),
             "perception": (loss.loss_network, (sr, hr)), "tv": (loss.tv_loss, (sr,))}
    expected = 0.0
    for name, (term, inputs) in parts.items():
        assert term.value(*inputs).item() == pytest.approx(terms[name].item(), rel=1e-6)
        expected += term.weight * terms[name].item()
    assert [parts[n][0].weight for n in parts] == [2.0, 0.5, 0.25, 3.0]
    assert total.item() == pytest.approx(expected, rel=1e-6)
    assert loss.image_loss(sr, hr).item() == pytest.approx(2.0 * terms["image"].item(), rel=1e-6)
    assert loss.adversarial_loss(labels).item() == pytest.approx(0.5 * -0.4)
    # The VGG's parameter names are those of the single-module layout (loss_network.N.*, torchvision's N).
    keys = list(loss.state_dict())
    assert keys[:2] == ["loss_network.0.weight", "loss_network.0.bias"] and keys[-1] == "loss_network.28.bias"
    assert len(keys) == 26
