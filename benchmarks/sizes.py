"""AdaptIR's parameter count and share of the base on transformers' Swin2SR shapes (random weights, no download).

python benchmarks/sizes.py            # prints a markdown table (used in the README)
"""

from __future__ import annotations

from peft import get_peft_model
from transformers import Swin2SRConfig, Swin2SRForImageSuperResolution

import peft_adaptir  # noqa: F401
from peft_adaptir import AdaptIRConfig

SHAPES = {
    "lightweight x2 (embed 60, depths 4 x 6)": dict(
        embed_dim=60, depths=[6] * 4, num_heads=[6] * 4, upscale=2, upsampler="pixelshuffledirect"
    ),
    "classical x2 (embed 180, depths 6 x 6)": dict(
        embed_dim=180, depths=[6] * 6, num_heads=[6] * 6, upscale=2, upsampler="pixelshuffle"
    ),
}
METHODS = {
    "AdaptIR gated": dict(fusion="gated"),
    "AdaptIR sum": dict(fusion="sum"),
    "bottleneck (AdaptFormer)": dict(fusion="sum", branches=[]),
}


def main() -> None:
    print("| base shape | base params | method | adapter width h | adapter params | share of base |")
    print("|---|---:|---|---:|---:|---:|")
    for shape_name, shape in SHAPES.items():
        config = Swin2SRConfig(window_size=8, mlp_ratio=2.0, img_range=1.0, **shape)
        for method, kwargs in METHODS.items():
            model = get_peft_model(Swin2SRForImageSuperResolution(config), AdaptIRConfig(**kwargs))
            trainable, total = model.get_nb_trainable_parameters()
            base = total - trainable
            width = max(4, shape["embed_dim"] // 24)
            print(f"| {shape_name} | {base:,} | {method} | {width} | {trainable:,} | {100 * trainable / base:.2f}% |")


if __name__ == "__main__":
    main()
