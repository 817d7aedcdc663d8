"""``peft-adaptir restore``: restore image files with several task adapters loaded once, the task chosen per file.

The steps are separate functions so other commands can reuse them: :func:`parse_adapter_specs` (``NAME=PATH``),
:func:`collect_inputs` (files and folders -> (file, task)), :func:`plan_outputs` (unique output names, what is
skipped and why), :func:`check_output_folder` (before any compute) and :func:`restore_files` (read, restore and
write one batch at a time).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..image_files import IMAGE_EXTENSIONS
from ..routing.auto import AUTO

_DESCRIPTION = """\
Restore image files with one or several AdaptIR task adapters, loaded once; the task is chosen per file.

Output names: each input INPUT.EXT is written as OUTPUT/INPUT-TASK.png, always PNG, at the input's bit depth
(16-bit in, 16-bit out), upright (EXIF orientation applied). Two inputs that would get the same name (photo.png and
photo.jpg) are told apart by their extension: photo-png-TASK.png and photo-jpg-TASK.png (then -2, -3, ...).

Overwriting: an input file is never overwritten. An output that already exists is skipped and listed (so a rerun
restores only what is missing) unless --overwrite is given. Unreadable inputs stop the run with the file's name,
or with --skip-bad are skipped and listed at the end (exit code 1). Results are written as they are ready, one
batch at a time, so an interrupted run keeps what it finished.
"""


def add_restore_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.description = _DESCRIPTION
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
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
    parser.add_argument(
        "--output", required=True, type=Path,
        help="Folder for the restored files, named INPUT-TASK.png (created if missing; checked before any work).",
    )  # fmt: skip
    parser.add_argument(
        "--overwrite", action="store_true", help="Replace outputs that already exist (default: skip and list them)."
    )
    parser.add_argument(
        "--skip-bad", action="store_true", help="Skip unreadable input files and list them at the end (exit code 1)."
    )
    parser.add_argument("--tile-size", type=int, default=None, help="Tile images larger than this (0: never).")
    parser.add_argument(
        "--tile-overlap", type=int, default=32, help="Overlap between neighbouring tiles in pixels (default 32)."
    )
    parser.add_argument(
        "--batch-size", type=int, default=4,
        help="Images (or tiles) per forward pass (default 4); memory grows with it, as do files held at once.",
    )  # fmt: skip
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1, mps (default: where the model is).")
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


@dataclass
class Job:
    """One input file, its task, where its result goes, and why it is skipped (None: it is restored)."""

    source: Path
    task: str
    target: Path
    skip: str | None = None


def plan_outputs(pairs: list[tuple[Path, str]], output: Path, overwrite: bool) -> list[Job]:
    """Unique target names for (file, task) pairs; existing outputs (unless ``overwrite``) and inputs are skipped."""
    plain = [f"{path.stem}-{task}.png" for path, task in pairs]
    counts: dict[str, int] = {}
    for name in plain:
        counts[name.lower()] = counts.get(name.lower(), 0) + 1
    inputs = {os.path.realpath(path) for path, _ in pairs}
    taken: set[str] = set()
    jobs = []
    for (path, task), name in zip(pairs, plain):
        if counts[name.lower()] > 1:  # photo.png and photo.jpg: tell them apart by extension
            name = f"{path.stem}-{path.suffix.lstrip('.').lower()}-{task}.png"
        stem, number = name[: -len(".png")], 1
        while name.lower() in taken:  # the same file name in two folders
            number += 1
            name = f"{stem}-{number}.png"
        taken.add(name.lower())
        target = output / name
        job = Job(path, task, target)
        if os.path.realpath(target) in inputs:
            job.skip = "its output name is an input file, which is never overwritten; choose another --output"
        elif target.exists() and not overwrite:
            job.skip = "the output exists (--overwrite replaces it)"
        jobs.append(job)
    return jobs


def check_output_folder(output: Path) -> None:
    """Create ``output`` and make sure files can be written there, before any model is loaded."""
    if output.exists() and not output.is_dir():
        raise ValueError(f"--output {output} is a file; pass a folder (it is created if missing).")
    try:
        output.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=output):
            pass
    except OSError as err:
        raise ValueError(
            f"--output {output} cannot be written to ({err.strerror or err}); choose another folder."
        ) from err


def restore_files(
    model: Any,
    jobs: list[Job],
    *,
    routed: bool,
    skip_bad: bool,
    report: Callable[[str], None],
    **restore_kwargs: Any,
) -> list[tuple[Path, str]]:
    """Read, restore and write ``jobs`` one batch at a time; return the (file, reason) pairs skipped as unreadable.

    ``routed``: pass each file's task as ``adapter_names`` (a model with adapters). Without ``skip_bad`` the first
    unreadable file raises an ``UnreadableImageError`` naming it; results written before it are kept.
    """
    from tqdm.auto import tqdm

    from ..image_files import UnreadableImageError, read_image, write_image
    from ..inference.pipeline import restore

    batch_size = restore_kwargs.get("batch_size", 4)
    bad: list[tuple[Path, str]] = []
    with tqdm(total=len(jobs), desc="images", unit="image", disable=len(jobs) < 2) as bar:
        for start in range(0, len(jobs), batch_size):
            ready, images = [], []
            for job in jobs[start : start + batch_size]:
                try:
                    images.append(read_image(job.source))
                    ready.append(job)
                except UnreadableImageError as err:
                    if not skip_bad:
                        raise UnreadableImageError(f"{err} Pass --skip-bad to skip such files.") from err
                    bad.append((job.source, str(err)))
                    bar.update(1)
            if not ready:
                continue
            names = {"adapter_names": [job.task for job in ready]} if routed else {}
            restored = restore(model, images, **names, **restore_kwargs)
            decisions = [None] * len(ready)
            if routed and any(job.task == AUTO for job in ready):  # a router chose: restore() says what
                restored, decisions = restored
            for job, pixels, decision in zip(ready, restored, decisions):
                write_image(job.target, pixels)
                chosen = job.task if decision is None else f"auto: {decision.describe()}"
                report(f"{job.source} -> {job.target} ({chosen})")
                bar.update(1)
    return bad


def run_restore(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from ..backbones.loading import load_base_model
    from ..hub import check_adapter_location, load_adapters
    from ..image_files import UnreadableImageError
    from ..inference.devices import resolve_device
    from ..routing.zoo import shipped_adapter_specs
    from ..tuner.constants import BASE_ADAPTER_NAME

    def fail(message: object) -> int:
        print(f"peft-adaptir restore: error: {message}", file=sys.stderr)
        return 2

    try:
        adapters = parse_adapter_specs(args.adapter) or shipped_adapter_specs()
        if not adapters and args.task not in (None, BASE_ADAPTER_NAME):
            raise ValueError(f"--task {args.task} needs an adapter: add --adapter {args.task}=PATH_OR_HUB_ID.")
        known = set(adapters) | {BASE_ADAPTER_NAME, AUTO}
        default_task = args.task or (next(iter(adapters)) if len(adapters) == 1 else None)
        if default_task is not None and default_task not in known:
            raise ValueError(f"--task {default_task!r} is not a loaded adapter; loaded: {sorted(adapters)} (or auto).")
        if args.batch_size < 1:
            raise ValueError(f"--batch-size must be at least 1, got {args.batch_size}.")
        if args.tile_overlap < 0:
            raise ValueError(f"--tile-overlap must be 0 or more, got {args.tile_overlap}.")
        if args.tile_size and args.tile_overlap >= args.tile_size:
            raise ValueError(
                f"--tile-overlap {args.tile_overlap} must be smaller than --tile-size {args.tile_size}; pass a "
                f"smaller --tile-overlap (e.g. {args.tile_size // 4}) or a larger --tile-size."
            )
        device = resolve_device(args.device)
        for name, location in adapters.items():
            check_adapter_location(name, location)  # a mistyped local folder is named now, not after a Hub lookup
        jobs = plan_outputs(collect_inputs(args.inputs, default_task, known), args.output, args.overwrite)
        check_output_folder(args.output)
    except (ValueError, FileNotFoundError, OSError) as err:
        return fail(err)
    skipped = [job for job in jobs if job.skip]
    for job in skipped:
        print(f"skipped {job.source}: {job.target} not written, {job.skip}", file=sys.stderr)
    todo = [job for job in jobs if not job.skip]
    if not todo:
        print(f"Nothing to do: all {len(jobs)} output(s) were skipped.", file=sys.stderr)
        return 0
    try:
        model = load_base_model(args.base)
        if adapters:
            model = load_adapters(model, adapters)
        bad = restore_files(
            model, todo, routed=bool(adapters), skip_bad=args.skip_bad, report=tqdm.write,
            tile_size=args.tile_size, tile_overlap=args.tile_overlap, batch_size=args.batch_size, device=device,
            **({"router": args.router, "routing": args.routing} if adapters else {}),
        )  # fmt: skip
    except (UnreadableImageError, ValueError, FileNotFoundError, OSError, RuntimeError) as err:
        return fail(err)
    if skipped:
        print(f"{len(skipped)} file(s) skipped because of their outputs (listed above).", file=sys.stderr)
    if bad:
        print(f"{len(bad)} unreadable file(s) skipped:", file=sys.stderr)
        for path, reason in bad:
            print(f"  {path}: {reason}", file=sys.stderr)
        return 1
    return 0
