"""Torch datasets of (degraded, clean) pairs for training and validation, reproducible from seeds.

Training item ``index`` of epoch ``epoch`` is a function of ``(seed, epoch, index)`` alone: the image
(``index % n_images``), the crop position, one of the 8 flips/rotations and the degradation's randomness all come
from one generator seeded with that triple. A run is therefore reproducible and resumable at any step, whatever the
number of workers or processes. Call :meth:`PatchPairs.set_epoch` each epoch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import datasets
import numpy as np
import torch
from PIL import Image

from .degradations import get_task
from .sources import pil_to_tensor

__all__ = ["PatchPairs", "PairedFolderPatches", "EvalPairs", "dihedral", "mix_seed"]

_Degradation = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


def mix_seed(*values: int) -> int:
    """A 63-bit seed from integers (``numpy.random.SeedSequence``): distinct tuples give unrelated streams."""
    return int(np.random.SeedSequence([int(v) for v in values]).generate_state(2, np.uint64)[0] >> np.uint64(1))


def dihedral(image: torch.Tensor, k: int) -> torch.Tensor:
    """The ``k``-th (0-7) of the 8 flips/rotations of ``(..., H, W)``: rotate by ``k % 4`` quarter turns, then flip
    left-right if ``k >= 4``; ``k = 0`` is the identity."""
    out = torch.rot90(image, k % 4, dims=(-2, -1))
    return out.flip(-1) if k >= 4 else out


def _as_tensors(images: datasets.Dataset | Sequence, column: str) -> tuple[list[torch.Tensor], list[str]]:
    """Images (a Dataset with ``column`` and optional ``name``, or PIL / (3, H, W) tensors) -> uint8 tensors."""
    if isinstance(images, datasets.Dataset):
        names = list(images["name"]) if "name" in images.column_names else [str(i) for i in range(len(images))]
        images = list(images[column])
    else:
        names = [str(i) for i in range(len(images))]
    tensors = []
    for image in images:
        tensor = pil_to_tensor(image) if isinstance(image, Image.Image) else image
        if not isinstance(tensor, torch.Tensor) or tensor.dim() != 3 or tensor.shape[0] != 3:
            raise TypeError(f"Expected PIL images or (3, H, W) tensors in [0, 1], got {type(image).__name__}.")
        tensors.append((tensor.clamp(0, 1) * 255).round().to(torch.uint8))  # compact cache, exact for 8-bit photos
    if not tensors:
        raise ValueError("No images given.")
    return tensors, list(names)


def _check_size(tensors: list[torch.Tensor], names: list[str], patch_size: int) -> None:
    small = [f"{n} ({t.shape[1]}x{t.shape[2]})" for t, n in zip(tensors, names) if min(t.shape[1:]) < patch_size]
    if small:
        raise ValueError(
            f"Images smaller than patch_size={patch_size}: {', '.join(small)}. Use a smaller patch_size or drop them."
        )


def _crop_and_flip(
    images: Sequence[torch.Tensor], patch_size: int, augment: bool, generator: torch.Generator
) -> list[torch.Tensor]:
    """The same random ``patch_size`` crop (and flip/rotation) of equally sized ``(3, H, W)`` images."""
    h, w = images[0].shape[-2:]
    top = int(torch.randint(0, h - patch_size + 1, (), generator=generator))
    left = int(torch.randint(0, w - patch_size + 1, (), generator=generator))
    k = int(torch.randint(0, 8, (), generator=generator)) if augment else 0
    return [dihedral(im[:, top : top + patch_size, left : left + patch_size], k) for im in images]


class _SeededPatches(torch.utils.data.Dataset):
    """Items drawn from ``(seed, epoch, index)`` alone, so runs are reproducible and resumable."""

    seed: int
    length: int
    epoch: int = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch: items differ between epochs, deterministically."""
        self.epoch = epoch

    def __len__(self) -> int:
        return self.length

    def _generator(self, index: int) -> torch.Generator:
        if not 0 <= index < self.length:
            raise IndexError(f"index {index} out of range for {self.length} items.")
        return torch.Generator().manual_seed(mix_seed(self.seed, self.epoch, index))


