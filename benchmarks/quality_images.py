"""The three disjoint image sets of the quality study: training, validation (learning-rate choice), evaluation.

* **training**: scikit-image's training photos (rocket, motorcycle left/right, hubble, immunohistochemistry) with
  their rightmost ``HOLDOUT_STRIP`` columns cut off; random patches come only from what is left.
* **validation** (chooses each method's learning rate; never reported as a result): 128 x 128 crops from those
  right-hand strips, which no training patch ever covers (the motorcycle stereo pair loses the strip in both views;
  the crops come from the left view).
* **evaluation** (the reported numbers; no training run and no learning-rate choice ever sees them): the 12 crops
  of scikit-image's held-out photos (astronaut 2 x 2, coffee 2 x 3, chelsea 1 x 2 grid cells, the centre
  ``EVAL_CROP`` x ``EVAL_CROP`` of each cell), plus, when Debian's ``opencv-doc`` package is installed
  (``apt-get install opencv-doc``: photos under ``/usr/share/doc/opencv-doc/examples/data``), the centre crop of
  each of its natural colour photos in ``OPENCV_PHOTOS``. Without it the set is the 12 scikit-image crops alone, and a
  note says so. Each item carries its source photo (``group``), so intervals can resample whole photos.

Tensors are ``(3, H, W)`` float32 in [0, 1].
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from peft_adaptir.data.sources import SKIMAGE_HELDOUT, SKIMAGE_TRAIN, pil_to_tensor

HOLDOUT_STRIP = 128  # right-hand columns of every training photo kept for validation
VAL_CROP = 128
EVAL_CROP = 128
OPENCV_DIR = Path("/usr/share/doc/opencv-doc/examples/data")
# natural colour photos of opencv-doc (no drawings, renderings, charts, text or faces of real people)
OPENCV_PHOTOS = ("baboon.jpg", "fruits.jpg", "building.jpg", "butterfly.jpg", "home.jpg", "orange.jpg", "apple.jpg",
                 "aero3.jpg", "aloeL.jpg", "leuvenA.jpg", "squirrel_cls.jpg", "smarties.png", "stuff.jpg",
                 "board.jpg")  # fmt: skip
SKIMAGE_GRID = {"astronaut": (2, 2), "coffee": (2, 3), "chelsea": (1, 2)}  # rows x columns of evaluation cells
OPENCV_HINT = (
    "Debian's opencv-doc photos are not installed: the evaluation set is the 12 scikit-image crops only. For the "
    "documented set: `sudo apt-get install opencv-doc` (photos under /usr/share/doc/opencv-doc/examples/data)."
)


@dataclass(frozen=True)
class Item:
    """One image of a set: ``name`` (unique), ``group`` (its source photo), ``image`` (3, H, W) in [0, 1]."""

    name: str
    group: str
    image: torch.Tensor


def _skimage(name: str) -> torch.Tensor:
    import skimage.data

    if name.startswith("motorcycle"):
        left, right, _ = skimage.data.stereo_motorcycle()
        array = left if name == "motorcycle_left" else right
    else:
        array = getattr(skimage.data, name)()
    return pil_to_tensor(Image.fromarray(array))


def _centre(image: torch.Tensor, top: int, left: int, height: int, width: int, size: int) -> torch.Tensor:
    """Centre ``size`` x ``size`` crop (a multiple of 8) of the ``height x width`` cell at ``(top, left)``."""
    h, w = min(size, height) // 8 * 8, min(size, width) // 8 * 8
    t, l = top + (height - h) // 2, left + (width - w) // 2  # noqa: E741
    return image[:, t : t + h, l : l + w].contiguous()


@functools.cache
def training_images() -> tuple[torch.Tensor, ...]:
    """The training photos without their validation strip."""
    return tuple(_skimage(n)[:, :, :-HOLDOUT_STRIP].contiguous() for n in SKIMAGE_TRAIN)


@functools.cache
def validation_items(crop: int = VAL_CROP) -> tuple[Item, ...]:
    """Two crops (upper and lower half) of each training photo's held-out strip; motorcycle: the left view only."""
    items = []
    for name in (n for n in SKIMAGE_TRAIN if n != "motorcycle_right"):
        image = _skimage(name)
        h, w = image.shape[-2:]
        strip = w - HOLDOUT_STRIP
        for half in range(2):
            cell = _centre(image, half * h // 2, strip, h // 2, HOLDOUT_STRIP, crop)
            items.append(Item(f"{name}/strip{half}", name, cell))
    return tuple(items)


@functools.cache
def evaluation_items(
    use_opencv: bool = True, crop: int = EVAL_CROP, opencv_dir: str = str(OPENCV_DIR)
) -> tuple[Item, ...]:
    """The evaluation set (module docstring); ``use_opencv=False`` or a missing folder: scikit-image crops only."""
    assert set(SKIMAGE_GRID) == set(SKIMAGE_HELDOUT)
    items = []
    for name, (rows, cols) in SKIMAGE_GRID.items():
        image = _skimage(name)
        h, w = image.shape[-2:]
        for r in range(rows):
            for c in range(cols):
                cell = _centre(image, r * h // rows, c * w // cols, h // rows, w // cols, crop)
                items.append(Item(f"{name}/r{r}c{c}", name, cell))
    folder = Path(opencv_dir)
    if use_opencv and folder.is_dir():
        for file in OPENCV_PHOTOS:
            if (folder / file).is_file():
                with Image.open(folder / file) as photo:
                    image = pil_to_tensor(photo)
                h, w = image.shape[-2:]
                items.append(Item(f"opencv/{file}", f"opencv/{file}", _centre(image, 0, 0, h, w, crop)))
    return tuple(items)


def opencv_available(opencv_dir: str | Path = OPENCV_DIR) -> bool:
    """Whether any of the opencv-doc photos is installed."""
    return any((Path(opencv_dir) / f).is_file() for f in OPENCV_PHOTOS)


def set_id(items: tuple[Item, ...]) -> str:
    """A short fingerprint of a set (names and pixels), so results of different sets are never mixed."""
    digest = hashlib.sha1()
    for item in items:
        digest.update(item.name.encode())
        digest.update((item.image * 255).round().to(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:12]
