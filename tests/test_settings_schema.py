"""The settings are described once, on their fields: `netspec schema` carries every description."""

from __future__ import annotations

import json

import pytest

from netspec.cli import main
from netspec.config import BenchConfig, SweepConfig, TrainConfig


def test_every_train_bench_and_sweep_field_has_a_description_in_the_schema(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schema"]) == 0
    definitions = json.loads(capsys.readouterr().out)["$defs"]
    for model in (TrainConfig, BenchConfig, SweepConfig):
        properties = definitions[model.__name__]["properties"]
        assert set(properties) == set(model.model_fields)
        undescribed = [name for name, field in properties.items() if not field.get("description")]
        assert undescribed == [], f"{model.__name__} fields without a description: {undescribed}"


def test_train_has_an_option_for_every_field_with_the_fields_choices() -> None:
    import argparse
    from typing import Literal, get_args, get_origin

    from netspec.cli import make_parser

    subcommands = next(a for a in make_parser()._actions if isinstance(a, argparse._SubParsersAction))
    options = {a.dest: a for a in subcommands.choices["train"]._actions}
    assert set(TrainConfig.model_fields) <= set(options)
    for name, field in TrainConfig.model_fields.items():
        if get_origin(field.annotation) is Literal:
            assert tuple(options[name].choices) == get_args(field.annotation), name
