"""Tasks beyond classification (netspec.tasks): regression and multi-label tables end to end, the task's output
check, located bad cells, and eval / predict / sweep following the run's task."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from netspec.config import TrainConfig
from netspec.data import open_data
from netspec.errors import BadDataError, UsageError
from netspec.train import train
from tests.conftest import run_cli

ROOT = Path(__file__).resolve().parent.parent
QUIET = {"report": lambda line: None, "progress": False}

DIGITS_LABELS = {  # three yes/no labels of a handwritten digit
    "big": lambda d: d >= 5,
    "even": lambda d: d % 2 == 0,
    "loop": lambda d: d in (0, 6, 8, 9),
}

DIGITS_MLP = """\
name: digits_multilabel
input: [64]
layers:
  - linear: {out_features: 64}
  - relu
  - linear: {out_features: %d}
train: {task: multilabel, epochs: 12, batch_size: 32, optimizer: adam, lr: 0.003}
"""


def diabetes_csv(path: Path, bad: tuple[int, str] | None = None) -> Path:
    """scikit-learn's diabetes table (442 patients, 10 features) with its target as the column 'progression';
    `bad` = (row, text) writes text into that row's target."""
    from sklearn.datasets import load_diabetes

    data = load_diabetes(scaled=False)
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow([*data.feature_names, "progression"])
        for i, (x, y) in enumerate(zip(data.data, data.target, strict=True)):
            target = bad[1] if bad is not None and bad[0] == i else f"{y:g}"
            writer.writerow([*(f"{v:g}" for v in x), target])
    return path


def digits_csv(path: Path, bad: tuple[int, str] | None = None, names_column: bool = False) -> Path:
    """scikit-learn's digits (1,797 8×8 images as 64 features) with three 0/1 labels derived from the digit, or
    (`names_column`) one column naming the labels that are on, separated by ';'."""
    from sklearn.datasets import load_digits

    data = load_digits()
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        labels = ["labels"] if names_column else list(DIGITS_LABELS)
        writer.writerow([*(f"p{i}" for i in range(64)), *labels])
        for i, (x, digit) in enumerate(zip(data.data, data.target, strict=True)):
            on = [int(rule(int(digit))) for rule in DIGITS_LABELS.values()]
            cells = [";".join(n for n, o in zip(DIGITS_LABELS, on, strict=True) if o)] if names_column else on
            if bad is not None and bad[0] == i:
                cells[0] = bad[1]
            writer.writerow([*(f"{v:g}" for v in x), *cells])
    return path


