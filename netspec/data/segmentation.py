"""Segmentation folders: images and their masks, a class index per pixel.

Two layouts, as for class folders (folders.py): PATH/images + PATH/masks, or PATH/train, PATH/val (valid,
validation), PATH/test, each holding an images/ + masks/ pair. An image and its mask share their path below
images/ and masks/ without the extension (images/a/0001.jpg goes with masks/a/0001.png). A mask holds the class
index of each pixel: a grayscale PNG (L, or 16-bit), or a palette PNG as VOC writes them, whose palette INDEX is
the class (its colours are only for people to look at). An optional PATH/classes.txt names the classes, one a
line; without it they are "class 0" to "class K-1", K one more than the largest value in the masks.
`ignore_index` (VOC: 255, its object borders) marks pixels that count in neither the loss nor the metrics.

Images are decoded as folders.py decodes them (the same limits, --skip-bad-files), and both are stretched to the
spec's input size: the image bilinearly, the mask by nearest neighbour (a class index is never blended). Not
cropped, as class folders are: `netspec predict` stretches its prediction back to each input's own size, and
every pixel of the input gets a class. The result (uint8 images, int64 masks (N, H, W)) is cached as folders.py
caches, keyed by every file's path, size and modification time.
"""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path

import numpy as np
import torch

from netspec.data.base import SPLITS, UNASSIGNED, Examples, Pool
from netspec.data.folders import (
    MAX_PIXELS,
    UnreadableImage,
    _first_line,
    _size_and_time,
    _too_large,
    _write_cache,
    cache_dir,
    conversion_notes,
    decode_images,
    image_extensions,
    split_folders,
    walk_images,
)
from netspec.errors import BadDataError

IMAGES, MASKS = "images", "masks"
CLASSES_FILE = "classes.txt"
# The value ignored pixels carry once read: torch's cross_entropy ignores it by default, and the padding of a
# random crop gets it too. A mask's own ignore_index (255 in VOC) becomes this.
IGNORED = -100
CACHE_VERSION = 1


def is_segmentation_folder(root: str | Path) -> bool:
    """Whether `root` is laid out as images/ + masks/ (directly or in its train/ folder)."""
    root = Path(root)
    if not root.is_dir():
        return False
    try:
        top = split_folders(root).get("train", root)
    except BadDataError:
        top = root
    return (top / IMAGES).is_dir() and (top / MASKS).is_dir()


def pairs(folder: Path) -> list[tuple[Path, Path]]:
    """(image, mask) of each image under folder/images, matched by their path without the extension. An image
    without a mask, or a mask without an image, is an error that names the file."""
    images_dir, masks_dir = folder / IMAGES, folder / MASKS
    for part in (images_dir, masks_dir):
        if not part.is_dir():
            raise BadDataError(
                f"{folder}: not a segmentation folder (no {part.name}/ folder); it holds images/ and masks/ "
                "folders (or train/, val/ and test/ folders that hold them)"
            )
    extensions = image_extensions()
    images, _ = walk_images(images_dir, extensions)
    masks, _ = walk_images(masks_dir, extensions)
    if not images:
        raise BadDataError(f"{images_dir}: no images (no {', '.join(extensions)} files)")
    by_stem = {_stem(path, masks_dir): path for path in masks}
    found = []
    for image in images:
        mask = by_stem.pop(_stem(image, images_dir), None)
        if mask is None:
            wanted = masks_dir / image.relative_to(images_dir).with_suffix(".png")
            raise BadDataError(f"{image}: this image has no mask ({wanted} does not exist)")
        found.append((image, mask))
    if by_stem:
        mask = sorted(by_stem.values())[0]
        more = f" (and {len(by_stem) - 1} more)" if len(by_stem) > 1 else ""
        raise BadDataError(f"{mask}: this mask has no image of the same name in {images_dir}{more}")
    return found


def _stem(path: Path, top: Path) -> str:
    return str(path.relative_to(top).with_suffix(""))


