"""Clean (and paired) image data as ``datasets.Dataset`` objects with an ``image`` (PIL) and a ``name`` column.

Sources for :func:`load_image_dataset`:

* ``None`` or ``"skimage"`` (the offline default): the colour natural photos bundled with scikit-image, with a FIXED
  split. Held out (``split="validation"``, never used for training): ``astronaut``, ``chelsea``, ``coffee``.
  Training (``split="train"``): ``rocket``, ``motorcycle_left``, ``motorcycle_right`` (a stereo pair: both on the
  same side so no scene leaks across), ``hubble_deep_field``, ``immunohistochemistry``. ``split="all"``: all eight.
  Left out: ``cat`` (the same photo as ``chelsea``), ``retina`` (a fundus scan, mostly black) and the synthetic
  ``colorwheel`` / ``logo``.
* an existing local folder: the ``imagefolder`` builder. Sub-folders ``train/`` / ``validation/`` (or ``test/``)
  give the splits; a folder without them is all ``train``, and a held-out split is then carved out of it by
  :func:`holdout_split` (fixed by file name, not by order or seed).
* anything else: a Hugging Face Hub dataset id, ``datasets.load_dataset(source, split=split)``; the image column is
  the first ``datasets.Image`` column unless ``image_column`` names it.

Corrupt images (unreadable or truncated files) are reported by file name in a warning and skipped; if no valid
image remains, a ``ValueError`` is raised. Every image is decoded once at load time for this check.

:func:`load_paired_folders` matches ``degraded/`` and ``clean/`` files by name for real degradations.
"""

from __future__ import annotations

import hashlib
import io
import math
import os
import warnings
from pathlib import Path

import datasets
import numpy as np
import torch
from PIL import Image

from ..image_files import IMAGE_EXTENSIONS

__all__ = [
    "SKIMAGE_TRAIN",
    "SKIMAGE_HELDOUT",
    "IMAGE_EXTENSIONS",
    "load_image_dataset",
    "load_skimage_photos",
    "load_paired_folders",
    "holdout_split",
    "pil_to_tensor",
]

SKIMAGE_TRAIN = ("rocket", "motorcycle_left", "motorcycle_right", "hubble_deep_field", "immunohistochemistry")
SKIMAGE_HELDOUT = ("astronaut", "chelsea", "coffee")
_VALIDATION_NAMES = ("validation", "test", "heldout")


def pil_to_tensor(image: Image.Image) -> torch.Tensor:
    """A PIL image -> ``(3, H, W)`` float32 in [0, 1]: 8-bit modes converted to RGB (divided by 255), 16-bit grey
    (``I;16``, or ``I`` within 0..65535) divided by 65535 and repeated to RGB; ``convert("RGB")`` would clip it."""
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        values = np.asarray(image, dtype=np.float64)
        if image.mode == "F" or values.min() < 0 or values.max() > 65535:
            raise ValueError(
                f"A training image in PIL mode {image.mode!r} has values in [{values.min():g}, {values.max():g}]; "
                "only 8-bit images and 16-bit integers (0..65535) are read. Convert it first."
            )
        grey = torch.from_numpy((values / 65535.0).astype(np.float32))
        return grey[None].expand(3, -1, -1).contiguous()
    array = np.asarray(image.convert("RGB"), dtype=np.uint8)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float() / 255.0


def _skimage_photo(name: str) -> np.ndarray:
    import skimage.data

    if name in ("motorcycle_left", "motorcycle_right"):
        left, right, _ = skimage.data.stereo_motorcycle()
        return left if name == "motorcycle_left" else right
    return getattr(skimage.data, name)()


def load_skimage_photos(split: str = "train") -> datasets.Dataset:
    """scikit-image's colour photos (module docstring); ``split``: ``"train"``, ``"validation"`` or ``"all"``."""
    if split == "train":
        names = SKIMAGE_TRAIN
    elif split in _VALIDATION_NAMES:
        names = SKIMAGE_HELDOUT
    elif split == "all":
        names = SKIMAGE_HELDOUT + SKIMAGE_TRAIN
    else:
        raise ValueError(f"Unknown split {split!r} for the scikit-image photos; valid: train, validation, all.")
    images = [Image.fromarray(_skimage_photo(name)).convert("RGB") for name in names]
    features = datasets.Features({"image": datasets.Image(), "name": datasets.Value("string")})
    return datasets.Dataset.from_dict({"image": images, "name": list(names)}, features=features)


def holdout_split(dataset: datasets.Dataset, split: str, fraction: float = 0.1) -> datasets.Dataset:
    """Split ``dataset`` (with a ``name`` column) into a fixed train / held-out pair, returning ``split``.

    The held-out part is the ``ceil(fraction * n)`` names (at least 1, at most n - 1) with the smallest SHA-1
    digests: fixed by file name, independent of order, seed or machine.
    """
    if not 0 < fraction < 1:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}.")
    if len(dataset) < 2:
        raise ValueError(f"Cannot hold out images from a dataset of {len(dataset)} image(s); add more images.")
    names = list(dataset["name"])
    ranked = sorted(range(len(names)), key=lambda i: hashlib.sha1(names[i].encode()).hexdigest())
    count = min(max(1, math.ceil(fraction * len(names))), len(names) - 1)
    heldout = set(ranked[:count])
    keep = [i for i in range(len(names)) if (i in heldout) == (split in _VALIDATION_NAMES)]
    return dataset.select(keep)


