"""Reading the demo's uploads: every file checked before any work, with a message a person can act on.

Uploads are image files of at most :data:`MAX_FILE_BYTES` bytes and :data:`MAX_PIXELS` pixels (both stated in the
page). Grey (``L``), grey + alpha (``LA``) and ``RGBA`` images are kept as they are (the restorer works on their
colour and passes alpha through); palette, CMYK and 1-bit images become RGB or RGBA; 16-bit images become 8-bit.
EXIF orientation is applied, as image viewers do.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..metrics import calculate_psnr

__all__ = ["MAX_FILE_BYTES", "MAX_PIXELS", "UploadError", "read_upload", "parse_tasks", "psnr_against"]

MAX_PIXELS = 2048 * 2048
"""Largest image accepted (width x height): about 4.2 megapixels, 2048 x 2048."""
MAX_FILE_BYTES = 25 * 1024 * 1024
"""Largest upload accepted: 25 MiB."""
_KEPT_MODES = ("RGB", "RGBA", "L", "LA")


class UploadError(ValueError):
    """An upload the demo cannot use; the message names the file, the problem and what to do."""


def read_upload(
    path: str | os.PathLike, *, max_pixels: int = MAX_PIXELS, max_bytes: int = MAX_FILE_BYTES
) -> Image.Image:
    """The image in ``path`` as a loaded PIL image of mode RGB, RGBA, L or LA; :class:`UploadError` if unusable."""
    path = Path(path)
    name = path.name
    size = path.stat().st_size
    if size > max_bytes:
        raise UploadError(f"{name} is {size / 2**20:.1f} MiB; the demo accepts files up to {max_bytes / 2**20:g} MiB.")
    try:
        with Image.open(path) as image:
            width, height = image.size
            if width * height > max_pixels:
                side = int(max_pixels**0.5)
                raise UploadError(
                    f"{name} is {width} x {height} pixels; the demo accepts images up to {max_pixels:,} pixels "
                    f"(e.g. {side} x {side}). Crop or downscale it, or restore it with `peft-adaptir restore` "
                    "(no size limit; large images are tiled)."
                )
            image.load()
            image = ImageOps.exif_transpose(image)
            return _kept_mode(image)
    except UnidentifiedImageError as err:
        raise UploadError(f"{name} is not an image the demo can read; upload a PNG, JPEG, WebP, BMP or TIFF.") from err
    except Image.DecompressionBombError as err:
        raise UploadError(f"{name} declares an enormous size ({err}); the demo refuses it.") from err
    except (OSError, SyntaxError, ValueError) as err:
        if isinstance(err, UploadError):
            raise
        raise UploadError(f"{name} could not be decoded ({err}); the file may be truncated or damaged.") from err


def _kept_mode(image: Image.Image) -> Image.Image:
    """RGB, RGBA, L or LA: other modes converted (16-bit scaled to 8-bit, palette by its transparency)."""
    if image.mode in _KEPT_MODES:
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        values = np.asarray(image, dtype=np.float64)  # 16-bit grey (PNG): 0..65535
        return Image.fromarray(np.clip(values / 257.0 + 0.5, 0, 255).astype(np.uint8), mode="L")
    if image.mode == "1":
        return image.convert("L")
    has_alpha = "A" in image.getbands() or "transparency" in image.info
    return image.convert("RGBA" if has_alpha else "RGB")


def parse_tasks(text: str, count: int, default: str) -> list[str]:
    """One task per image from ``text`` ("derain, auto, , denoise": a blank keeps ``default``); ``default`` for all
    when ``text`` is blank. :class:`UploadError` when more tasks than images are given."""
    if not text or not text.strip():
        return [default] * count
    given = [part.strip() for part in text.split(",")]
    if len(given) > count:
        raise UploadError(
            f"{len(given)} tasks were given for {count} image(s); write one task per image, separated by commas."
        )
    given += [""] * (count - len(given))
    return [task or default for task in given]


def psnr_against(result: Image.Image, reference: Image.Image, name: str) -> float:
    """PSNR in dB of ``result`` against the clean ``reference`` on their colour channels (alpha ignored), 0-255."""
    if result.size != reference.size:
        raise UploadError(
            f"The reference {name} is {reference.size[0]} x {reference.size[1]} but the result is "
            f"{result.size[0]} x {result.size[1]}; upload the clean image at the result's size."
        )
    grey = result.mode in ("L", "LA") and reference.mode in ("L", "LA")
    mode = "L" if grey else "RGB"
    pred = np.asarray(result.convert(mode), dtype=np.float64) / 255.0
    target = np.asarray(reference.convert(mode), dtype=np.float64) / 255.0
    return float(calculate_psnr(pred, target))
