"""PSNR and SSIM as restoration papers compute them (BasicSR's ``calculate_psnr`` / ``calculate_ssim``).

Conventions, as BasicSR: values on the 0-255 scale in float64; ``crop_border`` pixels removed on each side; with
``test_y_channel`` only the BT.601 luma ``Y = 16 + 65.481 R + 128.553 G + 24.966 B`` (R, G, B in [0, 1]; BasicSR's
``rgb2ycbcr(y_only=True)``, the same as scikit-image's ``rgb2ycbcr``) is compared; SSIM uses an 11 x 11 Gaussian
window of sigma 1.5, ``C1 = (0.01 * 255)^2``, ``C2 = (0.03 * 255)^2``, 'valid' filtering (the SSIM map loses 5
pixels on each side) and the mean over channels for RGB. Equal to scikit-image's ``peak_signal_noise_ratio(
data_range=255)`` and ``structural_similarity(gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
data_range=255)`` on the same 0-255 arrays (scikit-image filters with reflect padding and then discards the same
5-pixel border, so the two agree to float rounding).

Inputs are images with values in [0, 1]: a torch tensor ``(3, H, W)`` / ``(H, W)`` or a numpy array ``(H, W, 3)`` /
``(H, W)`` by default (``input_order`` overrides: ``"CHW"`` or ``"HWC"``). BasicSR's validation also rounds the
model output to 8 bits before measuring (``tensor2img``); pass ``quantize=True`` for that. The batch helpers
:func:`psnr_batch` and :func:`ssim_batch` take torch ``(B, 3, H, W)`` in [0, 1] and return one value per image.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch

__all__ = ["calculate_psnr", "calculate_ssim", "psnr_batch", "ssim_batch", "rgb_to_y"]

_Y_WEIGHTS = (65.481, 128.553, 24.966)


def rgb_to_y(images: torch.Tensor) -> torch.Tensor:
    """BT.601 luma of ``(B, 3, H, W)`` RGB in [0, 1] -> ``(B, 1, H, W)`` on the 0-255 scale, in [16, 235]."""
    weights = torch.tensor(_Y_WEIGHTS, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
    return (images * weights).sum(dim=1, keepdim=True) + 16.0


def _prepare(
    pred: torch.Tensor,
    target: torch.Tensor,
    crop_border: int,
    test_y_channel: bool,
    quantize: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Both ``(B, C, H, W)`` in [0, 1] -> float64 on the 0-255 scale (or Y), border cropped."""
    if pred.shape != target.shape:
        raise ValueError(f"Image shapes differ: {tuple(pred.shape)} vs {tuple(target.shape)}.")
    if pred.dim() != 4 or pred.shape[1] not in (1, 3):
        raise ValueError(f"Expected (B, 3, H, W) or (B, 1, H, W) images, got {tuple(pred.shape)}.")
    if crop_border < 0 or 2 * crop_border >= min(pred.shape[-2:]):
        raise ValueError(f"crop_border={crop_border} is negative or empties a {tuple(pred.shape[-2:])} image.")
    pred, target = pred.detach().to(torch.float64), target.detach().to(torch.float64)
    if quantize:
        pred, target = (x.clamp(0, 1).mul(255).round().div(255) for x in (pred, target))
    if test_y_channel:
        if pred.shape[1] != 3:
            raise ValueError("test_y_channel needs RGB images (3 channels).")
        pred, target = rgb_to_y(pred), rgb_to_y(target)
    else:
        pred, target = pred * 255.0, target * 255.0
    if crop_border:
        pred = pred[..., crop_border:-crop_border, crop_border:-crop_border]
        target = target[..., crop_border:-crop_border, crop_border:-crop_border]
    return pred, target


def psnr_batch(
    pred: torch.Tensor,
    target: torch.Tensor,
    crop_border: int = 0,
    test_y_channel: bool = False,
    quantize: bool = False,
) -> torch.Tensor:
    """PSNR in dB of each image of ``(B, 3, H, W)`` in [0, 1] -> ``(B,)`` float64 (``inf`` where identical)."""
    pred, target = _prepare(pred, target, crop_border, test_y_channel, quantize)
    mse = (pred - target).pow(2).mean(dim=(1, 2, 3))
    return 10.0 * torch.log10(255.0**2 / mse)


