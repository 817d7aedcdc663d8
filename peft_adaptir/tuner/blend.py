"""Weighted blends of adapters: checks and the normal form of model-wide and per-sample weights.

A blend is exact at every span: the span receives ``sum_i w_i * scale_i * branch_i(x)``, the weighted sum of what each
adapter alone would add there (the branch is nonlinear, so averaging the adapters' parameters would not be exact).
The base path always counts once; weights need not sum to 1: ``{"a": 0.5}`` is half of adapter ``a`` on top of the
base, ``{"a": 1, "b": 1}`` stacks both (peft's several-active-adapters behaviour).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch

from .constants import BASE_ADAPTER_NAME

__all__ = ["check_blend_weights", "per_sample_weights"]

# what `adapter_weights=` accepts in a forward call
PerSampleWeights = Sequence[Mapping[str, float]] | Mapping[str, "torch.Tensor | Sequence[float]"]


def _check_names(names: list[str], known: set[str], what: str) -> None:
    if not names:
        raise ValueError(f"{what} names no adapter; give at least one adapter name with its weight.")
    if any(not isinstance(name, str) for name in names):
        raise ValueError(f"{what} must map adapter names (str) to weights; got keys {names}.")
    unknown = sorted(set(names) - known)
    if unknown:
        hint = (
            f" {BASE_ADAPTER_NAME!r} needs no weight: the base path always counts once."
            if BASE_ADAPTER_NAME in unknown
            else ""
        )
        raise ValueError(f"Unknown adapter name(s) {unknown} in {what}; loaded adapters are {sorted(known)}.{hint}")


def check_blend_weights(weights: Mapping[str, float], known: set[str]) -> dict[str, float]:
    """``{"derain": 0.7, "denoise": 0.3}`` -> the same as a plain dict of floats, or ValueError naming the problem."""
    if not isinstance(weights, Mapping):
        raise ValueError(
            f"set_adapter_weights takes a dict {{adapter name: weight}}, got {type(weights).__name__}; for one "
            "adapter use set_adapter(name)."
        )
    _check_names(list(weights), known, "set_adapter_weights")
    checked = {}
    for name, weight in weights.items():
        value = float(weight)
        if not math.isfinite(value):
            raise ValueError(f"The weight of adapter {name!r} is {weight}; weights must be finite numbers.")
        checked[name] = value
    return checked


def per_sample_weights(adapter_weights: PerSampleWeights, known: set[str]) -> dict[str, torch.Tensor]:
    """The forward argument ``adapter_weights`` -> {adapter name: (B,) weights}, one weight per sample.

    Accepted: a list with one dict {name: weight} per sample (a missing name weighs 0), or a dict {name: (B,) tensor
    or list}; from a (B, n) tensor ``w`` and its column names use ``dict(zip(names, w.T))``. Tensors keep their
    autograd graph, so a router producing the weights can be trained through the blend.
    """
    if isinstance(adapter_weights, Mapping):
        _check_names(list(adapter_weights), known, "adapter_weights")
        columns = {
            name: value if isinstance(value, torch.Tensor) else torch.as_tensor(value, dtype=torch.float32)
            for name, value in adapter_weights.items()
        }
        sizes = {name: tuple(col.shape) for name, col in columns.items()}
        if any(len(shape) != 1 for shape in sizes.values()) or len(set(sizes.values())) != 1:
            raise ValueError(
                f"adapter_weights as a dict needs one 1-D column of per-sample weights per adapter, all of the "
                f"batch's length; got shapes {sizes}."
            )
        return _finite(columns)
    if isinstance(adapter_weights, (str, torch.Tensor)) or not isinstance(adapter_weights, Sequence):
        raise ValueError(
            "adapter_weights must be a list with one dict {adapter name: weight} per sample, or a dict {adapter name: "
            f"(B,) weights}}; got {type(adapter_weights).__name__}. From a (B, n) tensor w use "
            "dict(zip(names, w.T))."
        )
    if not all(isinstance(row, Mapping) for row in adapter_weights):
        raise ValueError("adapter_weights as a list needs one dict {adapter name: weight} per sample.")
    names = list(dict.fromkeys(name for row in adapter_weights for name in row))
    _check_names(names, known, "adapter_weights")
    return _finite(
        {
            name: torch.tensor([float(row.get(name, 0.0)) for row in adapter_weights], dtype=torch.float32)
            for name in names
        }
    )


def _finite(columns: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    for name, column in columns.items():
        if not torch.isfinite(column.detach()).all():
            raise ValueError(f"adapter_weights for {name!r} holds {column.tolist()}; weights must be finite numbers.")
    return columns
