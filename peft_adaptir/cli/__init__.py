"""The ``peft-adaptir`` command: ``train``, ``restore`` and ``tasks`` subcommands."""

from __future__ import annotations

import argparse

from .demo import add_demo_arguments, run_demo
from .restore import add_restore_arguments, run_restore
from .train import add_train_arguments, run_train


def run_tasks(args: argparse.Namespace) -> int:
    from ..data.degradations import get_task_spec, list_tasks

    for kind in ("pretrain", "transfer", "extra"):
        print(f"{kind}:")
        for name in list_tasks(kind):
            print(f"  {name:16s} {get_task_spec(name).description}")
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
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    raise SystemExit(main())
