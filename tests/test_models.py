"""Tests for the CIFAR ResNet backbone and the t-SimCNE network."""

import pytest
import torch
import torchvision
from torch import nn

from tsimcne_widgets.engine.models import BasicBlock, CifarResNet, TSimCNENet, build_backbone


def small_net(out_dim=128, width=4, hidden_dim=32):
    backbone, feature_dim = build_backbone("resnet10", width=width)
    return TSimCNENet(backbone, feature_dim, hidden_dim=hidden_dim, out_dim=out_dim)


def test_resnet18_has_the_simclr_cifar_layout():
    model = CifarResNet()
    assert model.feature_dim == 512
    assert not any(isinstance(m, nn.MaxPool2d) for m in model.modules())
    stem = model.stem[0]
    assert stem.kernel_size == (3, 3) and stem.stride == (1, 1)
    assert sum(isinstance(m, BasicBlock) for m in model.modules()) == 8
    # Same parameters as torchvision's ResNet-18 without its classifier and with a
    # 3x3 instead of a 7x7 stem.
    reference = torchvision.models.resnet18(weights=None)
    expected = (
        sum(p.numel() for p in reference.parameters())
        - sum(p.numel() for p in reference.fc.parameters())
        - reference.conv1.weight.numel()
        + 64 * 3 * 3 * 3
    )
    assert sum(p.numel() for p in model.parameters()) == expected


def test_stage_resolutions_and_widths():
    model = CifarResNet(width=4).eval()
    shapes = []
    hooks = [stage.register_forward_hook(lambda m, i, o: shapes.append(tuple(o.shape)))
             for stage in model.stages]
    with torch.no_grad():
        out = model(torch.rand(2, 3, 32, 32))
    for hook in hooks:
        hook.remove()
    assert shapes == [(2, 4, 32, 32), (2, 8, 16, 16), (2, 16, 8, 8), (2, 32, 4, 4)]
    assert out.shape == (2, 32)


@pytest.mark.parametrize(
    "name, width, feature_dim, blocks",
    [
        ("resnet18-w16", None, 128, 8),
        ("resnet18", 8, 64, 8),
        ("resnet18-w32", 4, 32, 8),  # width= overrides the suffix
        ("resnet10", 4, 32, 4),
        ("ResNet10-w8", None, 64, 4),
    ],
)
def test_build_backbone_names(name, width, feature_dim, blocks):
    module, dim = build_backbone(name, width=width)
    assert dim == feature_dim == module.feature_dim
    assert sum(isinstance(m, BasicBlock) for m in module.modules()) == blocks


def test_unknown_backbone_lists_valid_names():
    with pytest.raises(ValueError, match="resnet18.*resnet10"):
        build_backbone("resnet50")
    with pytest.raises(ValueError, match="width"):
        build_backbone("resnet18", width=0)
    with pytest.raises(TypeError):
        build_backbone(42)


def test_custom_module_dimension_is_probed_without_touching_batchnorm():
    custom = nn.Sequential(
        nn.Conv2d(3, 7, 3), nn.BatchNorm2d(7), nn.AdaptiveAvgPool2d(1), nn.Flatten()
    )
    before = custom[1].running_mean.clone()
    module, dim = build_backbone(custom)
    assert module is custom and dim == 7
    assert custom.training
    assert torch.equal(custom[1].running_mean, before)
    assert build_backbone((custom, 11)) == (custom, 11)


def test_head_forward_and_features():
    net = small_net()
    assert isinstance(net.head[0], nn.Linear) and isinstance(net.head[1], nn.ReLU)
    assert (net.head[0].in_features, net.head[0].out_features) == (32, 32)
    x = torch.rand(3, 3, 16, 16)
    assert net.features(x).shape == (3, 32)
    assert net(x).shape == (3, 128)
    default = TSimCNENet(nn.Sequential(nn.Flatten()), 512)
    assert (default.head[0].out_features, default.out_dim) == (1024, 128)


def test_replace_output_layer_draws_standard_normal_weights():
    net = small_net(hidden_dim=1024)
    old = net.output_layer
    layer = net.replace_output_layer(2, generator=torch.Generator().manual_seed(0))
    assert layer is net.output_layer is net.head[-1] and layer is not old
    assert (layer.in_features, layer.out_features) == (1024, 2)
    assert torch.all(layer.bias == 0)
    assert abs(layer.weight.mean().item()) < 0.1
    assert layer.weight.std().item() == pytest.approx(1.0, abs=0.08)
    again = small_net(hidden_dim=1024).replace_output_layer(2, torch.Generator().manual_seed(0))
    assert torch.equal(again.weight, layer.weight)
    assert net(torch.rand(2, 3, 8, 8)).shape == (2, 2)


def test_replacement_keeps_device_and_dtype():
    net = small_net().double()
    layer = net.replace_output_layer(2)
    assert layer.weight.dtype == torch.float64
    assert net(torch.rand(2, 3, 8, 8, dtype=torch.float64)).dtype == torch.float64


def test_stage_two_trains_only_the_output_layer():
    net = small_net()
    net.replace_output_layer(2)
    net.set_stage(2)
    net.train()
    trainable = net.trainable_parameters()
    assert {id(p) for p in trainable} == {id(p) for p in net.output_layer.parameters()}
    assert not net.backbone.training and not net.head[0].training
    assert net.output_layer.training and net.training

    frozen = {k: v.clone() for k, v in net.state_dict().items()}
    optimizer = torch.optim.SGD(trainable, lr=0.1, momentum=0.9)
    for _ in range(2):
        loss = net(torch.rand(4, 3, 8, 8)).square().sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    changed = {k for k, v in net.state_dict().items() if not torch.equal(v, frozen[k])}
    assert changed == {"head.2.weight", "head.2.bias"}  # BN statistics did not move


def test_stages_one_and_three_train_everything():
    net = small_net()
    net.set_stage(2)
    net.set_stage(3)
    net.train()
    assert all(p.requires_grad for p in net.parameters())
    assert all(m.training for m in net.modules())
    assert len(net.trainable_parameters()) == len(list(net.parameters()))
    net.eval()
    assert not any(m.training for m in net.modules())
    with pytest.raises(ValueError, match="stage"):
        net.set_stage(4)


def test_replacing_in_stage_two_keeps_freezing():
    net = small_net()
    net.set_stage(2)
    net.replace_output_layer(2)
    assert all(p.requires_grad for p in net.output_layer.parameters())
    assert not any(p.requires_grad for p in net.backbone.parameters())


def test_channels_last_matches_contiguous():
    net = small_net(width=8).eval()
    x = torch.rand(2, 3, 16, 16)
    with torch.no_grad():
        expected = net(x)
        net_cl = net.to(memory_format=torch.channels_last)
        got = net_cl(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
