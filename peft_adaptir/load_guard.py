"""Loading AdaptIR adapters safely: clear errors for an adapter of another base or a broken file, and no damage.

peft loads an adapter in two steps: it first injects fresh (identity) branches into the model, then reads the weight
file and copies it in. If the second step fails, or the file does not fit the model, peft leaves the fresh branches
behind (or loads only part of the weights, with a warning). For AdaptIR adapters the wrapper installed here instead
raises a ValueError that names the file or both bases, and takes the half-added adapter back out again, so the
model is as it was before the call.
"""

from __future__ import annotations

import functools
import os

import torch
from peft import PeftModel
from peft.tuners.tuners_utils import _filter_state_dict_by_key_prefixes, _get_tuner_state_dict_key_prefixes
from safetensors import SafetensorError

from .registration import ADAPTIR_PEFT_TYPE

WEIGHTS_FILE = "adapter_model.safetensors"


class AdapterMismatchError(ValueError):
    """An AdaptIR adapter that does not fit the model it is loaded onto (another base, width or target set)."""


def check_adapter_fits(model: torch.nn.Module, adapter_name: str, state_dict: dict, base_recorded: str | None) -> None:
    """Raise AdapterMismatchError unless ``state_dict`` has exactly the AdaptIR weights ``model`` expects, in shape.

    ``state_dict``: checkpoint keys already mapped to the model's keys (with the adapter name).
    """
    prefixes = _get_tuner_state_dict_key_prefixes(model, adapter_name=adapter_name)
    expected = _filter_state_dict_by_key_prefixes(model.state_dict(), prefixes)
    loaded = {k: v for k, v in state_dict.items() if ".adaptir_branch." in k}
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


def _weights_location(model_id: str | os.PathLike, subfolder: str | None) -> str:
    parts = [os.fspath(model_id)] + ([subfolder] if subfolder else []) + [WEIGHTS_FILE]
    return os.path.join(*parts) if os.path.isdir(os.fspath(model_id)) else "/".join(parts)


def _roll_back(model: PeftModel, adapter_name: str, existed_before: bool) -> None:
    """Take a half-loaded AdaptIR adapter out again; the only adapter means: give the base model back."""
    config = model.peft_config.get(adapter_name)
    if config is None or config.peft_type != ADAPTIR_PEFT_TYPE or (existed_before and len(model.peft_config) > 1):
        return
    if len(model.peft_config) == 1:
        model.base_model.unload()  # removes the layers and hooks: the user's base model is unchanged
    else:
        model.delete_adapter(adapter_name)


def install_load_guard() -> None:
    """Wrap ``PeftModel.load_adapter`` (used by ``from_pretrained`` too) once; other methods pass through unchanged."""
    original = PeftModel.load_adapter
    if getattr(original, "_adaptir_guard", False):
        return

    @functools.wraps(original)
    def load_adapter(self, model_id, adapter_name, *args, **kwargs):
        existed_before = adapter_name in self.peft_config
        try:
            return original(self, model_id, adapter_name, *args, **kwargs)
        except (SafetensorError, OSError, ValueError, RuntimeError) as err:
            is_adaptir = getattr(self.peft_config.get(adapter_name), "peft_type", None) == ADAPTIR_PEFT_TYPE
            _roll_back(self, adapter_name, existed_before)
            if is_adaptir and isinstance(err, SafetensorError):
                location = _weights_location(model_id, kwargs.get("subfolder"))
                raise ValueError(
                    f"The adapter weights {location} are truncated or corrupt ({err}). Save or download the adapter "
                    "again."
                ) from err
            raise

    load_adapter._adaptir_guard = True
    PeftModel.load_adapter = load_adapter
