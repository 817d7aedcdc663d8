"""The exporter's own equivalence check: the exported file against PyTorch on a real photo tile.

The photo is scikit-image's astronaut (a 512 x 512 RGB photograph that ships with the package): its centre crop
at the tile size, (1, 3, T, T) float32 in [0, 1], run alone and as a batch of two (with its mirror image), so the
graph's dynamic batch is checked too. The error reported is ``max |exported - pytorch| / max |pytorch|`` over every
output (a relative error against the output's range).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .dependencies import require

FP32_TOLERANCE = 1e-3
"""The largest max relative error a float32 export may have against PyTorch."""
FP16_TOLERANCE = 2e-2
"""The same for a float16 export (compared against the float32 PyTorch model)."""


def photo_tile(tile: int) -> torch.Tensor:
    """(1, 3, tile, tile) float32 in [0, 1]: the centre of skimage's astronaut photo (resized up for tiles > 512)."""
    from skimage import data

    image = torch.from_numpy(np.ascontiguousarray(data.astronaut())).permute(2, 0, 1)[None].float() / 255
    if tile > image.shape[-1]:
        image = F.interpolate(image, size=(tile, tile), mode="bicubic", align_corners=False).clamp(0, 1)
    top = (image.shape[-2] - tile) // 2
    left = (image.shape[-1] - tile) // 2
    return image[:, :, top : top + tile, left : left + tile].contiguous()


def relative_error(output: torch.Tensor, reference: torch.Tensor) -> dict[str, float]:
    """max/mean absolute difference and max relative error (over the reference's max magnitude), in float64."""
    output, reference = output.double(), reference.double()
    diff = (output - reference).abs()
    scale = reference.abs().max().clamp_min(1e-12)
    return {
        "max_rel_error": float(diff.max() / scale),
        "max_abs_error": float(diff.max()),
        "mean_abs_error": float(diff.mean()),
    }


def run_onnxruntime(path: str | os.PathLike, image: torch.Tensor) -> torch.Tensor:
    """Run the ONNX model at ``path`` on (B, 3, T, T) ``image`` with onnxruntime's CPU provider; float32 output."""
    ort = require("onnxruntime")
    session = ort.InferenceSession(os.fspath(path), providers=["CPUExecutionProvider"])
    graph_input = session.get_inputs()[0]
    dtype = np.float16 if graph_input.type == "tensor(float16)" else np.float32
    output = session.run(None, {graph_input.name: image.numpy().astype(dtype)})[0]
    return torch.from_numpy(np.asarray(output, dtype=np.float32))


def check_export(
    path: str | os.PathLike,
    reference: nn.Module,
    tile: int,
    fmt: str,
    half: bool,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Compare the exported file with ``reference`` ((B, 3, T, T) -> (B, 3, sT, sT), float32) on the photo tile.

    Writes the result as JSON to ``<path>.check.json`` and returns it. ``passed`` is whether the max relative error
    is within the tolerance (1e-3 in float32, 2e-2 in float16).
    """
    single = photo_tile(tile)
    image = torch.cat([single, single.flip(-1)])  # (2, 3, T, T)
    device = next((p.device for p in reference.parameters()), torch.device("cpu"))
    with torch.inference_mode():
        expected = reference(image.to(device)).float().cpu()
    start = time.perf_counter()
    if fmt == "onnx":
        runtime = "onnxruntime " + require("onnxruntime").__version__ + " (CPUExecutionProvider)"
        batched, alone = run_onnxruntime(path, image), run_onnxruntime(path, single)
    else:
        runtime = f"torch {torch.__version__} (torch.export.load)"
        program = torch.export.load(os.fspath(path)).module()
        with torch.inference_mode():
            batched, alone = (program((x.half() if half else x).to(device)).float().cpu() for x in (image, single))
    seconds = time.perf_counter() - start
    if batched.shape != expected.shape or alone.shape != expected[:1].shape:
        raise RuntimeError(
            f"The exported model returned {tuple(batched.shape)} and {tuple(alone.shape)}; PyTorch "
            f"{tuple(expected.shape)} for a batch of two and one."
        )
    got = torch.cat([batched, alone])
    errors = relative_error(got, torch.cat([expected, expected[:1]]))
    tolerance = FP16_TOLERANCE if half else FP32_TOLERANCE
    result = {
        "file": Path(path).name,
        "format": fmt,
        "runtime": runtime,
        "input": f"skimage.data.astronaut() centre crop, (1, 3, {tile}, {tile}) float in [0, 1], alone and in a batch "
        "of 2 with its mirror image",
        "reference": f"PyTorch {torch.__version__} eager, float32, FFT frequency branch",
        **errors,
        "tolerance": tolerance,
        "passed": errors["max_rel_error"] <= tolerance,
        "run_seconds": round(seconds, 4),
        **(extra or {}),
    }
    Path(f"{os.fspath(path)}.check.json").write_text(json.dumps(result, indent=2) + "\n")
    return result
