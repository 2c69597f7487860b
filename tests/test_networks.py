"""RBPN generator and SRGAN discriminator: layout equal to the original checkpoints, shapes, init, validation."""

import ast
import json
import os
import subprocess
import sys

import pytest
import torch
from conftest import ROOT, TINY_NET, l1_fit_losses, net_inputs

import rbpn
from base_networks import ResnetBlock
from SRGAN.model import Discriminator

DATA = os.path.join(os.path.dirname(__file__), "data")


def _reference(name: str) -> dict:
    with open(os.path.join(DATA, name)) as f:
        return json.load(f)


def _inputs(config: dict, h: int = 6, w: int = 5, batch: int = 2, seed: int = 0):
    return net_inputs(config["num_channels"], config["nFrames"] - 1, h, w, batch, seed)


@pytest.mark.parametrize("scale,count", [(2, 10_134_119), (4, 12_771_943), (8, 20_308_583)])
def test_full_model_matches_original_state_dict(scale, count):
    with torch.device("meta"):
        net = rbpn.Net(**rbpn.DEFAULT_CONFIG, scale_factor=scale)
    ref = _reference(f"rbpn_x{scale}_nf7_state_dict.json")
    sd = net.state_dict()
    assert list(sd) == list(ref)
    assert {k: list(v.shape) for k, v in sd.items()} == ref
    assert sum(p.numel() for p in net.parameters()) == count


def test_discriminator_matches_original_state_dict():
    d = Discriminator()
    ref = _reference("srgan_discriminator_state_dict.json")
    assert {k: list(v.shape) for k, v in d.state_dict().items()} == ref
    assert list(d.state_dict()) == list(ref)
    assert sum(p.numel() for p in d.parameters()) == 5_215_425


@pytest.mark.parametrize("size", [(32, 32), (40, 56)])
def test_discriminator_any_input_size(size):
    d = Discriminator().eval()
    out = d(torch.rand(3, 3, *size))
    assert out.shape == (3,)
    assert ((out > 0) & (out < 1)).all()


@pytest.mark.parametrize("scale", [2, 4, 8])
def test_tiny_forward_shapes(scale):
    config = dict(TINY_NET, scale_factor=scale)
    net = rbpn.Net(**config).eval()
    x, nbs, flows = _inputs(config)
    with torch.no_grad():
        y = net(x, nbs, flows)
    assert y.shape == (2, 3, 6 * scale, 5 * scale)
    assert torch.isfinite(y).all()


def test_full_size_x4_forward_shape():
    torch.manual_seed(0)
    net = rbpn.Net(**rbpn.DEFAULT_CONFIG, scale_factor=4).eval()
    x, nbs, flows = _inputs(dict(rbpn.DEFAULT_CONFIG), h=8, w=12, batch=1)
    with torch.no_grad():
        y = net(x, nbs, flows)
    assert y.shape == (1, 3, 32, 48)
    assert torch.isfinite(y).all()


def test_output_depends_on_every_neighbour_and_flow():
    torch.manual_seed(0)
    net = rbpn.Net(**TINY_NET).eval()
    x, nbs, flows = _inputs(TINY_NET)
    with torch.no_grad():
        base = net(x, nbs, flows)
        for j in range(len(nbs)):
            changed = list(nbs)
            changed[j] = nbs[j] + 0.1
            assert not torch.allclose(net(x, changed, flows), base)
            changed = list(flows)
            changed[j] = flows[j] + 1.0
            assert not torch.allclose(net(x, nbs, changed), base)


def test_float64_flow_is_accepted_like_float32():
    torch.manual_seed(0)
    net = rbpn.Net(**TINY_NET).eval()
    x, nbs, flows = _inputs(TINY_NET)
    with torch.no_grad():
        a = net(x, nbs, flows)
        b = net(x, nbs, [f.double() for f in flows])
    assert torch.equal(a, b)


def test_weight_init_like_original():
    torch.manual_seed(0)
    net = rbpn.Net(**dict(rbpn.DEFAULT_CONFIG, scale_factor=4))
    for name, m in net.named_modules():
        if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)):
            assert torch.count_nonzero(m.bias) == 0, name
        if isinstance(m, torch.nn.PReLU):
            assert m.weight.item() == pytest.approx(0.25), name
    # kaiming_normal_ (fan_in, gain sqrt 2): std = sqrt(2 / fan_in); fan_in of a deconv weight is size(1)*k*k.
    w = net.res_feat1[0].conv1.weight
    assert w.std().item() == pytest.approx((2 / (256 * 9)) ** 0.5, rel=0.02)
    d = net.res_feat1[-1].deconv.weight  # (256, 64, 8, 8)
    assert d.std().item() == pytest.approx((2 / (64 * 64)) ** 0.5, rel=0.02)


