"""Every change this package makes to peft, in one place; ``apply()`` runs once when ``peft_adaptir`` is imported.

1. ``PeftType.ADAPTIR`` and peft's mapping tables. peft 0.21 refuses to register a method whose name is not already a
   member of the ``PeftType`` enum, and has no plugin discovery: a process must ``import peft_adaptir`` before it can
   load an AdaptIR adapter (otherwise peft raises ``KeyError: 'ADAPTIR'``).
2. ``PeftModel.load_adapter`` (used by ``from_pretrained`` too): peft injects fresh branches before it reads the
   weights, and leaves them behind when that fails. For AdaptIR adapters the wrapper takes the half-added adapter back
   out (the model is as it was before the call) and names a truncated or corrupt weights file.
3. ``PeftModel.push_to_hub``: transformers 5 replaces peft's model card with a ``library_name: transformers`` one;
   AdaptIR models are uploaded with our card instead (``peft_adaptir.hub``). Other peft methods pass through all three
   wrappers unchanged.
4. Blends: ``PeftModel.set_adapter_weights({"derain": 0.7, "denoise": 0.3})`` (exact weighted sum of the adapters'
   contributions at every span, see ``AdaptIRModel.set_adapter_weights``), and ``adapter_weights=`` joins
   ``adapter_names`` among the forward arguments peft takes out before calling the base model (a per-sample blend).
"""

from __future__ import annotations

import functools
import os
from typing import Any

from peft import PeftModel
from peft.mapping import PEFT_TYPE_TO_TUNER_MAPPING
from peft.utils import register_peft_method
from peft.utils.peft_types import PeftType
from safetensors import SafetensorError

from .hub import adaptir_push_to_hub
from .tuner.config import AdaptIRConfig
from .tuner.constants import ADAPTER_WEIGHTS_FILE, PEFT_TYPE_NAME, PREFIX
from .tuner.model import AdaptIRModel

__all__ = ["apply"]


def _add_peft_type_member() -> PeftType:
    """Add ``PeftType.ADAPTIR`` to peft's str Enum (member map, value map and name list), once."""
    existing = PeftType.__members__.get(PEFT_TYPE_NAME)
    if existing is not None:
        return existing
    member = str.__new__(PeftType, PEFT_TYPE_NAME)
    member._name_ = PEFT_TYPE_NAME
    member._value_ = PEFT_TYPE_NAME
    member.__objclass__ = PeftType
    PeftType._member_map_[PEFT_TYPE_NAME] = member
    PeftType._value2member_map_[PEFT_TYPE_NAME] = member
    PeftType._member_names_.append(PEFT_TYPE_NAME)
    type.__setattr__(PeftType, PEFT_TYPE_NAME, member)
    return member


def _register_method() -> None:
    """Make ``get_peft_model``, ``PeftConfig.from_pretrained`` and ``PeftModel.from_pretrained`` know AdaptIR."""
    member = _add_peft_type_member()
    if PEFT_TYPE_TO_TUNER_MAPPING.get(member) is AdaptIRModel:
        return
    register_peft_method(name=PEFT_TYPE_NAME.lower(), config_cls=AdaptIRConfig, model_cls=AdaptIRModel, prefix=PREFIX)


def _is_adaptir(config: Any) -> bool:
    return getattr(config, "peft_type", None) == PEFT_TYPE_NAME  # a str Enum


def _weights_location(model_id: str | os.PathLike, subfolder: str | None) -> str:
    parts = [os.fspath(model_id)] + ([subfolder] if subfolder else []) + [ADAPTER_WEIGHTS_FILE]
    return os.path.join(*parts) if os.path.isdir(os.fspath(model_id)) else "/".join(parts)


def _roll_back(model: PeftModel, adapter_name: str, existed_before: bool) -> None:
    """Take a half-loaded AdaptIR adapter out again; the only adapter means: give the base model back."""
    config = model.peft_config.get(adapter_name)
    if config is None or not _is_adaptir(config) or (existed_before and len(model.peft_config) > 1):
        return
    if len(model.peft_config) == 1:
        model.base_model.unload()  # removes the layers and hooks: the user's base model is unchanged
    else:
        model.delete_adapter(adapter_name)


def _wrap_load_adapter() -> None:
    """Wrap ``PeftModel.load_adapter`` once: roll back a failed AdaptIR load and name a corrupt weights file."""
    original = PeftModel.load_adapter
    if getattr(original, "_adaptir_guard", False):
        return

    @functools.wraps(original)
    def load_adapter(self, model_id, adapter_name, *args, **kwargs):
        existed_before = adapter_name in self.peft_config
        try:
            return original(self, model_id, adapter_name, *args, **kwargs)
        except (SafetensorError, OSError, ValueError, RuntimeError) as err:
            is_adaptir = _is_adaptir(self.peft_config.get(adapter_name))
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


def _wrap_push_to_hub() -> None:
    """Make ``PeftModel.push_to_hub`` upload an AdaptIR model with our card (other models are untouched)."""
    current = PeftModel.push_to_hub
    if getattr(current, "_adaptir_card", False):
        return

    @functools.wraps(current)
    def push_to_hub(self: PeftModel, repo_id: str, **kwargs: Any) -> str:
        return adaptir_push_to_hub(current, self, repo_id, **kwargs)

    push_to_hub._adaptir_card = True  # type: ignore[attr-defined]
    PeftModel.push_to_hub = push_to_hub


def _add_blends() -> None:
    """``PeftModel.set_adapter_weights`` and the forward argument ``adapter_weights`` (AdaptIR models only)."""
    if getattr(PeftModel, "_adaptir_blends", False):
        return
    original_init = PeftModel.__init__

    @functools.wraps(original_init)
    def __init__(self: PeftModel, *args: Any, **kwargs: Any) -> None:
        original_init(self, *args, **kwargs)
        self.special_peft_forward_args = set(self.special_peft_forward_args) | {"adapter_weights"}

    def set_adapter_weights(self: PeftModel, weights: dict[str, float], inference_mode: bool = True) -> None:
        """Blend AdaptIR adapters exactly, e.g. ``{"derain": 0.7, "denoise": 0.3}``; see AdaptIRModel."""
        if not hasattr(self.base_model, "set_adapter_weights"):
            raise ValueError(f"set_adapter_weights blends AdaptIR adapters; this model holds {self.peft_type} ones.")
        self.base_model.set_adapter_weights(weights, inference_mode=inference_mode)
        self.active_adapter = next(iter(weights))  # peft's own attribute names one adapter; the layers hold all

    PeftModel.__init__ = __init__
    PeftModel.set_adapter_weights = set_adapter_weights
    PeftModel._adaptir_blends = True


def apply() -> None:
    """Apply all four patches; safe to call any number of times."""
    _register_method()
    _wrap_load_adapter()
    _wrap_push_to_hub()
    _add_blends()
