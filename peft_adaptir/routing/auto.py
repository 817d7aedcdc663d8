"""``adapter="auto"``: the router decides, once per image, which adapter (or blend of adapters) restores it.

Per image (never per tile, so tiled images get no seams), the router reads 14 degradation statistics of the whole
image (``features.py``) and gives a probability per class (the adapters and ``"__base__"`` for clean):

* ``hard``: the most probable class, run through peft's mixed-batch path (``adapter_names=``), so images needing
  different adapters still share a batch. If its probability is below ``min_confidence``, the image falls back to
  ``soft``.
* ``soft``: the ``top_k`` most probable classes, their probabilities renormalised to sum to 1, run as an exact
  weighted blend of the adapters (``adapter_weights=``); the share of ``"__base__"`` adds nothing (the base path
  always counts once).

:func:`decide` returns one :class:`Decision` per image; :func:`batch_kwargs` turns the routes of a batch into the
forward arguments. ``restore(model, images, adapter="auto")`` uses both.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from ..tuner.constants import BASE_ADAPTER_NAME
from ..tuner.model import adapter_names_of
from .features import FEATURE_KIND, DegradationStatistics, base_fingerprint
from .router import DegradationRouter

__all__ = [
    "AUTO",
    "MODES",
    "Decision",
    "check_router",
    "decide",
    "batch_kwargs",
    "resolve_router",
    "wants_auto",
    "auto_routes",
]

AUTO = "auto"
"""The adapter name that asks the router to choose."""
MODES = ("hard", "soft")
DEFAULT_MIN_CONFIDENCE = 0.5
DEFAULT_TOP_K = 2

Route = str | Mapping[str, float]
"""An adapter name (``"__base__"``: none) or a blend ``{adapter name: weight}``."""


@dataclass(frozen=True)
class Decision:
    """What the router decided for one image.

    ``task``: the most probable class (``"__base__"``: judged clean); ``probability``: its probability; ``mode``:
    ``"hard"`` or ``"soft"`` as applied (a low-confidence ``hard`` request becomes ``"soft"``); ``weights``: the
    blend applied (``{task: 1.0}`` in hard mode, ``{}`` for ``"__base__"``); ``probabilities``: every class.
    """

    task: str
    probability: float
    mode: str
    weights: dict[str, float]
    probabilities: dict[str, float] = field(repr=False)

    @property
    def route(self) -> Route:
        """The forward routing of this image: an adapter name in hard mode, the weights in soft mode."""
        return self.task if self.mode == "hard" else self.weights

    def describe(self) -> str:
        """``'denoise-50 (p=0.97, hard)'`` or ``'soft: denoise-50 0.62 + jpeg-q20 0.38 (top p=0.62)'``."""
        if self.mode == "hard":
            return f"{self.task} (p={self.probability:.2f}, hard)"
        blend = " + ".join(f"{name} {weight:.2f}" for name, weight in self.weights.items()) or BASE_ADAPTER_NAME
        return f"soft: {blend} (top {self.task} p={self.probability:.2f})"


def check_router(model: nn.Module, router: DegradationRouter) -> None:
    """Errors naming the problem when ``router`` was not trained for ``model``'s adapters or base."""
    loaded = adapter_names_of(model)
    missing = [name for name in router.config.tasks if name not in loaded]
    if missing:
        raise ValueError(
            f"The router was trained for adapters {router.config.tasks}, but {missing} are not loaded (the model has "
            f"{loaded or 'no adapters'}). Load adapters under exactly these names (load_zoo() for the "
            "shipped router), or train a router for the loaded adapters (`peft-adaptir train-router`)."
        )
    if router.config.feature_kind != FEATURE_KIND:
        raise ValueError(
            f"The router reads {router.config.feature_kind!r} features; this version computes {FEATURE_KIND!r}. "
            "Retrain the router with this version (`peft-adaptir train-router`)."
        )
    expected = router.config.base_fingerprint
    if expected and expected != base_fingerprint(model):
        raise ValueError(
            "The router was trained for the adapters of another base model (its first convolution differs). Use the "
            "router trained with this base, or train one (`peft-adaptir train-router --base`)."
        )


def resolve_router(router: DegradationRouter | str | None) -> DegradationRouter:
    """A router object from an object, a folder / Hub id, or None (the router shipped with the zoo)."""
    if isinstance(router, DegradationRouter):
        return router
    if router is None:
        from .zoo import zoo_router_path

        router = zoo_router_path()
    return DegradationRouter.from_pretrained(router)


