"""``peft-adaptir train``: the command-line front of :func:`peft_adaptir.training.train`.

``add_train_arguments(parser)`` adds the options to an argparse parser; ``run_train(args)`` runs them and returns
the exit status (0 done, 1 the loss diverged, 2 bad input or an unwritable output folder, 130 interrupted). Every
option's ``dest`` is the :class:`TrainingConfig` field it sets (``adapter.<key>`` for the adapter's keyword
arguments), so :func:`config_from_args` copies them by name; defaults come from :class:`TrainingConfig`.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import fields

from ..training.config import LOSSES, MIXED_PRECISION, SCHEDULES, TrainingConfig
from ..tuner.branch import FUSIONS
from .output import add_verbosity_argument, cli_output

__all__ = ["add_train_arguments", "config_from_args", "run_train", "main"]

_DEFAULTS = TrainingConfig()
_ADAPTER_PREFIX = "adapter."


def _none_or_float(text: str) -> float | None:
    return None if text.lower() in ("none", "0", "off") else float(text)


def _none_if_zero(text: str) -> int | None:
    return int(text) or None


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
    data.add_argument("--holdout-fraction", type=float, default=d.holdout_fraction,
                      help="Share of the images held out when the data has no validation split.")  # fmt: skip
    data.add_argument("--output", dest="output_dir", required=True, help="Output folder: checkpoints/ and adapter/ "
                      "go here. An earlier run there is resumed (same settings only) or, with --no-resume, moved to "
                      "previous-runs/<time>/.")  # fmt: skip
    opt = parser.add_argument_group("optimisation")
    opt.add_argument("--steps", type=int, default=d.steps, help=f"Optimizer steps (default {d.steps}).")
    opt.add_argument("--batch-size", type=int, default=d.batch_size, help="Patches per process and micro-batch.")
    opt.add_argument("--patch-size", type=int, default=d.patch_size, help="Training crop size (a window multiple).")
    opt.add_argument("--lr", type=float, default=d.lr, help=f"Peak learning rate of AdamW (default {d.lr}).")
    opt.add_argument("--weight-decay", type=float, default=d.weight_decay, help="AdamW weight decay.")
    opt.add_argument("--schedule", choices=SCHEDULES, default=d.schedule, help="Warmup, then cosine or constant.")
    opt.add_argument("--warmup-steps", type=int, default=None, help="Default: 5%% of --steps.")
    opt.add_argument("--loss", choices=LOSSES, default=d.loss, help="Training loss.")
    opt.add_argument("--grad-accum", type=int, default=d.grad_accum, help="Micro-batches per optimizer step.")
    opt.add_argument("--grad-clip", type=_none_or_float, default=d.grad_clip, help="Max gradient norm ('none': off).")
    opt.add_argument("--mixed-precision", choices=MIXED_PRECISION, default=d.mixed_precision)
    opt.add_argument("--seed", type=int, default=d.seed)
    opt.add_argument("--cpu", action="store_true", help="Train on the CPU even if a GPU is available.")
    opt.add_argument("--num-workers", type=int, default=d.num_workers, help="DataLoader worker processes.")
    run = parser.add_argument_group("validation and checkpoints")
    run.add_argument("--val-every", type=int, default=d.val_every, help="Validate every N steps (0: start and end).")
    run.add_argument("--val-crop", type=_none_if_zero, default=d.val_crop, help="Centre crop of validation images "
                     "(0: whole).")  # fmt: skip
    run.add_argument("--checkpoint-every", type=int, default=d.checkpoint_every, help="0: no checkpoints.")
    run.add_argument("--keep-checkpoints", type=int, default=d.keep_checkpoints, help="Newest checkpoints kept.")
    run.add_argument("--no-resume", dest="resume", action="store_false", help="Start a new run even if "
                     "--output holds one: its files are moved to <output>/previous-runs/<time>/ first.")  # fmt: skip
    run.add_argument("--no-progress", dest="progress", action="store_false", help="No progress bar.")
    adapter = parser.add_argument_group("adapter")
    adapter.add_argument("--adapter-name", default=d.adapter_name)
    adapter.add_argument("--fusion", dest=_ADAPTER_PREFIX + "fusion", choices=FUSIONS, default=None,
                         help="Branch fusion (default sum).")  # fmt: skip
    adapter.add_argument("--width", dest=_ADAPTER_PREFIX + "width", type=int, default=None,
                         help="Adapter width h (default: C // reduction).")  # fmt: skip
    adapter.add_argument("--reduction", dest=_ADAPTER_PREFIX + "reduction", type=int, default=None,
                         help="h = C // reduction (default 24).")  # fmt: skip
    add_verbosity_argument(parser)
    return parser


def config_from_args(args: argparse.Namespace) -> TrainingConfig:
    """The :class:`TrainingConfig` described by parsed ``args`` (options map onto fields by ``dest``)."""
    values = vars(args)
    names = {item.name for item in fields(TrainingConfig)} - {"adapter"}
    adapter = {
        key.removeprefix(_ADAPTER_PREFIX): value
        for key, value in values.items()
        if key.startswith(_ADAPTER_PREFIX) and value is not None
    }
    return TrainingConfig(**{name: values[name] for name in names if name in values}, adapter=adapter)


def run_train(args: argparse.Namespace) -> int:
    """Train as ``args`` say; print where the adapter went. Returns 0, 1 (loss diverged), 2 (bad input or an
    unwritable output folder) or 130 (interrupted: the message says where the last checkpoint is)."""
    from ..backbones.loading import load_base_model
    from ..training.loop import OutputNotWritableError, TrainingDivergedError, TrainingInterrupted, train

    try:
        config = config_from_args(args)
        config.validate()
        result = train(load_base_model(args.base), config)
    except TrainingDivergedError as err:
        print(f"peft-adaptir train: stopped: {err}", file=sys.stderr)
        return 1
    except (OutputNotWritableError, ValueError, FileNotFoundError) as err:
        print(f"peft-adaptir train: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as err:
        message = str(err) if isinstance(err, TrainingInterrupted) else "interrupted before or after the training "
        if not isinstance(err, TrainingInterrupted):
            message += "steps; the same command resumes from the last checkpoint in --output, if there is one."
        print(f"peft-adaptir train: {message}", file=sys.stderr)
        return 130
    if result.adapter_dir is not None:
        final = result.validation[-1] if result.validation else {}
        summary = f"; validation PSNR {final['psnr']:.2f} dB, SSIM {final['ssim']:.4f}" if final else ""
        print(f"Adapter saved to {result.adapter_dir} after {result.steps} steps{summary}.")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m peft_adaptir.cli.train ...`` (the same options as ``peft-adaptir train``)."""
    parser = argparse.ArgumentParser(prog="peft-adaptir train", description="Train an AdaptIR task adapter.")
    args = add_train_arguments(parser).parse_args(argv)
    with cli_output(getattr(args, "verbose", 0)):  # quiet by default; -v / -vv for more
        return run_train(args)


if __name__ == "__main__":
    raise SystemExit(main())
