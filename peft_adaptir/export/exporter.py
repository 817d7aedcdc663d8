"""Export a restorer with at most one AdaptIR adapter as a standalone graph at a fixed tile size.

``export_model(model, "out.onnx", tile=128)`` writes an ONNX file (dynamo exporter, opset 20) or, with
``fmt="torch-export"``, a ``torch.export`` program (``.pt2``). The graph maps (B, 3, T, T) float in [0, 1] to the
restored (B, 3, sT, sT); the batch B is dynamic (one call restores several tiles). It is fixed to one tile size
because the frequency branch's FFT length is the feature map's size (and onnxruntime's DFT fails on dynamic
height/width), and the DFT-free bases are (H, H) and (W, W//2+1) matrices for that size. Every export is checked
against PyTorch on a real photo tile (see :mod:`.check`).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import __version__
from ..backbones.loading import reconstruction
from ..backbones.size_multiple import size_multiple
from ..tuner.branch import AdaptIRBranch, FrequencyAffine
from ..tuner.constants import BASE_ADAPTER_NAME
from ..tuner.layer import AdaptIRLayer
from .check import check_export
from .dependencies import require
from .frequency import ExportFrequencyAffine
from .graph import dft_node_count, write_metadata

FORMATS: tuple[str, ...] = ("onnx", "torch-export")
DTYPES: dict[str, torch.dtype] = {"fp32": torch.float32, "fp16": torch.float16}
OPSET = 20
MAX_BATCH = 4096  # the graph's batch dimension is dynamic up to this many tiles per call


@dataclass
class ExportResult:
    """What ``export_model`` wrote: the file, its settings, its DFT node count (ONNX) and the check's numbers."""

    path: Path
    fmt: str
    tile: int
    dtype: str
    dft_free: bool
    adapter: str | None
    scale: int
    dft_nodes: int | None
    check: dict[str, Any] = field(default_factory=dict)


