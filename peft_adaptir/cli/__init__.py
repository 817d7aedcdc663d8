"""The ``peft-adaptir`` command: ``train``, ``restore``, ``tasks`` and ``export`` subcommands."""

from __future__ import annotations

import argparse

from .demo import add_demo_arguments, run_demo
from .export import add_export_arguments, run_export
from .output import add_verbosity_argument, cli_output
from .restore import add_restore_arguments, run_restore
from .train import add_train_arguments, run_train
from .train_router import add_train_router_arguments, run_train_router


def run_tasks(args: argparse.Namespace) -> int:
    from ..data.degradations import get_task_spec, list_tasks
    from ..routing.zoo import shipped_tasks

    shipped = set(shipped_tasks())
    for kind in ("pretrain", "transfer", "extra"):
        print(f"{kind}:")
        for name in list_tasks(kind):
            mark = "[adapter shipped] " if name in shipped else ""
            print(f"  {name:16s} {mark}{get_task_spec(name).description}")
    print("Tasks marked [adapter shipped] restore with no training: peft-adaptir restore --task NAME (or auto).")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="peft-adaptir", description="AdaptIR adapters for pretrained image-restoration models."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser("train", help="Train a task adapter on a base model.")
    add_train_arguments(train).set_defaults(handler=run_train)
    restore = commands.add_parser("restore", help="Restore images with one or several task adapters.")
    add_restore_arguments(restore).set_defaults(handler=run_restore)
    tasks = commands.add_parser("tasks", help="List the named degradation tasks.")
    tasks.set_defaults(handler=run_tasks)
    demo = commands.add_parser("demo", help="Serve a browser demo (Gradio) of the base model and task adapters.")
    add_demo_arguments(demo).set_defaults(handler=run_demo)
    router = commands.add_parser("train-router", help="Train a degradation router choosing between adapters.")
    add_train_router_arguments(router).set_defaults(handler=run_train_router)
    export = commands.add_parser("export", help="Export a model with one adapter to ONNX or torch.export.")
    add_export_arguments(export).set_defaults(handler=run_export)
    for command in (parser, restore, tasks, export, router, demo):
        add_verbosity_argument(command, top_level=command is parser)  # train adds its own
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    with cli_output(args.verbose):  # quiet by default; -v / -vv for more
        return args.handler(args)


if __name__ == "__main__":
    raise SystemExit(main())
