"""peft-adaptir: AdaptIR (arXiv 2312.08881) as a peft method. Importing this package registers it with peft."""

from .branch import AdaptIRBranch
from .config import AdaptIRConfig
from .layer import BASE_ADAPTER_NAME, AdaptIRLayer
from .model import AdaptIRModel
from .presets import PRESETS, Preset
from .registration import ADAPTIR_PEFT_TYPE, register

register()

__version__ = "0.1.0"

__all__ = [
    "ADAPTIR_PEFT_TYPE",
    "BASE_ADAPTER_NAME",
    "PRESETS",
    "AdaptIRBranch",
    "AdaptIRConfig",
    "AdaptIRLayer",
    "AdaptIRModel",
    "Preset",
    "register",
]
