"""Train the zoo: one AdaptIR adapter per task on the embedded default base, written into the package's assets.

    python examples/train_zoo.py                                   # every task of ZOO_TASKS, then nothing else
    python examples/train_zoo.py --tasks denoise-50 low-light      # a subset (e.g. two processes in parallel)
    python examples/train_zoo.py --steps 20 --output /tmp/zoo      # a quick try, outside the package

For each task: ``peft_adaptir.training.train`` on scikit-image's training photos (checkpoints in ``--work-dir``, so an
interrupted run resumes), then ``<output>/<task>/`` receives ``adapter_model.safetensors``, ``adapter_config.json``
and a ``README.md`` model card with this exact command, the seed, the steps, the wall time and the PSNR on the
held-out photos (astronaut, chelsea, coffee: degraded input, base without adapter, base with the adapter).
Train the router afterwards with ``peft-adaptir train-router`` (the default output is the zoo's router folder).
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import sys
import time
from pathlib import Path

import torch

from peft_adaptir.backbones.default_base import load_default_base
from peft_adaptir.data.degradations import get_task_spec
from peft_adaptir.data.pairs import EvalPairs
from peft_adaptir.data.sources import SKIMAGE_HELDOUT, load_skimage_photos
from peft_adaptir.metrics import psnr_batch
from peft_adaptir.routing.zoo import ZOO_DIR, ZOO_TASKS
from peft_adaptir.training.config import TrainingConfig
from peft_adaptir.training.loop import train

ADAPTER_FILES = ("adapter_model.safetensors", "adapter_config.json")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", nargs="+", default=list(ZOO_TASKS), help="Tasks to train (default: the zoo).")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--patch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=4e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--val-crop", type=int, default=256, help="Centre crop of the held-out photos.")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads.")
    parser.add_argument("--output", type=Path, default=ZOO_DIR, help="Zoo folder (default: the package's).")
    parser.add_argument("--work-dir", type=Path, default=Path("runs/zoo"), help="Checkpoints and training logs.")
    return parser.parse_args(argv)


def input_psnr(task: str, seed: int, crop: int) -> dict[str, float]:
    """PSNR of the degraded held-out photos (the same pairs the training validation uses)."""
    pairs = EvalPairs(load_skimage_photos("validation"), task, seed=seed, crop=crop)
    return {name: psnr_batch(deg[None], clean[None], quantize=True).item() for deg, clean, name in pairs}


def model_card(task: str, args: argparse.Namespace, command: str, scores: dict, wall_s: float) -> str:
    rows = "\n".join(
        f"| {name} | {scores['input'][name]:.2f} | {scores['base'][name]:.2f} | {scores['adapter'][name]:.2f} |"
        for name in SKIMAGE_HELDOUT
    )
    mean = {key: sum(values.values()) / len(values) for key, values in scores.items()}
    return f"""---
library_name: peft
base_model: peft_adaptir/assets/default_base
pipeline_tag: image-to-image
tags:
- adaptir
- peft
- image-to-image
- {task}
---

# AdaptIR zoo adapter: `{task}`

An AdaptIR adapter (default `AdaptIRConfig`: sum fusion, width C // 24) for the embedded default base of
peft-adaptir, shipped inside the package. Degradation: {get_task_spec(task).description}.

    peft-adaptir restore --task {task} photo.png --output restored/

## Training

- Data: scikit-image's training photos ({args.patch_size}x{args.patch_size} random crops, the 8 flips/rotations),
  degraded by the `{task}` preset, seeded; held out and never trained on: {", ".join(SKIMAGE_HELDOUT)}.
- {args.steps} steps, batch {args.batch_size}, L1 loss, AdamW lr {args.lr:g} (5% warm-up, cosine), gradient clip 1,
  seed {args.seed}, {args.threads} CPU thread(s); wall time {wall_s / 60:.1f} min on a shared CPU.

Command:

```bash
{command}
```

## Held-out PSNR

dB, RGB, 8-bit, centre {args.val_crop}x{args.val_crop} crops of the held-out photos, degraded with fixed seeds
(`EvalPairs(seed={args.seed})`).

| photo | degraded input | base, no adapter | base + this adapter |
|---|---:|---:|---:|
{rows}
| **mean** | {mean["input"]:.2f} | {mean["base"]:.2f} | **{mean["adapter"]:.2f}** |
"""


def train_task(task: str, args: argparse.Namespace, command: str) -> dict:
    config = TrainingConfig(
        output_dir=str(args.work_dir / task), task=task, steps=args.steps, batch_size=args.batch_size,
        patch_size=args.patch_size, lr=args.lr, seed=args.seed, val_every=0, val_crop=args.val_crop,
        checkpoint_every=max(1, args.steps // 4), progress=False,
    )  # fmt: skip
    start = time.perf_counter()
    result = train(load_default_base(), config)
    wall_s = time.perf_counter() - start
    scores = {
        "input": input_psnr(task, args.seed, args.val_crop),
        "base": _evaluate(None, task, args),
        "adapter": _evaluate(result.model, task, args),
    }
    target = args.output / task
    target.mkdir(parents=True, exist_ok=True)
    for name in ADAPTER_FILES:
        shutil.copyfile(result.adapter_dir / name, target / name)
    (target / "README.md").write_text(model_card(task, args, command, scores, wall_s))
    summary = {key: sum(v.values()) / len(v) for key, v in scores.items()}
    print(f"{task}: {summary} in {wall_s / 60:.1f} min -> {target}", flush=True)
    return {"task": task, "wall_s": wall_s, "mean": summary, "per_image": scores}


@torch.no_grad()
def _evaluate(model, task: str, args: argparse.Namespace) -> dict[str, float]:
    """Per-photo PSNR of ``model`` (None: the default base) on the held-out pairs."""
    model = load_default_base() if model is None else model.eval()
    pairs = EvalPairs(load_skimage_photos("validation"), task, seed=args.seed, crop=args.val_crop)
    scores = {}
    for degraded, clean, name in pairs:
        restored = model(degraded[None].to(next(model.parameters()).device)).reconstruction.float().clamp(0, 1)
        scores[name] = psnr_batch(restored.cpu(), clean[None], quantize=True).item()
    return scores


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    command = shlex.join(["python", "examples/train_zoo.py", *(sys.argv[1:] if argv is None else argv)])
    for task in args.tasks:
        get_task_spec(task)  # fail early on a bad name
    results = [train_task(task, args, command) for task in args.tasks]
    args.work_dir.mkdir(parents=True, exist_ok=True)
    (args.work_dir / f"summary-{'-'.join(args.tasks)}.json").write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
