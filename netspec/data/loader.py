"""Batches on the training device.

For small images the per-sample PIL/ToTensor work of a DataLoader dominates the epoch. Here a split is one tensor
(uint8 images or float32 rows), moved to the device once; each epoch is shuffled, sliced into batches, normalized
and augmented there, in whole batches (as airbench does: no DataLoader workers).
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch

from netspec.config import Augment
from netspec.data.base import DataInfo, Examples
from netspec.data.segmentation import IGNORED


def _share(n: int, rank: int, world: int) -> slice:
    """Rank's contiguous share of n items (the first n % world ranks get one more)."""
    base, extra = divmod(n, world)
    start = rank * base + min(rank, extra)
    return slice(start, start + base + (1 if rank < extra else 0))


class DeviceLoader:
    """Batches of one split, normalized (and augmented) on `device`.

    The order of epoch `e` depends only on (seed, e), so a run resumed mid-epoch
    sees exactly the batches it would have seen.
    """

    def __init__(
        self,
        data: Examples,
        info: DataInfo,
        batch_size: int,
        device: torch.device,
        *,
        shuffle: bool = False,
        augment: Augment | bool | None = None,
        seed: int = 0,
        channels_last: bool = False,
        resize_to: tuple[int, ...] | None = None,
        shard: tuple[int, int] = (0, 1),
    ) -> None:
        # (rank, world) of a distributed run: the test split is cut into one contiguous share per rank;
        # the training split keeps the whole epoch order and each rank takes its share of every batch.
        self.rank, self.world = shard
        if self.world > 1 and not shuffle:
            part = _share(len(data.labels), self.rank, self.world)
            data = Examples(data.inputs[part], data.labels[part])
        self.images = data.inputs.to(device)
        self.resize_to = resize_to
        self.labels = data.labels.to(device)
        self.batch_size = batch_size
        self.device = device
        self.shuffle = shuffle
        self.augment = Augment.of(augment) if isinstance(augment, bool) else augment
        self.seed = seed
        self.channels_last = channels_last and self.images.dim() == 4
        view = (-1, *([1] * (self.images.dim() - 2)))  # per channel, broadcast over the rest
        std = torch.tensor(info.std, device=device).view(view)
        mean = torch.tensor(info.mean, device=device).view(view)
        self.scale = 1.0 / (info.scale * std)  # x/255 (images) normalized in one multiply-add
        self.shift = -mean / std

    def __len__(self) -> int:
        return math.ceil(len(self.labels) / self.batch_size)

    @property
    def num_examples(self) -> int:
        return len(self.labels)

    def _epoch_seed(self, epoch: int) -> int:
        return self.seed * 1_000_003 + epoch

    def order(self, epoch: int) -> torch.Tensor:
        if not self.shuffle:
            return torch.arange(len(self.labels), device=self.device)
        gen = torch.Generator().manual_seed(self._epoch_seed(epoch) % 2**64)  # any seed up to 2**63 - 1
        return torch.randperm(len(self.labels), generator=gen).to(self.device)

    def batches(self, epoch: int = 0, start: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Batches of `epoch`, beginning with batch number `start`."""
        order = self.order(epoch)
        for b in range(start, len(self)):
            yield self._batch(order[b * self.batch_size : (b + 1) * self.batch_size], epoch, b)

    def shard_batches(self, epoch: int = 0, start: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor, float]]:
        """This rank's share of each global batch of `epoch`, with the weight that turns the share's summed
        loss into its part of the global batch's mean (world / global size; 0 for a stand-in example when
        a short last batch leaves this rank nothing, so that every rank still takes part in the step)."""
        order = self.order(epoch)
        for b in range(start, len(self)):
            idx = order[b * self.batch_size : (b + 1) * self.batch_size]
            mine = idx[_share(len(idx), self.rank, self.world)]
            if len(mine):
                yield (*self._batch(mine, epoch, b), self.world / len(idx))
            else:
                yield (*self._batch(idx[:1], epoch, b), 0.0)

    def _batch(self, idx: torch.Tensor, epoch: int, b: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.addcmul(self.shift, self.images[idx].float(), self.scale)
        y = self.labels[idx]
        if self.augment is not None:
            x, y = self._augment(x, y, epoch, b)
        if self.resize_to is not None:  # per batch: a resized dataset would not fit in memory
            x = torch.nn.functional.interpolate(x, size=self.resize_to, mode="bilinear", align_corners=False)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, y

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return self.batches()

    def _augment(
        self, x: torch.Tensor, y: torch.Tensor, epoch: int, batch: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The spec's augmentation of a whole batch: random crop (zero padding), horizontal flip, cutout
        (a random square set to zero, the normalized mean). Seeded by (seed, epoch, batch): a resumed run
        sees the same batches. Masks (y of N×H×W, segmentation) get the same crop and flip, their padding
        IGNORED (no class is known there); cutout leaves them as they are: the hidden pixels still show their
        class, which the network learns to infer from the context around them."""
        aug = self.augment
        assert aug is not None
        n, c, h, w = x.shape
        gen = torch.Generator().manual_seed((self._epoch_seed(epoch) * 100_003 + batch) % 2**64)
        pad = aug.crop.padding if aug.crop is not None else 0
        dy, dx = (torch.randint(0, 2 * pad + 1, (2, n), generator=gen)).to(x.device)
        flip = (torch.rand(n, generator=gen) < 0.5).to(x.device) if aug.flip else None
        if pad or flip is not None:
            padded = torch.nn.functional.pad(x, (pad, pad, pad, pad)) if pad else x
            rows = (dy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]
            cols = dx[:, None] + torch.arange(w, device=x.device)
            if flip is not None:
                cols = torch.where(flip[:, None], cols.flip(1), cols)
            batch_idx = torch.arange(n, device=x.device)[:, None, None, None]
            chan_idx = torch.arange(c, device=x.device)[None, :, None, None]
            x = padded[batch_idx, chan_idx, rows, cols[:, None, None, :]]
            if y.dim() == 3:
                y = torch.nn.functional.pad(y, (pad, pad, pad, pad), value=IGNORED) if pad else y
                y = y[batch_idx[:, 0], rows[:, 0], cols[:, None, :]]
        if aug.cutout:
            size = min(aug.cutout, h, w)
            top = torch.randint(0, h - size + 1, (n,), generator=gen).to(x.device)
            left = torch.randint(0, w - size + 1, (n,), generator=gen).to(x.device)
            ys = torch.arange(h, device=x.device)[None, :, None]
            xs = torch.arange(w, device=x.device)[None, None, :]
            inside = (ys >= top[:, None, None]) & (ys < top[:, None, None] + size)
            inside = inside & (xs >= left[:, None, None]) & (xs < left[:, None, None] + size)
            x = x.masked_fill(inside[:, None], 0.0)
        return x, y
