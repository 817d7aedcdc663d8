"""Training the degradation router: degraded crops of clean photos -> degradation statistics -> an MLP.

Every class is a degradation preset named like the adapter that undoes it (``"denoise-50"``), or ``"__base__"`` for
clean crops; adapters with other names take their preset from ``degradations={"my-adapter": "jpeg-q20"}`` (or any
``Degradation``). Crop ``k`` of photo ``i`` for class ``c`` is fixed by ``(seed, c, i, k)``: size, position, flip and
the degradation's randomness.

    >>> router, report = train_router(load_zoo(), steps=300, seed=0)
    >>> report["train_accuracy"], router.classes
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch

from ..data.degradations import get_task, get_task_spec
from ..data.pairs import dihedral, mix_seed
from ..data.sources import SKIMAGE_TRAIN, _skimage_photo, pil_to_tensor
from ..tuner.constants import BASE_ADAPTER_NAME
from .features import FEATURE_KIND, DegradationStatistics, base_fingerprint
from .router import DegradationRouter, RouterConfig

__all__ = [
    "ROUTER_GREY_PHOTOS",
    "router_photos",
    "router_classes",
    "router_examples",
    "train_router",
    "confusion",
    "evaluate_router",
]

ROUTER_GREY_PHOTOS = ("camera", "brick", "grass", "gravel", "moon", "coins")
"""scikit-image's bundled greyscale photos (as RGB) added to the router's training photos for texture variety."""
CROP_SIZES = (64, 96, 128, 160, 192)
"""Side of the training crops (drawn per crop; clamped to the photo)."""
EVAL_CROP_SIZES = (128, 160, 192)

_Degradation = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


def router_photos(names: Sequence[str] = SKIMAGE_TRAIN + ROUTER_GREY_PHOTOS) -> list[torch.Tensor]:
    """scikit-image photos as ``(3, H, W)`` float in [0, 1] (greyscale replicated); offline. Never the held-out
    photos (astronaut, chelsea, coffee) by default."""
    from PIL import Image

    return [pil_to_tensor(Image.fromarray(_skimage_photo(name))) for name in names]


def router_classes(model: torch.nn.Module) -> list[str]:
    """The classes for ``model``'s adapters: each adapter name, then ``"__base__"`` (clean: no adapter)."""
    names = list(getattr(model, "peft_config", {}) or {})
    if not names:
        raise ValueError("The model has no adapters to route between; load some (load_zoo() or load_adapters()).")
    return names + [BASE_ADAPTER_NAME]


def _degradations(classes: Sequence[str], degradations: Mapping[str, str | _Degradation] | None) -> list:
    given = dict(degradations or {})
    result = []
    for name in classes:
        spec = given.get(name, None if name == BASE_ADAPTER_NAME else name)
        if isinstance(spec, str):
            try:
                get_task_spec(spec)
            except ValueError as err:
                raise ValueError(
                    f"Class {name!r} is not a degradation preset; pass "
                    f"degradations={{{name!r}: PRESET_OR_DEGRADATION}} for "
                    f"the degradation its adapter undoes. ({err})"
                ) from None
            spec = get_task(spec)
        result.append(spec)
    return result


