"""A folder of PNGs trains as fast as the built-in dataset: MNIST written as PNG files in class folders against
netspec's built-in MNIST reader, the same spec and recipe, side by side, alternating.

    python -m bench.own_data --data-root ../shared/data [--repeats 3] [--epochs 2]
    python -m bench.own_data --data-root ../shared/data --write mnist_png   # only write the PNG folder

Each repeat trains both for --epochs epochs and takes the examples/sec of the last epoch (from the second epoch
on, the folder's images are decoded and cached already); the figure is the median of the ratios.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from netspec.train import train


def write_pngs(data_root: Path, out: Path) -> Path:
    from PIL import Image
    from torchvision.datasets import MNIST

    for split, train_part in (("train", True), ("test", False)):
        ds = MNIST(str(data_root), train=train_part)
        counts: dict[int, int] = {}
        for image, label in zip(ds.data, ds.targets.tolist(), strict=True):
            folder = out / split / str(label)
            folder.mkdir(parents=True, exist_ok=True)
            counts[label] = counts.get(label, 0) + 1
            Image.fromarray(image.numpy()).save(folder / f"{counts[label]:05d}.png")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", default="../shared/data")
    parser.add_argument("--spec", default="specs/mnist_cnn.yaml")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--write", metavar="DIR", help="only write MNIST as PNGs in DIR/train and DIR/test, and stop")
    args = parser.parse_args()
    if args.write:
        write_pngs(Path(args.data_root), Path(args.write))
        print(f"wrote {sum(1 for _ in Path(args.write).rglob('*.png')):,} PNG files under {args.write}")
        return
    quiet = {"report": lambda line: None, "progress": False}
    with tempfile.TemporaryDirectory() as tmp:
        folder = write_pngs(Path(args.data_root), Path(tmp) / "mnist_png")
        common = {"epochs": args.epochs, "lr": 0.05}
        sources = {
            "built-in": {"dataset": "mnist", "data_root": args.data_root},
            "PNG folder": {"data": str(folder)},
        }
        speeds: dict[str, list[float]] = {name: [] for name in sources}
        for r in range(args.repeats):
            for name, data in sources.items():
                result = train(
                    args.spec, {**common, **data}, out=Path(tmp) / f"run-{name}-{r}".replace(" ", "_"), **quiet
                )
                speeds[name].append(result.last.examples_per_sec)
                print(f"repeat {r + 1}: {name}: {result.last.examples_per_sec:,.0f} examples/sec (epoch {args.epochs})")
        ratios = [f / b for f, b in zip(speeds["PNG folder"], speeds["built-in"], strict=True)]
        for name, values in speeds.items():
            print(f"{name}: median {statistics.median(values):,.0f} examples/sec")
        print(f"PNG folder / built-in: median ratio {statistics.median(ratios):.3f} "
              f"(each: {', '.join(f'{x:.3f}' for x in ratios)})")  # fmt: skip


if __name__ == "__main__":
    main()
