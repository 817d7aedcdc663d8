"""Restorers loaded from ``.pth`` / ``.safetensors`` files by spandrel (SwinIR, HAT, IPT, NAFNet, SCUNet, DAT, ...).

spandrel (``pip install peft-adaptir[spandrel]``) recognises the architecture from the state dict and returns a plain
``nn.Module`` plus a descriptor (scale, size requirements, how to call it). This module reads the file safely
(``peft_adaptir.safe_load``: restricted unpickling only), picks the AdaptIR preset for the architecture, and exposes
the descriptor's size requirement for ``peft_adaptir.restore(..., size_multiple=...)``.

spandrel is imported only inside the functions that need it, so ``import peft_adaptir`` works without it.
"""

from __future__ import annotations

import os
from typing import Any

from torch import nn

from ..tuner.config import AdaptIRConfig
from ..tuner.presets import PRESETS, find_preset
from .safe_load import load_checkpoint
from .size_multiple import SIZE_MULTIPLE_ATTRIBUTE

__all__ = [
    "adaptir_config_for",
    "architecture_name",
    "base_model_from_checkpoint",
    "ipt_grid_size",
    "load_spandrel_base",
    "size_multiple_for",
]

_GRID_FIELDS = ("grid_argument", "grid_size", "infer_grid_from_input")


def _import_spandrel() -> Any:
    try:
        import spandrel
    except ImportError as err:
        raise ImportError(
            f"Loading .pth/.safetensors restorers needs spandrel: pip install 'peft-adaptir[spandrel]' ({err})."
        ) from err
    return spandrel


def load_spandrel_base(path: str | os.PathLike, device: str = "cpu") -> tuple[nn.Module, Any]:
    """Load a restorer checkpoint with spandrel: ``(model in eval mode, spandrel ModelDescriptor)``.

    The file is read with restricted unpickling only (``torch.load(weights_only=True)``) or safetensors; a pickle
    that tries to run code raises ``peft_adaptir.safe_load.UnsafeCheckpointError`` and runs nothing. The model is the
    architecture's own module (e.g. spandrel's ``SwinIR``), so ``get_peft_model(model, adaptir_config_for(model))``
    finds its preset; the descriptor knows the scale, the size requirements and (for IPT) how to call it on images.
    """
    spandrel = _import_spandrel()
    from spandrel.__helpers.canonicalize import canonicalize_state_dict

    state_dict = canonicalize_state_dict(load_checkpoint(path))  # unwraps "params_ema", "state_dict", "module." ...
    try:
        descriptor = spandrel.ModelLoader(device=device).load_from_state_dict(state_dict)
    except spandrel.UnsupportedModelError as err:
        raise ValueError(
            f"spandrel does not recognise the architecture of {os.fspath(path)!r} ({err}); see spandrel's list of "
            "supported architectures."
        ) from err
    descriptor.model.eval()
    return descriptor.model, descriptor


def _module_of(model: Any) -> nn.Module:
    """The architecture module behind a spandrel descriptor, a PeftModel or a plain module."""
    model = getattr(model, "model", model) if not isinstance(model, nn.Module) else model  # descriptor -> module
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def architecture_name(model: Any) -> str:
    """The architecture's name: spandrel's architecture id for a descriptor, else the module's class name."""
    architecture = getattr(model, "architecture", None)
    name = getattr(architecture, "id", None)
    return str(name) if name else type(_module_of(model)).__name__


def ipt_grid_size(model: Any) -> list[int]:
    """IPT's token grid [n, n]: its patch size (48) over its patch dimension (3), 16 x 16 for the released models."""
    module = _module_of(model)
    side = int(module.patch_size) // int(module.body.patch_dim)
    return [side, side]


def adaptir_config_for(model: Any, **kwargs: Any) -> AdaptIRConfig:
    """An ``AdaptIRConfig`` for a spandrel-loaded ``model`` (module or descriptor), keyword arguments overriding.

    The preset follows the architecture (``peft_adaptir.presets``: SwinIR/HAT ``mlp`` with ``x_size``, DAT ``ffn``
    with ``x_size``, SCUNet ``mlp`` on (B, H, W, C), NAFNet ``conv4 -> conv5`` on (B, C, H, W), IPT
    ``linear1 -> linear2`` on (N, B, C) with its grid read from the model). With ``target_modules=[...]`` any
    architecture works (give ``layout`` and a grid source too); without either, a ValueError names the architecture.
    """
    if kwargs.get("target_modules") is not None:
        return AdaptIRConfig(**kwargs)
    module = _module_of(model)
    preset_name = kwargs.pop("preset", None)
    preset = PRESETS.get(preset_name) if preset_name else find_preset(None, type(module).__name__)
    if preset is None and preset_name is None:
        raise ValueError(
            f"AdaptIR has no preset for the {architecture_name(model)} architecture ({type(module).__name__}). Pass "
            "target_modules=[...] (the name of each block's FFN module, or its first module plus span_end=<its last "
            f"sibling>), layout (one of 'BNC', 'NBC', 'BHWC', 'BCHW') and, for tokens, a grid source (grid_argument, "
            f"grid_size or infer_grid_from_input=True), or preset=<one of {sorted(PRESETS)}> if one fits."
        )
    name = preset.name if preset is not None else preset_name  # an unknown explicit name: AdaptIRConfig says so
    if name == "ipt" and not any(kwargs.get(field) for field in _GRID_FIELDS):
        kwargs["grid_size"] = ipt_grid_size(module)
    return AdaptIRConfig(preset=name, **kwargs)


def size_multiple_for(descriptor: Any) -> int:
    """The multiple both image sides must have for this model (spandrel's ``size_requirements.multiple_of``).

    Pass it as ``restore(..., size_multiple=size_multiple_for(descriptor))``. Architectures that pad internally
    (SwinIR, HAT, NAFNet, SCUNet) report 1. A module loaded by ``base_model_from_checkpoint`` carries the value as
    ``adaptir_size_multiple``.
    """
    requirements = getattr(descriptor, "size_requirements", None)
    if requirements is not None:
        return int(requirements.multiple_of)
    stored = getattr(descriptor, SIZE_MULTIPLE_ATTRIBUTE, None)
    if stored is not None:
        return int(stored)
    raise TypeError(
        f"size_multiple_for needs a spandrel ModelDescriptor (the second value of load_spandrel_base), not "
        f"{type(descriptor).__name__}."
    )


def base_model_from_checkpoint(path: str | os.PathLike) -> nn.Module:
    """A base restorer from a checkpoint file for ``--base model.pth``: (B, 3, H, W) in [0, 1] -> (B, 3, sH, sW).

    The architecture module itself, in eval mode, with ``adaptir_size_multiple`` set from spandrel's size
    requirements. Architectures that spandrel calls through a special function (IPT runs on fixed 48 x 48 patches
    scaled to [0, 255]) cannot be called on whole images this way and raise a ValueError saying what to use instead.
    """
    model, descriptor = load_spandrel_base(path)
    if architecture_name(descriptor) == "IPT":
        raise ValueError(
            f"{os.fspath(path)!r} is an IPT model, which runs on fixed {model.patch_size} x {model.patch_size} "
            "patches scaled to [0, 255] rather than on whole images, so it cannot be used as --base. Use the Python "
            "API: load_spandrel_base() and get_peft_model(model, adaptir_config_for(model)), then call the "
            "descriptor on images."
        )
    setattr(model, SIZE_MULTIPLE_ATTRIBUTE, size_multiple_for(descriptor))
    return model
