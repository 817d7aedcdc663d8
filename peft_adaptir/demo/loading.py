"""Building the demo's engine from a base model and task adapters, offline by default."""

from __future__ import annotations

import importlib
import os
from collections.abc import Mapping

from torch import nn

from ..backbones.loading import load_base_model
from ..hub import load_adapters
from .engine import DemoEngine, find_router

__all__ = ["load_engine"]


def _shipped_zoo() -> nn.Module | None:
    """The default base with the package's shipped task adapters (``peft_adaptir.routing.zoo``), or None."""
    try:
        zoo = importlib.import_module("peft_adaptir.routing.zoo")
    except ImportError:
        return None
    return zoo.load_zoo() if zoo.shipped_tasks() else None


def load_engine(
    base: str | os.PathLike | None = None,
    adapters: Mapping[str, str] | None = None,
    *,
    batch_size: int = 4,
) -> DemoEngine:
    """A :class:`DemoEngine` on ``base`` (None: the embedded base) with ``adapters`` ({task: folder or Hub id}).

    With neither ``base`` nor ``adapters`` the package's shipped task adapters are used when it has them, else the
    base alone (task ``__base__``). ``auto`` is offered when a degradation router is available for the model.
    """
    model = _shipped_zoo() if base is None and not adapters else None
    if model is None:
        model = load_base_model(base)
        if adapters:
            model = load_adapters(model, dict(adapters))
    return DemoEngine(model, router=find_router(model), batch_size=batch_size)
