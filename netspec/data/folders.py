"""Image folders, with torchvision's ImageFolder conventions: a class is a subfolder (classes in sorted order),
images are the files with torchvision's image extensions.

Two layouts: PATH/train, PATH/val (or valid, validation), PATH/test, each holding the class folders (as
Ultralytics and timm read them), or PATH holding the class folders only (then netspec makes the splits).

Every image is decoded once with torchvision.io, converted to the spec's channels (grayscale or RGB), and
resized to the spec's input size: the shorter side is scaled to fit, then the center is cropped (torchvision's
Resize + CenterCrop, as ImageNet evaluation does), so the aspect ratio is kept. The result is one uint8 tensor,
saved in a cache file keyed by every file's path, size and modification time, so a second run does not decode
again and a changed file is decoded anew.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from netspec.data.base import SPLIT_NAMES, SPLITS, UNASSIGNED, Examples, Pool
from netspec.errors import BadDataError, DataError

CACHE_VERSION = 1


def image_extensions() -> tuple[str, ...]:
    from torchvision.datasets.folder import IMG_EXTENSIONS

    return tuple(IMG_EXTENSIONS)


def split_folders(root: Path) -> dict[str, Path]:
    """The split subfolders of `root` ({"train": root/"train", ...}), or {} when root holds class folders."""
    found: dict[str, Path] = {}
    for child in sorted(p for p in root.iterdir() if p.is_dir()):
        split = SPLIT_NAMES.get(child.name.lower())
        if split is not None:
            if split in found:
                raise BadDataError(f"{root}: both {found[split].name}/ and {child.name}/ are a {split} split")
            found[split] = child
    if found and "train" not in found:
        raise BadDataError(f"{root}: has {', '.join(p.name + '/' for p in found.values())} but no train/ folder")
    return found


def class_files(folder: Path, skip_hidden: bool = True) -> dict[str, list[Path]]:
    """{class name: its image files, sorted}, classes sorted as ImageFolder sorts them."""
    if not folder.is_dir():
        raise DataError(f"{folder}: no such folder")
    extensions = image_extensions()
    classes = sorted(e.name for e in os.scandir(folder) if e.is_dir() and not (skip_hidden and e.name.startswith(".")))
    if not classes:
        raise BadDataError(
            f"{folder}: no class folders; put each class's images in a subfolder named after the class "
            "(or train/, val/ and test/ folders that hold them)"
        )
    files = {}
    for name in classes:
        found = sorted(
            Path(dirpath) / f
            for dirpath, _, names in os.walk(folder / name, followlinks=True)
            for f in names
            if f.lower().endswith(extensions) and not f.startswith(".")
        )
        if not found:
            raise BadDataError(f"{folder / name}: an empty class folder (no {', '.join(extensions)} files)")
        files[name] = found
    return files


def read_folder(
    root: str | Path, sample_shape: tuple[int, ...], skip_bad_files: bool = False, cache: bool = True
) -> Pool:
    """Every image under `root`, decoded and sized for `sample_shape` (C×H×W), with its class and given split."""
    root = Path(root)
    if not root.exists():
        raise DataError(f"{root}: no such folder")
    if not root.is_dir():
        raise BadDataError(f"{root}: not a folder (image data is a folder of class folders; a table is a .csv file)")
    if len(sample_shape) != 3 or sample_shape[0] not in (1, 3):
        raise BadDataError(
            f"{root} holds images, but the spec's input is {'×'.join(map(str, sample_shape))}; an image spec's "
            "input is [channels, height, width] with 1 (grayscale) or 3 (RGB) channels"
        )
    splits = split_folders(root) or {"": root}
    per_split = {name: class_files(folder) for name, folder in splits.items()}
    classes = tuple(per_split.get("train", per_split.get("", {})))
    for name, files in per_split.items():
        if tuple(files) != classes:
            missing = sorted(set(classes) - set(files))
            extra = sorted(set(files) - set(classes))
            what = "; ".join(
                part
                for part in (
                    f"missing {', '.join(missing)}" if missing else "",
                    f"extra {', '.join(extra)}" if extra else "",
                )
                if part
            )
            raise BadDataError(f"{splits[name]}: its classes differ from {splits['train']}'s ({what})")
    entries = [
        (path, label, SPLITS.index(split) if split else UNASSIGNED)
        for split, files in per_split.items()
        for label, name in enumerate(classes)
        for path in files[name]
    ]
    stamp = [(str(p), *_size_and_time(p)) for p, _, _ in entries]
    key = hashlib.sha256(repr((CACHE_VERSION, str(root.resolve()), sample_shape, skip_bad_files, stamp)).encode())
    cache_file = cache_dir() / "folders" / f"{key.hexdigest()[:32]}.pt"
    if cache and cache_file.exists():
        try:
            saved = torch.load(cache_file, weights_only=True)
            return _pool(saved, classes, root)
        except Exception:  # a damaged cache file is decoded again
            pass
    images = decode_images([p for p, _, _ in entries], sample_shape, skip_bad_files)
    keep = [i for i, image in enumerate(images) if image is not None]
    bad = [str(entries[i][0].relative_to(root)) for i, image in enumerate(images) if image is None]
    if not keep:
        raise BadDataError(f"{root}: none of its {len(entries)} images could be read")
    saved = {
        "inputs": torch.stack([images[i] for i in keep]),  # type: ignore[misc]
        "labels": torch.tensor([entries[i][1] for i in keep], dtype=torch.long),
        "given": torch.tensor([entries[i][2] for i in keep], dtype=torch.int8),
        "ids": [str(entries[i][0].relative_to(root)) for i in keep],
        "skipped": bad,
    }
    if cache:
        _write_cache(cache_file, saved)
    return _pool(saved, classes, root)


def _pool(saved: dict, classes: tuple[str, ...], root: Path) -> Pool:
    notes = []
    if saved["skipped"]:
        shown = ", ".join(saved["skipped"][:3]) + (", ..." if len(saved["skipped"]) > 3 else "")
        notes.append(f"skipped {len(saved['skipped'])} unreadable image(s) under {root}: {shown}")
    return Pool(Examples(saved["inputs"], saved["labels"]), classes, saved["given"], list(saved["ids"]), notes)


def _size_and_time(path: Path) -> tuple[int, int]:
    stat = path.stat()
    return stat.st_size, stat.st_mtime_ns


def cache_dir() -> Path:
    """NETSPEC_CACHE, or netspec/ under XDG_CACHE_HOME (~/.cache): never inside the user's data folder."""
    if os.environ.get("NETSPEC_CACHE"):
        return Path(os.environ["NETSPEC_CACHE"])
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "netspec"


