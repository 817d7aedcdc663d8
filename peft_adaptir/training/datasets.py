"""Training-side data plumbing: datasets for a run, the step-addressed item window, and input checks."""

from __future__ import annotations

import difflib
import os
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..backbones.loading import reconstruction
from ..backbones.size_multiple import size_multiple
from ..data.pairs import EvalPairs, PairedFolderPatches, PatchPairs
from ..data.sources import holdout_split, load_image_dataset, load_paired_folders
from .config import TrainingConfig

__all__ = [
    "StepWindow",
    "build_datasets",
    "check_batch",
    "check_data_sources",
    "check_model_fits",
    "looks_like_path",
    "reconstruction",
]

_PATH_PREFIXES = ("/", "./", "../", "~", ".\\", "..\\")


class StepWindow(torch.utils.data.Dataset):
    """Items ``offset ... offset + length - 1`` of ``dataset`` (whose items are pure functions of their index)."""

    def __init__(self, dataset: torch.utils.data.Dataset, offset: int, length: int) -> None:
        self.dataset, self.offset, self.length = dataset, offset, length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> Any:
        if not 0 <= index < self.length:
            raise IndexError(f"index {index} out of range for {self.length} items.")
        return self.dataset[self.offset + index]


def looks_like_path(source: str) -> bool:
    """Is ``source`` meant as a local path rather than a Hub dataset id (``name`` or ``user/name``)?

    Yes when it starts like a path (``/``, ``./``, ``../``, ``~``), ends with a separator, has more than one ``/``,
    uses the OS's own separator (Windows), or its first part is an existing local folder (``photos/trian``).
    """
    if source.startswith(_PATH_PREFIXES) or source.endswith(("/", os.sep)) or source.count("/") > 1:
        return True
    if os.sep != "/" and os.sep in source:
        return True
    head, sep, _ = source.partition("/")
    return bool(sep) and Path(head).is_dir()


def _near_folders(path: Path) -> list[str]:
    """Folders next to ``path`` whose names are close to its name (a typo)."""
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        return []
    names = [p.name for p in parent.iterdir() if p.is_dir()]
    return [str(parent / name) for name in difflib.get_close_matches(path.name, names, n=3, cutoff=0.75)]


def check_data_sources(config: TrainingConfig) -> None:
    """FileNotFoundError for a ``data`` / ``degraded_data`` folder that does not exist, before any Hub lookup.

    ``data`` is taken for a local folder (and refused when missing) if it looks like a path (:func:`looks_like_path`)
    or a folder with a close name exists next to it; otherwise it may be a Hub dataset id.
    """
    for option, source in (("--data", config.data), ("--degraded-data", config.degraded_data)):
        if source is None or (option == "--data" and source == "skimage"):
            continue
        path = Path(source).expanduser()
        if path.is_dir():
            continue
        if path.exists():
            raise FileNotFoundError(f"{option} {source}: this is a file; give the folder that holds the images.")
        near = _near_folders(path)
        if option == "--degraded-data" or looks_like_path(source) or near:
            hint = f" Did you mean {' or '.join(near)}?" if near else ""
            raise FileNotFoundError(
                f"{option} {source}: folder not found (looked for {path.absolute()}).{hint} A Hub dataset id looks "
                "like 'user/name', with no other separators."
            )


def _warn_once(calls: list) -> list:
    """Run each ``(function, args, kwargs)``; their warnings are re-issued once per distinct message."""
    results, seen = [], {}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for function, args, kwargs in calls:
            results.append(function(*args, **kwargs))
    for warning in caught:
        seen.setdefault((warning.category, str(warning.message)), warning)
    for warning in seen.values():
        warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
    return results


def build_datasets(
    config: TrainingConfig, multiple: int, start_step: int, num_processes: int
) -> tuple[StepWindow, torch.utils.data.Dataset]:
    """(training items for steps ``start_step + 1 ... config.steps``, validation pairs cropped to ``multiple``).

    Training items are ``(degraded, clean)`` of ``(3, P, P)``; validation items ``(degraded, clean, name)``.
    """
    per_step = config.batch_size * config.grad_accum * num_processes
    total = config.steps * per_step
    if config.degraded_data is not None:
        pairs = load_paired_folders(config.degraded_data, config.data)
        train_pairs = holdout_split(pairs, "train", config.holdout_fraction)
        val_pairs = holdout_split(pairs, "validation", config.holdout_fraction)
        items = PairedFolderPatches(train_pairs, config.patch_size, seed=config.seed, length=total)
        val_set = EvalPairs(val_pairs, None, seed=config.seed, crop=config.val_crop, multiple=multiple)
    else:
        kwargs = {"image_column": config.image_column, "holdout_fraction": config.holdout_fraction}
        # both splits read the same files, so a warning about one bad image would come twice
        train_images, val_images = _warn_once(
            [(load_image_dataset, (config.data, split), kwargs) for split in ("train", "validation")]
        )
        items = PatchPairs(train_images, config.task, config.patch_size, seed=config.seed, length=total)
        val_set = EvalPairs(val_images, config.task, seed=config.seed, crop=config.val_crop, multiple=multiple)
    return StepWindow(items, start_step * per_step, total - start_step * per_step), val_set


def check_model_fits(model: nn.Module, patch_size: int) -> int:
    """The model's size multiple (``backbones.size_multiple``); errors unless it restores at scale 1 and
    ``patch_size`` is a multiple of it. Runs one patch through the model (eval mode, no gradients) to check."""
    config = getattr(model, "config", None)
    multiple = size_multiple(model)
    upscale = getattr(config, "upscale", 1)
    if upscale != 1:
        raise ValueError(
            f"The base model upscales by {upscale}; AdaptIR training here needs a scale-1 restorer (output the size "
            "of the input, e.g. Swin2SR with upscale=1, upsampler=''), since all tasks degrade at the same size."
        )
    if patch_size % multiple:
        raise ValueError(f"patch_size={patch_size} must be a multiple of the model's window size {multiple}.")
    was_training = model.training
    model.eval()
    probe = torch.rand(1, 3, patch_size, patch_size, generator=torch.Generator().manual_seed(0))
    device = next(model.parameters()).device
    with torch.no_grad():
        out = reconstruction(model(probe.to(device)))
    model.train(was_training)
    if out.shape != probe.shape:
        raise ValueError(
            f"The base model maps a {tuple(probe.shape)} input to {tuple(out.shape)}; training needs a scale-1 "
            "restorer whose output has the input's size."
        )
    return multiple


def check_batch(degraded: torch.Tensor, clean: torch.Tensor, step: int) -> None:
    """Clear errors for non-finite or mismatched ``(B, 3, P, P)`` training batches."""
    for name, batch in (("degraded input", degraded), ("clean target", clean)):
        if not torch.isfinite(batch).all():
            bad = int((~torch.isfinite(batch)).flatten(1).any(dim=1).sum())
            raise ValueError(
                f"Non-finite values (NaN or inf) in the {name} batch of step {step} ({bad} of {len(batch)} patches). "
                "Check the images and the degradation: inputs must be finite, in [0, 1]."
            )
    if degraded.shape != clean.shape:
        raise ValueError(f"Degraded {tuple(degraded.shape)} and clean {tuple(clean.shape)} batches differ in shape.")
