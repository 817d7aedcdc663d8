"""Loading the pretrained restorer that AdaptIR adapters are trained on: ``load_base_model(spec)``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import AutoConfig, AutoModelForImageToImage, Swin2SRForImageSuperResolution

from .base_name import DEFAULT_BASE_NAME
from .default_base import load_default_base
from .spandrel_loader import base_model_from_checkpoint

__all__ = ["load_base_model", "reconstruction"]

_PATH_PREFIXES = ("/", "./", "../", "~")


def load_base_model(spec: str | os.PathLike | None = None) -> nn.Module:
    """The base restorer named by ``spec``, in eval mode, on the CPU.

    ``spec``: a local folder written by ``save_pretrained`` or a Hugging Face model id of a transformers
    image-to-image model (Swin2SR is loaded as ``Swin2SRForImageSuperResolution``, others through
    ``AutoModelForImageToImage``); None or ``"peft-adaptir:default-base"``: the embedded default in
    ``peft_adaptir/assets/default_base/``. The model maps
    ``(B, 3, H, W)`` float in [0, 1] to ``.reconstruction`` of ``(B, 3, sH, sW)``; training needs ``s = 1``.
    """
    if spec is None or os.fspath(spec) == DEFAULT_BASE_NAME:
        return load_default_base()
    spec = os.fspath(spec)
    path = Path(spec).expanduser()
    if path.is_file():  # a .pth / .safetensors checkpoint of a spandrel-supported architecture
        return base_model_from_checkpoint(path)
    if spec.startswith(_PATH_PREFIXES) and not path.exists():
        raise FileNotFoundError(f"--base {spec}: no such folder.")
    try:
        config = AutoConfig.from_pretrained(str(path) if path.exists() else spec)
    except (OSError, ValueError) as err:
        raise ValueError(
            f"Cannot load the base model {spec!r}: it is neither a local folder with config.json nor a model id "
            f"found on the Hub or in the local cache ({err})."
        ) from err
    model_class = Swin2SRForImageSuperResolution if config.model_type == "swin2sr" else AutoModelForImageToImage
    try:
        model = model_class.from_pretrained(str(path) if path.exists() else spec, config=config)
    except (OSError, ValueError) as err:
        raise ValueError(f"Cannot load the weights of base model {spec!r} ({config.model_type}): {err}") from err
    return model.eval()


def reconstruction(output: Any) -> torch.Tensor:
    """The restored ``(B, 3, H, W)`` image in a model's output: the tensor itself or its ``.reconstruction``."""
    if isinstance(output, torch.Tensor):
        return output
    image = getattr(output, "reconstruction", None)
    if isinstance(image, torch.Tensor):
        return image
    raise TypeError(
        f"The model returned a {type(output).__name__}; expected a (B, 3, H, W) tensor or an output with "
        "`.reconstruction` (transformers image-restoration models)."
    )
