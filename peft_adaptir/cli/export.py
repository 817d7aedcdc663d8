"""``peft-adaptir export``: bake one adapter (or none) into an ONNX file or a torch.export program at a fixed tile."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .restore import parse_adapter_specs


def add_export_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("output", type=Path, help="The file to write (.onnx, or .pt2 for --format torch-export).")
    parser.add_argument("--base", default=None, help="Base model id, folder or checkpoint (default: embedded base).")
    parser.add_argument(
        "--adapter", action="append", default=[], metavar="NAME=PATH_OR_HUB_ID",
        help="The adapter to bake in (one); none: the base model alone.",
    )  # fmt: skip
    parser.add_argument("--format", dest="fmt", choices=("onnx", "torch-export"), default="onnx")
    parser.add_argument("--tile", type=int, default=128, help="The graph's fixed input tile size (default 128).")
    parser.add_argument("--dtype", choices=("fp32", "fp16"), default="fp32")
    parser.add_argument(
        "--no-dft", action="store_true",
        help="Compute the frequency branch as matrix products: no DFT node (TensorRT, NCNN, CoreML).",
    )  # fmt: skip
    parser.add_argument("--overwrite", action="store_true", help="Replace an existing output file.")
    return parser


def run_export(args: argparse.Namespace) -> int:
    from ..backbones.loading import load_base_model
    from ..export.exporter import export_model
    from ..hub import load_adapters

    try:
        adapters = parse_adapter_specs(args.adapter)
        if len(adapters) > 1:
            raise ValueError(
                f"--adapter was given {len(adapters)} times ({sorted(adapters)}); an exported graph holds one "
                "adapter. Run export once per adapter."
            )
        model = load_base_model(args.base)
        if adapters:
            model = load_adapters(model, adapters)
        result = export_model(
            model, args.output, tile=args.tile, adapter=next(iter(adapters), None), fmt=args.fmt, dtype=args.dtype,
            dft_free=args.no_dft, overwrite=args.overwrite,
        )  # fmt: skip
    except (ValueError, FileNotFoundError, FileExistsError, ImportError, OSError) as err:
        print(f"peft-adaptir export: error: {err}", file=sys.stderr)
        return 2
    except RuntimeError as err:  # the exported file failed the exporter's check against PyTorch
        print(f"peft-adaptir export: check failed: {err}", file=sys.stderr)
        return 1
    check = result.check
    dft = "" if result.dft_nodes is None else f", {result.dft_nodes} DFT nodes"
    print(
        f"{result.path}: {result.fmt}, tile {result.tile}, x{result.scale}, {result.dtype}, adapter "
        f"{result.adapter or 'none'}{dft}; max relative error {check['max_rel_error']:.2e} against PyTorch "
        f"(tolerance {check['tolerance']:g}, {result.path}.check.json)"
    )
    return 0
