"""Pooled shallow features of the frozen base: what the router looks at.

The base's first convolution (3 -> C channels, the "shallow feature extraction" of SwinIR/Swin2SR/HAT) is applied to
the image, and its response map ``(C, H, W)`` is pooled into per-channel statistics that separate degradations:
the mean (brightness, colour: low light), the standard deviation (contrast), the median and the mean of the absolute
first differences (noise lifts the median everywhere; rain streaks and edges lift the mean far above it), and two
JPEG blockiness ratios (differences across 8-pixel block borders against those inside blocks). The convolution is
the base's own, frozen, so the router adds no feature extractor of its own.

Images larger than ``max_side`` (384) are centre-cropped to it (offsets kept multiples of 8, so JPEG blocks stay
aligned): the statistics are global, and one decision is made per image, never per tile.
"""

from __future__ import annotations

import hashlib

import torch
from torch import nn

__all__ = ["ShallowFeatures", "FEATURE_KIND", "first_convolution", "base_fingerprint", "feature_dim"]

FEATURE_KIND = "pooled-shallow-v2"
"""Name of the feature recipe, stored in the router's config: a router only runs on the features it was trained on."""
_STATS_PER_CHANNEL = 4
_GLOBAL_STATS = 2
_BLOCK = 8
_DEFAULT_MAX_SIDE = 384
_SAMPLE_STRIDE = 4


def first_convolution(model: nn.Module) -> nn.Conv2d:
    """The first ``nn.Conv2d`` taking 3 channels in ``model`` (module order): the base's shallow feature extractor.

    Works through a peft ``PeftModel`` (AdaptIR adapts the FFNs, never this convolution).
    """
    for module in model.modules():
        if isinstance(module, nn.Conv2d) and module.in_channels == 3 and module.groups == 1:
            return module
    raise ValueError(
        f"{type(model).__name__} has no Conv2d with 3 input channels to take shallow features from; the router "
        "needs a base that starts with a convolution on the RGB image (Swin2SR, SwinIR, HAT, ...)."
    )


def base_fingerprint(model: nn.Module) -> str:
    """A short hash of the first convolution's weights: the router's features are only valid for this base."""
    weight = first_convolution(model).weight.detach().to("cpu", torch.float32).contiguous()
    return hashlib.sha1(weight.numpy().tobytes()).hexdigest()[:16]


def feature_dim(channels: int) -> int:
    """Length of the feature vector for a first convolution with ``channels`` outputs."""
    return _STATS_PER_CHANNEL * channels + _GLOBAL_STATS


def _log(values: torch.Tensor) -> torch.Tensor:
    return torch.log(values.clamp_min(1e-6))


def _centre_crop(image: torch.Tensor, max_side: int) -> torch.Tensor:
    """``(3, H, W)`` cropped to at most ``max_side`` per side, with the offsets rounded to block multiples."""
    h, w = image.shape[-2:]
    top = max(0, (h - max_side) // 2) // _BLOCK * _BLOCK
    left = max(0, (w - max_side) // 2) // _BLOCK * _BLOCK
    return image[:, top : top + max_side, left : left + max_side]


def _blockiness(diff: torch.Tensor, dim: int) -> torch.Tensor:
    """Mean |difference| across 8-pixel block borders over that inside blocks; ``diff`` is ``(C, H, W')``-like."""
    energy = diff.abs().mean(dim=(0, 1) if dim == -1 else (0, 2))  # (n,) along the differenced axis
    positions = torch.arange(energy.numel(), device=energy.device)
    border = (positions % _BLOCK) == _BLOCK - 1  # difference between pixel 8k+7 and 8k+8
    if not border.any() or border.all():
        return energy.new_tensor(1.0)
    return energy[border].mean() / energy[~border].mean().clamp_min(1e-6)


class ShallowFeatures(nn.Module):
    """``(3, H, W)`` float in [0, 1] images -> ``(feature_dim,)`` vectors through the base's frozen first convolution.

    Holds a reference to the base's convolution (not a copy): no parameters of its own.
    """

    def __init__(self, model: nn.Module, max_side: int = _DEFAULT_MAX_SIDE) -> None:
        super().__init__()
        self.conv = [first_convolution(model)]  # a list: not registered as a submodule, never saved with the router
        self.max_side = max_side

    @property
    def dim(self) -> int:
        return feature_dim(self.conv[0].out_channels)

    @torch.no_grad()
    def one(self, image: torch.Tensor) -> torch.Tensor:
        """Features of one ``(3, H, W)`` image (any size of at least 2 x 2) -> ``(dim,)`` float32 on the CPU."""
        conv = self.conv[0]
        weight = conv.weight
        x = _centre_crop(image, self.max_side).to(weight.device, weight.dtype)
        response = conv(x[None])[0].float()  # (C, h, w)
        dx = response[:, :, 1:] - response[:, :, :-1]  # (C, h, w - 1)
        dy = response[:, 1:, :] - response[:, :-1, :]  # (C, h - 1, w)
        abs_dx, abs_dy = dx.abs(), dy.abs()
        mean_abs = (abs_dx.sum(dim=(1, 2)) + abs_dy.sum(dim=(1, 2))) / (abs_dx[0].numel() + abs_dy[0].numel())
        # the median over every 4th row / column of differences: the same statistic at a quarter of the sorting
        sample = torch.cat([abs_dx[:, ::_SAMPLE_STRIDE].flatten(1), abs_dy[:, :, ::_SAMPLE_STRIDE].flatten(1)], dim=1)
        # logs of the scale statistics: the MLP then sees their ratios (noise relative to signal) as differences
        per_channel = [
            response.mean(dim=(1, 2)),
            _log(response.std(dim=(1, 2))),
            _log(sample.median(dim=1).values),
            _log(mean_abs),
        ]
        block = _log(torch.stack([_blockiness(dx, -1), _blockiness(dy, -2)]))
        return torch.cat([*per_channel, block]).cpu()

    def forward(self, images: list[torch.Tensor] | torch.Tensor) -> torch.Tensor:
        """A list of ``(3, H, W)`` images (sizes may differ) or a ``(B, 3, H, W)`` batch -> ``(B, dim)``."""
        if isinstance(images, torch.Tensor) and images.dim() == 3:
            images = [images]
        feats = [self.one(image) for image in images]
        if not feats:
            return torch.zeros(0, self.dim)
        return torch.stack(feats)
