"""Checkpoints across versions: netspec 0.1 checkpoints (positional keys) load into today's named modules."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import netspec
from netspec.compiler import load_weights
from netspec.errors import CheckpointError
from tests.conftest import SPECS

FIXTURES = Path(__file__).parent / "fixtures"


def test_checkpoint_with_positional_keys_loads_by_position_and_gives_the_same_outputs():
    # Written by netspec 0.1.0, whose modules were nn.Sequential positions ("1.0.0.0.body.0.weight").
    old = torch.load(FIXTURES / "old_keys_checkpoint.pt", weights_only=True)["model"]
    assert "1.0.0.0.body.0.weight" in old
    model = netspec.build(FIXTURES / "old_keys.yaml")
    assert "units.0.body.0.weight" in model.state_dict()  # today's names
    load_weights(model, FIXTURES / "old_keys_checkpoint.pt")
    # Every tensor lands, bit for bit, in the module at its position.
    for (_, loaded), saved in zip(model.state_dict().items(), old.values(), strict=True):
        torch.testing.assert_close(loaded, saved, rtol=0, atol=0)
    recorded = torch.load(FIXTURES / "old_keys_output.pt", weights_only=True)
    model.eval()
    with torch.no_grad():
        # The outputs netspec 0.1.0 recorded, up to float rounding (kernels differ between CPUs and torch builds).
        torch.testing.assert_close(model(recorded["x"]), recorded["y"], rtol=1e-5, atol=1e-6)


def test_a_checkpoint_of_another_spec_says_which_tensors_do_not_fit(tmp_path: Path):
    lenet = netspec.build(SPECS / "lenet.yaml")
    path = tmp_path / "lenet.pt"
    netspec.fileio.save_checkpoint(path, {"model": lenet.state_dict()})
    other = netspec.build(SPECS / "lenet_bn.yaml")
    with pytest.raises(CheckpointError) as info:
        load_weights(other, path)
    message = str(info.value)
    assert message.startswith(f"{path}: does not fit spec lenet_bn: ")
    assert ("is (" in message and "in the checkpoint but (" in message) or "missing from the checkpoint" in message
