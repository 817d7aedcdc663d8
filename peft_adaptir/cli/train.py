"""``peft-adaptir train``: the command-line front of :func:`peft_adaptir.training.train`.

``add_train_arguments(parser)`` adds the options to an argparse parser; ``run_train(args)`` runs them and returns
the exit status (0 done, 1 the loss diverged, 2 bad input). Defaults come from :class:`TrainingConfig`.
"""

from __future__ import annotations

import argparse
import sys

from ..training.config import LOSSES, MIXED_PRECISION, SCHEDULES, TrainingConfig
from ..tuner.branch import FUSIONS

__all__ = ["add_train_arguments", "config_from_args", "run_train", "main"]

_DEFAULTS = TrainingConfig()


def _none_or_float(text: str) -> float | None:
    return None if text.lower() in ("none", "0", "off") else float(text)


def add_train_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the training options to ``parser`` (returned for chaining)."""
    d = _DEFAULTS
    data = parser.add_argument_group("model and data")
    data.add_argument("--base", default=None, help="Base restorer: a transformers model id or a local save_pretrained "
                      "folder of a scale-1 model. Default: the embedded default base model.")  # fmt: skip
    data.add_argument("--task", default=None, help="Degradation preset, e.g. denoise-50, derain-heavy, low-light, "
                      "sr2-noise30 (peft_adaptir.degradations.list_tasks()).")  # fmt: skip
    data.add_argument("--data", default=None, help="Clean images: 'skimage' (default, bundled photos), a local "
                      "folder (train/ and validation/ sub-folders optional) or a Hub dataset id.")  # fmt: skip
    data.add_argument("--degraded-data", default=None, help="Folder of real degraded images matching --data by file "
                      "name (instead of --task).")  # fmt: skip
    data.add_argument("--image-column", default=None, help="Image column of a Hub dataset (default: the first).")
    data.add_argument("--output", required=True, help="Output folder: checkpoints/ and adapter/ go here.")
    opt = parser.add_argument_group("optimisation")
    opt.add_argument("--steps", type=int, default=d.steps, help=f"Optimizer steps (default {d.steps}).")
    opt.add_argument("--batch-size", type=int, default=d.batch_size, help="Patches per process and micro-batch.")
    opt.add_argument("--patch-size", type=int, default=d.patch_size, help="Training crop size (a window multiple).")
    opt.add_argument("--lr", type=float, default=d.lr, help=f"Peak learning rate of AdamW (default {d.lr}).")
    opt.add_argument("--weight-decay", type=float, default=d.weight_decay)
    opt.add_argument("--schedule", choices=SCHEDULES, default=d.schedule, help="Warmup, then cosine or constant.")
    opt.add_argument("--warmup-steps", type=int, default=None, help="Default: 5%% of --steps.")
    opt.add_argument("--loss", choices=LOSSES, default=d.loss)
    opt.add_argument("--grad-accum", type=int, default=d.grad_accum, help="Micro-batches per optimizer step.")
    opt.add_argument("--grad-clip", type=_none_or_float, default=d.grad_clip, help="Max gradient norm ('none': off).")
    opt.add_argument("--mixed-precision", choices=MIXED_PRECISION, default=d.mixed_precision)
    opt.add_argument("--seed", type=int, default=d.seed)
    opt.add_argument("--cpu", action="store_true", help="Train on the CPU even if a GPU is available.")
    opt.add_argument("--num-workers", type=int, default=d.num_workers, help="DataLoader worker processes.")
    run = parser.add_argument_group("validation and checkpoints")
    run.add_argument("--val-every", type=int, default=d.val_every, help="Validate every N steps (0: start and end).")
    run.add_argument("--val-crop", type=int, default=d.val_crop, help="Centre crop of validation images (0: whole).")
    run.add_argument("--checkpoint-every", type=int, default=d.checkpoint_every, help="0: no checkpoints.")
    run.add_argument("--keep-checkpoints", type=int, default=d.keep_checkpoints)
    run.add_argument("--no-resume", action="store_true", help="Start over even if --output holds checkpoints.")
    run.add_argument("--no-progress", action="store_true", help="No progress bar.")
    adapter = parser.add_argument_group("adapter")
    adapter.add_argument("--adapter-name", default=d.adapter_name)
    adapter.add_argument("--fusion", choices=FUSIONS, default=None, help="Branch fusion (default sum).")
    adapter.add_argument("--width", type=int, default=None, help="Adapter width h (default: C // reduction).")
    adapter.add_argument("--reduction", type=int, default=None, help="h = C // reduction (default 24).")
    return parser


def config_from_args(args: argparse.Namespace) -> TrainingConfig:
    """The :class:`TrainingConfig` described by parsed ``args``."""
    adapter = {k: getattr(args, k) for k in ("fusion", "width", "reduction") if getattr(args, k) is not None}
    return TrainingConfig(
        output_dir=args.output, task=args.task, data=args.data, degraded_data=args.degraded_data,
        image_column=args.image_column, patch_size=args.patch_size, batch_size=args.batch_size, steps=args.steps,
        lr=args.lr, weight_decay=args.weight_decay, schedule=args.schedule, warmup_steps=args.warmup_steps,
        loss=args.loss, grad_accum=args.grad_accum, grad_clip=args.grad_clip, mixed_precision=args.mixed_precision,
        seed=args.seed, val_every=args.val_every, val_crop=args.val_crop or None,
        checkpoint_every=args.checkpoint_every, keep_checkpoints=args.keep_checkpoints, resume=not args.no_resume,
        num_workers=args.num_workers, adapter_name=args.adapter_name, adapter=adapter, cpu=args.cpu,
        progress=not args.no_progress,
    )  # fmt: skip


def run_train(args: argparse.Namespace) -> int:
    """Train as ``args`` say; print where the adapter went. Returns 0, 1 (loss diverged) or 2 (bad input)."""
    from ..backbones.loading import load_base_model
    from ..training.loop import TrainingDivergedError, train

    try:
        config = config_from_args(args)
        config.validate()
        result = train(load_base_model(args.base), config)
    except TrainingDivergedError as err:
        print(f"peft-adaptir train: stopped: {err}", file=sys.stderr)
        return 1
    except (ValueError, FileNotFoundError) as err:
        print(f"peft-adaptir train: error: {err}", file=sys.stderr)
        return 2
    if result.adapter_dir is not None:
        final = result.validation[-1] if result.validation else {}
        summary = f"; validation PSNR {final['psnr']:.2f} dB, SSIM {final['ssim']:.4f}" if final else ""
        print(f"Adapter saved to {result.adapter_dir} after {result.steps} steps{summary}.")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m peft_adaptir.train_cli ...`` (the same options as ``peft-adaptir train``)."""
    parser = argparse.ArgumentParser(prog="peft-adaptir train", description="Train an AdaptIR task adapter.")
    return run_train(add_train_arguments(parser).parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