def router_examples(
    features: DegradationStatistics,
    classes: Sequence[str],
    photos: Sequence[torch.Tensor],
    crops_per_photo: int,
    seed: int,
    degradations: Mapping[str, str | _Degradation] | None = None,
    crop_sizes: Sequence[int] = CROP_SIZES,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(N, F)`` features and ``(N,)`` class indices of degraded random crops (``N = classes x photos x crops``)."""
    ops = _degradations(classes, degradations)
    feats, labels = [], []
    for c, op in enumerate(ops):
        for i, photo in enumerate(photos):
            for k in range(crops_per_photo):
                g = torch.Generator().manual_seed(mix_seed(seed, c, i, k))
                size = crop_sizes[int(torch.randint(len(crop_sizes), (), generator=g))]
                h, w = min(size, photo.shape[-2]), min(size, photo.shape[-1])
                top = int(torch.randint(0, photo.shape[-2] - h + 1, (), generator=g))
                left = int(torch.randint(0, photo.shape[-1] - w + 1, (), generator=g))
                crop = dihedral(photo[:, top : top + h, left : left + w], int(torch.randint(8, (), generator=g)))
                crop = crop.contiguous() if op is None else op(crop.contiguous(), g)
                feats.append(features.one(crop))
                labels.append(c)
    return torch.stack(feats), torch.tensor(labels)


def confusion(router: DegradationRouter, feats: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``(K, K)`` counts: row = true class, column = predicted class."""
    predicted = router.probabilities(feats).argmax(-1)
    matrix = torch.zeros(len(router.classes), len(router.classes), dtype=torch.long)
    matrix.index_put_((labels, predicted), torch.ones_like(labels), accumulate=True)
    return matrix


def train_router(
    model: torch.nn.Module,
    classes: Sequence[str] | None = None,
    *,
    photos: Sequence[torch.Tensor] | None = None,
    degradations: Mapping[str, str | _Degradation] | None = None,
    crops_per_photo: int = 12,
    hidden: int = 12,
    steps: int = 600,
    lr: float = 1e-2,
    weight_decay: float = 1e-3,
    seed: int = 0,
    max_side: int = 384,
    crop_sizes: Sequence[int] = CROP_SIZES,
) -> tuple[DegradationRouter, dict]:
    """Fit a router for ``model`` (its base gives the features; default classes: its adapters + ``"__base__"``).

    Full-batch AdamW on cross-entropy over the precomputed features (they are small). Returns the router (eval mode)
    and a report: ``train_accuracy``, ``examples``, ``parameters``, the settings.
    """
    classes = list(router_classes(model) if classes is None else classes)
    photos = router_photos() if photos is None else list(photos)
    extractor = DegradationStatistics(max_side=max_side)
    feats, labels = router_examples(extractor, classes, photos, crops_per_photo, seed, degradations, crop_sizes)
    config = RouterConfig(
        classes=classes, in_features=extractor.dim, hidden=hidden, feature_kind=FEATURE_KIND,
        base_fingerprint=base_fingerprint(model), max_side=max_side,
    )  # fmt: skip
    torch.manual_seed(seed)
    router = DegradationRouter(config)
    router.set_normalisation(feats)
    optimizer = torch.optim.AdamW(router.parameters(), lr=lr, weight_decay=weight_decay)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    router.train()
    for _ in range(steps):
        loss = torch.nn.functional.cross_entropy(router(feats), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
    router.eval()
    accuracy = (router.probabilities(feats).argmax(-1) == labels).float().mean().item()
    report = {
        "train_accuracy": accuracy, "final_loss": loss.item(), "examples": len(labels), "photos": len(photos),
        "crops_per_photo": crops_per_photo, "steps": steps, "lr": lr, "weight_decay": weight_decay, "seed": seed,
        "hidden": hidden, "parameters": router.num_parameters(),
    }  # fmt: skip
    router.config.training.update(report)
    return router, report


def evaluate_router(
    model: torch.nn.Module,
    router: DegradationRouter,
    photos: Sequence[torch.Tensor],
    crops_per_photo: int = 20,
    seed: int = 1,
    degradations: Mapping[str, str | _Degradation] | None = None,
    crop_sizes: Sequence[int] = EVAL_CROP_SIZES,
) -> tuple[float, torch.Tensor]:
    """(accuracy, ``(K, K)`` confusion matrix) on degraded crops of ``photos`` (use photos it never saw)."""
    extractor = DegradationStatistics(max_side=router.config.max_side)
    feats, labels = router_examples(extractor, router.classes, photos, crops_per_photo, seed, degradations, crop_sizes)
    matrix = confusion(router, feats, labels)
    return matrix.diag().sum().item() / matrix.sum().item(), matrix