def _find_image_column(dataset: datasets.Dataset, image_column: str | None) -> str:
    if image_column is not None:
        if image_column not in dataset.column_names:
            raise ValueError(f"No column {image_column!r}; the dataset has columns {dataset.column_names}.")
        return image_column
    for column, feature in dataset.features.items():
        if isinstance(feature, datasets.Image):
            return column
    raise ValueError(f"No image column found among {dataset.column_names}; pass image_column=... to name it.")


def _readable(item: dict) -> bool:
    try:
        source = io.BytesIO(item["bytes"]) if item.get("bytes") else item["path"]
        with Image.open(source) as image:
            image.load()
        return True
    except Exception:  # PIL raises OSError, SyntaxError, ValueError... for corrupt files
        return False


def _standardise(dataset: datasets.Dataset, image_column: str | None, source: str) -> datasets.Dataset:
    """-> columns ``image`` (decoded PIL) and ``name``; corrupt images reported by name and skipped."""
    column = _find_image_column(dataset, image_column)
    raw = dataset.cast_column(column, datasets.Image(decode=False))
    items = list(raw[column])
    if "name" in raw.column_names:
        names = [str(name) for name in list(raw["name"])]
    else:
        names = [os.path.basename(item["path"]) if item.get("path") else f"{i:06d}" for i, item in enumerate(items)]
    valid = [i for i, item in enumerate(items) if _readable(item)]
    bad = [names[i] for i in range(len(items)) if i not in set(valid)]
    if bad:
        warnings.warn(f"Skipping {len(bad)} unreadable image(s) in {source}: {', '.join(bad)}", stacklevel=3)
    if not valid:
        raise ValueError(f"No readable image in {source} ({len(items)} file(s), all corrupt or unreadable).")
    raw = raw.select(valid).select_columns([column])
    if column != "image":
        raw = raw.rename_column(column, "image")
    return raw.add_column("name", [names[i] for i in valid]).cast_column("image", datasets.Image())


def load_image_dataset(
    source: str | None = None,
    split: str = "train",
    image_column: str | None = None,
    holdout_fraction: float = 0.1,
    cache_dir: str | None = None,
) -> datasets.Dataset:
    """Clean images from ``source`` (see the module docstring) as a Dataset with ``image`` (PIL) and ``name``.

    ``split``: ``"train"`` or ``"validation"`` (also ``"all"`` for the scikit-image photos, or any split name a Hub
    dataset has). ``holdout_fraction``: the share held out of a folder or Hub dataset that has no validation split.
    """
    if source is None or source == "skimage":
        return load_skimage_photos(split)
    if os.path.isdir(source):
        folder = Path(source)
        if not any(p.suffix.lower() in IMAGE_EXTENSIONS for p in folder.rglob("*") if p.is_file()):
            raise ValueError(f"No image files ({', '.join(IMAGE_EXTENSIONS)}) found in folder {source}.")
        splits = datasets.load_dataset("imagefolder", data_dir=source, cache_dir=cache_dir)
    else:
        splits = datasets.load_dataset(source, cache_dir=cache_dir)
    has_heldout = any(name in splits for name in _VALIDATION_NAMES)
    if not has_heldout and "train" in splits and (split == "train" or split in _VALIDATION_NAMES):
        return holdout_split(_standardise(splits["train"], image_column, source), split, holdout_fraction)
    if split in splits:
        return _standardise(splits[split], image_column, f"{source} [{split}]")
    raise ValueError(f"{source} has no split {split!r}; it has {list(splits)}.")


def load_paired_folders(degraded_dir: str | os.PathLike, clean_dir: str | os.PathLike) -> datasets.Dataset:
    """Pairs of real degraded / clean photos matched by file name -> columns ``degraded``, ``clean`` (PIL), ``name``.

    Every file must have a partner of the same name (extension included) in the other folder; otherwise a
    ``ValueError`` lists the unmatched names. Corrupt files are reported by name and their pairs skipped.
    """
    folders = {"degraded": Path(degraded_dir), "clean": Path(clean_dir)}
    files = {}
    for role, folder in folders.items():
        if not folder.is_dir():
            raise ValueError(f"The {role} folder {folder} does not exist or is not a folder.")
        files[role] = {p.name: p for p in sorted(folder.iterdir()) if p.suffix.lower() in IMAGE_EXTENSIONS}
    only_degraded = sorted(set(files["degraded"]) - set(files["clean"]))
    only_clean = sorted(set(files["clean"]) - set(files["degraded"]))
    if only_degraded or only_clean:
        raise ValueError(
            f"Paired folders do not match by file name. In {folders['degraded']} only: {only_degraded or 'none'}; "
            f"in {folders['clean']} only: {only_clean or 'none'}."
        )
    names = sorted(files["clean"])
    if not names:
        raise ValueError(f"No image files ({', '.join(IMAGE_EXTENSIONS)}) in {clean_dir}.")
    bad = [n for n in names if not all(_readable({"path": str(files[r][n])}) for r in files)]
    if bad:
        warnings.warn(f"Skipping {len(bad)} pair(s) with an unreadable image: {', '.join(bad)}", stacklevel=2)
    names = [n for n in names if n not in set(bad)]
    if not names:
        raise ValueError(f"No readable image pair in {degraded_dir} and {clean_dir}.")
    features = datasets.Features(
        {"degraded": datasets.Image(), "clean": datasets.Image(), "name": datasets.Value("string")}
    )
    columns = {role: [str(files[role][n]) for n in names] for role in ("degraded", "clean")}
    return datasets.Dataset.from_dict({**columns, "name": names}, features=features)
