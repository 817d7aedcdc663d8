"""Seeded, deterministic degradations of clean images, and named task presets.

Layout: every degradation takes a torch float tensor ``(3, H, W)`` (or a batch ``(B, 3, H, W)``) with values in
``[0, 1]`` and a ``torch.Generator`` (CPU) that supplies all of its randomness, and returns a tensor of the same
layout, float in ``[0, 1]`` (outputs are clamped). A batch is degraded sample by sample with the same generator,
each sample drawing its own random parameters. The same (image, generator seed) gives a bit-identical result.

    >>> from peft_adaptir.degradations import degrade, get_task, list_tasks
    >>> noisy = degrade(clean, "denoise-50", seed=0)        # (3, H, W) float in [0, 1]
    >>> task = get_task("sr2-noise30"); task(clean, torch.Generator().manual_seed(0))
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

__all__ = [
    "Degradation",
    "Compose",
    "RandomChoice",
    "BicubicDown",
    "GaussianNoise",
    "JPEG",
    "RainStreaks",
    "LowLight",
    "TaskSpec",
    "get_task",
    "get_task_spec",
    "list_tasks",
    "degrade",
    "resize_bicubic",
]


def _uniform(value: float | tuple[float, float], generator: torch.Generator) -> float:
    """A fixed value, or a uniform draw from ``(low, high)``."""
    if isinstance(value, (int, float)):
        return float(value)
    low, high = value
    return low + (high - low) * torch.rand((), generator=generator, dtype=torch.float64).item()


def _check_range(name: str, value: float | tuple[float, float], low: float, high: float) -> None:
    values = (value,) if isinstance(value, (int, float)) else tuple(value)
    if len(values) not in (1, 2) or not all(low <= v <= high for v in values) or values[0] > values[-1]:
        raise ValueError(f"{name} must be a number or a (low, high) pair within [{low}, {high}], got {value!r}.")


def resize_bicubic(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bicubic resize of ``(B, C, H, W)`` or ``(C, H, W)`` to ``size=(h, w)``, not clamped.

    Uses ``F.interpolate(mode="bicubic", antialias=True)``: the cubic kernel with a = -0.5 (as MATLAB's ``imresize``
    and PIL's BICUBIC), widened by the scale factor when down-sampling (antialiasing, as ``imresize``). Borders differ
    from MATLAB's: torch renormalises the kernel weights at the edge where MATLAB pads symmetrically.
    """
    batched = image.unsqueeze(0) if image.dim() == 3 else image
    out = F.interpolate(batched, size=size, mode="bicubic", antialias=True, align_corners=False)
    return out[0] if image.dim() == 3 else out


