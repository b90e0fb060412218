"""Write real MNIST digits as a segmentation folder: OUT/images/NNNNN.png (the digit, padded to 32×32, as the
U-Nets of examples/unet_mnist.yaml and specs/unet_small.yaml halve it three times) and OUT/masks/NNNNN.png (a
palette PNG, as VOC writes them: class 0 is the background, class d+1 the pixels of digit d brighter than half),
with OUT/classes.txt naming the 11 classes.

    python examples/make_mnist_segmentation.py OUT [--count 2000] [--digits 012] [--size 32] [--mnist ../shared/data]

Reads MNIST in torchvision's layout (MNIST/raw/ under --mnist); downloads nothing.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np


def palette() -> list[int]:
    """A colour per class (black background, distinct hues), 256 entries as PIL's palette images have."""
    colours = [(0, 0, 0), (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
               (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 190)]  # fmt: skip
    flat = [v for rgb in colours for v in rgb]
    return flat + [255] * (768 - len(flat))


def write_folder(out: Path, count: int, size: int, mnist_root: Path, digits: tuple[int, ...] = tuple(range(10))) -> int:
    """The first `count` training digits of MNIST that are among `digits` as images/ and masks/ under `out` (class
    k + 1 is the k-th of `digits`); returns the count."""
    from PIL import Image
    from torchvision.datasets import MNIST

    mnist = MNIST(str(mnist_root), train=True, download=False)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    pad = (size - 28) // 2
    colours = palette()
    wanted = {digit: k + 1 for k, digit in enumerate(digits)}
    chosen = [i for i, label in enumerate(mnist.targets.tolist()) if label in wanted][:count]
    for i in chosen:
        image = np.zeros((size, size), dtype=np.uint8)
        image[pad : pad + 28, pad : pad + 28] = mnist.data[i].numpy()
        mask = np.where(image > 127, wanted[int(mnist.targets[i])], 0).astype(np.uint8)
        Image.fromarray(image, "L").save(out / "images" / f"{i:05d}.png")
        indexed = Image.fromarray(mask, "P")
        indexed.putpalette(colours)
        indexed.save(out / "masks" / f"{i:05d}.png")
    (out / "classes.txt").write_text("\n".join(["background", *(f"digit {d}" for d in digits)]) + "\n")
    return len(chosen)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="the folder to write (images/, masks/, classes.txt)")
    parser.add_argument("--count", type=int, default=2000, help="how many digits (default 2000)")
    parser.add_argument("--size", type=int, default=32, help="image side, 28 or more (default 32)")
    parser.add_argument("--digits", default="0123456789", help="which digits, e.g. 012 (default: all ten)")
    parser.add_argument("--mnist", type=Path, default=Path("../shared/data"), help="folder holding MNIST/raw/")
    args = parser.parse_args(argv)
    if args.size < 28 or not 0 < args.count <= 60_000:
        parser.error("--size is 28 or more, --count 1 to 60000")
    if not (args.mnist / "MNIST" / "raw" / "train-images-idx3-ubyte").exists():
        print(f"error: no MNIST under {args.mnist / 'MNIST' / 'raw'}; give --mnist", file=sys.stderr)
        return 2
    digits = tuple(int(d) for d in args.digits if d.isdigit())
    n = write_folder(args.out, args.count, args.size, args.mnist, digits)
    print(f"wrote {n} images and masks ({args.size}×{args.size}, {len(digits) + 1} classes) to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