def test_resnet_block_shares_one_prelu():
    block = ResnetBlock(4)
    assert sum(isinstance(m, torch.nn.PReLU) for m in block.modules()) == 1
    with torch.no_grad():
        block.act.weight.fill_(0.5)
    x = torch.randn(1, 4, 5, 5)
    y1 = torch.nn.functional.prelu(block.conv1(x), block.act.weight)
    expected = torch.nn.functional.prelu(block.conv2(y1) + x, block.act.weight)
    assert torch.allclose(block(x), expected)


@pytest.mark.parametrize("scale", [3, 16])
def test_unsupported_scale_is_value_error(scale):
    with pytest.raises(ValueError, match="scale factor"):
        rbpn.Net(**dict(TINY_NET, scale_factor=scale))


def test_wrong_inputs_are_value_errors():
    net = rbpn.Net(**TINY_NET)
    x, nbs, flows = _inputs(TINY_NET)
    with pytest.raises(ValueError, match="neighbor has 1 tensors.*nFrames=3"):
        net(x, nbs[:1], flows)
    with pytest.raises(ValueError, match="flow has 3 tensors"):
        net(x, nbs, flows + flows[:1])
    with pytest.raises(ValueError, match="must be a list"):
        net(x, torch.stack(nbs), flows)
    with pytest.raises(ValueError, match=r"neighbor\[1\] must have shape"):
        net(x, [nbs[0], nbs[1][:, :, :-1]], flows)
    with pytest.raises(ValueError, match=r"flow\[0\] must have shape"):
        net(x, nbs, [flows[0][:, :1], flows[1]])
    with pytest.raises(ValueError, match="x must be"):
        net(x[0], nbs, flows)
    with pytest.raises(ValueError, match="floating-point"):
        net((x * 255).to(torch.uint8), nbs, flows)


@pytest.mark.parametrize("cls,channels,scale", [(rbpn.Net, 3, 4), (rbpn.Net, 1, 1), (rbpn.Net2, 3, 2)])
def test_grad_checkpointing_same_outputs_and_grads(cls, channels, scale):
    """SR and denoising generators alike: checkpointed segments give the same output and gradients."""
    torch.manual_seed(0)
    config = dict(TINY_NET, num_channels=channels, scale_factor=scale)
    net = cls(**config)
    keys = list(net.state_dict())
    x, nbs, flows = _inputs(config)

    def run():
        net.zero_grad()
        y = net(x, nbs, flows)
        y.square().mean().backward()
        return y.detach(), [p.grad.clone() for p in net.parameters()]

    y0, g0 = run()
    net.set_grad_checkpointing(True)
    y1, g1 = run()
    assert torch.equal(y0, y1)
    for a, b in zip(g0, g1):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-7)
    assert list(net.state_dict()) == keys


def test_tiny_training_step_lowers_loss():
    torch.manual_seed(0)
    config = dict(TINY_NET, scale_factor=2)
    net = rbpn.Net(**config)
    x, nbs, flows = _inputs(config, h=8, w=8)
    target = torch.nn.functional.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
    losses = l1_fit_losses(net, x, nbs, flows, target)
    assert losses[-1] < 0.7 * losses[0]


def test_loading_a_generator_imports_no_loss_code():
    # Issue 21: rbpn re-exported the losses, so loading a model for inference imported SRGAN.loss (and the circle
    # SRGAN.loss -> checkpoint -> rbpn -> SRGAN.loss). The losses now live only in SRGAN.loss.
    code = ("import sys, checkpoint, rbpn\n"
            "net, config = checkpoint.build_generator('weights/iSeeBetter_x4_psnr.pth')\n"
            "print(sorted(m for m in sys.modules if m.startswith('SRGAN')))\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
    assert not hasattr(rbpn, "GeneratorLoss") and not hasattr(rbpn, "TVLoss")


def _project_imports(module: str) -> set:
    """Project modules ``module`` imports anywhere in its source (top level or inside functions)."""
    path = os.path.join(ROOT, *module.split(".")) + ".py"
    with open(path) as f:
        tree = ast.parse(f.read())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {n for n in names if os.path.isfile(os.path.join(ROOT, *n.split(".")) + ".py")}


def test_no_import_circle_among_networks_losses_and_checkpoint():
    graph, todo = {}, ["checkpoint", "rbpn", "SRGAN.loss", "SRGAN.model", "SRGAN.weights"]
    while todo:
        module = todo.pop()
        if module not in graph:
            graph[module] = _project_imports(module)
            todo.extend(graph[module])
    assert "checkpoint" in graph["SRGAN.loss"] and "rbpn" in graph["checkpoint"]  # the edges of the old circle
    done, active = set(), []

    def visit(module: str) -> None:
        if module in active:
            raise AssertionError("import circle: " + " -> ".join(active[active.index(module):] + [module]))
        if module in done:
            return
        active.append(module)
        for name in sorted(graph[module]):
            visit(name)
        active.pop()
        done.add(module)

    for module in sorted(graph):
        visit(module)