def _write_cache(path: Path, saved: dict) -> None:
    import io

    from netspec.fileio import atomic_write_bytes

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        buffer = io.BytesIO()
        torch.save(saved, buffer)
        atomic_write_bytes(path, buffer.getvalue())
    except OSError:  # a cache that cannot be written only costs the next run the decoding
        pass


def decode_images(
    paths: list[Path], sample_shape: tuple[int, ...], skip_bad_files: bool = False
) -> list[torch.Tensor | None]:
    """Each file decoded to uint8 sample_shape (None for an unreadable one with skip_bad_files), in threads:
    torchvision's decoders release the GIL."""
    workers = min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(lambda p: decode_image(p, sample_shape, skip_bad_files), paths, chunksize=64))


def decode_image(path: Path, sample_shape: tuple[int, ...], skip_bad_file: bool = False) -> torch.Tensor | None:
    """One image file as uint8 C×H×W: grayscale or RGB as the spec's channels say, the shorter side scaled to
    fit and the center cropped to H×W."""
    from torchvision.io import ImageReadMode, decode_image, read_file
    from torchvision.transforms.v2 import functional as F

    channels, height, width = sample_shape
    try:
        with warnings.catch_warnings():  # torchvision >= 0.29 points at TorchCodec; its decoders still work
            warnings.simplefilter("ignore", DeprecationWarning)
            data = read_file(str(path))
            image = decode_image(data, mode=ImageReadMode.GRAY if channels == 1 else ImageReadMode.RGB)
    except (RuntimeError, OSError, ValueError) as exc:
        if skip_bad_file:
            return None
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BadDataError(
            f"{path}: not a readable image ({reason}); remove or fix it, or pass --skip-bad-files"
        ) from None
    h, w = image.shape[-2:]
    if (h, w) != (height, width):
        s = max(height / h, width / w)
        image = F.resize(image, [max(height, round(h * s)), max(width, round(w * s))], antialias=True)
        image = F.center_crop(image, [height, width])
    return image.contiguous()
