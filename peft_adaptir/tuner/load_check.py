"""Does a saved AdaptIR adapter fit the model it is loaded onto? A clear error names the first misfit.

Called from ``AdaptIRModel._remap_adapter_state_dict_for_load``, i.e. by peft while it loads weights; the rollback of a
failed load lives with the other peft patches in ``peft_adaptir.peft_patches``.
"""

from __future__ import annotations

import torch
from peft.tuners.tuners_utils import _filter_state_dict_by_key_prefixes, _get_tuner_state_dict_key_prefixes

from .constants import BRANCH_CONTAINER

__all__ = ["AdapterMismatchError", "check_adapter_fits", "drop_legacy_keys"]

# weights older adapters hold that this version does not: the position-score bias of the channel branch (peft-adaptir
# 0.1.0 and the authors' release). A softmax over positions ignores a shift, so dropping it changes no output.
LEGACY_SUFFIXES = (".channel.compress.bias",)


def drop_legacy_keys(state_dict: dict) -> dict:
    """``state_dict`` without the weights listed in ``LEGACY_SUFFIXES`` (a new dict when any were dropped)."""
    if not any(key.endswith(LEGACY_SUFFIXES) for key in state_dict):
        return state_dict
    return {key: value for key, value in state_dict.items() if not key.endswith(LEGACY_SUFFIXES)}


class AdapterMismatchError(ValueError):
    """An AdaptIR adapter that does not fit the model it is loaded onto (another base, width or target set)."""


def check_adapter_fits(model: torch.nn.Module, adapter_name: str, state_dict: dict, base_recorded: str | None) -> None:
    """Raise AdapterMismatchError unless ``state_dict`` has exactly the AdaptIR weights ``model`` expects, in shape.

    ``state_dict``: checkpoint keys already mapped to the model's keys (with the adapter name).
    """
    prefixes = _get_tuner_state_dict_key_prefixes(model, adapter_name=adapter_name)
    expected = _filter_state_dict_by_key_prefixes(model.state_dict(), prefixes)
    loaded = {k: v for k, v in state_dict.items() if f".{BRANCH_CONTAINER}." in k}
    missing = sorted(expected.keys() - loaded.keys())
    unexpected = sorted(loaded.keys() - expected.keys())
    mismatched = [k for k in sorted(expected.keys() & loaded.keys()) if expected[k].shape != loaded[k].shape]
    if not (missing or unexpected or mismatched):
        return
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    current = getattr(base, "name_or_path", "") or type(base).__name__
    if mismatched:
        key = mismatched[0]
        first = f"{key}: the file holds {tuple(loaded[key].shape)}, this model needs {tuple(expected[key].shape)}"
    elif missing:
        first = f"{missing[0]} is missing from the file"
    else:
        first = f"{unexpected[0]} has no place in this model"
    raise AdapterMismatchError(
        f"Adapter {adapter_name!r} was trained for base {base_recorded or '(not recorded)'} and does not fit this "
        f"base {current}: {len(mismatched)} shape mismatch(es), {len(missing)} missing and {len(unexpected)} "
        f"unexpected weight(s); first: {first}. A different width or set of adapted layers means another base: load "
        "the adapter onto the base model it was trained for."
    )