def _gaussian_filter_valid(images: torch.Tensor) -> torch.Tensor:
    """'Valid' filtering of ``(..., H, W)`` by the 11 x 11 Gaussian window of sigma 1.5 (the outer product of
    ``cv2.getGaussianKernel(11, 1.5)``, summing to 1) -> ``(..., H - 10, W - 10)``.

    Separable, as sums of 11 shifted copies per axis: exact, and much faster in float64 than conv2d on CPU.
    """
    x = torch.arange(11, dtype=torch.float64) - 5
    kernel = torch.exp(-(x**2) / (2 * 1.5**2))
    kernel = (kernel / kernel.sum()).tolist()
    h, w = images.shape[-2:]
    rows = sum(weight * images[..., k : h - 10 + k, :] for k, weight in enumerate(kernel))
    return sum(weight * rows[..., k : w - 10 + k] for k, weight in enumerate(kernel))


def ssim_batch(
    pred: torch.Tensor,
    target: torch.Tensor,
    crop_border: int = 0,
    test_y_channel: bool = False,
    quantize: bool = False,
) -> torch.Tensor:
    """SSIM of each image of ``(B, 3, H, W)`` in [0, 1] (mean over channels) -> ``(B,)`` float64."""
    pred, target = _prepare(pred, target, crop_border, test_y_channel, quantize)
    if min(pred.shape[-2:]) < 11:
        raise ValueError(f"SSIM needs images of at least 11 x 11 after cropping, got {tuple(pred.shape[-2:])}.")
    batch, channels = pred.shape[:2]
    x = pred.reshape(batch * channels, 1, *pred.shape[-2:])
    y = target.reshape(batch * channels, 1, *target.shape[-2:])
    stats = _gaussian_filter_valid(torch.cat([x, y, x * x, y * y, x * y]))  # 'valid': (5 * B * C, 1, H - 10, W - 10)
    mu_x, mu_y, xx, yy, xy = stats.chunk(5)
    var_x, var_y, cov = xx - mu_x**2, yy - mu_y**2, xy - mu_x * mu_y
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return ssim_map.mean(dim=(1, 2, 3)).view(batch, channels).mean(dim=1)


def _to_batch(image: torch.Tensor | np.ndarray, input_order: Literal["HWC", "CHW"] | None) -> torch.Tensor:
    """One image (tensor CHW / numpy HWC by default, or 2-D) -> ``(1, C, H, W)`` float64."""
    is_numpy = isinstance(image, np.ndarray)
    if not is_numpy and not isinstance(image, torch.Tensor):
        raise TypeError(f"Expected a torch tensor or numpy array, got {type(image).__name__}.")
    tensor = torch.from_numpy(np.asarray(image, dtype=np.float64)) if is_numpy else image.detach().double()
    if tensor.dim() == 2:
        return tensor[None, None]
    if tensor.dim() != 3:
        raise ValueError(f"Expected one image (H, W, C), (C, H, W) or (H, W), got shape {tuple(tensor.shape)}.")
    order = input_order or ("HWC" if is_numpy else "CHW")
    if order not in ("HWC", "CHW"):
        raise ValueError(f"input_order must be 'HWC', 'CHW' or None, got {input_order!r}.")
    return (tensor.permute(2, 0, 1) if order == "HWC" else tensor)[None]


def calculate_psnr(
    img: torch.Tensor | np.ndarray,
    img2: torch.Tensor | np.ndarray,
    crop_border: int = 0,
    test_y_channel: bool = False,
    input_order: Literal["HWC", "CHW"] | None = None,
    quantize: bool = False,
) -> float:
    """PSNR (dB) of two images in [0, 1], BasicSR's convention (see the module docstring); ``inf`` if identical."""
    pred, target = _to_batch(img, input_order), _to_batch(img2, input_order)
    value = psnr_batch(pred, target, crop_border, test_y_channel, quantize)
    return float(value.item())


def calculate_ssim(
    img: torch.Tensor | np.ndarray,
    img2: torch.Tensor | np.ndarray,
    crop_border: int = 0,
    test_y_channel: bool = False,
    input_order: Literal["HWC", "CHW"] | None = None,
    quantize: bool = False,
) -> float:
    """SSIM of two images in [0, 1], BasicSR's convention (see the module docstring)."""
    pred, target = _to_batch(img, input_order), _to_batch(img2, input_order)
    value = ssim_batch(pred, target, crop_border, test_y_channel, quantize)
    return float(value.item())
