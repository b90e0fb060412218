"""Image folders, with torchvision's ImageFolder conventions: a class is a subfolder (classes in sorted order),
images are the files with torchvision's image extensions.

Two layouts: PATH/train, PATH/val (or valid, validation), PATH/test, each holding the class folders (as
Ultralytics and timm read them), or PATH holding the class folders only (then netspec makes the splits).

Every image's header is read first (an image of more pixels than PIL's limit is refused undecoded: a decompression
bomb), then it is decoded once, with torchvision.io where it can (JPEG, PNG, WebP, GIF) and PIL otherwise (BMP,
TIFF, PPM, CMYK JPEG, 16-bit PNG), converted to the spec's channels (grayscale or RGB), and resized to the spec's
input size: the shorter side is scaled to fit, then the center is cropped (torchvision's Resize + CenterCrop, as
ImageNet evaluation does), so the aspect ratio is kept. Each conversion is said once, in the data's notes. The
result is one uint8 tensor, saved in a cache file keyed by every file's path, size and modification time, so a
second run does not decode again and a changed file is decoded anew. Links are followed, but a folder is never
entered twice and a file reached twice is read once.
"""

from __future__ import annotations

import hashlib
import io
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple

import torch

from netspec.data.base import SPLIT_NAMES, SPLITS, UNASSIGNED, Examples, Pool
from netspec.errors import BadDataError

CACHE_VERSION = 2  # 2: each image's stored channels and size (for the conversion notes)


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
    """{class name: its image files, sorted}, classes sorted as ImageFolder sorts them. Links are followed, but
    never into a folder the walk has already been through (a link loop is read once)."""
    if not folder.is_dir():
        raise BadDataError(f"{folder}: no such folder")
    extensions = image_extensions()
    classes = sorted(e.name for e in os.scandir(folder) if e.is_dir() and not (skip_hidden and e.name.startswith(".")))
    if not classes:
        raise BadDataError(
            f"{folder}: no class folders; put each class's images in a subfolder named after the class "
            "(or train/, val/ and test/ folders that hold them)"
        )
    files = {}
    for name in classes:
        found, others = walk_images(folder / name, extensions)
        if not found:
            if others:
                shown = ", ".join(str(p.relative_to(folder / name)) for p in others[:3])
                raise BadDataError(
                    f"{folder / name}: no images in this class folder: its {len(others)} file(s) ({shown}"
                    f"{', ...' if len(others) > 3 else ''}) have none of the image extensions {', '.join(extensions)}"
                )
            raise BadDataError(f"{folder / name}: an empty class folder (no {', '.join(extensions)} files)")
        files[name] = found
    return files


def walk_images(top: Path, extensions: tuple[str, ...]) -> tuple[list[Path], list[Path]]:
    """(image files, other files) below `top`, sorted; each real folder is entered once, so a link loop ends."""
    seen: set[str] = set()
    images: list[Path] = []
    others: list[Path] = []

    def unreadable(exc: OSError) -> None:
        raise BadDataError(f"{exc.filename}: cannot read this folder ({exc.strerror})")

    for dirpath, dirnames, names in os.walk(top, followlinks=True, onerror=unreadable):
        real = os.path.realpath(dirpath)
        if real in seen:
            dirnames[:] = []
            continue
        seen.add(real)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for f in names:
            if f.startswith("."):
                continue
            (images if f.lower().endswith(extensions) else others).append(Path(dirpath) / f)
    return sorted(images), sorted(others)


