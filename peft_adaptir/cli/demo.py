"""``peft-adaptir demo``: serve the Gradio demo page for a base model and its task adapters."""

from __future__ import annotations

import argparse
import sys

from .restore import parse_adapter_specs


def add_demo_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--base", default=None, help="Base model id or folder (default: the embedded base model).")
    parser.add_argument(
        "--adapter", action="append", default=[], metavar="NAME=PATH_OR_HUB_ID",
        help="A task adapter to offer (repeatable); default: the adapters shipped with the package, if any.",
    )  # fmt: skip
    parser.add_argument("--host", default="127.0.0.1", help="Address to listen on (0.0.0.0: every interface).")
    parser.add_argument("--port", type=int, default=7860, help="Port to listen on (default: 7860).")
    parser.add_argument("--batch-size", type=int, default=4, help="Images or tiles per forward pass.")
    return parser


def run_demo(args: argparse.Namespace) -> int:
    try:
        from ..demo.ui import build_app
    except ImportError as err:
        print(f"peft-adaptir demo: error: {err}", file=sys.stderr)
        return 2
    from ..demo.loading import load_engine

    try:
        engine = load_engine(args.base, parse_adapter_specs(args.adapter), batch_size=args.batch_size)
    except (ValueError, FileNotFoundError, OSError) as err:
        print(f"peft-adaptir demo: error: {err}", file=sys.stderr)
        return 2
    print(f"peft-adaptir demo: tasks {', '.join(engine.choices)}; serving on http://{args.host}:{args.port}")
    build_app(engine).launch(server_name=args.host, server_port=args.port)
    return 0