def _soft_weights(probs: dict[str, float], top_k: int) -> dict[str, float]:
    top = sorted(probs.items(), key=lambda item: -item[1])[:top_k]
    total = sum(p for _, p in top)
    return {name: p / total for name, p in top if name != BASE_ADAPTER_NAME}


def decide(
    model: nn.Module,
    router: DegradationRouter,
    images: Sequence[torch.Tensor],
    mode: str = "hard",
    top_k: int = DEFAULT_TOP_K,
    min_confidence: float = DEFAULT_MIN_CONFIDENCE,
) -> list[Decision]:
    """One :class:`Decision` per ``(3, H, W)`` float image in [0, 1] (whole images, before any tiling)."""
    if mode not in MODES:
        raise ValueError(f"routing mode {mode!r} is not one of {list(MODES)}.")
    if not isinstance(top_k, int) or top_k < 1:
        raise ValueError(f"top_k must be a positive integer, got {top_k!r}.")
    if not 0.0 <= min_confidence <= 1.0:
        raise ValueError(f"min_confidence must be in [0, 1], got {min_confidence!r}.")
    check_router(model, router)
    if not images:
        return []
    features = DegradationStatistics(max_side=router.config.max_side)(list(images))
    probabilities = router.probabilities(features.to(router.feature_mean.device))
    decisions = []
    for row in probabilities.cpu().tolist():
        probs = dict(zip(router.classes, row))
        task = max(probs, key=probs.get)
        soft = mode == "soft" or probs[task] < min_confidence
        weights = _soft_weights(probs, top_k) if soft else ({} if task == BASE_ADAPTER_NAME else {task: 1.0})
        decisions.append(Decision(task, probs[task], "soft" if soft else "hard", weights, probs))
    return decisions


def batch_kwargs(routes: Sequence[Route]) -> dict:
    """Forward arguments of a batch: ``adapter_names=`` when every route is a name, else ``adapter_weights=``.

    In a batch that mixes names and blends, a name ``n`` becomes ``{n: 1.0}`` (``"__base__"``: ``{}``), the same
    computation as routing it by name.
    """
    if all(isinstance(route, str) for route in routes):
        return {"adapter_names": list(routes)}
    rows = [
        dict(route) if not isinstance(route, str) else ({} if route == BASE_ADAPTER_NAME else {route: 1.0})
        for route in routes
    ]
    if not any(rows):  # only the base: the weighted path needs at least one adapter name
        return {"adapter_names": [BASE_ADAPTER_NAME] * len(rows)}
    return {"adapter_weights": rows}


def wants_auto(adapter: str | None, adapter_names: Sequence[str] | None) -> bool:
    """Whether a ``restore`` call asks the router: ``adapter="auto"`` or ``"auto"`` among ``adapter_names``."""
    names = adapter_names if adapter_names is not None and not isinstance(adapter_names, str) else ()
    return adapter == AUTO or AUTO in list(names)


def auto_routes(
    model: nn.Module,
    images: Sequence[torch.Tensor],
    adapter: str | None,
    adapter_names: Sequence[str] | None,
    router: DegradationRouter | str | None = None,
    mode: str = "hard",
) -> tuple[list[Route], list[Decision | None]]:
    """Routes and decisions for ``restore``: every image (``adapter="auto"``) or those named ``"auto"`` in
    ``adapter_names`` go to the router; the other names must be loaded adapters (or ``"__base__"``)."""
    if adapter is not None and adapter_names is not None:
        raise ValueError("Pass either adapter='auto' (every image) or adapter_names= (one per image), not both.")
    names = [AUTO] * len(images) if adapter == AUTO else list(adapter_names)
    if len(names) != len(images):
        raise ValueError(
            f"adapter_names has {len(names)} names but {len(images)} images were given; pass one per image."
        )
    loaded = adapter_names_of(model)
    if not loaded:
        raise ValueError(
            f"adapter='auto' needs a model holding task adapters, got {type(model).__name__} without any; use "
            "peft_adaptir.routing.zoo.load_zoo() (the shipped adapters) or load_adapters()."
        )
    unknown = sorted({name for name in names if name not in loaded and name not in (AUTO, BASE_ADAPTER_NAME)})
    if unknown:
        raise ValueError(
            f"Unknown adapter names {unknown}; the model has {loaded} (plus {BASE_ADAPTER_NAME!r} for none and "
            f"{AUTO!r} to let the router choose)."
        )
    chosen = decide(model, resolve_router(router), [img for img, name in zip(images, names) if name == AUTO], mode)
    picks = iter(chosen)
    decisions = [next(picks) if name == AUTO else None for name in names]
    routes = [name if decision is None else decision.route for name, decision in zip(names, decisions)]
    return routes, decisions