def read_folder(
    root: str | Path, sample_shape: tuple[int, ...], skip_bad_files: bool = False, cache: bool = True
) -> Pool:
    """Every image under `root`, decoded and sized for `sample_shape` (C×H×W), with its class and given split.
    A file reached twice (through links) is read once: the same image is never in two splits."""
    root = Path(root)
    if not root.exists():
        raise BadDataError(f"{root}: no such folder")
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
    entries = []
    real_files: set[str] = set()
    twice = 0
    for split, files in per_split.items():  # the order of earlier versions: a run's split.json holds indices
        for label, name in enumerate(classes):
            for path in files[name]:
                real = os.path.realpath(path)
                if real in real_files:
                    twice += 1
                    continue
                real_files.add(real)
                entries.append((path, label, SPLITS.index(split) if split else UNASSIGNED))
    stamp = [(str(p), *_size_and_time(p)) for p, _, _ in entries]
    key = hashlib.sha256(repr((CACHE_VERSION, str(root.resolve()), sample_shape, skip_bad_files, stamp)).encode())
    cache_file = cache_dir() / "folders" / f"{key.hexdigest()[:32]}.pt"
    if cache and cache_file.exists():
        try:
            saved = torch.load(cache_file, weights_only=True)
            return _pool(saved, classes, root, sample_shape, twice)
        except Exception:  # a damaged cache file is decoded again
            pass
    decoded = decode_images([p for p, _, _ in entries], sample_shape, skip_bad_files)
    keep = [i for i, d in enumerate(decoded) if d.image is not None]
    if not keep:
        first = next(d.error for d in decoded if d.error)
        raise BadDataError(f"{root}: none of its {len(entries)} images could be read ({entries[0][0]}: {first})")
    saved = {
        "inputs": torch.stack([decoded[i].image for i in keep]),  # type: ignore[misc]
        "labels": torch.tensor([entries[i][1] for i in keep], dtype=torch.long),
        "given": torch.tensor([entries[i][2] for i in keep], dtype=torch.int8),
        "ids": [str(entries[i][0].relative_to(root)) for i in keep],
        "sources": torch.tensor([decoded[i].source for i in keep], dtype=torch.int64).view(len(keep), 3),
        "skipped": [str(e[0].relative_to(root)) for e, d in zip(entries, decoded, strict=True) if d.image is None],
        "reasons": [str(d.error) for d in decoded if d.image is None],
    }
    if cache:
        _write_cache(cache_file, saved)
    return _pool(saved, classes, root, sample_shape, twice)


def _pool(saved: dict, classes: tuple[str, ...], root: Path, sample_shape: tuple[int, ...], twice: int = 0) -> Pool:
    notes = []
    if saved["skipped"]:
        shown = ", ".join(
            f"{name} ({reason})" for name, reason in zip(saved["skipped"][:3], saved["reasons"][:3], strict=True)
        )
        more = ", ..." if len(saved["skipped"]) > 3 else ""
        notes.append(f"skipped {len(saved['skipped'])} unreadable image(s) under {root}: {shown}{more}")
    if twice:
        notes.append(f"{twice} file(s) under {root} reached again through links were read once")
    notes += conversion_notes(saved["sources"].tolist(), list(saved["ids"]), sample_shape, "the spec's input")
    return Pool(Examples(saved["inputs"], saved["labels"]), classes, saved["given"], list(saved["ids"]), notes)


def _size_and_time(path: Path) -> tuple[int, int]:
    try:
        stat = path.stat()
    except OSError:  # a broken link: decoding says so (or skips it)
        stat = path.lstat()
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


class Decoded(NamedTuple):
    """One file decoded: the image (None if unreadable), its channels, height and width as stored (channels 1 for
    grayscale, 3 for colour: RGB, RGBA, palette, CMYK), and why it could not be read."""

    image: torch.Tensor | None
    source: tuple[int, int, int] = (0, 0, 0)
    error: str | None = None


def decode_images(
    paths: list[Path], sample_shape: tuple[int, ...], skip_bad_files: bool = False, policy: str = "crop"
) -> list[Decoded]:
    """Each file decoded to uint8 sample_shape, in threads: torchvision's decoders release the GIL. An unreadable
    file stops with a located BadDataError, or with `skip_bad_files` gives a Decoded without an image."""
    workers = min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(lambda p: _decode_checked(p, sample_shape, skip_bad_files, policy), paths, chunksize=64))


def _decode_checked(path: Path, sample_shape: tuple[int, ...], skip_bad_file: bool, policy: str) -> Decoded:
    try:
        return read_image(path, sample_shape, policy)
    except UnreadableImage as exc:
        if skip_bad_file:
            return Decoded(None, error=str(exc))
        raise BadDataError(f"{path}: {exc}; remove or fix it, or pass --skip-bad-files") from None


class UnreadableImage(Exception):
    """Why a file is not an image netspec can use (a reason, without the file's name)."""


def decode_image(
    path: Path, sample_shape: tuple[int, ...], skip_bad_file: bool = False, policy: str = "crop"
) -> torch.Tensor | None:
    """One image file as uint8 C×H×W: grayscale or RGB as the spec's channels say, sized by `policy` (crop: the
    shorter side scaled to fit and the center cropped to H×W; pad: the longer side scaled to fit and the rest
    padded with black; stretch: scaled to H×W)."""
    return _decode_checked(Path(path), sample_shape, skip_bad_file, policy).image


