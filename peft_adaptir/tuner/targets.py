"""Which modules an AdaptIR span may start or end at, and the channel counts C_in -> C_out its branch then has.

The branch reads the span's input (C_in channels, from the target's first Linear/Conv) and writes into the span's
output (C_out channels, from the last Linear/Conv of ``span_end``, or of the target itself without ``span_end``). Any
Linear works (it keeps the positions); a Conv2d works when it keeps the spatial size (stride 1, dilation 1, padding
(k - 1) / 2 or "same"). Other targets are refused here, at injection, naming the module and its channel counts.
"""

from __future__ import annotations

import re

from torch import nn

from .layer import infer_in_channels, infer_out_channels

__all__ = ["matches_module_names", "span_channels"]


def _check_position_preserving(module: nn.Module, key: str) -> None:
    """Raise ValueError for a leaf target whose output positions differ from its input positions."""
    if isinstance(module, nn.modules.conv._ConvTransposeNd) or (
        isinstance(module, nn.modules.conv._ConvNd) and not isinstance(module, nn.Conv2d)
    ):
        raise ValueError(
            f"Cannot adapt {key} ({type(module).__name__}, {module.in_channels} -> {module.out_channels} channels): "
            "the AdaptIR branch works on 2-D feature maps at unchanged positions. Target a Linear or Conv2d."
        )
    if isinstance(module, nn.Conv2d):
        same = module.padding == "same" or all(
            p * 2 == d * (k - 1) for p, d, k in zip(module.padding, module.dilation, module.kernel_size)
        )
        if tuple(module.stride) != (1, 1) or not same:
            raise ValueError(
                f"Cannot adapt {key} (Conv2d {module.in_channels} -> {module.out_channels} channels, kernel "
                f"{tuple(module.kernel_size)}, stride {tuple(module.stride)}, padding {module.padding}): it changes "
                "the spatial size, so the adapter's output cannot be added to it. Target a stride-1 Conv2d with "
                "padding (k - 1) / 2, a Linear, or the module where the feature-map size is kept."
            )


def span_channels(target: nn.Module, span_end: nn.Module | None, key: str) -> tuple[int, int]:
    """(C_in, C_out) of the span from ``target`` (module path ``key``) to ``span_end`` (or the target itself)."""
    base = target.get_base_layer() if hasattr(target, "get_base_layer") else target
    last = base if span_end is None else span_end
    for module in (base, last):
        if not list(module.children()):
            _check_position_preserving(module, key)
    c_in = infer_in_channels(base)
    c_out = infer_out_channels(last)
    return c_in, c_in if c_out is None else c_out


def matches_module_names(names: set[str] | str | None, key: str) -> bool:
    """Whether module path ``key`` is named by ``names`` the way peft matches ``target_modules``: a regex matching
    the whole path, or a set of names matching the path or its end (after a dot)."""
    if not names:
        return False
    if isinstance(names, str):
        return re.fullmatch(names, key) is not None
    return any(key == name or key.endswith(f".{name}") for name in names)
