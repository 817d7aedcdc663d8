"""peft-adaptir: AdaptIR (arXiv 2312.08881) as a peft method. Importing this package registers it with peft.

The method (config, tuner, branch) is imported at once, since registering it with peft needs it. Everything else
(training, inference, backbones, data, the Hub) is imported on first use, so ``import peft_adaptir`` stays light: it
does not import datasets, matplotlib, scikit-image or spandrel.
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

from peft.utils.peft_types import PeftType

from . import peft_patches
from .tuner import (
    BASE_ADAPTER_NAME,
    PEFT_TYPE_NAME,
    PRESETS,
    AdapterMismatchError,
    AdaptIRBranch,
    AdaptIRConfig,
    AdaptIRLayer,
    AdaptIRModel,
    Preset,
)

peft_patches.apply()
ADAPTIR_PEFT_TYPE = PeftType(PEFT_TYPE_NAME)  # the PeftType member peft_patches added

try:
    __version__ = version("peft-adaptir")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

# public name -> module that defines it, imported on first access (PEP 562)
_LAZY_EXPORTS: dict[str, str] = {
    # training
    "train": "training.loop",
    "TrainingConfig": "training.config",
    "TrainingResult": "training.loop",
    "TrainingDivergedError": "training.loop",
    "adapter_optimizer": "training.optim",
    # inference
    "restore": "inference.pipeline",
    # backbones
    "load_default_base": "backbones.default_base",
    "load_base_model": "backbones.loading",
    "load_spandrel_base": "backbones.spandrel_loader",
    "adaptir_config_for": "backbones.spandrel_loader",
    "size_multiple": "backbones.size_multiple",
    "convert_release_checkpoint": "backbones.convert_release",
    "UnsafeCheckpointError": "backbones.safe_load",
    # degradation presets
    "get_task": "data.degradations",
    "get_task_spec": "data.degradations",
    "list_tasks": "data.degradations",
    "degrade": "data.degradations",
    # blind restoration: the shipped adapters and the degradation router
    "load_zoo": "routing.zoo",
    "DegradationRouter": "routing.router",
    # the Hub
    "load_adapters": "hub",
    "push_adapter": "hub",
    "AdapterHubError": "hub",
    # export (onnx, onnxscript and onnxruntime are imported only when used)
    "export_model": "export.exporter",
    "restore_onnx": "export.onnx_restorer",
    # hot-swap under torch.compile
    "prepare_hotswap": "tuner.hotswap",
    "hotswap_adapter": "tuner.hotswap",
    "HotswapError": "tuner.hotswap",
}

if TYPE_CHECKING:
    from .backbones.convert_release import convert_release_checkpoint
    from .backbones.default_base import load_default_base
    from .backbones.loading import load_base_model
    from .backbones.safe_load import UnsafeCheckpointError
    from .backbones.size_multiple import size_multiple
    from .backbones.spandrel_loader import adaptir_config_for, load_spandrel_base
    from .data.degradations import degrade, get_task, get_task_spec, list_tasks
    from .export.exporter import export_model
    from .export.onnx_restorer import restore_onnx
    from .hub import AdapterHubError, load_adapters, push_adapter
    from .inference.pipeline import restore
    from .routing.router import DegradationRouter
    from .routing.zoo import load_zoo
    from .training.config import TrainingConfig
    from .training.loop import TrainingDivergedError, TrainingResult, train
    from .training.optim import adapter_optimizer
    from .tuner.hotswap import HotswapError, hotswap_adapter, prepare_hotswap


def __getattr__(name: str) -> Any:
    module = _LAZY_EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'peft_adaptir' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY_EXPORTS))


__all__ = [
    "ADAPTIR_PEFT_TYPE",
    "PEFT_TYPE_NAME",
    "BASE_ADAPTER_NAME",
    "PRESETS",
    "AdapterMismatchError",
    "AdaptIRBranch",
    "AdaptIRConfig",
    "AdaptIRLayer",
    "AdaptIRModel",
    "Preset",
    "__version__",
    "train",
    "TrainingConfig",
    "TrainingResult",
    "TrainingDivergedError",
    "adapter_optimizer",
    "restore",
    "load_default_base",
    "load_base_model",
    "load_spandrel_base",
    "adaptir_config_for",
    "size_multiple",
    "convert_release_checkpoint",
    "UnsafeCheckpointError",
    "get_task",
    "get_task_spec",
    "list_tasks",
    "degrade",
    "load_adapters",
    "push_adapter",
    "AdapterHubError",
    "export_model",
    "restore_onnx",
    "prepare_hotswap",
    "hotswap_adapter",
    "HotswapError",
    "load_zoo",
    "DegradationRouter",
]
