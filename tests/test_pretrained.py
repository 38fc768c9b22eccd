"""Pretrained backbones from local weight files (random weights saved here; no network)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from tsimcne_widgets.engine.models import TSimCNENet, build_backbone
from tsimcne_widgets.engine.pretrained import ImageNetResNet, imagenet_weights_path, pretrained_backbone


def _features(module, x):
    module.eval()
    with torch.no_grad():
        return module(x)


@pytest.fixture
def images():
    return torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))


@pytest.fixture
def torchvision_weights(tmp_path):
    from torchvision.models import resnet18

    torch.manual_seed(1)
    network = resnet18(weights=None)
    path = tmp_path / "resnet18-random.pth"
    torch.save(network.state_dict(), path)
    return path, network


def test_cifar_resnet_file_round_trip(tmp_path, images):
    torch.manual_seed(0)
    original, dim = build_backbone("resnet10-w8")
    path = tmp_path / "backbone.pt"
    torch.save(original.state_dict(), path)
    loaded, loaded_dim = pretrained_backbone(path)
    assert loaded_dim == dim == 64
    assert [len(stage) for stage in loaded.stages] == [1, 1, 1, 1]
    torch.testing.assert_close(_features(loaded, images), _features(original, images))


def test_tsimcne_network_weights_use_the_backbone_part(tmp_path, images):
    torch.manual_seed(0)
    module, dim = build_backbone("resnet18-w4")
    network = TSimCNENet(module, dim, hidden_dim=16)
    path = tmp_path / "net.pt"
    torch.save({"model": network.state_dict(), "kind": "model"}, path)
    loaded, loaded_dim = pretrained_backbone(str(path))
    assert loaded_dim == 32
    assert [len(stage) for stage in loaded.stages] == [2, 2, 2, 2]
    torch.testing.assert_close(_features(loaded, images), _features(network.backbone, images))


def test_torchvision_weights_adapt_the_stem_to_small_images(torchvision_weights, images):
    path, network = torchvision_weights
    small, dim = pretrained_backbone(path)
    assert dim == 512 and isinstance(small, ImageNetResNet)
    torch.testing.assert_close(small.network.layer4[1].conv2.weight, network.layer4[1].conv2.weight)
    assert small.network.conv1.stride == (1, 1)
    # The same network with ImageNet's normalisation, stride-1 stem and no max-pool.
    network.conv1.stride = (1, 1)
    network.maxpool = torch.nn.Identity()
    network.fc = torch.nn.Identity()
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    torch.testing.assert_close(_features(small, images), _features(network, (images - mean) / std))


def test_large_images_keep_the_imagenet_stem(torchvision_weights):
    path, _ = torchvision_weights
    module, _ = pretrained_backbone(path, small_images=False)
    assert module.network.conv1.stride == (2, 2)
    assert isinstance(module.network.maxpool, torch.nn.MaxPool2d)


def test_imagenet_without_cache_or_download_explains_the_fix(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))
    with pytest.raises(FileNotFoundError, match="download=True"):
        pretrained_backbone("imagenet")


def test_imagenet_weights_are_read_from_the_hub_cache(tmp_path, monkeypatch, torchvision_weights, images):
    _, network = torchvision_weights
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))
    cached = imagenet_weights_path()
    assert cached.parent == tmp_path / "hub" / "checkpoints"
    cached.parent.mkdir(parents=True)
    torch.save(network.state_dict(), cached)
    module, dim = pretrained_backbone("ImageNet")  # no download needed: it is cached
    assert dim == 512
    torch.testing.assert_close(module.network.conv1.weight, network.conv1.weight)


def test_bad_inputs_raise_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no weights file"):
        pretrained_backbone(tmp_path / "missing.pt")
    with pytest.raises(TypeError, match="imagenet"):
        pretrained_backbone(42)
    not_weights = tmp_path / "list.pt"
    torch.save([1, 2, 3], not_weights)
    with pytest.raises(ValueError, match="state dict"):
        pretrained_backbone(not_weights)
    other = tmp_path / "mlp.pt"
    torch.save(torch.nn.Linear(3, 2).state_dict(), other)
    with pytest.raises(ValueError, match="unsupported network"):
        pretrained_backbone(other)
    module, _ = build_backbone("resnet10-w4")
    state = module.state_dict()
    state["stages.1.0.conv1.weight"] = torch.zeros(3, 3, 3, 3)
    broken = tmp_path / "broken.pt"
    torch.save(state, broken)
    with pytest.raises(ValueError, match="do not fit"):
        pretrained_backbone(broken)


def test_a_pretrained_backbone_trains_in_the_estimator(tmp_path):
    from tsimcne_widgets.engine.estimator import TSimCNE

    torch.manual_seed(0)
    module, _ = build_backbone("resnet10-w4")
    path = tmp_path / "backbone.pt"
    torch.save(module.state_dict(), path)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (16, 8, 8, 3), dtype=np.uint8)
    estimator = TSimCNE(backbone=pretrained_backbone(path), total_epochs=(1, 1, 1),
                        batch_size=8, hidden_dim=16, device="cpu", random_state=0)
    xy = estimator.fit_transform(images)
    assert xy.shape == (16, 2) and np.isfinite(xy).all()
