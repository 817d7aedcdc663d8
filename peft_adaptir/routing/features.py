"""Degradation statistics of an image: what the router looks at.

Fourteen numbers computed on the luma ``Y`` of the image (a centre crop of at most ``max_side``, 384, offsets kept
multiples of 8 so JPEG blocks stay aligned), each chosen for a degradation it separates:

====  ==================================================================  ===================================
 #    statistic                                                           separates
====  ==================================================================  ===================================
 0    mean of Y                                                           low light
 1    log std of Y                                                        low light, contrast
 2    log noise sigma: median |HH| / 0.6745 of the finest Haar diagonal    Gaussian noise (Donoho's estimate)
 3    log ratio of gradient energy at distance 1 to distance 2            up-sampled (smooth) vs noisy
 4    log anisotropy: largest / smallest mean |difference| of 4 directions rain streaks
 5    log tail asymmetry of the high-pass (99th pct / -1st pct)           bright streaks (weakly)
 6    log kurtosis of the high-pass                                       Gaussian noise vs natural edges
 7    share of nearly flat high-pass values (below 0.002)                 JPEG's flat blocks, darkness
 8    log std of the high-pass                                            detail, noise
 9    log mean gradient energy at distance 1                              sharpness
 10   log blockiness across columns (8-pixel borders vs inside)           JPEG
 11   log blockiness across rows                                          JPEG
 12   log median horizontal |difference|                                  noise floor
 13   log 90th percentile horizontal |difference|                         edges, streaks
====  ==================================================================  ===================================

All are global, rotation- and flip-invariant up to the choice of axis pairs, and cheap (a few ms on a 384 px crop);
one decision is made per image, never per tile. The router learns the rest; measured on held-out photos these
statistics route better than the base's pooled shallow features (``pooled-shallow-v2``, 242 numbers) did: 99.8% vs
80.5% of 420 crops with the same training crops, with a twelfth of the parameters (docs/blind.md).
"""

from __future__ import annotations

import hashlib

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["DegradationStatistics", "FEATURE_KIND", "FEATURE_NAMES", "first_convolution", "base_fingerprint"]

FEATURE_KIND = "degradation-statistics-v3"
"""Name of the feature recipe, stored in the router's config: a router only runs on the features it was trained on."""
FEATURE_NAMES = (
    "mean", "log_std", "log_noise_sigma", "log_fine_coarse", "log_anisotropy", "log_tail_asymmetry", "log_kurtosis",
    "flat_share", "log_highpass_std", "log_gradient", "log_block_columns", "log_block_rows", "log_median_dx",
    "log_p90_dx",
)  # fmt: skip
_BLOCK = 8
_DEFAULT_MAX_SIDE = 384
_FLAT = 0.002
_MIN_SIDE = 8
_LUMA = (0.299, 0.587, 0.114)


def first_convolution(model: nn.Module) -> nn.Conv2d:
    """The first ``nn.Conv2d`` taking 3 channels in ``model`` (module order): the base's shallow feature extractor,
    whose weights identify the base (``base_fingerprint``). Works through a peft ``PeftModel`` (AdaptIR adapts the
    FFNs, never this convolution).
    """
    for module in model.modules():
        if isinstance(module, nn.Conv2d) and module.in_channels == 3 and module.groups == 1:
            return module
    raise ValueError(
        f"{type(model).__name__} has no Conv2d with 3 input channels to identify it by; the router "
        "needs a base that starts with a convolution on the RGB image (Swin2SR, SwinIR, HAT, ...)."
    )


def base_fingerprint(model: nn.Module) -> str:
    """A short hash of the first convolution's weights: a router decides between the adapters of one base."""
    weight = first_convolution(model).weight.detach().to("cpu", torch.float32).contiguous()
    return hashlib.sha1(weight.numpy().tobytes()).hexdigest()[:16]


def _log(value: torch.Tensor) -> torch.Tensor:
    return torch.log(value.clamp_min(1e-6))


def _quantile(values: torch.Tensor, q: float) -> torch.Tensor:
    flat = values.flatten()
    return flat.kthvalue(max(1, min(flat.numel(), round(q * flat.numel())))).values


