"""Every zoo spec builds, matches its hand-written textbook model, and infers real shapes."""

from __future__ import annotations

import math

import pytest
import torch
import torchinfo
from torch import nn

import netspec
from netspec.compiler import leaf_modules, trace_shapes
from tests.conftest import SPECS, TIMM_ZOO, TORCHVISION_ZOO, ZOO
from tests.reference_models import REFERENCES

# Parameter counts printed by the sources (d2l prints GoogLeNet's and ResNet-18's in its summaries).
EXPECTED_PARAMS = {
    "lenet": 61_706,
    "cifar_net": 18_090,
    "cifar_net_width": 38_386,
    "d2l_alexnet": 46_764_746,
    "d2l_googlenet": 5_977_530,
    "d2l_resnet18": 11_178_378,
}
# Specs that show what the graph language can do beyond the books: built, run forward and backward.
BEYOND_THE_BOOK = ["mobilenet_v2_small", "se_resnet_small", "squeezenet_small", "unet_small", "vit_mnist"]


def test_every_zoo_spec_has_a_reference_model_or_a_forward_backward_test():
    assert sorted([*REFERENCES, *TORCHVISION_ZOO, *TIMM_ZOO, *BEYOND_THE_BOOK]) == ZOO


def test_a_zoo_name_that_is_a_torchvision_model_is_that_model():
    # specs/resnet18.yaml is torchvision's ResNet-18 (its weights load); d2l's variants carry a d2l_ prefix.
    import torchvision

    assert {name for name in ZOO if name in torchvision.models.list_models()} == set(TORCHVISION_ZOO)
    assert {name.removeprefix("d2l_") for name in ZOO if name.startswith("d2l_")} == {
        "alexnet", "vgg11", "googlenet", "densenet", "resnet18"
    }  # fmt: skip
    assert netspec.infer_shapes(SPECS / "resnet18.yaml").total_params == 11_689_512


@pytest.mark.parametrize("name", BEYOND_THE_BOOK)
def test_beyond_the_book_specs_run_forward_and_backward(name: str):
    torch.manual_seed(0)
    model = netspec.build(SPECS / f"{name}.yaml")
    x = torch.randn(3, *model.net_shape.input_shape)
    out = model(x)
    assert tuple(out.shape) == (3, *model.net_shape.output_shape)
    out.square().mean().backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)


# Dynamo traces the timm specs' hundreds of attention parts for 20-40 s each on 2 cores: they run under -m slow.
@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in TIMM_ZOO else n for n in ZOO])
def test_compiles_as_one_graph(name: str):
    # fullgraph=True fails on any graph break; the eager backend runs dynamo's tracing without code generation.
    import torch._dynamo

    torch._dynamo.reset()
    model = netspec.build(SPECS / f"{name}.yaml").eval()
    compiled = torch.compile(model, fullgraph=True, backend="eager")
    x = torch.randn(2, *model.net_shape.input_shape)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), model(x))


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_state_dict_of_textbook_model_loads_and_gives_identical_outputs(name: str):
    torch.manual_seed(0)
    reference = REFERENCES[name]()
    model = netspec.build(SPECS / f"{name}.yaml")
    ours = [tuple(p.shape) for p in model.parameters()]
    theirs = [tuple(p.shape) for p in reference.parameters()]
    assert ours == theirs  # same parameter shapes in the same order
    # Randomize BN statistics too, so that eval-mode outputs depend on every buffer.
    with torch.no_grad():
        for module in reference.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
    netspec.transfer_state_dict(reference.state_dict(), model)
    reference.eval()
    model.eval()
    x = torch.randn(4, *model.net_shape.input_shape)
    torch.testing.assert_close(model(x), reference(x), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ZOO)
def test_inferred_shapes_equal_real_forward_shapes(name: str):
    model = netspec.build(SPECS / f"{name}.yaml")
    x = torch.randn(2, *model.net_shape.input_shape)
    seen = trace_shapes(model, x)
    assert {info.index: info.output_shape for info in model.net_shape.layers} == seen
    assert tuple(model(x).shape[1:]) == model.net_shape.output_shape


