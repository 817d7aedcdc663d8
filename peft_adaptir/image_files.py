"""What counts as an image file, for folders of training data and of images to restore."""

from __future__ import annotations

__all__ = ["IMAGE_EXTENSIONS"]

IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