class ImageGraph(nn.Module):
    """(B, 3, T, T) -> the restored (B, 3, sT, sT) tensor of ``model`` (its ``.reconstruction`` if it has one)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return reconstruction(self.model(image))


def export_model(
    model: nn.Module,
    path: str | os.PathLike,
    *,
    tile: int = 128,
    adapter: str | None = None,
    fmt: str = "onnx",
    dtype: str = "fp32",
    dft_free: bool = False,
    overwrite: bool = False,
    check: bool = True,
) -> ExportResult:
    """Export ``model`` (a restorer, or a peft model with AdaptIR adapters) with one adapter baked in.

    Args:
        model: the base restorer or a ``PeftModel``; it is left as it was (modules, active adapter, dtype).
        path: the output file (``.onnx`` for ONNX, ``.pt2`` for torch.export); the check's JSON goes to
            ``<path>.check.json``.
        tile: the graph's fixed input size T (a multiple of the model's size requirement).
        adapter: the adapter to bake in; None: the one active adapter; ``"__base__"``: the base model alone.
        fmt: ``"onnx"`` or ``"torch-export"``.
        dtype: ``"fp32"`` or ``"fp16"`` (the frequency branch still computes in float32 inside the graph).
        dft_free: compute the frequency branch as matrix products (no DFT node in the graph).
        overwrite: replace an existing file at ``path``.
        check: run the exported file on a real photo tile against PyTorch and raise if it is off.
    """
    fmt, tile, half = _validate(model, path, tile, fmt, dtype, overwrite)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with _single_adapter(model, adapter) as baked:
        with _eval_mode(model):
            device = next((p.device for p in model.parameters()), torch.device("cpu"))
            example = torch.zeros(1, 3, tile, tile, device=device)
            with _frequency_for_export(model, example, "matmul" if dft_free else "fft"):
                graph = ImageGraph(model).eval()
                with torch.inference_mode():
                    scale = reconstruction(model(example)).shape[-1] // tile
                traced = example.expand(2, -1, -1, -1).contiguous()  # batch 2: a batch of 1 would be fixed at 1
                with _cast(model, torch.float16 if half else None):
                    _write(graph, traced.half() if half else traced, path, fmt)
            dft_nodes = None
            if fmt == "onnx":
                dft_nodes = dft_node_count(path)
                write_metadata(
                    path,
                    {"tile_size": tile, "size_multiple": size_multiple(model), "scale": scale, "adapter": baked or "",
                     "dft_free": int(dft_free), "dtype": dtype, "version": __version__},
                )  # fmt: skip
            result = ExportResult(path, fmt, tile, dtype, dft_free, baked, scale, dft_nodes)
            if check:
                # the reference is the untouched PyTorch model: FFT branch, float32
                extra = {"adapter": baked, "dft_free": dft_free, "dft_nodes": dft_nodes, "dtype": dtype, "tile": tile}
                result.check = check_export(path, ImageGraph(model).eval(), tile, fmt, half, extra)
                if not result.check["passed"]:
                    raise RuntimeError(
                        f"The exported {fmt} model differs from PyTorch: max relative error "
                        f"{result.check['max_rel_error']:.3g} > {result.check['tolerance']:g} (details in "
                        f"{path}.check.json). Please report this with the JSON file."
                    )
    return result


def _validate(
    model: nn.Module, path: str | os.PathLike, tile: int, fmt: str, dtype: str, overwrite: bool
) -> tuple[str, int, bool]:
    if fmt not in FORMATS:
        raise ValueError(f"format={fmt!r} is not supported; choose one of {list(FORMATS)}.")
    if dtype not in DTYPES:
        raise ValueError(f"dtype={dtype!r} is not supported; choose one of {list(DTYPES)}.")
    if fmt == "onnx":
        require("onnx")
        require("onnxscript")
    multiple = size_multiple(model)
    if not isinstance(tile, int) or tile < 1 or tile % multiple:
        raise ValueError(
            f"tile={tile!r} must be a positive multiple of the model's size requirement ({multiple}); e.g. "
            f"--tile {max(multiple, 128 // multiple * multiple)}."
        )
    if Path(path).exists() and not overwrite:
        raise FileExistsError(f"{path} exists; choose another name or pass overwrite=True (--overwrite).")
    return fmt, tile, dtype == "fp16"


def adaptir_layers(model: nn.Module) -> list[AdaptIRLayer]:
    return [module for module in model.modules() if isinstance(module, AdaptIRLayer)]


def active_adapters(model: nn.Module) -> list[str]:
    """The AdaptIR adapters that a plain forward of ``model`` runs (none when adapters are disabled)."""
    names: dict[str, None] = {}
    for layer in adaptir_layers(model):
        if not layer.disable_adapters:
            names.update((name, None) for name in layer.active_adapters if name in layer.adaptir_branch)
    return list(names)


@contextlib.contextmanager
def _single_adapter(model: nn.Module, adapter: str | None) -> Iterator[str | None]:
    """Activate ``adapter`` (or check the active set) for the export; yields the baked adapter name or None."""
    if adapter is not None and not isinstance(adapter, str):
        raise ValueError(
            f"adapter={adapter!r}: a graph holds one adapter; a mixed batch (one adapter per sample) or several "
            "adapters cannot be exported as one file. Export one file per adapter (adapter='NAME')."
        )
    layers = adaptir_layers(model)
    if adapter is None or not layers:
        if adapter not in (None, BASE_ADAPTER_NAME):
            raise ValueError(f"adapter={adapter!r} was given but the model has no AdaptIR adapters.")
        active = active_adapters(model)
        if len(active) > 1:
            raise ValueError(
                f"The model has {len(active)} active adapters {active}; a graph holds one. Pick one with "
                "adapter='NAME' (--adapter NAME=PATH), or '__base__' for the base model alone."
            )
        yield active[0] if active else None
        return
    known = sorted({name for layer in layers for name in layer.adaptir_branch})
    if adapter != BASE_ADAPTER_NAME and adapter not in known:
        raise ValueError(f"Unknown adapter {adapter!r}; the model has {known} (and {BASE_ADAPTER_NAME!r}).")
    saved = [(layer, list(layer.active_adapters), layer.disable_adapters) for layer in layers]
    try:
        for layer in layers:
            if adapter == BASE_ADAPTER_NAME:
                layer.enable_adapters(False)
            else:
                layer.enable_adapters(True)
                layer.set_adapter([adapter])
        yield None if adapter == BASE_ADAPTER_NAME else adapter
    finally:
        for layer, names, disabled in saved:
            layer.set_adapter(names)
            layer.enable_adapters(not disabled)


@contextlib.contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    modes = [(module, module.training) for module in model.modules()]
    grads = [(param, param.requires_grad) for param in model.parameters()]
    try:
        model.eval()
        yield
    finally:
        for module, training in modes:
            module.training = training
        for param, requires_grad in grads:
            param.requires_grad_(requires_grad)


@contextlib.contextmanager
def _frequency_for_export(model: nn.Module, example: torch.Tensor, mode: str) -> Iterator[None]:
    """Swap each frequency branch that runs on ``example`` for an ``ExportFrequencyAffine`` at its feature size."""
    sizes: dict[FrequencyAffine, tuple[int, int]] = {}

    def record(module: nn.Module, args: tuple) -> None:
        sizes.setdefault(module, tuple(args[0].shape[-2:]))

    hooks = [m.register_forward_pre_hook(record) for m in model.modules() if isinstance(m, FrequencyAffine)]
    try:
        with torch.inference_mode():
            model(example)
    finally:
        for hook in hooks:
            hook.remove()
    swapped = []
    for branch in [m for m in model.modules() if isinstance(m, AdaptIRBranch)]:
        source = branch.frequency
        if source in sizes:
            replacement = ExportFrequencyAffine(source, *sizes[source], mode=mode)
            replacement.to(device=source.amp_fuse.weight.device)
            branch.frequency = replacement
            swapped.append((branch, source))
    try:
        yield
    finally:
        for branch, source in swapped:
            branch.frequency = source


@contextlib.contextmanager
def _cast(model: nn.Module, dtype: torch.dtype | None) -> Iterator[None]:
    """Cast floating parameters and buffers to ``dtype`` for the duration; the original tensors are put back."""
    if dtype is None:
        yield
        return
    saved = []
    for module in model.modules():
        for store in (module._parameters, module._buffers):
            for name, tensor in store.items():
                if tensor is not None and tensor.is_floating_point():
                    saved.append((tensor, tensor.data) if isinstance(tensor, nn.Parameter) else (store, name, tensor))
    skip = {id(b) for m in model.modules() if isinstance(m, ExportFrequencyAffine) for b in m.buffers()}
    try:
        with torch.no_grad():
            for module in model.modules():
                for store in (module._parameters, module._buffers):
                    for name, tensor in list(store.items()):
                        if tensor is None or not tensor.is_floating_point() or id(tensor) in skip:
                            continue
                        if isinstance(tensor, nn.Parameter):
                            tensor.data = tensor.data.to(dtype)
                        else:
                            store[name] = tensor.to(dtype)
        yield
    finally:
        for entry in saved:
            if len(entry) == 2:
                entry[0].data = entry[1]
            else:
                entry[0][entry[1]] = entry[2]


def _write(graph: nn.Module, example: torch.Tensor, path: Path, fmt: str) -> None:
    """Export ``graph`` traced on ``example`` (B >= 2, 3, T, T) with a dynamic batch dimension."""
    dynamic = {"image": {0: torch.export.Dim("batch", min=1, max=MAX_BATCH)}}
    if fmt == "onnx":
        program = torch.onnx.export(
            graph, (example,), dynamo=True, opset_version=OPSET, input_names=["image"], output_names=["restored"],
            dynamic_shapes=dynamic, optimize=True, verbose=False,
        )  # fmt: skip
        program.save(os.fspath(path))
    else:
        with torch.no_grad():
            program = torch.export.export(graph, (example,), dynamic_shapes=dynamic)
        torch.export.save(program, os.fspath(path))