@pytest.mark.parametrize("name", ZOO)
def test_totals_agree_with_torchinfo(name: str):
    model = netspec.build(SPECS / f"{name}.yaml")
    net = model.net_shape
    stats = torchinfo.summary(model, input_size=(2, *net.input_shape), verbose=0)
    assert stats.total_params == net.total_params == sum(p.numel() for p in model.parameters())
    if name in EXPECTED_PARAMS:
        assert net.total_params == EXPECTED_PARAMS[name]
    # torchinfo counts a linear layer once per example (not per token) and no attention matmuls: for token
    # models torchvision's own figures are the reference (tests/test_torchvision_zoo.py).
    if any(len(info.input_shape) > 1 for info in net.layers if info.kind == "linear"):
        return
    # torchinfo also counts each bias addition and each batch-norm parameter as a MAC; like netspec's `macs`
    # it leaves out the element-wise additions and multiplications of merges (netspec's `elementwise`).
    extra = 0
    for info, module in leaf_modules(model):
        if isinstance(module, (nn.Conv2d, nn.Linear, nn.ConvTranspose2d)) and module.bias is not None:
            extra += math.prod(info.output_shape)
        if isinstance(module, nn.ConvTranspose2d):
            # torchinfo counts a transposed conv's weights once per output pixel, as for a conv; each
            # input pixel is what multiplies them (netspec's count).
            extra += module.weight.numel() * (math.prod(info.output_shape[1:]) - math.prod(info.input_shape[1:]))
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            extra += info.params
    assert stats.total_mult_adds == 2 * (net.macs + extra)


def test_lenet_summary_numbers():
    net = netspec.infer_shapes(SPECS / "lenet.yaml")
    assert net.output_shape == (10,)
    assert [i.output_shape for i in net.layers][:7] == [
        (6, 28, 28),
        (6, 28, 28),
        (6, 14, 14),
        (16, 10, 10),
        (16, 10, 10),
        (16, 5, 5),
        (400,),
    ]
    assert net.layers[0].macs == 6 * 28 * 28 * 25


def test_parameters_appear_in_spec_order_under_named_attributes():
    model = netspec.build(SPECS / "lenet.yaml")
    assert list(model.state_dict()) == [
        "conv1.weight",
        "conv1.bias",
        "conv2.weight",
        "conv2.bias",
        "fc1.weight",
        "fc1.bias",
        "fc2.weight",
        "fc2.bias",
        "fc3.weight",
        "fc3.bias",
    ]


def test_each_zoo_spec_carries_its_training_recipe():
    lenet = netspec.load_spec(SPECS / "lenet.yaml").train
    assert (lenet.dataset, lenet.batch_size, lenet.lr, lenet.epochs, lenet.init) == (
        "fashion_mnist",
        256,
        0.9,
        10,
        "xavier_uniform",
    )
    cnn = netspec.load_spec(SPECS / "mnist_cnn.yaml").train
    assert (cnn.batch_size, cnn.lr, cnn.momentum) == (64, 0.01, 0.5)
    assert netspec.load_spec(SPECS / "cifar_net.yaml").train.dataset == "cifar2"


def test_compile_flag_wraps_with_torch_compile():
    model = netspec.build(SPECS / "mlp.yaml", compile=True)
    assert isinstance(model._orig_mod, netspec.SpecNet)


@pytest.mark.parametrize("name", ZOO)
def test_resolved_spec_round_trips_through_yaml(name: str):
    # Run folders store spec.to_data() as spec.yaml and checkpoints store it for --resume.
    import yaml

    spec = netspec.load_spec(SPECS / f"{name}.yaml")
    again = netspec.parse_spec(yaml.safe_dump(spec.to_data(), sort_keys=False))
    assert again.model_dump() == spec.model_dump()
