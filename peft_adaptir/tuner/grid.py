"""Where the token grid (H, W) comes from when an FFN sees flat tokens.

Three sources, never a silent guess: captured exactly from an argument of the enclosing block's forward (e.g.
Swin2SR's ``input_dimensions``, SwinIR's ``x_size``), stated by the user, or inferred from the model's input image
size when exactly one integer stride fits the token count.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import nn

from .call_state import slot_get, slot_set


class _PerThreadSize:
    """A ``size`` attribute, (H, W) or None, kept per thread (see ``call_state``): threads sharing a model each see
    their own."""

    @property
    def size(self) -> tuple[int, int] | None:
        return slot_get(self)

    @size.setter
    def size(self, value: tuple[int, int] | None) -> None:
        slot_set(self, value)


class InputSizeRecorder(_PerThreadSize):
    """Remembers the spatial size (H, W) of the last image a model was called with in this thread (a pre-hook)."""

    def __call__(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        images = [v for v in (*args, *kwargs.values()) if isinstance(v, torch.Tensor) and v.dim() == 4]
        self.size = (int(images[0].shape[-2]), int(images[0].shape[-1])) if images else None


class BlockGridCapture(_PerThreadSize):
    """A forward pre-hook that reads (H, W) from one argument of a block's forward, by name or position.

    ``size`` is per thread (see ``call_state``), so threads sharing a model each see their own grid.
    """

    def __init__(self, block: nn.Module, argument: str) -> None:
        self.argument = argument
        self.signature = inspect.signature(block.forward)

    def __call__(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        bound = self.signature.bind_partial(*args, **kwargs).arguments
        value: Any = bound.get(self.argument)
        self.size = None if value is None else (int(value[0]), int(value[1]))


def find_enclosing_block(model: nn.Module, target_key: str, argument: str) -> tuple[str, nn.Module]:
    """The nearest ancestor of ``target_key`` whose forward takes a parameter named ``argument``."""
    parts = target_key.split(".")
    for depth in range(len(parts) - 1, -1, -1):
        name = ".".join(parts[:depth])
        block = model.get_submodule(name)
        if argument in inspect.signature(block.forward).parameters:
            return name, block
    raise ValueError(
        f"No module enclosing {target_key!r} has a forward argument named {argument!r}, so the token grid cannot be "
        "captured. Check grid_argument in AdaptIRConfig, or use grid_size=[H, W] or infer_grid_from_input=True."
    )


def infer_grid(image_size: tuple[int, int], num_tokens: int) -> tuple[int, int] | None:
    """The grid (H/d, W/d) with (H/d) * (W/d) = num_tokens for an integer stride d, or None if no stride fits.

    (H/d)(W/d) falls strictly as d grows, so at most one stride fits: the answer is never ambiguous.
    """
    height, width = image_size
    for stride in range(1, min(height, width) + 1):
        if height % stride == 0 and width % stride == 0:
            tokens = (height // stride) * (width // stride)
            if tokens == num_tokens:
                return height // stride, width // stride
            if tokens < num_tokens:
                return None
    return None


def resolve_grid(
    num_tokens: int,
    where: str,
    fixed: tuple[int, int] | None,
    block: BlockGridCapture | None,
    recorder: InputSizeRecorder | None,
) -> tuple[int, int]:
    """(H, W) for ``num_tokens`` tokens from whichever source is configured; a ValueError says what to do otherwise."""
    if block is not None:
        grid, source = block.size, f"the enclosing block's `{block.argument}` argument"
        if grid is None:
            raise ValueError(
                f"{where} ran without its enclosing block passing `{block.argument}`; the token grid is unknown. "
                "Call the model as a whole, or set grid_size=[H, W] in AdaptIRConfig."
            )
    elif fixed is not None:
        grid, source = fixed, "grid_size"
    elif recorder is not None:
        if recorder.size is None:
            raise ValueError(f"{where}: the model was called without a 4-D image, so the grid cannot be inferred.")
        grid, source = infer_grid(recorder.size, num_tokens), f"the input image size {recorder.size}"
        if grid is None:
            raise ValueError(
                f"{where} sees {num_tokens} tokens, which no integer stride of the input image {recorder.size} "
                "gives. State the grid with grid_size=[H, W] or grid_argument in AdaptIRConfig."
            )
    else:
        raise ValueError(
            f"{where} sees flat tokens ({num_tokens} of them) and no source for their (H, W) grid is configured. Set "
            "one in AdaptIRConfig: grid_argument (an argument of the enclosing block's forward holding (H, W)), "
            "grid_size=[H, W], or infer_grid_from_input=True; or use a preset."
        )
    if grid[0] * grid[1] != num_tokens:
        raise ValueError(
            f"{where} sees {num_tokens} tokens but the grid {tuple(grid)} from {source} holds {grid[0] * grid[1]}. "
            "Check the grid source in AdaptIRConfig."
        )
    return tuple(grid)
