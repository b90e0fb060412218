"""The timm zoo specs match timm (pretrained=False, no network): parameters, outputs after a by-position
transfer of every tensor, and MACs against an independent count (torch's FlopCounterMode on timm's model)."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

import netspec
from netspec.layers import Shape
from tests.conftest import SPECS, TIMM_ZOO

timm = pytest.importorskip("timm")

# How many tensors transfer_state_dict matches by shape instead of by position, where timm registers a module's
# tensors in another order than they run: CaiT creates cls_token before pos_embed (which is added first), and its
# TalkingHeadAttn creates proj before proj_l and proj_w (which run before it): 2 + 24 × 6. LeViT's attention
# modules hold their bias table (attention_biases) as their own parameter, first in their state_dict, though it is
# used after the q/k/v projections: the table and the projection's tensors before it, in 11 attention modules.
MOVED_BY_SHAPE = {
    "mobilevit_xxs": 0,
    "cait_xxs24_224": 146,
    "levit_128s": 89,
    "efficientformer_l1": 3,  # its attention's attention_biases, before qkv's weight and bias
}
# Buffers timm saves that netspec computes from the spec instead: EfficientFormer keeps its attention's fixed bias
# index (attention_bias_idxs) in the state_dict; relative_bias derives it from its rule, as LeViT's timm does.
COMPUTED_BUFFERS = ("attention_bias_idxs",)


def _randomised_timm_model(name: str) -> nn.Module:
    """timm's model with every floating-point tensor random, so that no branch hides behind a zero or a one
    (layer-scale gammas, zero-initialised biases, position embeddings), and batch norm's statistics away from 0/1."""
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False)
    with torch.no_grad():
        for tensor in model.state_dict().values():
            if tensor.is_floating_point():
                tensor.copy_(torch.randn_like(tensor) * 0.05)
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.running_var.uniform_(0.5, 2.0)
    return model.eval()


def _timm_macs(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Multiply-accumulates as torch's FlopCounterMode counts them (2 flops per MAC) for one example. Its table
    has CUDA's attention kernels but not the one CPU runs: that is counted with torch's own SDPA formula."""

    def cpu_sdpa(query: Shape, key: Shape, value: Shape, *args: object, **kwargs: object) -> int:
        return sdpa_flop_count(query, key, value)

    mapping = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: cpu_sdpa}
    counter = FlopCounterMode(display=False, custom_mapping=mapping)
    with counter:  # (not under no_grad: the counter's module tracker hooks the gradients of block inputs)
        model(torch.randn(1, *input_shape))
    return counter.get_total_flops() // 2


# CaiT's 26 blocks take about 30 s on 2 cores: it runs under -m slow.
@pytest.mark.parametrize(
    "spec", [pytest.param(s, marks=pytest.mark.slow) if s == "cait_xxs24_224" else s for s in sorted(TIMM_ZOO)]
)
def test_timm_zoo_spec_equals_timm(spec: str):
    reference = _randomised_timm_model(TIMM_ZOO[spec])
    net = netspec.infer_shapes(SPECS / f"{spec}.yaml")
    assert net.total_params == sum(p.numel() for p in reference.parameters())
    assert net.macs == _timm_macs(reference, net.input_shape)

    model = netspec.build(net)
    source = {k: v for k, v in reference.state_dict().items() if not k.endswith(COMPUTED_BUFFERS)}
    assert netspec.transfer_state_dict(source, model) == MOVED_BY_SHAPE[spec]
    model.eval()
    x = torch.randn(2, *net.input_shape)
    with torch.no_grad():
        expected = reference(x)
        torch.testing.assert_close(model(x), expected, rtol=1e-4, atol=1e-5 * expected.abs().max().item())
