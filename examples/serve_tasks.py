"""Serve several task adapters from one base model: load them once, restore a mixed list of photos in one call.

Train two adapters (examples/train_adaptir.py), then:
    python examples/serve_tasks.py --adapter derain-heavy=runs/derain-heavy/adapter \\
        --adapter denoise-50=runs/denoise-50/adapter --output runs/serve

Adapters named after a degradation task (`peft-adaptir tasks`) get a demo input each: a held-out scikit-image photo
degraded by that task (offline). Give your own files with --image NAME=PATH (NAME: an adapter, or __base__ for the
base model alone; repeatable). Every image runs once with its adapter and once through the base model alone, all in
shared batches (`adapter_names=[...]`). In --output: LABEL-input.png, LABEL-restored.png (with its adapter),
LABEL-base.png (base model alone) and summary.json (PSNR against the clean photo, for the demo inputs).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

import peft_adaptir  # noqa: F401 - registers AdaptIR with peft before any adapter is loaded
from peft_adaptir import BASE_ADAPTER_NAME, load_adapters, restore
from peft_adaptir.data.degradations import degrade, list_tasks
from peft_adaptir.data.sources import SKIMAGE_HELDOUT, load_skimage_photos, pil_to_tensor
from peft_adaptir.metrics import calculate_psnr


def parse_pairs(specs: list[str], flag: str, unique: bool) -> list[tuple[str, str]]:
    """['a=x', 'b=y'] -> [('a', 'x'), ('b', 'y')]; a clear error for a malformed (or, if ``unique``, repeated) NAME."""
    pairs: list[tuple[str, str]] = []
    for spec in specs:
        name, sep, value = spec.partition("=")
        if not sep or not name or not value:
            raise ValueError(f"{flag} {spec!r} must look like NAME=VALUE, e.g. {flag} denoise-50=runs/denoise-50/...")
        if unique and name in dict(pairs):
            raise ValueError(f"{flag} name {name!r} is given twice.")
        pairs.append((name, value))
    return pairs


def demo_inputs(adapters: list[str], crop: int, seed: int) -> list[tuple[str, str, Image.Image, Image.Image]]:
    """(label, adapter, degraded, clean) for each adapter named after a task: a held-out photo, centre-cropped to
    ``crop`` x ``crop`` and degraded by that task, quantised to 8 bits as a saved file would be."""
    photos = load_skimage_photos("validation")
    items = []
    for index, name in enumerate(adapters):
        photo = photos[index % len(photos)]["image"]
        left, top = max(0, (photo.width - crop) // 2), max(0, (photo.height - crop) // 2)
        clean = photo.crop((left, top, left + min(crop, photo.width), top + min(crop, photo.height)))
        degraded = degrade(pil_to_tensor(clean), name, seed=seed + index).clamp(0, 1)
        array = (degraded.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        items.append((f"{SKIMAGE_HELDOUT[index % len(photos)]}-{name}", name, Image.fromarray(array), clean))
    return items


def psnr(image: Image.Image, clean: Image.Image) -> float:
    """PSNR (dB, RGB, BasicSR convention) of an 8-bit image against the clean one, rounded to 3 decimals."""
    return round(calculate_psnr(np.asarray(image) / 255.0, np.asarray(clean) / 255.0), 3)


def load_base(spec: str | None):
    """The embedded default base (``spec=None``; a clear FileNotFoundError if missing) or a model id / folder."""
    if spec is None:
        from peft_adaptir.backbones.default_base import load_default_base

        return load_default_base()
    from peft_adaptir.backbones.loading import load_base_model

    return load_base_model(spec)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--adapter",
        action="append",
        default=[],
        metavar="NAME=PATH_OR_HUB_ID",
        required=True,
        help="An adapter to load (repeat for each): a save_pretrained folder or a Hub id[@revision].",
    )
    parser.add_argument(
        "--image",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="Restore this file with adapter NAME (repeatable). Default: one demo photo per task.",
    )
    parser.add_argument("--base", default=None, help="Base model id or folder (default: the embedded default base).")
    parser.add_argument("--output", required=True, type=Path, help="Folder for the PNGs and summary.json.")
    parser.add_argument("--crop", type=int, default=256, help="Side of the demo photos' centre crop (default 256).")
    parser.add_argument("--tile-size", type=int, default=None, help="Tile images larger than this (0: never).")
    parser.add_argument("--batch-size", type=int, default=4, help="Images (or tiles) per forward pass.")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the demo degradations.")
    args = parser.parse_args(argv)

    try:
        adapters = dict(parse_pairs(args.adapter, "--adapter", unique=True))
        files = parse_pairs(args.image, "--image", unique=False)
        unknown = sorted({name for name, _ in files} - set(adapters) - {BASE_ADAPTER_NAME})
        if unknown:
            raise ValueError(f"--image names {unknown} are not loaded adapters; loaded: {sorted(adapters)}.")
        if files:
            jobs = [(f"{Path(path).stem}-{name}", name, Image.open(path).convert("RGB"), None) for name, path in files]
        else:
            not_tasks = sorted(set(adapters) - set(list_tasks()))
            if not_tasks:
                raise ValueError(
                    f"Adapters {not_tasks} are not named after a degradation task, so there is no demo input for "
                    "them: give --image NAME=PATH, or name each adapter after its task (peft-adaptir tasks)."
                )
            jobs = demo_inputs(list(adapters), args.crop, args.seed)
        model = load_adapters(load_base(args.base), adapters).eval()
    except (ValueError, OSError) as err:  # FileNotFoundError and AdapterHubError are OSErrors
        print(f"serve_tasks: error: {err}", file=sys.stderr)
        return 2

    # One call: every image with its adapter, then every image through the base model alone, in shared batches.
    images = [degraded for _, _, degraded, _ in jobs] * 2
    names = [name for _, name, _, _ in jobs] + [BASE_ADAPTER_NAME] * len(jobs)
    restored = restore(model, images, adapter_names=names, tile_size=args.tile_size, batch_size=args.batch_size)

    args.output.mkdir(parents=True, exist_ok=True)
    summary = []
    for (label, name, degraded, clean), with_adapter, base_only in zip(jobs, restored, restored[len(jobs) :]):
        degraded.save(args.output / f"{label}-input.png")
        with_adapter.save(args.output / f"{label}-restored.png")
        base_only.save(args.output / f"{label}-base.png")
        row = {"image": label, "adapter": name}
        if clean is not None:
            row.update(psnr_input=psnr(degraded, clean), psnr_base=psnr(base_only, clean))
            row.update(psnr_adapter=psnr(with_adapter, clean))
        summary.append(row)
        scores = f": PSNR {row['psnr_input']} dB in, base {row['psnr_base']}, adapter {row['psnr_adapter']}"
        print(f"{label} ({name}) -> {args.output / f'{label}-restored.png'}{scores if clean is not None else ''}")
    (args.output / "summary.json").write_text(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
