"""``peft-adaptir restore``: restore image files with several task adapters loaded once, the task chosen per file."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from PIL import Image

from ..image_files import IMAGE_EXTENSIONS


def add_restore_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("inputs", nargs="+", help="Image files or folders; 'TASK=PATH' picks the task for that path.")
    parser.add_argument("--base", default=None, help="Base model id or folder (default: the embedded base model).")
    parser.add_argument(
        "--adapter", action="append", default=[], metavar="NAME=PATH_OR_HUB_ID",
        help="A task adapter to load (repeatable): a folder saved with save_pretrained or a Hub id[@revision].",
    )  # fmt: skip
    parser.add_argument(
        "--task", default=None,
        help="Adapter for inputs without 'TASK=' ('__base__': no adapter; 'auto': a router picks per image). "
        "Without --adapter, the adapters shipped with the package are used.",
    )  # fmt: skip
    parser.add_argument("--router", default=None, help="Router folder or Hub id for 'auto' (default: the shipped one)")
    parser.add_argument("--routing", choices=("hard", "soft"), default="hard", help="'auto': one adapter or a blend")
    parser.add_argument("--output", required=True, type=Path, help="Folder for the restored PNG files.")
    parser.add_argument("--tile-size", type=int, default=None, help="Tile images larger than this (0: never).")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: where the model is).")
    return parser


def parse_adapter_specs(specs: list[str]) -> dict[str, str]:
    """['derain=path', 'denoise=user/repo@v2'] -> {'derain': 'path', 'denoise': 'user/repo@v2'}."""
    adapters = {}
    for spec in specs:
        name, sep, location = spec.partition("=")
        if not sep or not name or not location:
            raise ValueError(f"--adapter {spec!r} must look like NAME=PATH_OR_HUB_ID, e.g. derain=adapters/derain.")
        if name in adapters:
            raise ValueError(f"--adapter name {name!r} is given twice.")
        adapters[name] = location
    return adapters


def collect_inputs(inputs: list[str], default_task: str | None, known: set[str]) -> list[tuple[Path, str]]:
    """(file, task) pairs from 'PATH' / 'TASK=PATH' arguments; folders expand to their image files, sorted."""
    pairs = []
    for item in inputs:
        task, sep, rest = item.partition("=")
        if sep and task in known and Path(rest).exists():
            path = Path(rest)
        else:
            task, path = default_task, Path(item)
        if task is None:
            raise ValueError(f"No task for {item}: pass --task NAME or write it as TASK={item}.")
        if not path.exists():
            raise FileNotFoundError(f"Input {path} does not exist.")
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS) if path.is_dir() else [path]
        if not files:
            raise ValueError(f"Folder {path} holds no image files ({', '.join(IMAGE_EXTENSIONS)}).")
        pairs.extend((file, task) for file in files)
    return pairs


def run_restore(args: argparse.Namespace) -> int:
    from ..backbones.loading import load_base_model
    from ..hub import load_adapters
    from ..inference.pipeline import restore
    from ..routing.auto import AUTO
    from ..routing.zoo import shipped_adapter_specs
    from ..tuner.constants import BASE_ADAPTER_NAME

    try:
        adapters = parse_adapter_specs(args.adapter) or shipped_adapter_specs()
        if not adapters and args.task not in (None, BASE_ADAPTER_NAME):
            raise ValueError(f"--task {args.task} needs an adapter: add --adapter {args.task}=PATH_OR_HUB_ID.")
        known = set(adapters) | {BASE_ADAPTER_NAME, AUTO}
        default_task = args.task or (next(iter(adapters)) if len(adapters) == 1 else None)
        if default_task is not None and default_task not in known:
            raise ValueError(f"--task {default_task!r} is not a loaded adapter; loaded: {sorted(adapters)} (or auto).")
        jobs = collect_inputs(args.inputs, default_task, known)
        model = load_base_model(args.base)
        if adapters:
            model = load_adapters(model, adapters)
        images = []
        for path, _ in jobs:
            with Image.open(path) as image:
                images.append(image.convert("RGBA" if "A" in image.getbands() else "RGB"))
        decisions = [None] * len(jobs)
        if adapters:
            restored = restore(
                model, images, adapter_names=[task for _, task in jobs], tile_size=args.tile_size,
                batch_size=args.batch_size, device=args.device, router=args.router, routing=args.routing,
            )  # fmt: skip
            if any(task == AUTO for _, task in jobs):
                restored, decisions = restored
        else:
            restored = restore(model, images, tile_size=args.tile_size, batch_size=args.batch_size, device=args.device)
    except (ValueError, FileNotFoundError, OSError) as err:
        print(f"peft-adaptir restore: error: {err}", file=sys.stderr)
        return 2
    args.output.mkdir(parents=True, exist_ok=True)
    for (path, task), image, decision in zip(jobs, restored, decisions):
        target = args.output / f"{path.stem}-{task}.png"
        image.save(target)
        print(f"{path} -> {target} ({task if decision is None else 'auto: ' + decision.describe()})")
    return 0
