"""Adapt a community restoration checkpoint (.pth / .safetensors of SwinIR, HAT, DAT, NAFNet, SCUNet, ... as spandrel
loads them) to a new degradation task with AdaptIR, offline.

    pip install -e ".[spandrel]"        # spandrel needs a torchvision matching torch: see docs/backbones.md
    python examples/adapt_spandrel_checkpoint.py --checkpoint 1x_SwinIR.pth --task derain-heavy --output runs/swinir

The checkpoint is read with restricted unpickling (weights only: a file that tries to run code is refused), the
architecture is recognised by spandrel, and AdaptIR's preset for it (FFN span, layout, grid source) is chosen by
``adaptir_config_for``. The model must restore at scale 1 (output size = input size) to be trained on our tasks.
Writes the adapter (``--output/adapter``), its training log and plots, and ``before.png`` / ``after.png`` for a
held-out photo degraded by the task.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from peft import get_peft_model
from PIL import Image

import peft_adaptir  # noqa: F401 - registers AdaptIR with peft
from peft_adaptir import restore
from peft_adaptir.backbones.loading import load_base_model
from peft_adaptir.backbones.spandrel_loader import adaptir_config_for
from peft_adaptir.data.degradations import degrade
from peft_adaptir.data.sources import load_skimage_photos, pil_to_tensor
from peft_adaptir.training.loop import TrainingConfig, train


def to_image(tensor) -> Image.Image:
    """(3, H, W) float in [0, 1] -> 8-bit RGB image."""
    return Image.fromarray((tensor.clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True, type=Path, help="A .pth or .safetensors restorer file.")
    parser.add_argument("--task", default="denoise-50", help="Degradation task (`peft-adaptir tasks`).")
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--patch-size", type=int, default=64)
    parser.add_argument("--output", type=Path, default=Path("runs/spandrel"))
    args = parser.parse_args(argv)
    try:
        base = load_base_model(args.checkpoint)
        model = get_peft_model(base, adaptir_config_for(base))
    except (ValueError, ImportError, FileNotFoundError) as err:
        print(f"adapt_spandrel_checkpoint: error: {err}", file=sys.stderr)
        return 2
    model.print_trainable_parameters()
    config = TrainingConfig(
        output_dir=str(args.output), task=args.task, steps=args.steps, batch_size=args.batch_size,
        patch_size=args.patch_size, val_every=0, val_crop=64, checkpoint_every=0, progress=False,
    )  # fmt: skip
    result = train(model, config)

    photo = load_skimage_photos("validation")[0]["image"]
    clean = pil_to_tensor(photo)[:, :96, :96]
    degraded = degrade(clean, args.task, seed=0).clamp(0, 1)
    to_image(degraded).save(args.output / "before.png")
    to_image(restore(result.model, degraded)).save(args.output / "after.png")
    print(f"Adapter in {result.adapter_dir}; before.png / after.png in {args.output}.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
