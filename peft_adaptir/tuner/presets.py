"""Presets: where AdaptIR goes in known restoration architectures.

A preset names the FFN span (the module whose input the adapter reads, and the sibling whose output receives the
result), the tensor layout the FFN sees, and where the token grid (H, W) comes from. transformers models are recognised
by ``config.model_type``, plain ``nn.Module`` models (e.g. loaded by spandrel) by their class name, and any model by an
explicit ``AdaptIRConfig(preset=...)``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Preset:
    """Where AdaptIR attaches in one architecture family."""

    name: str
    target_modules: tuple[str, ...]
    layout: str
    span_end: str | None = None
    grid_argument: str | None = None
    grid_size: tuple[int, int] | None = None
    window_targets: tuple[str, ...] = ()
    model_types: tuple[str, ...] = ()
    class_names: tuple[str, ...] = ()
    description: str = ""


PRESETS: dict[str, Preset] = {
    preset.name: preset
    for preset in (
        Preset(
            name="swin2sr",
            target_modules=("intermediate",),
            span_end="output",
            layout="BNC",
            grid_argument="input_dimensions",
            model_types=("swin2sr",),
            description="transformers Swin2SR: intermediate -> output, tokens (B, N, C), grid from the layer's "
            "`input_dimensions` (the padded size).",
        ),
        Preset(
            name="swin2sr-attention",
            target_modules=("intermediate", "self"),
            span_end="output",
            layout="BNC",
            grid_argument="input_dimensions",
            window_targets=("self",),
            description="transformers Swin2SR, beside attention as well as the FFN: the FFN span as in 'swin2sr', "
            "and attention.self -> attention.output on each window (rows (B * windows, window_size ** 2, C), seen as "
            "window_size x window_size maps). Chosen by name (preset='swin2sr-attention'), never automatically.",
        ),
        Preset(
            name="swinir",
            target_modules=("mlp",),
            layout="BNC",
            grid_argument="x_size",
            class_names=("SwinIR", "HAT"),
            description="timm/SwinIR-style blocks: an `mlp` module inside blocks called as `forward(x, x_size)`.",
        ),
        Preset(
            name="ipt",
            target_modules=("linear1",),
            span_end="linear2",
            layout="NBC",
            grid_size=(16, 16),
            class_names=("IPT",),
            description="IPT: linear1 -> linear2, sequence-first tokens (N, B, C) on a fixed 16 x 16 grid.",
        ),
        Preset(
            name="nafnet",
            target_modules=("conv4",),
            span_end="conv5",
            layout="BCHW",
            class_names=("NAFNet",),
            description="NAFNet-style conv FFN: conv4 -> gate -> conv5 on (B, C, H, W) feature maps.",
        ),
        Preset(
            name="dat",
            target_modules=("ffn",),
            layout="BNC",
            grid_argument="x_size",
            class_names=("DAT",),
            description="DAT: the `ffn` (SGFN, called as ffn(x, H, W)) of blocks called as `forward(x, x_size)`; "
            "tokens (B, N, C).",
        ),
        Preset(
            name="scunet",
            target_modules=("mlp",),
            layout="BHWC",
            class_names=("SCUNet",),
            description="SCUNet: the `mlp` of each Swin block, on channels-last maps (B, H, W, C) of the block's "
            "transformer half.",
        ),
    )
}


def get_preset(name: str) -> Preset:
    """The preset called ``name``; a ValueError lists the known names otherwise."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"Unknown AdaptIR preset {name!r}; known presets: {sorted(PRESETS)}.") from None


def find_preset(model_type: str | None, class_name: str | None) -> Preset | None:
    """The preset for a transformers ``model_type`` or a plain model's class name, or None."""
    for preset in PRESETS.values():
        if (model_type and model_type in preset.model_types) or (class_name and class_name in preset.class_names):
            return preset
    return None
