"""The one rule for the size a model needs: both image sides a multiple of ``size_multiple(model)``."""

from __future__ import annotations

from torch import nn

__all__ = ["SIZE_MULTIPLE_ATTRIBUTE", "size_multiple"]

# set on a base module by whoever knows its requirement (the spandrel loader: spandrel's size_requirements)
SIZE_MULTIPLE_ATTRIBUTE = "adaptir_size_multiple"


def size_multiple(model: nn.Module) -> int:
    """The multiple both sides of an input image must have for ``model`` (a base model or a PeftModel around one).

    transformers Swin2SR: ``config.window_size`` (it pads inside, but then fails on its way out); a base that carries
    ``adaptir_size_multiple`` (spandrel-loaded checkpoints): that value; anything else: 1 (the model takes any size).
    ``restore()`` pads inputs to it and crops outputs back; training needs patch sizes that are multiples of it.
    """
    base = model.get_base_model() if callable(getattr(model, "get_base_model", None)) else model
    config = getattr(base, "config", None)
    if getattr(config, "model_type", None) == "swin2sr":
        return int(config.window_size)
    stored = getattr(base, SIZE_MULTIPLE_ATTRIBUTE, None)
    return 1 if stored is None else int(stored)