def _centre_crop(image: torch.Tensor, max_side: int) -> torch.Tensor:
    """``(3, H, W)`` cropped to at most ``max_side`` per side, with the offsets rounded to block multiples."""
    h, w = image.shape[-2:]
    top = max(0, (h - max_side) // 2) // _BLOCK * _BLOCK
    left = max(0, (w - max_side) // 2) // _BLOCK * _BLOCK
    return image[:, top : top + max_side, left : left + max_side]


def _blockiness(diff: torch.Tensor, dim: int) -> torch.Tensor:
    """Mean |difference| across 8-pixel block borders over that inside blocks; ``diff``: ``(h, w)`` absolute
    differences along ``dim`` (1: columns, 0: rows)."""
    energy = diff.mean(dim=1 - dim)  # (n,) along the differenced axis
    border = (torch.arange(energy.numel()) % _BLOCK) == _BLOCK - 1  # difference between pixel 8k+7 and 8k+8
    if not border.any() or border.all():
        return energy.new_tensor(1.0)
    return energy[border].mean() / energy[~border].mean().clamp_min(1e-6)


def image_statistics(image: torch.Tensor, max_side: int = _DEFAULT_MAX_SIDE) -> torch.Tensor:
    """``(3, H, W)`` float in [0, 1] (H, W >= 8) -> ``(14,)`` float32: the statistics of the module docstring."""
    if image.dim() != 3 or image.shape[0] != 3 or min(image.shape[-2:]) < _MIN_SIDE:
        raise ValueError(
            f"The router reads (3, H, W) RGB images of at least {_MIN_SIDE} x {_MIN_SIDE} pixels; got shape "
            f"{tuple(image.shape)}."
        )
    rgb = _centre_crop(image, max_side).detach().to("cpu", torch.float32)
    y = rgb[0] * _LUMA[0] + rgb[1] * _LUMA[1] + rgb[2] * _LUMA[2]  # (h, w)
    h, w = (y.shape[0] // 2) * 2, (y.shape[1] // 2) * 2
    diagonal = (y[0:h:2, 0:w:2] - y[0:h:2, 1:w:2] - y[1:h:2, 0:w:2] + y[1:h:2, 1:w:2]) / 2  # Haar HH
    dx, dy = (y[:, 1:] - y[:, :-1]).abs(), (y[1:, :] - y[:-1, :]).abs()
    dx2, dy2 = (y[:, 2:] - y[:, :-2]).abs(), (y[2:, :] - y[:-2, :]).abs()
    d1, d2 = (y[1:, 1:] - y[:-1, :-1]).abs(), (y[1:, :-1] - y[:-1, 1:]).abs()
    fine, coarse = (dx.mean() + dy.mean()) / 2, (dx2.mean() + dy2.mean()) / 2
    directions = torch.stack([dx.mean(), dy.mean(), d1.mean(), d2.mean()])
    smooth = F.avg_pool2d(y[None, None], 3, 1, 1, count_include_pad=False)[0, 0]
    highpass = (y - smooth)[1:-1, 1:-1]
    spread = highpass.std()
    kurtosis = ((highpass - highpass.mean()) ** 4).mean() / spread.pow(4).clamp_min(1e-12)
    stats = [
        y.mean(),
        _log(y.std()),
        _log(diagonal.abs().median() / 0.6745),
        _log(fine / coarse.clamp_min(1e-6)),
        _log(directions.max() / directions.min().clamp_min(1e-6)),
        _log(_quantile(highpass, 0.99).clamp_min(1e-6) / (-_quantile(highpass, 0.01)).clamp_min(1e-6)),
        _log(kurtosis),
        (highpass.abs() < _FLAT).float().mean(),
        _log(spread),
        _log(fine),
        _log(_blockiness(dx, 1)),
        _log(_blockiness(dy, 0)),
        _log(dx.median()),
        _log(_quantile(dx, 0.9)),
    ]
    return torch.stack(stats).float()


class DegradationStatistics(nn.Module):
    """``(3, H, W)`` float in [0, 1] images -> ``(14,)`` vectors (module docstring); no parameters."""

    def __init__(self, max_side: int = _DEFAULT_MAX_SIDE) -> None:
        super().__init__()
        self.max_side = max_side

    @property
    def dim(self) -> int:
        return len(FEATURE_NAMES)

    @torch.no_grad()
    def one(self, image: torch.Tensor) -> torch.Tensor:
        """Statistics of one ``(3, H, W)`` image -> ``(dim,)`` float32 on the CPU."""
        return image_statistics(image, self.max_side)

    def forward(self, images: list[torch.Tensor] | torch.Tensor) -> torch.Tensor:
        """A list of ``(3, H, W)`` images (sizes may differ) or a ``(B, 3, H, W)`` batch -> ``(B, dim)``."""
        if isinstance(images, torch.Tensor) and images.dim() == 3:
            images = [images]
        feats = [self.one(image) for image in images]
        if not feats:
            return torch.zeros(0, self.dim)
        return torch.stack(feats)
