"""Every input is read for what it is (issue 26): the input's kind is checked against the run's, every image
format ImageFolder accepts is decoded, conversions are said, bad files are named one by one, hostile folders and
tables get one located message (exit 2) and never an internal error."""

from __future__ import annotations

import csv
import json
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from netspec.config import TrainConfig
from netspec.data import open_data
from netspec.data.folders import decode_image, read_folder
from netspec.data.tables import read_table
from netspec.errors import BadDataError
from netspec.predict import predict
from netspec.train import train
from tests.conftest import requires_mnist, run_cli
from tests.datasets import mnist_digits, write_digit_folder

QUIET = {"report": lambda line: None, "progress": False}

DIGITS = """\
name: digits
input: [1, 28, 28]
layers:
  - conv2d: {out_channels: 4, kernel_size: 3, stride: 2}
  - relu
  - flatten
  - linear: {out_features: 3}
train: {epochs: 1, batch_size: 8}
"""

WINE = """\
name: wine_mlp
input: [13]
layers:
  - linear: {out_features: 8}
  - relu
  - linear: {out_features: 3}
train: {epochs: 1, batch_size: 32}
"""


def wine_csv(path: Path, delimiter: str = ",", rows: int | None = None) -> Path:
    """scikit-learn's wine table (178 real rows, 13 features, integer classes) as a user's CSV file."""
    from sklearn.datasets import load_wine

    wine = load_wine()
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh, delimiter=delimiter)
        writer.writerow([*wine.feature_names, "cultivar"])
        for row, target in list(zip(wine.data, wine.target, strict=True))[:rows]:
            writer.writerow([*(f"{v:g}" for v in row), int(target)])
    return path


