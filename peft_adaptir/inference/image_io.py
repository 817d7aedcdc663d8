"""Convert user images (PIL, numpy, torch, lists of them) to float tensors and back to the kind given.

Accepted inputs and the conventions kept on the way back:

- ``PIL.Image.Image``: modes ``RGB``, ``RGBA``, ``L``, ``LA`` are kept; ``1`` becomes ``L``; ``P``/``PA`` become
  ``RGBA`` when they carry transparency, else ``RGB``; other 8-bit modes (``CMYK``, ``YCbCr``, ...) become ``RGB``.
  16-bit modes (``I;16``, and ``I`` holding values in 0..65535) are read as 16-bit (divided by 65535) and come back
  as ``I;16``; ``F`` (float) is refused: pass a float numpy array instead.
- ``numpy.ndarray``: channels-last ``(H, W)``, ``(H, W, C)`` or a batch ``(B, H, W, C)`` with C in 1 (grey),
  2 (grey + alpha), 3 (RGB), 4 (RGBA); dtype ``uint8`` (0..255), ``uint16`` (0..65535) or float in [0, 1].
- ``torch.Tensor``: channels-first ``(C, H, W)`` or ``(B, C, H, W)``, same C meanings, float in [0, 1];
  returned with the same dtype and device.
- a ``list``/``tuple`` of any of these (sizes may differ): a list comes back.

Greyscale is replicated to RGB for the model and the restored RGB is averaged back to one channel.
Alpha is carried through unchanged (bilinearly resized when the model upscales). Restored values are clamped
to [0, 1] and, for integer dtypes, rounded.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

# Float inputs may overshoot [0, 1] by this much (rounding, earlier restorations) before they are refused.
_RANGE_SLACK = 1e-3
_CHANNEL_MEANINGS = "1 (grey), 2 (grey + alpha), 3 (RGB) or 4 (RGBA)"
_INT_MAX = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}
_KEPT_PIL_MODES = ("RGB", "RGBA", "L", "LA")


@dataclass
class ImageItem:
    """One image in the form the restorer works on.

    ``rgb`` is (3, H, W) float32 in [0, 1] on the CPU; ``alpha`` is (1, H, W) or None; ``channels`` is the
    channel count the caller used (1, 2, 3 or 4); ``label`` names the image in error messages.
    """

    rgb: torch.Tensor
    alpha: torch.Tensor | None
    channels: int
    label: str


Rebuild = Callable[[list[torch.Tensor]], Any]


def to_items(images: Any) -> tuple[list[ImageItem], Rebuild]:
    """Split ``images`` into items; the returned function turns restored (C, sH, sW) tensors back into that kind."""
    if isinstance(images, (list, tuple)):
        items: list[ImageItem] = []
        parts: list[tuple[int, Rebuild]] = []
        for i, image in enumerate(images):
            if isinstance(image, (list, tuple)):
                raise TypeError(f"images[{i}] is a {type(image).__name__}: nested lists are not supported.")
            sub_items, sub_rebuild = _single_to_items(image, f"images[{i}]")
            items += sub_items
            parts.append((len(sub_items), sub_rebuild))

        def rebuild_list(outputs: list[torch.Tensor]) -> list[Any]:
            result, start = [], 0
            for count, sub_rebuild in parts:
                result.append(sub_rebuild(outputs[start : start + count]))
                start += count
            return result

        return items, rebuild_list
    return _single_to_items(images, "images")


def merge_channels(item: ImageItem, rgb: torch.Tensor) -> torch.Tensor:
    """Restored (3, sH, sW) RGB plus the item's alpha -> (C, sH, sW) float32 in [0, 1] in the caller's channels."""
    out = rgb.float().clamp(0.0, 1.0)
    if item.channels in (1, 2):
        out = out.mean(dim=0, keepdim=True)
    if item.alpha is not None:
        alpha = item.alpha
        if alpha.shape[-2:] != out.shape[-2:]:
            alpha = F.interpolate(alpha[None], size=out.shape[-2:], mode="bilinear", align_corners=False)[0]
        out = torch.cat([out, alpha.clamp(0.0, 1.0)], dim=0)
    return out


def _single_to_items(image: Any, label: str) -> tuple[list[ImageItem], Rebuild]:
    if isinstance(image, Image.Image):
        return _pil_to_items(image, label)
    if isinstance(image, np.ndarray):
        return _numpy_to_items(image, label)
    if isinstance(image, torch.Tensor):
        return _tensor_to_items(image, label)
    raise TypeError(
        f"{label} is a {type(image).__name__}; expected a PIL image, a numpy array (H, W, C), "
        "a torch tensor (C, H, W) or (B, C, H, W), or a list of these."
    )


def _pil_to_items(image: Image.Image, label: str) -> tuple[list[ImageItem], Rebuild]:
    if image.mode == "F":
        raise ValueError(
            f"{label} is a PIL image in 'F' (32-bit float) mode; pass it as a float numpy array in [0, 1] instead, "
            "e.g. np.asarray(img, dtype=np.float32) scaled to [0, 1]."
        )
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N"):
        values = np.asarray(image)
        if values.min() < 0 or values.max() > 65535:
            raise ValueError(
                f"{label} is a PIL image in {image.mode!r} mode with values beyond 0..65535; pass it as a float "
                "numpy array in [0, 1] instead."
            )
        array = values.astype(np.uint16)  # 16-bit grey: scaled by 65535, never clipped to 8 bits
    else:
        if image.mode not in _KEPT_PIL_MODES:
            if image.mode == "1":
                image = image.convert("L")
            elif image.mode in ("P", "PA"):
                has_alpha = image.mode == "PA" or "transparency" in image.info
                image = image.convert("RGBA" if has_alpha else "RGB")
            else:
                image = image.convert("RGB")
        array = np.asarray(image)
    items, rebuild_array = _numpy_to_items(array, label)

    def rebuild(outputs: list[torch.Tensor]) -> Image.Image:
        return Image.fromarray(rebuild_array(outputs))

    return items, rebuild


def _numpy_to_items(array: np.ndarray, label: str) -> tuple[list[ImageItem], Rebuild]:
    dtype = array.dtype
    if dtype not in _INT_MAX and dtype.kind != "f":
        raise TypeError(f"{label} has dtype {dtype}; numpy images must be uint8, uint16 or float in [0, 1].")
    squeeze_channel = array.ndim == 2
    if squeeze_channel:
        array = array[..., None]
    is_batch = array.ndim == 4
    if array.ndim not in (3, 4) or array.shape[-1] not in (1, 2, 3, 4):
        hint = ""
        if array.ndim in (3, 4) and array.shape[-3] in (1, 3, 4):
            hint = " It looks channels-first: numpy images are channels-last, use array.transpose(1, 2, 0)."
        raise ValueError(
            f"{label} has shape {tuple(array.shape)}; numpy images must be (H, W), (H, W, C) or (B, H, W, C) "
            f"with C = {_CHANNEL_MEANINGS}.{hint}"
        )
    scale = _INT_MAX.get(dtype, 1.0)
    tensor = torch.from_numpy(np.ascontiguousarray(array).astype(np.float32)).permute(
        *range(array.ndim - 3), -1, -3, -2
    )
    tensor = tensor / scale
    batch = tensor if is_batch else tensor[None]
    items = [
        _make_item(x, f"{label}[{b}]" if is_batch else label, check_range=dtype.kind == "f")
        for b, x in enumerate(batch)
    ]

    def rebuild(outputs: list[torch.Tensor]) -> np.ndarray:
        arrays = []
        for out in outputs:
            values = out.permute(1, 2, 0).numpy()  # (sH, sW, C)
            if dtype in _INT_MAX:
                values = np.round(values * scale)
            arrays.append(values.astype(dtype))
        result = np.stack(arrays) if is_batch else arrays[0]
        return result[..., 0] if squeeze_channel else result

    return items, rebuild


def _tensor_to_items(tensor: torch.Tensor, label: str) -> tuple[list[ImageItem], Rebuild]:
    if not tensor.is_floating_point():
        raise TypeError(
            f"{label} is a {tensor.dtype} tensor; tensors must be float in [0, 1] (e.g. tensor.float() / 255)."
        )
    if tensor.ndim not in (3, 4) or tensor.shape[-3] not in (1, 2, 3, 4):
        hint = ""
        if tensor.ndim in (3, 4) and tensor.shape[-1] in (1, 3, 4):
            hint = " It looks channels-last: tensors are channels-first, use tensor.permute(2, 0, 1)."
        raise ValueError(
            f"{label} has shape {tuple(tensor.shape)}; tensors must be (C, H, W) or (B, C, H, W) "
            f"with C = {_CHANNEL_MEANINGS}.{hint}"
        )
    is_batch = tensor.ndim == 4
    dtype, device = tensor.dtype, tensor.device
    batch = tensor.detach().to("cpu", torch.float32)
    batch = batch if is_batch else batch[None]
    items = [_make_item(x, f"{label}[{b}]" if is_batch else label, check_range=True) for b, x in enumerate(batch)]

    def rebuild(outputs: list[torch.Tensor]) -> torch.Tensor:
        result = torch.stack(outputs) if is_batch else outputs[0]
        return result.to(device=device, dtype=dtype)

    return items, rebuild


def _make_item(image: torch.Tensor, label: str, check_range: bool) -> ImageItem:
    """(C, H, W) float32 -> ImageItem, refusing NaN/inf and (for float inputs) values outside [0, 1]."""
    if image.shape[-2] == 0 or image.shape[-1] == 0:
        raise ValueError(f"{label} is empty (shape {tuple(image.shape)}).")
    if not torch.isfinite(image).all():
        raise ValueError(f"{label} contains NaN or infinite values; clean it (e.g. torch.nan_to_num) first.")
    if check_range:
        low, high = image.min().item(), image.max().item()
        if low < -_RANGE_SLACK or high > 1.0 + _RANGE_SLACK:
            raise ValueError(
                f"{label} has float values in [{low:.4g}, {high:.4g}]; float images must be in [0, 1] "
                "(divide 8-bit data by 255)."
            )
        image = image.clamp(0.0, 1.0)
    channels = image.shape[0]
    colour = image[:1].expand(3, -1, -1) if channels in (1, 2) else image[:3]
    alpha = image[-1:] if channels in (2, 4) else None
    return ImageItem(rgb=colour.contiguous(), alpha=alpha, channels=channels, label=label)
