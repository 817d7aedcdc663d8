"""peft-adaptir: AdaptIR (arXiv 2312.08881) as a peft method. Importing this package registers it with peft."""

from .branch import AdaptIRBranch
from .config import AdaptIRConfig
from .layer import BASE_ADAPTER_NAME, AdaptIRLayer
from .model import AdaptIRModel
from .presets import PRESETS, Preset
from .registration import ADAPTIR_PEFT_TYPE, register

register()

from .hub import AdapterHubError, enable_card_on_push, load_adapters, push_adapter  # noqa: E402
from .inference import restore  # noqa: E402
from .load_guard import AdapterMismatchError, install_load_guard  # noqa: E402
from .optim import adapter_optimizer  # noqa: E402

enable_card_on_push()
install_load_guard()

__version__ = "0.1.0"

__all__ = [
    "ADAPTIR_PEFT_TYPE",
    "BASE_ADAPTER_NAME",
    "PRESETS",
    "AdaptIRBranch",
    "AdaptIRConfig",
    "AdaptIRLayer",
    "AdaptIRModel",
    "AdapterMismatchError",
    "AdapterHubError",
    "Preset",
    "adapter_optimizer",
    "enable_card_on_push",
    "load_adapters",
    "push_adapter",
    "register",
    "restore",
]
