"""Exported AdaptIR models on onnxruntime (CPU): DFT-free against the FFT graph, in the same run (issue 19).

The embedded default base (Swin2SR, embed 60, depths 4 x 2, window 8) with one AdaptIR adapter (default config,
weights perturbed so the branch is not zero) is exported at each tile size twice, with the FFT frequency branch (DFT
nodes) and DFT-free (matrix products), both checked against PyTorch by the exporter. Then both sessions (one thread
each) and the PyTorch model run on the same photo tile, interleaved: each repeat runs every variant once, and the
ratio is the median of per-repeat ratios against the FFT graph. The FFT graph also runs 8 tiles in one call (its
batch is dynamic) against 8 calls of one tile. Wall-clock and process CPU time are both recorded; on a shared machine
read the CPU-time ratios.

    python benchmarks/export_speed.py --out benchmarks/results            # tiles 64 and 128, 7 repeats
    python benchmarks/export_speed.py --tiles 64 --repeats 3 --out /tmp/x  # quick
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from peft import get_peft_model

from peft_adaptir import AdaptIRConfig, load_default_base
from peft_adaptir.export.check import photo_tile
from peft_adaptir.export.dependencies import require
from peft_adaptir.export.exporter import export_model

BATCH = 8


def _adapted() -> torch.nn.Module:
    model = get_peft_model(load_default_base(), AdaptIRConfig(), adapter_name="task")
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "adaptir_branch" in name:
                param.add_(0.1 * torch.randn(param.shape, generator=generator))
    return model.eval()


def _timed(fn) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def measure(tile: int, repeats: int, warmup: int, root: Path) -> dict[str, Any]:
    ort = require("onnxruntime")
    model = _adapted()
    results: dict[str, Any] = {"tile": tile}
    sessions = {}
    for variant, dft_free in (("onnx_fft", False), ("onnx_dft_free", True)):
        path = root / f"{variant}_{tile}.onnx"
        start = time.perf_counter()
        exported = export_model(model, path, tile=tile, dft_free=dft_free, overwrite=True)
        results[variant] = {
            "export_seconds": round(time.perf_counter() - start, 1),
            "dft_nodes": exported.dft_nodes,
            "max_rel_error_vs_pytorch": exported.check["max_rel_error"],
            "file_mib": round(path.stat().st_size / 2**20, 2),
        }
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = 1, 1
        sessions[variant] = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    image = photo_tile(tile)
    feed = image.numpy().astype(np.float32)
    outputs = {name: s.run(None, {s.get_inputs()[0].name: feed})[0] for name, s in sessions.items()}
    diff = np.abs(outputs["onnx_dft_free"] - outputs["onnx_fft"]).max() / np.abs(outputs["onnx_fft"]).max()
    results["onnx_dft_free"]["max_rel_error_vs_onnx_fft"] = float(diff)

    runs = {name: (lambda s=s: s.run(None, {s.get_inputs()[0].name: feed})) for name, s in sessions.items()}

    def eager() -> None:
        with torch.inference_mode():
            model(image)

    runs["pytorch_eager"] = eager
    # the graph's dynamic batch: 8 tiles in one call against 8 calls of one tile (FFT graph)
    fft = sessions["onnx_fft"]
    feed8 = np.repeat(feed, BATCH, axis=0)
    runs[f"onnx_fft_batch{BATCH}_one_call"] = lambda: fft.run(None, {fft.get_inputs()[0].name: feed8})
    runs[f"onnx_fft_batch{BATCH}_{BATCH}_calls"] = lambda: [runs["onnx_fft"]() for _ in range(BATCH)]
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in runs}
    for repeat in range(warmup + repeats):
        for name, fn in runs.items():
            measured = _timed(fn)
            if repeat >= warmup:
                times[name].append(measured)
    for name, samples in times.items():
        entry = results.setdefault(name, {})
        entry["median_ms"] = round(1000 * statistics.median(w for w, _ in samples), 2)
        entry["median_cpu_ms"] = round(1000 * statistics.median(c for _, c in samples), 2)
        base = times["onnx_fft"]
        entry["ratio_vs_onnx_fft"] = round(statistics.median(w / b[0] for (w, _), b in zip(samples, base)), 3)
        entry["cpu_ratio_vs_onnx_fft"] = round(statistics.median(c / b[1] for (_, c), b in zip(samples, base)), 3)
    one_call, calls = times[f"onnx_fft_batch{BATCH}_one_call"], times[f"onnx_fft_batch{BATCH}_{BATCH}_calls"]
    results["batching"] = {
        "tiles": BATCH,
        "ms_per_tile_one_call": round(1000 * statistics.median(w for w, _ in one_call) / BATCH, 2),
        "ms_per_tile_separate_calls": round(1000 * statistics.median(w for w, _ in calls) / BATCH, 2),
        "cpu_ratio_one_call_vs_calls": round(statistics.median(a[1] / b[1] for a, b in zip(one_call, calls)), 3),
    }
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiles", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    torch.set_num_threads(1)
    ort = require("onnxruntime")
    report: dict[str, Any] = {
        "torch": torch.__version__, "onnxruntime": ort.__version__, "onnx": require("onnx").__version__,
        "onnxscript": require("onnxscript").__version__, "machine": platform.processor() or platform.machine(),
        "threads": 1, "repeats": args.repeats, "warmup": args.warmup, "rows": [],
    }  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        for tile in args.tiles:
            row = measure(tile, args.repeats, args.warmup, Path(tmp))
            report["rows"].append(row)
            print(json.dumps(row, indent=2), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "export_speed.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out / 'export_speed.json'}")


if __name__ == "__main__":
    main()