def bomb_png(path: Path, side: int = 30000) -> Path:
    """A valid grayscale PNG of side×side black pixels: under 1 MB on disk, 900 MB decoded."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    packer = zlib.compressobj(9)
    rows = b"\x00" * (side + 1) * 1000
    idat = b"".join(packer.compress(rows) for _ in range(side // 1000)) + packer.flush()
    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))
    return path


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """An image run trained on RGB 32×32 digit images (a 1×28×28 spec) and a table run trained on wine."""
    root = tmp_path_factory.mktemp("runs")
    (root / "digits.yaml").write_text(DIGITS)
    (root / "wine.yaml").write_text(WINE)
    folder = write_digit_folder(root / "digits", per_class=8, size=32, rgb=True)
    train(root / "digits.yaml", {"data": str(folder)}, out=root / "digits-run", **QUIET)
    table = wine_csv(root / "wine.csv")
    train(root / "wine.yaml", {"data": str(table)}, out=root / "wine-run", **QUIET)
    return {"digits": root / "digits-run", "wine": root / "wine-run", "table": table, "folder": folder}


def digit_png(path: Path, index: int = 0, size: tuple[int, int] | None = None) -> Path:
    image = Image.fromarray(mnist_digits(2)[index][0])
    if size is not None:
        image = image.resize(size)
    image.save(path)
    return path


# --- 1. the input's kind against the run's -----------------------------------------------------------------------


@requires_mnist
def test_predict_and_eval_say_what_the_run_takes_when_given_the_other_kind(runs, tmp_path: Path):
    png = digit_png(tmp_path / "some.png")
    result = run_cli("predict", str(runs["wine"]), str(png))
    assert result.returncode == 2, result.stderr
    assert f"{runs['wine']} was trained on a table of 13 features; {png} is an image" in result.stderr
    assert "internal error" not in result.stderr

    result = run_cli("predict", str(runs["digits"]), str(runs["table"]))
    assert result.returncode == 2, result.stderr
    assert f"{runs['digits']} was trained on 1×28×28 images (grayscale); {runs['table']} is a table" in result.stderr

    result = run_cli("eval", str(runs["wine"]), "--data", str(runs["folder"]))
    assert result.returncode == 2, result.stderr
    assert "was trained on a table of 13 features" in result.stderr and "is a folder of images" in result.stderr


# --- 2. every format ImageFolder accepts ------------------------------------------------------------------------


@requires_mnist
def test_every_imagefolder_format_is_decoded_like_its_png(tmp_path: Path):
    digits = mnist_digits(2)
    formats = {
        "bmp": lambda im: im.save(tmp_path / "x.bmp"),
        "tiff": lambda im: im.save(tmp_path / "x.tiff"),
        "png16": lambda im: Image.fromarray(np.asarray(im).astype(np.uint16) * 257).save(tmp_path / "x.png"),
        "palette": lambda im: im.convert("RGB").convert("P", palette=Image.Palette.ADAPTIVE).save(tmp_path / "x.png"),
        "cmyk": lambda im: im.convert("CMYK").save(tmp_path / "x.jpg", quality=100),
        "ppm": lambda im: im.save(tmp_path / "x.pgm"),
    }
    root = tmp_path / "folder"
    reference = {}
    for i, (array, label) in enumerate(digits):
        folder = root / str(label)
        folder.mkdir(parents=True, exist_ok=True)
        image = Image.fromarray(array)
        image.save(folder / f"{i}.png")
        reference[i] = torch.from_numpy(array.copy())
        for name, save in formats.items():
            for old in tmp_path.glob("x.*"):
                old.unlink()
            save(image)
            (written,) = tmp_path.glob("x.*")
            written.rename(folder / f"{i}_{name}{written.suffix}")
    pool = read_folder(root, (1, 28, 28), cache=False)  # no error: 16-bit PNGs among 8-bit ones included
    assert len(pool.examples) == len(digits) * (1 + len(formats))
    for image, name in zip(pool.examples.inputs, pool.ids, strict=True):
        index = int(Path(name).stem.split("_")[0])
        tolerance = 40 if "cmyk" in name or "palette" in name else 1  # lossy JPEG; an adaptive palette
        assert (image[0].int() - reference[index].int()).abs().float().mean() <= tolerance, name
    for name in ("bmp", "tiff", "png16"):
        file = next(root.rglob(f"0_{name}.*"))
        assert torch.equal(decode_image(file, (1, 28, 28)), reference[0].unsqueeze(0)), name


@requires_mnist
def test_a_broken_link_is_a_located_bad_file_or_skipped(tmp_path: Path):
    root = write_digit_folder(tmp_path / "folder", per_class=3)
    link = root / "1" / "gone.png"
    link.symlink_to(tmp_path / "nowhere.png")
    with pytest.raises(BadDataError, match=r"gone\.png: a broken link .*nowhere\.png.*--skip-bad-files"):
        read_folder(root, (1, 28, 28), cache=False)
    pool = read_folder(root, (1, 28, 28), skip_bad_files=True, cache=False)
    assert len(pool.examples) == 9
    assert any("skipped 1 unreadable image" in n and "gone.png (a broken link" in n for n in pool.notes)


# --- 3. predict --skip-bad-files ----------------------------------------------------------------------------------


@requires_mnist
def test_predict_names_each_bad_file_and_with_skip_bad_files_classifies_the_rest(runs, tmp_path: Path):
    good = digit_png(tmp_path / "good.png")
    bad = tmp_path / "bad.png"
    bad.write_text("not a picture")
    bmp = tmp_path / "also_good.bmp"
    Image.open(good).save(bmp)
    result = run_cli("predict", str(runs["digits"]), str(good), str(bad), str(bmp))
    assert result.returncode == 2, result.stderr
    assert "1 of 3 inputs are not readable images" in result.stderr
    assert f"{bad}: not a readable image (in no format" in result.stderr
    assert "--skip-bad-files" in result.stderr

    result = run_cli("predict", str(runs["digits"]), str(good), str(bad), str(bmp), "--skip-bad-files", "--json")
    assert result.returncode == 0, result.stderr
    assert [p["input"] for p in json.loads(result.stdout)] == [str(good), str(bmp)]
    assert f"skipped {bad}: not a readable image (in no format" in result.stderr


# --- 4. conversions said once; the crop warning and --resize-policy ---------------------------------------------


@requires_mnist
def test_training_conversions_are_said_and_recorded_in_data_json(runs):
    notes = json.loads((runs["digits"] / "data.json").read_text())["notes"]
    assert any(n.startswith("converted 24 colour image(s) to grayscale") for n in notes), notes
    assert any(n.startswith("resized 24 image(s) to 28×28") and "from 32×32" in n for n in notes), notes


@requires_mnist
def test_predict_warns_when_the_centre_crop_cuts_the_object_and_pad_keeps_it(runs, tmp_path: Path):
    wide = digit_png(tmp_path / "wide.png", size=(200, 80))
    result = run_cli("predict", str(runs["digits"]), str(wide))
    assert result.returncode == 0, result.stderr
    assert "resized 1 image(s) to 28×28" in result.stderr and "from 200×80" in result.stderr
    assert "warning: the centre crop cuts off much of 1 image(s)" in result.stderr
    assert "40% of its width kept" in result.stderr and "--resize-policy pad" in result.stderr

    result = run_cli("predict", str(runs["digits"]), str(wide), "--resize-policy", "pad")
    assert result.returncode == 0, result.stderr
    assert "black borders" in result.stderr and "warning" not in result.stderr
    padded = decode_image(wide, (1, 28, 28), policy="pad")[0]
    cropped = decode_image(wide, (1, 28, 28))[0]
    assert padded[:8].sum() == 0 and padded[-8:].sum() == 0  # 200×80 → 28×11, centred between black borders
    assert cropped[:8].sum() > 0  # the crop fills the whole square (and cuts the sides)


# --- 5. hostile folders -------------------------------------------------------------------------------------------


@requires_mnist
def test_a_link_loop_is_walked_once_and_no_image_is_in_two_splits(tmp_path: Path):
    root = write_digit_folder(tmp_path / "folder", per_class=10)
    (root / "0" / "loop").symlink_to(root, target_is_directory=True)  # 0/loop/0/loop/... and 0/loop/1, 0/loop/2
    (root / "2" / "again").symlink_to(root / "1", target_is_directory=True)
    cfg = TrainConfig(data=str(root), val_split=0.2, test_split=0.2)
    data = open_data(cfg, (1, 28, 28))
    assert len(data.train) + len(data.val) + len(data.test) == 30
    pool = read_folder(root, (1, 28, 28), cache=False)
    real = [os.path.realpath(root / i) for i in pool.ids]
    assert len(set(real)) == len(real) == 30
    assert any("reached again through links were read once" in n for n in pool.notes)


@requires_mnist
def test_a_pixel_bomb_is_refused_from_its_header_or_skipped(tmp_path: Path, runs):
    root = write_digit_folder(tmp_path / "folder", per_class=3)
    bomb = bomb_png(root / "2" / "bomb.png")
    assert bomb.stat().st_size < 1_000_000
    with pytest.raises(BadDataError, match=r"bomb\.png: 30000×30000 pixels \(900,000,000\), more than the limit"):
        read_folder(root, (1, 28, 28), cache=False)
    pool = read_folder(root, (1, 28, 28), skip_bad_files=True, cache=False)
    assert len(pool.examples) == 9 and "bomb.png (30000×30000 pixels" in pool.notes[0]

    lines: list[str] = []
    with pytest.raises(BadDataError, match="decompression bomb"):
        predict(runs["digits"], [bomb], report=lines.append)
    result = run_cli("predict", str(runs["digits"]), str(bomb), str(root / "0"), "--skip-bad-files")
    assert result.returncode == 0, result.stderr
    assert f"skipped {bomb}: 30000×30000 pixels" in result.stderr and "not decoded" in result.stderr


@requires_mnist
def test_data_that_is_an_image_a_missing_folder_or_a_folder_of_no_images_exits_2(tmp_path: Path):
    spec = tmp_path / "digits.yaml"
    spec.write_text(DIGITS)
    png = digit_png(tmp_path / "one.png")
    result = run_cli("train", str(spec), "--data", str(png), "--out", str(tmp_path / "run"))
    assert result.returncode == 2, result.stderr
    assert f"--data {png}: an image file; --data takes a folder of class folders" in result.stderr

    result = run_cli("train", str(spec), "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "run"))
    assert result.returncode == 2, result.stderr
    assert f"--data {tmp_path / 'missing'}: no such file or folder" in result.stderr

    root = write_digit_folder(tmp_path / "folder", per_class=2)
    (root / "3").mkdir()
    (root / "3" / "readme.txt").write_text("digits of class 3 go here")
    with pytest.raises(BadDataError, match=r"3: no images in this class folder: its 1 file\(s\) \(readme\.txt\)"):
        read_folder(root, (1, 28, 28), cache=False)
    assert not (tmp_path / "run").exists()


# --- 6. tables ----------------------------------------------------------------------------------------------------


def test_a_latin1_table_is_read_with_a_note(tmp_path: Path):
    table = wine_csv(tmp_path / "wine.csv")
    text = table.read_text().replace("cultivar", "cultivar_ö")
    table.write_bytes(text.encode("latin-1"))
    pool = read_table(table)
    assert len(pool.examples) == 178
    assert pool.notes == [f"{table}:1: not UTF-8 (byte 0xf6); the file was read as Latin-1"]


def test_semicolon_and_tab_separated_tables_are_recognised(tmp_path: Path):
    reference = read_table(wine_csv(tmp_path / "wine.csv"))
    semicolons = wine_csv(tmp_path / "wine_eu.csv", delimiter=";")
    semicolons.write_text(semicolons.read_text().replace(".", ",").replace("od280/od315_of_diluted_wines", "od"))
    for table in (semicolons, wine_csv(tmp_path / "wine.tsv", delimiter="\t")):
        pool = read_table(table)
        assert torch.equal(pool.examples.inputs, reference.examples.inputs), table
        assert pool.classes == ("0", "1", "2")


def test_numeric_labels_1_and_1_0_are_one_class(tmp_path: Path):
    table = wine_csv(tmp_path / "wine.csv")
    lines = table.read_text().splitlines()
    lines = [line[: -len(",1")] + ",1.0" if line.endswith(",1") and i % 2 else line for i, line in enumerate(lines)]
    table.write_text("\n".join(lines) + "\n")
    assert ",1.0" in table.read_text()
    pool = read_table(table)
    assert pool.classes == ("0", "1", "2")
    assert any("equal as numbers" in n for n in pool.notes)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda lines: [lines[0] + ",split", *(line + ",test" for line in lines[1:])],
         r"wine\.csv: column 'split' puts no row in train \(178 test\)"),
        (lambda lines: [lines[0], lines[1].replace(lines[1].split(",")[2], "", 1), *lines[2:]],
         r"wine\.csv:2: column 'ash': the cell is empty \(row 1 of the table"),
        (lambda lines: [*lines[:3], lines[3][:-1] + "x" * 200_000, *lines[4:]],
         r"wine\.csv:4: a cell of more than 131,072 characters"),
    ],
    ids=["all-test-split", "empty-cell", "200kb-cell"],
)  # fmt: skip
def test_table_mistakes_are_located_and_exit_2(tmp_path: Path, edit, message):
    table = wine_csv(tmp_path / "wine.csv")
    table.write_text("\n".join(edit(table.read_text().splitlines())) + "\n")
    spec = tmp_path / "wine.yaml"
    spec.write_text(WINE)
    result = run_cli("train", str(spec), "--data", str(table), "--out", str(tmp_path / "run"))
    assert result.returncode == 2, result.stderr
    import re

    assert re.search(message, result.stderr), result.stderr
    assert "--label" not in result.stderr and "internal error" not in result.stderr


@requires_mnist
def test_predict_on_a_header_only_or_latin1_table(runs, tmp_path: Path):
    empty = tmp_path / "empty.csv"
    empty.write_text(runs["table"].read_text().splitlines()[0] + "\n")
    result = run_cli("predict", str(runs["wine"]), str(empty))
    assert result.returncode == 2, result.stderr
    assert f"{empty}: the table has a header but no rows" in result.stderr
    lines: list[str] = []
    latin = tmp_path / "latin.csv"
    latin.write_bytes((runs["table"].read_text().replace("cultivar", "sorte_ü")).encode("latin-1"))
    got = predict(runs["wine"], [latin], report=lines.append)
    assert len(got) == 178 and lines == [f"{latin}:1: not UTF-8 (byte 0xfc); the file was read as Latin-1"]


# --- 7. weak messages ---------------------------------------------------------------------------------------------


def test_one_class_data_says_it_needs_two_classes(tmp_path: Path):
    table = wine_csv(tmp_path / "wine.csv", rows=50)  # wine's first 59 rows are all class 0
    spec = tmp_path / "wine.yaml"
    spec.write_text(WINE)
    result = run_cli("train", str(spec), "--data", str(table), "--out", str(tmp_path / "run"))
    assert result.returncode == 2, result.stderr
    assert "one class (only '0'); a classifier needs at least 2 classes" in result.stderr
    assert "out_features: 1" not in result.stderr and "out_features to 1" not in result.stderr


def test_one_example_per_class_says_what_to_do_and_no_val_split_0(tmp_path: Path):
    from sklearn.datasets import load_wine

    wine = load_wine()
    table = tmp_path / "three.csv"
    with open(table, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow([*wine.feature_names, "cultivar"])
        for cls in range(3):
            writer.writerow([*wine.data[list(wine.target).index(cls)], cls])
    spec = tmp_path / "wine.yaml"
    spec.write_text(WINE)
    result = run_cli("train", str(spec), "--data", str(table), "--out", str(tmp_path / "run"), "--no-progress")
    assert result.returncode == 0, result.stderr
    assert "val_split 0)" not in result.stdout and "TEST accuracy" not in result.stdout  # there is no test split
    assert "no validation or test split (too few examples to hold any out): best.pt is the last epoch" in result.stdout
    assert (tmp_path / "run" / "best.pt").exists()
    assert "val_split 0.1 and test_split 0.1 of at most 1 example(s) a class is none" in result.stdout
    assert "add examples (3 or more a class), or give the splits" in result.stdout


@requires_mnist
def test_a_fifo_or_device_is_never_read(runs, tmp_path: Path):
    fifo = tmp_path / "rows.csv"
    os.mkfifo(fifo)
    spec = tmp_path / "wine.yaml"
    spec.write_text(WINE)
    for data in (fifo, Path("/dev/zero")):
        result = run_cli("train", str(spec), "--data", str(data), "--out", str(tmp_path / "run"), timeout=60)
        assert result.returncode == 2, result.stderr
        assert f"--data {data}: neither a folder nor a text table (not a regular file)" in result.stderr
    pipe = tmp_path / "pipe.png"
    os.mkfifo(pipe)
    result = run_cli("predict", str(runs["digits"]), str(pipe), timeout=60)
    assert result.returncode == 2 and f"{pipe}: not a regular file" in result.stderr, result.stderr


@requires_mnist
def test_an_animated_gif_gives_its_first_frame_and_a_gray_palette_is_not_colour(runs, tmp_path: Path):
    digit = Image.fromarray(mnist_digits(1)[0][0])
    gif = tmp_path / "anim.gif"
    digit.save(gif, save_all=True, append_images=[Image.new("L", (28, 28), 255)] * 2)
    first = decode_image(gif, (1, 28, 28))
    assert first.shape == (1, 28, 28)
    assert (first[0].int() - torch.from_numpy(np.asarray(digit).copy()).int()).abs().max() <= 1  # RGB → gray rounding
    assert decode_image(gif, (3, 28, 28)).shape == (3, 28, 28)
    lines: list[str] = []
    got = predict(runs["digits"], [gif], report=lines.append)
    assert len(got) == 1 and not any("colour" in line for line in lines), lines


def test_an_extreme_aspect_ratio_is_cropped_before_it_is_scaled_up(tmp_path: Path):
    line = tmp_path / "line.png"  # scaled up first, 28 × 56,000,000 pixels: gigabytes
    Image.fromarray(np.full((1, 2_000_000), 200, np.uint8)).save(line)
    image = decode_image(line, (1, 28, 28))
    assert image.shape == (1, 28, 28) and bool((image == 200).all())