def test_diabetes_regression_trains_to_r2_and_predicts_in_units(tmp_path: Path):
    table = diabetes_csv(tmp_path / "diabetes.csv")
    run = tmp_path / "run"
    result = run_cli(
        "train", str(ROOT / "examples/diabetes_mlp.yaml"), "--data", str(table), "--task", "regression",
        "--out", str(run), "--json",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["task"] == "regression" and report["selected_on"] == "val_loss"
    assert report["best_test_r2"] >= 0.35, report
    assert {"val_mae", "val_rmse", "val_r2"} <= set(report["epochs"][0])
    header = (run / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"train_r2", "val_r2", "test_r2", "val_mae"} <= set(header) and "val_accuracy" not in header
    data = json.loads((run / "data.json").read_text())
    assert data["task"] == "regression" and data["classes"] == ["progression"]
    assert 140 < data["target_mean"][0] < 165 and 70 < data["target_std"][0] < 85  # progression's own units
    assert (run / "predicted.png").stat().st_size > 0 and not (run / "confusion.png").exists()

    evaluated = run_cli("eval", str(run))
    assert evaluated.returncode == 0, evaluated.stderr
    assert evaluated.stdout.startswith("test mae ") and " r2 " in evaluated.stdout and "progression" in evaluated.stdout
    as_json = json.loads(run_cli("eval", str(run), "--json").stdout)
    assert as_json["task"] == "regression" and as_json["test_r2"] == pytest.approx(report["best_test_r2"], abs=1e-6)

    predicted = run_cli("predict", str(run), str(table), "--json")
    assert predicted.returncode == 0, predicted.stderr
    values = [row["values"]["progression"] for row in json.loads(predicted.stdout)]
    assert len(values) == 442 and 100 < sum(values) / len(values) < 200 and max(values) > 200  # units, not z-scores
    shown = run_cli("predict", str(run), str(table))
    assert "diabetes.csv:2" in shown.stdout and "predicted" in shown.stdout
    # An exported model says its task and how its outputs come back to units.
    exported = run_cli("export", str(run), "--format", "python", "--out", str(tmp_path / "diabetes.py"))
    assert exported.returncode == 0, exported.stderr
    source = (tmp_path / "diabetes.py").read_text()
    assert "Task regression" in source and 'TASK = "regression"' in source
    assert f"TARGET_STD = ({data['target_std'][0]!r},)" in source


def test_a_numeric_label_without_a_task_is_refused_before_any_file(tmp_path: Path):
    table = diabetes_csv(tmp_path / "diabetes.csv")
    spec = tmp_path / "diab_mlp.yaml"  # the user: a spec that names no task
    spec.write_text("name: diab_mlp\ninput: [10]\nlayers:\n  - linear: {out_features: 1}\n")
    run = tmp_path / "run"
    result = run_cli("train", str(spec), "--data", str(table), "--out", str(run))
    assert result.returncode == 2, result.stderr
    assert (
        "diabetes.csv: the label column 'progression' holds 214 distinct numbers; for a numeric target pass "
        "--task regression, for classes pass --task classification"
    ) in result.stderr
    assert "Traceback" not in result.stderr and not run.exists()
    # Said explicitly, a numeric column is classes (and here the spec's one output does not fit 214 of them).
    explicit = run_cli("train", str(spec), "--data", str(table), "--task", "classification", "--out", str(run))
    assert explicit.returncode == 2 and "has 214 classes" in explicit.stderr and not run.exists()


def test_digits_multilabel_trains_to_macro_f1(tmp_path: Path):
    table = digits_csv(tmp_path / "digits.csv")
    spec = tmp_path / "digits.yaml"
    spec.write_text(DIGITS_MLP % 3)
    result = train(spec, {"data": str(table), "label": "big,even,loop"}, out=tmp_path / "run", **QUIET)
    assert result.task == "multilabel" and result.selected_on == "val_loss"
    assert result.best.get("test_f1") >= 0.85, [m.row(("test_f1",)) for m in result.epochs]
    assert set(result.details["labels"]) == {"big", "even", "loop"}
    predicted = run_cli("predict", str(tmp_path / "run"), str(table), "--json")
    rows = json.loads(predicted.stdout)
    assert set(rows[0]["probabilities"]) == {"big", "even", "loop"}
    assert all(rows[0]["probabilities"][name] >= 0.5 for name in rows[0]["labels"])
    evaluated = run_cli("eval", str(tmp_path / "run"))
    assert evaluated.returncode == 0 and "f1" in evaluated.stdout and "exact match" in evaluated.stdout


def test_a_column_of_label_names_is_multilabel(tmp_path: Path):
    table = digits_csv(tmp_path / "digits.csv", names_column=True)
    cfg = TrainConfig(data=str(table), task="multilabel")
    data = open_data(cfg, (64,))
    assert data.info.classes == ("big", "even", "loop") and data.train.labels.shape[1] == 3
    assert set(data.train.labels.unique().tolist()) == {0.0, 1.0}


@pytest.mark.parametrize(
    ("task", "outputs", "expected"),
    [
        ("classification", 2, "the network outputs 2 values but {table} has 214 classes (set the last linear's "
                              "out_features to 214)"),
        ("regression", 3, "the network outputs 3 values but {table} has 1 target (set the last linear's "
                          "out_features to 1)"),
        ("multilabel", 2, "the network outputs 2 values but {table} has 3 labels (set the last linear's "
                          "out_features to 3)"),
    ],
)  # fmt: skip
def test_an_output_that_does_not_fit_the_task_exits_2_before_any_file(tmp_path: Path, task, outputs, expected):
    if task == "multilabel":
        table, features = digits_csv(tmp_path / "digits.csv", names_column=True), 64
    else:
        table, features = diabetes_csv(tmp_path / "diabetes.csv"), 10
    spec = tmp_path / "spec.yaml"
    spec.write_text(f"name: misfit\ninput: [{features}]\nlayers:\n  - linear: {{out_features: {outputs}}}\n")
    result = run_cli("train", str(spec), "--data", str(table), "--task", task, "--out", str(tmp_path / "run"))
    assert result.returncode == 2, result.stderr
    assert expected.format(table=table) in result.stderr
    assert not (tmp_path / "run").exists()


def test_bad_target_cells_name_the_file_row_and_column(tmp_path: Path):
    diabetes = diabetes_csv(tmp_path / "diabetes.csv", bad=(6, "n/a"))
    with pytest.raises(BadDataError, match=r"diabetes.csv:8: column 'progression' \(a regression target\): 'n/a' is "
                                           r"not a number"):  # fmt: skip
        open_data(TrainConfig(data=str(diabetes), task="regression"), (10,))
    digits = digits_csv(tmp_path / "digits.csv", bad=(3, "2"))
    with pytest.raises(BadDataError, match=r"digits.csv:5: column 'big': '2' is not 0 or 1"):
        open_data(TrainConfig(data=str(digits), task="multilabel", label="big,even,loop"), (64,))
    run = tmp_path / "run"
    result = run_cli("train", str(ROOT / "examples/diabetes_mlp.yaml"), "--data", str(diabetes), "--out", str(run))
    assert result.returncode == 2 and "diabetes.csv:8: column 'progression'" in result.stderr and not run.exists()


def test_settings_that_do_not_fit_the_task_are_refused(tmp_path: Path):
    table = diabetes_csv(tmp_path / "diabetes.csv")
    spec = ROOT / "examples/diabetes_mlp.yaml"
    with pytest.raises(UsageError, match="--loss bce: not a loss of regression; choose from mse, l1, huber"):
        train(spec, {"data": str(table), "loss": "bce"}, out=tmp_path / "a", **QUIET)
    with pytest.raises(UsageError, match="--monitor val_accuracy: not a metric of regression"):
        train(spec, {"data": str(table), "monitor": "val_accuracy"}, out=tmp_path / "b", **QUIET)
    with pytest.raises(UsageError, match="--task regression reads its targets from a table's columns"):
        open_data(TrainConfig(task="regression", dataset="synthetic", synthetic_size=64), (1, 28, 28))
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_regression_splits_are_seeded_random_not_stratified(tmp_path: Path):
    table = diabetes_csv(tmp_path / "diabetes.csv")
    data = open_data(TrainConfig(data=str(table), task="regression"), (10,))
    assert [len(p) for p in (data.train, data.val, data.test)] == [358, 40, 44]  # 80/10/10, as documented
    assert abs(float(data.train.labels.mean())) < 1e-5 and abs(float(data.train.labels.std()) - 1) < 0.01
    again = open_data(TrainConfig(data=str(table), task="regression"), (10,))
    assert again.split == data.split


def test_a_regression_sweep_chooses_on_the_validation_loss(tmp_path: Path):
    table = diabetes_csv(tmp_path / "diabetes.csv")
    out = tmp_path / "sweep"
    result = run_cli(
        "sweep", str(ROOT / "examples/diabetes_mlp.yaml"), "--data", str(table), "--grid", "lr=0.00001,0.003",
        "--epochs", "2", "--no-prune", "--out", str(out), "--json",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    trials = {t["overrides"]["lr"]: t for t in report["trials"]}
    assert all(t["state"] == "complete" and t["metric"] == "loss" for t in trials.values())
    assert trials[0.003]["val_loss"] < trials[0.00001]["val_loss"]  # the tiny learning rate barely moves
    assert report["best"]["number"] == trials[0.003]["number"]  # the lowest validation loss, not the highest
    header = (out / "results.csv").read_text().splitlines()[0]
    assert "val_loss,test_loss,train_loss" in header and "accuracy" not in header


def test_monitor_val_r2_chooses_best_pt_on_the_highest_validation_r2(tmp_path: Path):
    table = diabetes_csv(tmp_path / "diabetes.csv")
    result = train(
        ROOT / "examples/diabetes_mlp.yaml", {"data": str(table), "monitor": "val_r2", "epochs": 4},
        out=tmp_path / "run", **QUIET,
    )  # fmt: skip
    assert result.selected_on == "val_r2"
    r2 = {m.epoch: m.get("val_r2") for m in result.epochs}
    assert result.best_epoch == max(r2, key=lambda e: r2[e])  # higher is better for R² (lower for the loss)


def test_a_resumed_regression_run_continues_as_an_uninterrupted_one(tmp_path: Path):
    table = diabetes_csv(tmp_path / "diabetes.csv")
    spec = ROOT / "examples/diabetes_mlp.yaml"
    whole = train(spec, {"data": str(table), "epochs": 3}, out=tmp_path / "whole", **QUIET)
    train(spec, {"data": str(table), "epochs": 2}, out=tmp_path / "part", **QUIET)
    resumed = train(resume=tmp_path / "part", overrides={"epochs": 3}, **QUIET)
    columns = ("train_loss", "train_r2", "val_loss", "val_r2", "test_mae")
    assert [m.row(columns) for m in resumed.epochs] == [m.row(columns) for m in whole.epochs]