class Degradation:
    """Base class: ``(image, generator) -> image`` on ``(3, H, W)`` or ``(B, 3, H, W)`` float in ``[0, 1]``.

    Subclasses implement :meth:`apply` for a single ``(C, H, W)`` image.
    """

    def apply(self, image: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        raise NotImplementedError

    def __call__(self, image: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        if not isinstance(image, torch.Tensor) or not image.is_floating_point() or image.dim() not in (3, 4):
            got = f"{type(image).__name__} {getattr(image, 'dtype', '')} {tuple(getattr(image, 'shape', ()))}"
            raise TypeError(f"Expected a float tensor (3, H, W) or (B, 3, H, W) in [0, 1], got {got}.")
        if not isinstance(generator, torch.Generator):
            raise TypeError(f"Expected a torch.Generator, got {type(generator).__name__}; degrade() takes a seed.")
        if image.dim() == 4:
            return torch.stack([self.apply(sample, generator) for sample in image])
        return self.apply(image, generator)

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({fields})"


class Compose(Degradation):
    """Apply degradations in order (e.g. down-sample, then noise, then up-sample): a second-order degradation."""

    def __init__(self, *steps: Callable[[torch.Tensor, torch.Generator], torch.Tensor]) -> None:
        if not steps:
            raise ValueError("Compose needs at least one degradation.")
        self.steps = list(steps)

    def apply(self, image: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        for step in self.steps:
            image = step(image, generator)
        return image


class RandomChoice(Degradation):
    """Pick one of ``options`` per image (uniformly, or by ``weights``) and apply it."""

    def __init__(self, options: Sequence[Callable], weights: Sequence[float] | None = None) -> None:
        if not options:
            raise ValueError("RandomChoice needs at least one option.")
        if weights is not None and (len(weights) != len(options) or min(weights) < 0 or sum(weights) <= 0):
            raise ValueError(f"weights must be {len(options)} numbers >= 0 with a positive sum, got {weights}.")
        self.options = list(options)
        self.weights = list(weights) if weights is not None else [1.0] * len(options)

    def apply(self, image: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        pick = torch.multinomial(torch.tensor(self.weights, dtype=torch.float64), 1, generator=generator).item()
        return self.options[pick](image, generator)


class BicubicDown(Degradation):
    """Bicubic down-sampling by ``scale`` (antialiased, see :func:`resize_bicubic`), optionally back up.

    The low-resolution size is ``(H // scale, W // scale)``. ``lr_steps`` (e.g. ``[GaussianNoise(30)]`` or
    ``[JPEG(30)]``) run on the low-resolution image: a second-order degradation. With ``upsample=True`` the result is
    resized back (bicubic) to exactly ``(H, W)``: the input of a scale-1 restorer.
    """

    def __init__(self, scale: int, upsample: bool = False, lr_steps: Sequence[Callable] = ()) -> None:
        if scale not in (2, 3, 4):
            raise ValueError(f"scale must be 2, 3 or 4, got {scale!r}.")
        self.scale = scale
        self.upsample = upsample
        self.lr_steps = list(lr_steps)

    def apply(self, image: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        h, w = image.shape[-2:]
        if h < self.scale or w < self.scale:
            raise ValueError(f"Image {h}x{w} is too small to down-sample by {self.scale}.")
        low = resize_bicubic(image, (h // self.scale, w // self.scale)).clamp(0, 1)
        for step in self.lr_steps:
            low = step(low, generator)
        return resize_bicubic(low, (h, w)).clamp(0, 1) if self.upsample else low


class GaussianNoise(Degradation):
    """Additive white Gaussian noise, ``sigma`` on the 0-255 scale (as in papers), fixed or a ``(low, high)`` range.

    The noisy image is clamped to ``[0, 1]`` (as PromptIR/AdaptIR do), so near black or white the measured sigma is
    lower than ``sigma``.
    """

    def __init__(self, sigma: float | tuple[float, float]) -> None:
        _check_range("sigma", sigma, 0.0, 255.0)
        self.sigma = sigma

    def apply(self, image: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        sigma = _uniform(self.sigma, generator)
        noise = torch.randn(image.shape, generator=generator, dtype=torch.float32).to(image.device, image.dtype)
        return (image + noise * (sigma / 255.0)).clamp(0, 1)


class JPEG(Degradation):
    """A real JPEG encode/decode with PIL at ``quality`` (1-95, fixed or a ``(low, high)`` integer range).

    PIL's defaults otherwise (4:2:0 chroma subsampling, standard tables). The result is 8-bit, so it is quantised.
    """

    def __init__(self, quality: int | tuple[int, int]) -> None:
        _check_range("quality", quality, 1, 95)
        self.quality = quality

    def apply(self, image: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        if image.shape[0] not in (1, 3):
            raise ValueError(f"JPEG needs 1 or 3 channels, got {image.shape[0]}.")
        quality = round(_uniform(self.quality, generator))
        pixels = (image.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
        buffer = io.BytesIO()
        Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels).save(buffer, "JPEG", quality=quality)
        decoded = np.asarray(Image.open(buffer)).reshape(pixels.shape)
        return torch.from_numpy(decoded.copy()).permute(2, 0, 1).to(image.device, image.dtype) / 255.0


def _streak_kernel(length: int, angle_deg: float) -> torch.Tensor:
    """A ``(1, 1, k, k)`` anti-aliased line of ``length`` pixels, ``angle_deg`` from vertical; ~1 along the line."""
    size = length | 1  # odd
    centre = size // 2
    t = torch.linspace(-(length - 1) / 2, (length - 1) / 2, 4 * length, dtype=torch.float64)
    x = centre + t * math.sin(math.radians(angle_deg))
    y = centre + t * math.cos(math.radians(angle_deg))
    kernel = torch.zeros(size, size, dtype=torch.float64)
    x0, y0 = x.floor(), y.floor()
    for dx in (0, 1):  # bilinear splat of the sample points
        for dy in (0, 1):
            weight = (1 - (x - x0 - dx).abs()) * (1 - (y - y0 - dy).abs())
            xi, yi = (x0 + dx).long().clamp(0, size - 1), (y0 + dy).long().clamp(0, size - 1)
            kernel.index_put_((yi, xi), weight, accumulate=True)
    return (kernel / 4).float()[None, None]  # 4 samples per pixel of length


def _gaussian_kernel1d(sigma: float) -> torch.Tensor:
    radius = max(1, math.ceil(3 * sigma))
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-(x**2) / (2 * sigma**2))
    return kernel / kernel.sum()


class RainStreaks(Degradation):
    """Synthetic rain: sparse drops motion-blurred into slanted streaks, added to the image (I = B + R, clamped).

    Per image: one angle from ``angle`` (degrees from vertical), drops where a uniform draw is below ``density``, each
    with an intensity in ``[0.5, 1]``, smeared along a line of ``length`` pixels, softened by a Gaussian of
    ``width`` (pixels, sigma), scaled by ``brightness``. Drops are drawn on a canvas larger than the image by the
    streak length, so streaks enter from outside the frame (a crop looks like a piece of a larger rainy image).
    Use the presets :meth:`light` and :meth:`heavy`.
    """

    def __init__(
        self,
        density: float | tuple[float, float],
        length: int | tuple[int, int],
        brightness: float | tuple[float, float],
        angle: float | tuple[float, float] = (-20.0, 20.0),
        width: float = 0.5,
    ) -> None:
        _check_range("density", density, 0.0, 1.0)
        _check_range("length", length, 1, 201)
        _check_range("brightness", brightness, 0.0, 1.0)
        _check_range("angle", angle, -80.0, 80.0)
        if width <= 0:
            raise ValueError(f"width must be > 0, got {width}.")
        self.density, self.length, self.brightness, self.angle, self.width = density, length, brightness, angle, width

    @classmethod
    def light(cls) -> RainStreaks:
        """Sparse, short, faint streaks (the pretraining rain)."""
        return cls(density=(0.002, 0.004), length=(10, 18), brightness=(0.35, 0.5), angle=(-15.0, 15.0), width=0.5)

    @classmethod
    def heavy(cls) -> RainStreaks:
        """Dense, long, bright, wider streaks at steeper angles (a transfer task)."""
        return cls(density=(0.005, 0.007), length=(20, 35), brightness=(0.6, 0.8), angle=(-30.0, 30.0), width=0.8)

    def rain_layer(self, height: int, width: int, generator: torch.Generator) -> torch.Tensor:
        """The streak layer ``(1, height, width)`` float >= 0 (before adding to an image)."""
        angle = _uniform(self.angle, generator)
        length = round(_uniform(self.length, generator))
        density = _uniform(self.density, generator)
        brightness = _uniform(self.brightness, generator)
        kernel = _streak_kernel(length, angle)
        blur = _gaussian_kernel1d(self.width)
        pad = kernel.shape[-1] // 2 + blur.numel() // 2
        canvas = (height + 2 * pad, width + 2 * pad)
        drops = (torch.rand(canvas, generator=generator) < density).float()
        drops = drops * (0.5 + 0.5 * torch.rand(canvas, generator=generator))
        streaks = F.conv2d(drops[None, None], kernel)  # valid: (1, 1, H + 2 * blur_radius, W + ...)
        streaks = F.conv2d(streaks, blur.view(1, 1, 1, -1))
        streaks = F.conv2d(streaks, blur.view(1, 1, -1, 1))  # (1, 1, H, W)
        return (brightness * streaks[0]).clamp(0, 1)

    def apply(self, image: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        rain = self.rain_layer(image.shape[-2], image.shape[-1], generator)
        return (image + rain.to(image.device, image.dtype)).clamp(0, 1)


class LowLight(Degradation):
    """Low light: ``scale * image ** gamma`` then Poisson-Gaussian (shot + read) noise.

    Shot noise: ``Poisson(x * photons) / photons`` (variance ``x / photons``: signal dependent), then Gaussian read
    noise of ``read_sigma`` on the 0-255 scale; clamped to ``[0, 1]``. ``photons=0`` and ``read_sigma=0`` give the
    noise-free darkening ``scale * image ** gamma``. ``scale`` and ``gamma`` may be ``(low, high)`` ranges.
    """

    def __init__(
        self,
        scale: float | tuple[float, float] = (0.25, 0.35),
        gamma: float | tuple[float, float] = (1.5, 1.7),
        photons: float = 300.0,
        read_sigma: float = 2.0,
    ) -> None:
        _check_range("scale", scale, 0.0, 1.0)
        _check_range("gamma", gamma, 0.1, 10.0)
        if photons < 0 or read_sigma < 0:
            raise ValueError(f"photons and read_sigma must be >= 0, got {photons} and {read_sigma}.")
        self.scale, self.gamma, self.photons, self.read_sigma = scale, gamma, photons, read_sigma

    def apply(self, image: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        scale, gamma = _uniform(self.scale, generator), _uniform(self.gamma, generator)
        dark = scale * image.clamp(0, 1).float().cpu() ** gamma
        if self.photons > 0:
            dark = torch.poisson(dark * self.photons, generator=generator) / self.photons
        if self.read_sigma > 0:
            dark = dark + torch.randn(dark.shape, generator=generator) * (self.read_sigma / 255.0)
        return dark.clamp(0, 1).to(image.device, image.dtype)


@dataclass(frozen=True)
class TaskSpec:
    """A named degradation preset: ``kind`` is ``"pretrain"``, ``"transfer"`` or ``"extra"``."""

    name: str
    kind: str
    description: str
    build: Callable[[], Degradation]


def _sr(scale: int, *lr_steps: Degradation) -> Degradation:
    """x``scale`` bicubic down, optional steps on the low-resolution image, bicubic back up to full size."""
    return BicubicDown(scale, upsample=True, lr_steps=lr_steps)


_PRETRAIN_NAMES = ("denoise-15", "denoise-25", "derain-light", "sr2")

_TASKS: dict[str, TaskSpec] = {
    spec.name: spec
    for spec in [
        TaskSpec("denoise-15", "pretrain", "Gaussian noise sigma 15 (0-255 scale)", lambda: GaussianNoise(15)),
        TaskSpec("denoise-25", "pretrain", "Gaussian noise sigma 25", lambda: GaussianNoise(25)),
        TaskSpec("derain-light", "pretrain", "sparse faint rain streaks", RainStreaks.light),
        TaskSpec("sr2", "pretrain", "x2 bicubic down, bicubic back up to full size", lambda: _sr(2)),
        TaskSpec(
            "pretrain",
            "pretrain",
            "per image, one of " + ", ".join(_PRETRAIN_NAMES) + " (uniformly)",
            lambda: RandomChoice([_TASKS[name].build() for name in _PRETRAIN_NAMES]),
        ),
        TaskSpec(
            "sr2-noise30",
            "transfer",
            "x2 bicubic down, Gaussian noise sigma 30 on the low-resolution image, bicubic back up",
            lambda: _sr(2, GaussianNoise(30)),
        ),
        TaskSpec("derain-heavy", "transfer", "dense, long, bright rain streaks", RainStreaks.heavy),
        TaskSpec(
            "low-light",
            "transfer",
            "darkened (scale 0.25-0.35, gamma 1.5-1.7) with Poisson-Gaussian noise (300 photons, read sigma 2)",
            LowLight,
        ),
        TaskSpec("denoise-50", "transfer", "Gaussian noise sigma 50", lambda: GaussianNoise(50)),
        TaskSpec("sr3", "extra", "x3 bicubic down, bicubic back up", lambda: _sr(3)),
        TaskSpec("sr4", "extra", "x4 bicubic down, bicubic back up", lambda: _sr(4)),
        TaskSpec("jpeg-q10", "extra", "JPEG quality 10", lambda: JPEG(10)),
        TaskSpec("jpeg-q20", "extra", "JPEG quality 20", lambda: JPEG(20)),
        TaskSpec("jpeg-q40", "extra", "JPEG quality 40", lambda: JPEG(40)),
        TaskSpec(
            "sr2-jpeg30",
            "extra",
            "x2 bicubic down, JPEG quality 30 on the low-resolution image, bicubic back up",
            lambda: _sr(2, JPEG(30)),
        ),
        TaskSpec("denoise-blind", "extra", "Gaussian noise, sigma uniform in [0, 50]", lambda: GaussianNoise((0, 50))),
    ]
}


def list_tasks(kind: str | None = None) -> list[str]:
    """Names of the task presets, optionally only those of ``kind`` (``"pretrain"``, ``"transfer"``, ``"extra"``)."""
    kinds = sorted({spec.kind for spec in _TASKS.values()})
    if kind is not None and kind not in kinds:
        raise ValueError(f"Unknown task kind {kind!r}; valid kinds: {', '.join(kinds)}.")
    return [name for name, spec in _TASKS.items() if kind is None or spec.kind == kind]


def get_task_spec(name: str) -> TaskSpec:
    """The :class:`TaskSpec` of preset ``name``; a clear error listing valid names for an unknown one."""
    if name not in _TASKS:
        raise ValueError(f"Unknown degradation task {name!r}; valid tasks: {', '.join(_TASKS)}.")
    return _TASKS[name]


def get_task(name: str) -> Degradation:
    """A fresh degradation for preset ``name`` (see :func:`list_tasks`)."""
    return get_task_spec(name).build()


def degrade(image: torch.Tensor, task: str | Degradation, seed: int) -> torch.Tensor:
    """Degrade ``image`` ((3, H, W) or (B, 3, H, W) float in [0, 1]) by a preset name or a degradation, seeded."""
    degradation = get_task(task) if isinstance(task, str) else task
    return degradation(image, torch.Generator().manual_seed(seed))