def read_mask(path: Path) -> np.ndarray:
    """The class index of each pixel of a mask file (h, w), as int64; raises UnreadableImage. A palette image
    gives its palette indices, a grayscale one its values; a colour one is refused (unless it is gray), since
    its colours would have to be mapped to classes."""
    from PIL import Image, UnidentifiedImageError

    if not path.is_file():
        raise UnreadableImage("no such file" if not path.exists() else "not a regular file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                w, h = im.size
                if w * h > MAX_PIXELS:
                    raise UnreadableImage(_too_large(w, h))
                im.load()
                mode = im.mode
                values = np.asarray(im)
    except Image.DecompressionBombError:
        raise UnreadableImage(_too_large(0, 0)) from None
    except UnidentifiedImageError:
        raise UnreadableImage("not a readable image (in no format that PIL reads)") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise UnreadableImage(f"not a readable image ({_first_line(exc)})") from None
    if values.ndim == 3:
        if mode in ("LA", "PA") or (values[..., :3] == values[..., :1]).all():
            values = values[..., 0]
        else:
            raise UnreadableImage(
                f"a colour ({mode}) mask; a mask holds each pixel's class index: a grayscale (L) or palette (P) PNG"
            )
    return values.astype(np.int64)


def read_classes(root: Path) -> tuple[str, ...] | None:
    """The class names of root/classes.txt (one a line, blank lines skipped), or None without the file."""
    path = root / CLASSES_FILE
    if not path.exists():
        return None
    try:
        names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    except (OSError, UnicodeDecodeError) as exc:
        raise BadDataError(f"{path}: cannot be read ({exc})") from None
    names = [n for n in names if n]
    if len(set(names)) != len(names):
        twice = next(n for n in names if names.count(n) > 1)
        raise BadDataError(f"{path}: names the class {twice!r} twice")
    return tuple(names)


def read_segmentation_folder(
    root: str | Path,
    sample_shape: tuple[int, ...],
    skip_bad_files: bool = False,
    ignore_index: int | None = None,
    cache: bool = True,
) -> Pool:
    """Every image under `root` with its mask, sized for `sample_shape` (C×H×W): a Pool whose labels are the
    masks (N, H, W), int64, with IGNORED where the mask holds `ignore_index`."""
    root = Path(root)
    if not root.is_dir():
        raise BadDataError(f"{root}: no such folder" if not root.exists() else f"{root}: not a folder")
    if len(sample_shape) != 3 or sample_shape[0] not in (1, 3):
        raise BadDataError(
            f"{root} holds images, but the spec's input is {'×'.join(map(str, sample_shape))}; a segmentation "
            "spec's input is [channels, height, width] with 1 (grayscale) or 3 (RGB) channels"
        )
    if not is_segmentation_folder(root):
        raise BadDataError(
            f"{root}: not a segmentation folder; --task segmentation reads images/ and masks/ folders (the same "
            "file names), or train/, val/ and test/ folders that hold them"
        )
    splits = split_folders(root) or {"": root}
    entries = [
        (image, mask, SPLITS.index(split) if split else UNASSIGNED)
        for split, folder in splits.items()
        for image, mask in pairs(folder)
    ]
    stamp = [(str(p), *_size_and_time(p)) for image, mask, _ in entries for p in (image, mask)]
    key = hashlib.sha256(repr((CACHE_VERSION, str(root.resolve()), sample_shape, skip_bad_files, stamp)).encode())
    cache_file = cache_dir() / "segmentation" / f"{key.hexdigest()[:32]}.pt"
    saved = None
    if cache and cache_file.exists():
        try:
            saved = torch.load(cache_file, weights_only=True)
        except Exception:  # a damaged cache file is decoded again
            saved = None
    if saved is None:
        saved = _decode(root, entries, sample_shape, skip_bad_files)
        if cache:
            _write_cache(cache_file, saved)
    return _pool(saved, root, sample_shape, ignore_index)


def _decode(
    root: Path, entries: list[tuple[Path, Path, int]], sample_shape: tuple[int, ...], skip_bad_files: bool
) -> dict:
    """Images (stretched, bilinear) and masks (stretched, nearest), each mask checked against its image."""
    _, height, width = sample_shape
    decoded = decode_images([image for image, _, _ in entries], sample_shape, skip_bad_files, policy="stretch")
    masks: list[torch.Tensor | None] = []
    reasons: list[str | None] = []
    for (image, mask, _), d in zip(entries, decoded, strict=True):
        if d.image is None:
            masks.append(None)
            reasons.append(d.error)
            continue
        try:
            values = read_mask(mask)
        except UnreadableImage as exc:
            if skip_bad_files:
                masks.append(None)
                reasons.append(f"its mask: {exc}")
                continue
            raise BadDataError(f"{mask}: {exc}; remove or fix it, or pass --skip-bad-files") from None
        _, h, w = d.source
        if values.shape != (h, w):
            raise BadDataError(
                f"{mask}: the mask is {values.shape[1]}×{values.shape[0]} pixels but its image {image} is {w}×{h}; "
                "a mask gives the class of each pixel of its image, at the image's size"
            )
        masks.append(resize_mask(torch.from_numpy(values), height, width))
        reasons.append(None)
    keep = [i for i, m in enumerate(masks) if m is not None]
    if not keep:
        raise BadDataError(f"{root}: none of its {len(entries)} images could be read ({entries[0][0]}: {reasons[0]})")
    return {
        "inputs": torch.stack([decoded[i].image for i in keep]),  # type: ignore[misc]
        "labels": torch.stack([masks[i] for i in keep]),  # type: ignore[misc]
        "given": torch.tensor([entries[i][2] for i in keep], dtype=torch.int8),
        "ids": [str(entries[i][0].relative_to(root)) for i in keep],
        "masks": [str(entries[i][1].relative_to(root)) for i in keep],
        "sources": torch.tensor([decoded[i].source for i in keep], dtype=torch.int64).view(len(keep), 3),
        "skipped": [str(e[0].relative_to(root)) for e, m in zip(entries, masks, strict=True) if m is None],
        "reasons": [r for r, m in zip(reasons, masks, strict=True) if m is None],
    }


def resize_mask(mask: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """A (h, w) class-index map stretched to height×width by nearest neighbour (half-pixel centres, as the
    bilinear resize of its image), int64."""
    if tuple(mask.shape) == (height, width):
        return mask.long().contiguous()
    # float32 holds every integer up to 2**24 exactly: any class index (or a 16-bit ignore value)
    resized = torch.nn.functional.interpolate(mask[None, None].float(), size=(height, width), mode="nearest-exact")
    return resized[0, 0].long()


def _pool(saved: dict, root: Path, sample_shape: tuple[int, ...], ignore_index: int | None) -> Pool:
    """The decoded folder as a Pool, its classes named and each mask value checked against them."""
    labels: torch.Tensor = saved["labels"]
    if ignore_index is not None:
        labels = labels.masked_fill(labels == ignore_index, IGNORED)
    named = read_classes(root)
    counted = labels.max().item() + 1 if bool((labels >= 0).any()) else 0
    classes = named if named is not None else tuple(f"class {k}" for k in range(max(counted, 1)))
    wrong = (labels >= len(classes)) | ((labels < 0) & (labels != IGNORED))
    if bool(wrong.any()):
        n, row, col = (int(v) for v in wrong.nonzero()[0])
        value = int(saved["labels"][n, row, col])
        # the row and column of the stored mask, before it was stretched to the spec's input
        _, h, w = saved["sources"][n].tolist()
        where = f"row {row * h // sample_shape[1]}, column {col * w // sample_shape[2]}"
        hint = f"; or set ignore_index: {value} if it marks pixels to leave out" if ignore_index is None else ""
        raise BadDataError(
            f"{root / saved['masks'][n]}: the pixel at {where} has the value {value}, but {root / CLASSES_FILE} "
            f"names {len(classes)} classes (0 to {len(classes) - 1}){hint}"
        )
    notes = []
    if named is None and ignore_index is None and bool((labels == 255).any()) and len(classes) == 256:
        notes.append(
            f"{root}: its masks hold the value 255, so there are 256 classes; if 255 marks pixels to leave out "
            "(VOC's object borders), set ignore_index: 255 (or --ignore-index 255), or name the classes in "
            f"{CLASSES_FILE}"
        )
    if saved["skipped"]:
        shown = ", ".join(
            f"{name} ({reason})" for name, reason in zip(saved["skipped"][:3], saved["reasons"][:3], strict=True)
        )
        more = ", ..." if len(saved["skipped"]) > 3 else ""
        notes.append(f"skipped {len(saved['skipped'])} unreadable image(s) or mask(s) under {root}: {shown}{more}")
    notes += conversion_notes(
        saved["sources"].tolist(), list(saved["ids"]), sample_shape, "the spec's input", policy="stretch"
    )
    return Pool(Examples(saved["inputs"], labels), classes, saved["given"], list(saved["ids"]), notes)


def class_pixels(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Pixels of each class in (N, H, W) masks, ignored pixels left out."""
    flat = labels.flatten()
    return torch.bincount(flat[flat >= 0], minlength=num_classes)


def voc_palette() -> list[int]:
    """PASCAL VOC's colour map (class 0 black, then distinct colours made from the bits of the index), as the
    768 values of a PIL palette: masks written so look as VOC's do, and read back by index."""
    palette = []
    for index in range(256):
        r = g = b = 0
        c = index
        for bit in range(8):
            r |= ((c >> 0) & 1) << (7 - bit)
            g |= ((c >> 1) & 1) << (7 - bit)
            b |= ((c >> 2) & 1) << (7 - bit)
            c >>= 3
        palette += [r, g, b]
    return palette


def write_mask(path: Path, mask: torch.Tensor) -> None:
    """A (h, w) class-index map as a palette PNG (VOC's colours; 16-bit grayscale for more than 256 classes),
    written atomically."""
    import io

    from PIL import Image

    from netspec.fileio import atomic_write_bytes

    values = mask.cpu().numpy()
    if int(values.max(initial=0)) < 256:
        image = Image.fromarray(values.astype(np.uint8), "P")
        image.putpalette(voc_palette())
    else:
        image = Image.fromarray(values.astype(np.uint16))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    atomic_write_bytes(path, buffer.getvalue())
