"""The AdaptIR method as a peft tuner, laid out like peft's own ``src/peft/tuners/<method>/``.

``constants`` (names; imports only peft) -> ``branch`` (the math, no peft) -> ``layout``, ``grid``, ``presets`` ->
``config`` -> ``layer`` -> ``load_check``, ``blend``, ``targets`` -> ``model`` -> ``fast_load`` (serving) ->
``hotswap`` (compile-safe weight swap).
Registration with peft lives in ``peft_adaptir.peft_patches``.
"""

from .branch import AdaptIRBranch
from .config import AdaptIRConfig
from .constants import BASE_ADAPTER_NAME, PEFT_TYPE_NAME
from .fast_load import AdapterBank, load_adapter_fast
from .hotswap import HotswapError, hotswap_adapter, prepare_hotswap
from .layer import AdaptIRLayer
from .load_check import AdapterMismatchError
from .model import AdaptIRModel
from .presets import PRESETS, Preset

__all__ = [
    "BASE_ADAPTER_NAME",
    "PEFT_TYPE_NAME",
    "PRESETS",
    "AdapterBank",
    "AdapterMismatchError",
    "AdaptIRBranch",
    "AdaptIRConfig",
    "AdaptIRLayer",
    "AdaptIRModel",
    "HotswapError",
    "Preset",
    "hotswap_adapter",
    "load_adapter_fast",
    "prepare_hotswap",
]
