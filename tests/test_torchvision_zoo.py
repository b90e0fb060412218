"""The token and modern-CNN zoo matches torchvision: parameters, MACs (its weights' `_ops`) and outputs."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

import netspec
from tests.conftest import SPECS, TORCHVISION_ZOO


@pytest.mark.parametrize("name", sorted(TORCHVISION_ZOO))
def test_parameters_and_macs_match_torchvision(name: str):
    net = netspec.infer_shapes(SPECS / f"{name}.yaml")
    meta = getattr(torchvision.models, TORCHVISION_ZOO[name]).IMAGENET1K_V1.meta
    assert net.total_params == meta["num_params"]
    assert round(net.macs / 1e9, 3) == meta["_ops"]


@pytest.mark.parametrize("name", sorted(TORCHVISION_ZOO))
def test_torchvision_weights_transfer_by_position_and_give_the_same_outputs(name: str):
    torch.manual_seed(0)
    reference = getattr(torchvision.models, name)(weights=None)
    with torch.no_grad():  # every tensor random, so that outputs depend on each of them
        for tensor in reference.state_dict().values():
            if tensor.is_floating_point():
                tensor.copy_(torch.randn_like(tensor) * 0.05)
        for module in reference.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.running_var.uniform_(0.5, 2.0)
    model = netspec.build(SPECS / f"{name}.yaml")
    ours = [tuple(t.shape) for t in model.state_dict().values()]
    theirs = [tuple(t.shape) for t in reference.state_dict().values()]
    assert sorted(ours) == sorted(theirs)
    moved = netspec.transfer_state_dict(reference.state_dict(), model)
    # Only Swin's patch merging registers its tensors in another order than they run (reduction before norm).
    assert (moved > 0) == (name == "swin_t")
    reference.eval()
    model.eval()
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x), rtol=1e-4, atol=1e-5)
