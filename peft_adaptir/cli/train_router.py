"""``peft-adaptir train-router``: fit a degradation router for a set of adapters on a base, and save it."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

__all__ = ["add_train_router_arguments", "run_train_router"]


def add_train_router_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the router-training options to ``parser`` (returned for chaining)."""
    parser.add_argument(
        "--output", required=True, type=Path, help="Folder for router.safetensors + router_config.json."
    )
    parser.add_argument("--base", default=None, help="Base model id or folder (default: the embedded base model).")
    parser.add_argument(
        "--adapter", action="append", default=[], metavar="NAME=PATH_OR_HUB_ID",
        help="An adapter to route to (repeatable). Default: the zoo's tasks (the router shipped with the package; "
        "its features come from the base alone, so the adapters need not be loaded).",
    )  # fmt: skip
    parser.add_argument(
        "--degradation", action="append", default=[], metavar="NAME=PRESET",
        help="The degradation preset an adapter undoes, when its name is not a preset (e.g. rain=derain-heavy).",
    )  # fmt: skip
    parser.add_argument("--crops-per-photo", type=int, default=12, help="Degraded crops per photo and class.")
    parser.add_argument("--hidden", type=int, default=12, help="Hidden width of the 2-layer MLP.")
    parser.add_argument("--steps", type=int, default=600, help="Full-batch AdamW steps.")
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--weight-decay", type=float, default=1e-3, help="AdamW weight decay (regularises the MLP).")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eval-crops", type=int, default=10, help="Held-out crops per photo and class to report.")
    parser.add_argument("--overwrite", action="store_true", help="Replace a router already in --output.")
    return parser


def run_train_router(args: argparse.Namespace) -> int:
    """Train, evaluate on the held-out photos, save; returns 0, or 2 on bad input."""
    from ..backbones.loading import load_base_model
    from ..cli.restore import parse_adapter_specs
    from ..data.sources import SKIMAGE_HELDOUT
    from ..hub import load_adapters
    from ..routing.router import ROUTER_CONFIG, router_card
    from ..routing.train import evaluate_router, router_photos, train_router
    from ..routing.zoo import ZOO_TASKS
    from ..tuner.constants import BASE_ADAPTER_NAME

    try:
        if (args.output / ROUTER_CONFIG).exists() and not args.overwrite:
            raise ValueError(f"{args.output} already holds a router; pass --overwrite to replace it.")
        adapters = parse_adapter_specs(args.adapter)
        degradations = dict(_pair(spec) for spec in args.degradation)
        base = load_base_model(args.base)
        model = load_adapters(base, adapters) if adapters else base
        classes = None if adapters else [*ZOO_TASKS, BASE_ADAPTER_NAME]
        router, report = train_router(
            model, classes, degradations=degradations, crops_per_photo=args.crops_per_photo, hidden=args.hidden,
            steps=args.steps, lr=args.lr, weight_decay=args.weight_decay, seed=args.seed,
        )  # fmt: skip
    except (ValueError, FileNotFoundError, OSError) as err:
        print(f"peft-adaptir train-router: error: {err}", file=sys.stderr)
        return 2
    accuracy, _ = evaluate_router(model, router, router_photos(SKIMAGE_HELDOUT), args.eval_crops, seed=args.seed + 1,
                                  degradations=degradations)  # fmt: skip
    router.config.training.update(
        heldout_accuracy=accuracy, heldout_photos=list(SKIMAGE_HELDOUT),
        command=shlex.join(["peft-adaptir", "train-router", *sys.argv[2:]]),
    )  # fmt: skip
    router.save_pretrained(args.output)
    (args.output / "README.md").write_text(router_card(router.config))
    print(
        f"Router for {router.classes} saved to {args.output}: {report['parameters']} parameters, training accuracy "
        f"{report['train_accuracy']:.1%}, held-out accuracy {accuracy:.1%} ({', '.join(SKIMAGE_HELDOUT)})."
    )
    return 0


def _pair(spec: str) -> tuple[str, str]:
    name, sep, preset = spec.partition("=")
    if not sep or not name or not preset:
        raise ValueError(f"--degradation {spec!r} must look like NAME=PRESET, e.g. rain=derain-heavy.")
    return name, preset