def read_image(path: Path, sample_shape: tuple[int, ...], policy: str = "crop") -> Decoded:
    """`decode_image`'s work, raising UnreadableImage. The header is read first: an image of more pixels than
    PIL's MAX_IMAGE_PIXELS (a decompression bomb) is refused before decoding. torchvision.io decodes what it can
    (JPEG, PNG, WebP, GIF); PIL the rest of the formats ImageFolder accepts (BMP, TIFF, PPM/PGM, CMYK JPEG)."""
    from PIL import Image, UnidentifiedImageError

    channels, height, width = sample_shape
    if not path.exists():
        if path.is_symlink():
            raise UnreadableImage(f"a broken link (to {os.readlink(path)}, which does not exist)")
        raise UnreadableImage("no such file")
    if not path.is_file():  # a FIFO or a device would block or never end
        raise UnreadableImage("not a regular file")
    try:
        data = path.read_bytes()  # read once: the header check and the decoder both read these bytes
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as im:
                w, h = im.size
                mode = im.mode
                if mode == "P":  # a palette of grays only is a grayscale image
                    palette = im.getpalette() or []
                    rgb = zip(palette[0::3], palette[1::3], palette[2::3], strict=False)
                    mode = "L" if all(r == g == b for r, g, b in rgb) else mode
    except Image.DecompressionBombError:
        w, h = _png_size(path)
        raise UnreadableImage(_too_large(w, h)) from None
    except UnidentifiedImageError:
        raise UnreadableImage("not a readable image (in no format that PIL or torchvision reads)") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise UnreadableImage(f"not a readable image ({_first_line(exc)})") from None
    if w * h > MAX_PIXELS:
        raise UnreadableImage(_too_large(w, h))
    source = (1 if mode in GRAY_MODES else 3, h, w)
    image = _decode_torchvision(data, channels)
    if image is None:
        image = _decode_pil(data, channels)
    if image.dim() == 4:  # an animated GIF: its first frame, as PIL reads it
        image = image[0]
    from torchvision.transforms.v2 import functional as F

    if image.dtype != torch.uint8:  # a 16-bit PNG
        image = F.to_dtype(image, torch.uint8, scale=True)
    if image.shape[0] != channels:  # a decoder that ignores the mode asked for (GIF)
        image = image[:3] if image.shape[0] >= 3 else image[:1].expand(3, -1, -1)
        image = F.rgb_to_grayscale(image) if channels == 1 else image
    return Decoded(fit(image, height, width, policy), source)


MAX_PIXELS = 89_478_485  # PIL's Image.MAX_IMAGE_PIXELS: more, and an image may be a decompression bomb
GRAY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"}
RESIZE_POLICIES = ("crop", "pad", "stretch")


def _too_large(w: int, h: int) -> str:
    size = f"{w}×{h} pixels ({w * h:,})" if w and h else "an image"
    return f"{size}, more than the limit of {MAX_PIXELS:,} pixels (a decompression bomb?); not decoded"


def _png_size(path: Path) -> tuple[int, int]:
    with open(path, "rb") as fh:
        head = fh.read(24)
    if head[:8] == b"\x89PNG\r\n\x1a\n" and len(head) == 24:
        return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
    return 0, 0


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__


def _decode_torchvision(data: bytes, channels: int) -> torch.Tensor | None:
    try:
        with warnings.catch_warnings():  # torchvision >= 0.29 points at TorchCodec; its decoders still work
            warnings.simplefilter("ignore", DeprecationWarning)
            from torchvision.io import ImageReadMode, decode_image

            webp = data[:4] == b"RIFF"  # WebP has no grayscale: converted after decoding
            encoded = torch.frombuffer(bytearray(data), dtype=torch.uint8)
            return decode_image(encoded, mode=ImageReadMode.GRAY if channels == 1 and not webp else ImageReadMode.RGB)
    except (RuntimeError, OSError, ValueError):
        return None