class PatchPairs(_SeededPatches):
    """Training pairs ``(degraded, clean)``, each ``(3, P, P)`` float32 in [0, 1], degraded on the fly.

    ``images``: a Dataset with an ``image_column`` (see :func:`peft_adaptir.data.load_image_dataset`) or a list of PIL
    images / ``(3, H, W)`` tensors, decoded once and cached in memory as uint8. ``task``: a preset name or a
    degradation. ``length``: items per epoch (default: the number of images); item ``i`` uses image ``i % n``.
    Images smaller than ``patch_size`` raise a ``ValueError`` naming them.
    """

    def __init__(
        self,
        images: datasets.Dataset | Sequence,
        task: str | _Degradation,
        patch_size: int = 48,
        seed: int = 0,
        length: int | None = None,
        augment: bool = True,
        image_column: str = "image",
    ) -> None:
        if patch_size < 1:
            raise ValueError(f"patch_size must be >= 1, got {patch_size}.")
        self.images, self.names = _as_tensors(images, image_column)
        _check_size(self.images, self.names, patch_size)
        self.degradation = get_task(task) if isinstance(task, str) else task
        self.patch_size, self.seed, self.augment = patch_size, seed, augment
        self.length = len(self.images) if length is None else length

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        generator = self._generator(index)
        (patch,) = _crop_and_flip([self.images[index % len(self.images)]], self.patch_size, self.augment, generator)
        clean = (patch.float() / 255.0).contiguous()  # crop the uint8 photo first: only the patch is converted
        return self.degradation(clean, generator), clean


class PairedFolderPatches(_SeededPatches):
    """Training pairs from real degraded / clean photos (:func:`peft_adaptir.data.load_paired_folders`).

    The same crop and flip/rotation on both images of a pair, from ``(seed, epoch, index)``; both must have the same
    size (scale-1 restoration). Returns ``(degraded, clean)``, each ``(3, P, P)`` float32 in [0, 1].
    """

    def __init__(
        self,
        pairs: datasets.Dataset,
        patch_size: int = 48,
        seed: int = 0,
        length: int | None = None,
        augment: bool = True,
    ) -> None:
        self.degraded, names = _as_tensors(pairs, "degraded")
        self.clean, _ = _as_tensors(pairs, "clean")
        mismatched = [n for n, d, c in zip(names, self.degraded, self.clean) if d.shape != c.shape]
        if mismatched:
            raise ValueError(f"Degraded and clean sizes differ for: {', '.join(mismatched)}.")
        _check_size(self.clean, names, patch_size)
        self.names, self.patch_size, self.seed, self.augment = names, patch_size, seed, augment
        self.length = len(self.clean) if length is None else length

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        generator = self._generator(index)
        i = index % len(self.clean)
        degraded, clean = _crop_and_flip([self.degraded[i], self.clean[i]], self.patch_size, self.augment, generator)
        return degraded.float() / 255.0, clean.float() / 255.0


class EvalPairs(torch.utils.data.Dataset):
    """Validation pairs ``(degraded, clean, name)`` of fixed images, degraded with fixed seeds, computed once.

    Each image is centre-cropped to ``crop`` x ``crop`` (if given; clamped to the image) and then to a multiple of
    ``multiple`` (8 by default, for window-based models). Image ``i`` is degraded with seed ``mix_seed(seed, i)``.
    Tensors are ``(3, H, W)`` float32 in [0, 1]; sizes may differ between images (use ``batch_size=1``).
    ``pairs`` may instead be a paired Dataset (columns ``degraded`` and ``clean``) with ``task=None``.
    """

    def __init__(
        self,
        images: datasets.Dataset | Sequence,
        task: str | _Degradation | None,
        seed: int = 0,
        crop: int | None = None,
        multiple: int = 8,
        image_column: str = "image",
    ) -> None:
        paired = isinstance(images, datasets.Dataset) and {"degraded", "clean"} <= set(images.column_names)
        if paired != (task is None):
            raise ValueError("Give task=None exactly when images is a paired Dataset (degraded and clean columns).")
        clean, self.names = _as_tensors(images, "clean" if paired else image_column)
        degraded = _as_tensors(images, "degraded")[0] if paired else [None] * len(clean)
        degradation = get_task(task) if isinstance(task, str) else task
        self.items = []
        for i, (name, image, given) in enumerate(zip(self.names, clean, degraded)):
            h, w = image.shape[-2:]
            th, tw = (min(crop, h), min(crop, w)) if crop else (h, w)
            th, tw = th - th % multiple, tw - tw % multiple
            if th == 0 or tw == 0:
                raise ValueError(f"Image {name} ({h}x{w}) is smaller than multiple={multiple}.")
            top, left = (h - th) // 2, (w - tw) // 2
            target = image[:, top : top + th, left : left + tw].float() / 255.0
            if given is None:
                inp = degradation(target.contiguous(), torch.Generator().manual_seed(mix_seed(seed, i)))
            else:
                inp = given[:, top : top + th, left : left + tw].float() / 255.0
            self.items.append((inp, target))

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, str]:
        degraded, clean = self.items[index]
        return degraded, clean, self.names[index]
