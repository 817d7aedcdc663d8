"""Image files: what counts as one, reading it as an image viewer shows it, and writing results without loss.

:func:`read_image` returns ``(H, W, C)`` ``uint8`` or ``uint16`` pixels (C: 1 grey, 2 grey + alpha, 3 RGB, 4 RGBA)
with the EXIF orientation applied, so a phone photo comes back upright. 16-bit files stay 16-bit: grey PNG/TIFF
through Pillow, colour TIFF through tifffile, colour PNG through pypng (``pip install peft-adaptir[images16]``; Pillow
alone would read it as 8-bit, so without pypng such a file is refused, never silently truncated).
:func:`write_image` writes a PNG at the array's bit depth. A file that cannot be read raises
:class:`UnreadableImageError` naming it.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

__all__ = ["IMAGE_EXTENSIONS", "UnreadableImageError", "read_image", "write_image"]

IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_EXIF_ORIENTATION = 0x0112
_SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N")
_PYPNG_HINT = "install pypng to keep its 16 bits (pip install 'peft-adaptir[images16]')"


class UnreadableImageError(ValueError):
    """An image file that is empty, truncated, not an image, or in a form this package does not read."""


def _png_header(path: Path) -> tuple[int, int] | None:
    """(bit depth, colour type) of a PNG file, None for other files."""
    with open(path, "rb") as file:
        head = file.read(26)
    if len(head) < 26 or not head.startswith(_PNG_SIGNATURE):
        return None
    return head[24], head[25]


def _orient(pixels: np.ndarray, orientation: int) -> np.ndarray:
    """Apply EXIF orientation 1..8 to (H, W, C) pixels, as ``ImageOps.exif_transpose`` does."""
    transforms = {
        2: lambda a: a[:, ::-1],
        3: lambda a: a[::-1, ::-1],
        4: lambda a: a[::-1],
        5: lambda a: a.transpose(1, 0, 2),
        6: lambda a: np.rot90(a, -1),
        7: lambda a: a[::-1, ::-1].transpose(1, 0, 2),
        8: lambda a: np.rot90(a, 1),
    }
    transform = transforms.get(orientation)
    return pixels if transform is None else np.ascontiguousarray(transform(pixels))


def _read_png16(path: Path, orientation: int) -> np.ndarray:
    try:
        import png  # pypng: Pillow has no 16-bit colour mode
    except ImportError as err:
        raise UnreadableImageError(
            f"{path} is a 16-bit colour PNG; Pillow would read it as 8-bit, so it is refused: {_PYPNG_HINT}, or "
            "convert it to 8-bit first."
        ) from err
    width, height, rows, info = png.Reader(filename=os.fspath(path)).asDirect()
    pixels = np.vstack([np.asarray(row, dtype=np.uint16) for row in rows]).reshape(height, width, info["planes"])
    return _orient(pixels, orientation)


def _tiff_is_deep_colour(image: Image.Image) -> bool:
    bits = getattr(image, "tag_v2", {}).get(258)  # BitsPerSample, one per sample
    return isinstance(bits, tuple) and len(bits) > 1 and max(bits) > 8


def _pil_pixels(image: Image.Image, path: Path) -> np.ndarray:
    """(H, W, C) uint8/uint16 from an (already upright) PIL image."""
    if image.mode in _SIXTEEN_BIT_MODES:
        return np.asarray(image).astype(np.uint16)[..., None]
    if image.mode == "I":
        values = np.asarray(image)
        if values.min() < 0 or values.max() > 65535:
            raise UnreadableImageError(f"{path} holds 32-bit integers beyond the 16-bit range; convert it first.")
        return values.astype(np.uint16)[..., None]
    if image.mode == "F":
        raise UnreadableImageError(
            f"{path} is a 32-bit float image; restore it through the Python API as a float array in [0, 1]."
        )
    if image.mode == "1":
        image = image.convert("L")
    elif image.mode in ("P", "PA"):
        image = image.convert("RGBA" if image.mode == "PA" or "transparency" in image.info else "RGB")
    elif image.mode not in ("RGB", "RGBA", "L", "LA"):
        image = image.convert("RGB")
    pixels = np.asarray(image)
    return pixels if pixels.ndim == 3 else pixels[..., None]


def read_image(path: str | os.PathLike) -> np.ndarray:
    """The image at ``path`` as (H, W, C) uint8 or uint16 pixels, upright (EXIF orientation applied)."""
    path = Path(path)
    if path.stat().st_size == 0:
        raise UnreadableImageError(f"{path} is empty (0 bytes).")
    try:
        header = _png_header(path)
        with Image.open(path) as image:
            orientation = image.getexif().get(_EXIF_ORIENTATION, 1)
            if header is not None and header[0] == 16 and header[1] in (2, 4, 6):  # 16-bit colour or grey + alpha
                return _read_png16(path, orientation)
            if _tiff_is_deep_colour(image):
                import tifffile  # installed with scikit-image

                pixels = tifffile.imread(path)
                return _orient(pixels if pixels.ndim == 3 else pixels[..., None], orientation)
            upright = ImageOps.exif_transpose(image)  # also decodes: a truncated file fails here
            return _pil_pixels(upright, path)
    except UnreadableImageError:
        raise
    except Exception as err:  # Pillow raises OSError, SyntaxError, ValueError, ... for bad files
        raise UnreadableImageError(f"Cannot read {path}: {err} (a truncated, corrupt or non-image file).") from err


def write_image(path: str | os.PathLike, pixels: np.ndarray) -> None:
    """Write (H, W, C) uint8 or uint16 pixels (C 1-4) to a PNG file at that bit depth."""
    path = Path(path)
    channels = pixels.shape[-1]
    if pixels.dtype == np.uint8:
        Image.fromarray(pixels[..., 0] if channels == 1 else pixels).save(path, format="PNG")
    elif channels == 1:
        Image.fromarray(pixels[..., 0].astype(np.uint16)).save(path, format="PNG")  # mode I;16
    else:
        try:
            import png
        except ImportError as err:
            raise ValueError(f"Writing {path} as a 16-bit colour PNG needs pypng: {_PYPNG_HINT}.") from err
        height, width = pixels.shape[:2]
        writer = png.Writer(width, height, greyscale=channels < 3, alpha=channels in (2, 4), bitdepth=16)
        with open(path, "wb") as file:
            writer.write(file, pixels.reshape(height, width * channels))