def _decode_pil(data: bytes, channels: int) -> torch.Tensor:
    import numpy as np
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            if im.mode.startswith("I") or im.mode == "F":  # 16- or 32-bit grayscale: to 8 bits
                values = np.asarray(im, dtype=np.float64)
                top = 65535.0 if im.mode.startswith("I") and values.max(initial=0) > 255 else 255.0
                im = Image.fromarray(np.clip(values / top * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
            im = im.convert("L" if channels == 1 else "RGB")
            array = np.asarray(im, dtype=np.uint8)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise UnreadableImage(f"not a readable image ({_first_line(exc)})") from None
    tensor = torch.from_numpy(array.copy())
    return tensor.unsqueeze(0) if tensor.dim() == 2 else tensor.permute(2, 0, 1)


def fit(image: torch.Tensor, height: int, width: int, policy: str = "crop") -> torch.Tensor:
    """`image` (C×h×w) sized to height×width: crop (shorter side scaled, centre cropped), pad (longer side scaled,
    black borders) or stretch."""
    from torchvision.transforms.v2 import functional as F

    h, w = image.shape[-2:]
    if (h, w) == (height, width):
        return image.contiguous()
    if policy == "stretch":
        return F.resize(image, [height, width], antialias=True).contiguous()
    if policy == "crop" and max(h / w, w / h) > 64 * max(height / width, width / height):
        # An extreme aspect ratio (1×50,000,000 is under the pixel limit): crop to the output's aspect first, so
        # that scaling the shorter side up never makes a huge image.
        if w / h > width / height:
            keep = max(1, round(h * width / height))
            image = image[..., :, (w - keep) // 2 : (w - keep) // 2 + keep]
        else:
            keep = max(1, round(w * height / width))
            image = image[..., (h - keep) // 2 : (h - keep) // 2 + keep, :]
        h, w = image.shape[-2:]
    s = max(height / h, width / w) if policy == "crop" else min(height / h, width / w)
    if policy == "crop":
        size = [max(height, round(h * s)), max(width, round(w * s))]
    else:
        size = [max(1, min(height, round(h * s))), max(1, min(width, round(w * s)))]
    image = F.resize(image, size, antialias=True)
    if policy == "crop":
        return F.center_crop(image, [height, width]).contiguous()
    top, left = (height - size[0]) // 2, (width - size[1]) // 2
    return F.pad(image, [left, top, width - size[1] - left, height - size[0] - top], fill=0).contiguous()


def kept_fraction(h: int, w: int, height: int, width: int) -> float:
    """How much of an h×w image a centre crop to the aspect ratio of height×width keeps (1.0: all of it)."""
    if not (h and w):
        return 1.0
    ratio = (h / w) / (height / width)
    return min(ratio, 1 / ratio)


def conversion_notes(
    sources: list[list[int]] | list[tuple[int, int, int]],
    ids: list[str],
    sample_shape: tuple[int, ...],
    what: str,
    policy: str = "crop",
    hint: str = "",
) -> list[str]:
    """One line per kind of conversion the images went through (channels, size, a crop that cuts much off)."""
    channels, height, width = sample_shape
    notes = []
    to_gray = sum(1 for c, _, _ in sources if c == 3 and channels == 1)
    to_rgb = sum(1 for c, _, _ in sources if c == 1 and channels == 3)
    if to_gray:
        notes.append(f"converted {to_gray} colour image(s) to grayscale: {what} has 1 channel")
    if to_rgb:
        notes.append(f"converted {to_rgb} grayscale image(s) to RGB: {what} has 3 channels")
    sizes: dict[tuple[int, int], int] = {}
    for _, h, w in sources:
        if (h, w) != (height, width):
            sizes[(w, h)] = sizes.get((w, h), 0) + 1
    if sizes:
        shown = ", ".join(f"{w}×{h}" for w, h in sorted(sizes, key=lambda k: -sizes[k])[:3])
        how = {
            "crop": "the shorter side scaled to fit, the centre cropped",
            "pad": "the longer side scaled to fit, black borders added",
            "stretch": "stretched",
        }[policy]
        notes.append(
            f"resized {sum(sizes.values())} image(s) to {width}×{height} ({how}; "
            f"from {shown}{', ...' if len(sizes) > 3 else ''})"
        )
    if policy == "crop":
        cut = [(i, h, w) for i, (_, h, w) in zip(ids, sources, strict=True) if kept_fraction(h, w, height, width) < 0.75]
        if cut:
            name, h, w = cut[0]
            side = "width" if w / h > width / height else "height"
            notes.append(
                f"warning: the centre crop cuts off much of {len(cut)} image(s) whose shape differs from "
                f"{width}×{height} (e.g. {name}, {w}×{h}: {kept_fraction(h, w, height, width):.0%} of its {side} "
                f"kept); the object may be cut{hint}"
            )
    return notes
