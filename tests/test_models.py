"""The networks: the notebook's exact parameter count and shapes; the fast net's whitening layer."""

from __future__ import annotations

import pytest
import torch

from src.models import build_model, conv_layers, count_params
from tests.conftest import params_with


def test_seed_cnn_matches_the_notebook():
    m = build_model(params_with({"model": {"name": "seed_cnn"}}).model, 10)
    assert count_params(m) == 4_079_429
    per_layer = [p.numel() for p in m.parameters()]
    # conv, BN (weight+bias) per block, then the Linear layer: the notebook's table
    convs = [4800, 190400, 236691, 1414400, 589824, 1638400]
    assert [p.numel() for n, p in m.named_parameters() if n.endswith("conv.weight")] == convs
    assert sum(per_layer[-2:]) == 2570
    assert [c.kernel_size[0] for _, c in conv_layers(m)] == [5, 5, 3, 5, 3, 5]
    out = m.eval()(torch.randn(4, 3, 32, 32))
    assert out.shape == (4, 10)
    assert count_params(build_model(params_with({"model": {"name": "seed_cnn"}}).model, 3)) == 4_079_429 - 7 * 257


def test_fast_cnn_shapes_and_whitening():
    m = build_model(params_with({"model": {"name": "fast_cnn"}}).model, 3)
    assert m(torch.randn(2, 3, 32, 32)).shape == (2, 3)
    x = torch.randn(64, 3, 32, 32) * torch.tensor([1.0, 2.0, 0.5]).view(1, 3, 1, 1)
    m.whiten_eps = 1e-6
    m.init_from_data(x)
    out = m.whiten(x)  # (64, 24, 31, 31): the first 12 channels are whitened directions
    flat = out[:, :12].permute(0, 2, 3, 1).reshape(-1, 12)
    cov = torch.cov(flat.T)
    assert torch.allclose(cov, torch.eye(12), atol=0.05)
    assert not m.whiten.weight.requires_grad
    assert count_params(m, trainable_only=True) < count_params(m)


@pytest.mark.parametrize("k", [2, 3])
def test_whitening_covariance_is_the_unfolded_patches_one(k):
    # the shifted-plane covariance must equal the textbook one over unfolded (patch, coordinate) rows
    m = build_model(params_with({"model": {"fast_cnn": {"whiten_kernel": k}}}).model, 3)
    x = torch.randn(40, 3, 32, 32)
    m.init_from_data(x)
    patches = x.unfold(2, k, 1).unfold(3, k, 1).permute(0, 2, 3, 1, 4, 5).reshape(-1, 3 * k * k).double()
    patches -= patches.mean(0, keepdim=True)
    evals, evecs = torch.linalg.eigh(patches.T @ patches / patches.shape[0])
    n = m.whiten.out_channels // 2
    filt = (evecs.flip(1)[:, :n].T / torch.sqrt(evals.flip(0)[:n] + m.whiten_eps)[:, None]).reshape(n, 3, k, k)
    torch.testing.assert_close(m.whiten.weight.data, torch.cat([filt, -filt]).float(), rtol=0, atol=1e-6)


def test_feature_layers_come_in_forward_order():
    fast = build_model(params_with({"model": {"name": "fast_cnn"}}).model, 3)
    assert fast.feature_layers() == [
        "whiten",
        "features.group1.pool",
        "features.group1",
        "features.group2.pool",
        "features.group2",
        "features.group3.pool",
        "features.group3",
    ]
    seed = build_model(params_with({"model": {"name": "seed_cnn"}}).model, 10)
    assert seed.feature_layers() == [
        "features.block1",
        "features.block2",
        "features.pool1",
        "features.block3",
        "features.block4",
        "features.pool2",
        "features.block5",
        "features.block6",
    ]


def test_freeze_stages_run_from_the_input_side():
    """What train.freeze_at freezes: fast_cnn's conv groups, the first with the whitening layer;
    any other model's blocks in forward order (seed_cnn's six)."""
    fast = build_model(params_with({"model": {"name": "fast_cnn"}}).model, 3)
    stages = fast.freeze_stages()
    assert [len(list(s.parameters())) for s in stages] == [2 + 6, 6, 6]
    assert stages[0][0] is fast.whiten and stages[0][1] is fast.features.group1
    assert stages[1:] == [fast.features.group2, fast.features.group3]
    seed = build_model(params_with({"model": {"name": "seed_cnn"}}).model, 10)
    blocks = dict(seed.named_modules())
    assert seed.freeze_stages() == [blocks[f"features.block{i}"] for i in range(1, 7)]


def test_identity_init_passes_each_input_channel_through():
    m = build_model(params_with({"model": {"fast_cnn": {"identity_init": True}}}).model, 3)
    conv1, conv2 = m.features.group1.conv1, m.features.group1.conv2  # 24 -> 48, 48 -> 48
    x = torch.randn(2, conv1.in_channels, 8, 8)
    torch.testing.assert_close(conv1(x)[:, : conv1.in_channels], x)
    assert conv1(x)[:, conv1.in_channels :].abs().sum() > 0  # the other filters stay random
    y = torch.randn(2, conv2.in_channels, 8, 8)
    torch.testing.assert_close(conv2(y), y)
    off = build_model(params_with({"model": {"fast_cnn": {"identity_init": False}}}).model, 3)
    assert not torch.allclose(off.features.group1.conv2(y), y)


def test_fast_cnn_activation_is_gelu_or_relu_everywhere():
    from torch import nn

    relu = build_model(params_with({"model": {"fast_cnn": {"activation": "relu"}}}).model, 3)
    acts = [m for m in relu.modules() if isinstance(m, (nn.ReLU, nn.GELU))]
    assert len(acts) == 7 and all(type(m) is nn.ReLU and not m.inplace for m in acts)  # whitening + 2 per group
    assert relu(torch.randn(2, 3, 32, 32)).shape == (2, 3)
    gelu = build_model(params_with({"model": {"fast_cnn": {"activation": "gelu"}}}).model, 3)
    assert [type(m) for m in gelu.modules() if isinstance(m, (nn.ReLU, nn.GELU))] == [nn.GELU] * 7
