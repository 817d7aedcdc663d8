"""Run an exported ONNX restorer through onnxruntime with ``restore()``'s padding, tiling and blending.

``restore_onnx("model.onnx", images)`` is ``restore()`` with an :class:`OnnxRestorer` as the model: images are padded
to the graph's size multiple, cut into tiles of the graph's tile size with the same overlaps and ramps, and
blended back, exactly as the PyTorch path does. Tiles smaller than the graph (images smaller than a tile) are padded
up to it inside the restorer (reflect; replicate for tiny ones) and the output cropped back.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..backbones.size_multiple import SIZE_MULTIPLE_ATTRIBUTE
from ..inference.pipeline import restore
from .dependencies import require
from .graph import read_metadata


class OnnxRestorer(nn.Module):
    """An exported ONNX graph as a module: (B, 3, h, w) float32 in [0, 1] with h, w <= T -> (B, 3, sh, sw).

    T is the graph's fixed tile size. The whole batch goes to onnxruntime in one call when the graph's batch is
    dynamic (as ``export_model`` writes them); files exported with a fixed batch of 1 run sample by sample.
    """

    def __init__(self, path: str | os.PathLike, providers: Sequence[str] = ("CPUExecutionProvider",)) -> None:
        super().__init__()
        ort = require("onnxruntime")
        self.path = os.fspath(path)
        self.session = ort.InferenceSession(self.path, providers=list(providers))
        graph_input = self.session.get_inputs()[0]
        self.input_name = graph_input.name
        self.input_dtype = np.float16 if graph_input.type == "tensor(float16)" else np.float32
        shape = graph_input.shape
        if len(shape) != 4 or not all(isinstance(side, int) for side in shape[2:]) or shape[2] != shape[3]:
            raise ValueError(
                f"{self.path}: input shape {shape} is not a fixed square tile (B, 3, T, T); export it with "
                "peft-adaptir export --tile T."
            )
        self.tile_size = int(shape[2])
        self.dynamic_batch = not isinstance(shape[0], int)  # a symbolic batch ('batch'); older files: 1
        meta = read_metadata(self.session)
        self.metadata = meta
        # restore() reads the size requirement from this attribute (see backbones.size_multiple)
        setattr(self, SIZE_MULTIPLE_ATTRIBUTE, int(meta.get("size_multiple", 1)))
        self.adapter = meta.get("adapter") or None

    @property
    def size_multiple(self) -> int:
        return int(getattr(self, SIZE_MULTIPLE_ATTRIBUTE))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"Expected (B, 3, H, W) images, got {tuple(images.shape)}.")
        height, width = images.shape[-2:]
        tile = self.tile_size
        if height > tile or width > tile:
            raise ValueError(
                f"{self.path} was exported for {tile}x{tile} tiles; got a {height}x{width} input. Run it through "
                f"restore_onnx() (tile_size={tile}), or export a graph for the tile size you want "
                f"(peft-adaptir export --tile N)."
            )
        padded = images.float().cpu()
        if width < tile:
            padded = F.pad(padded, (0, tile - width, 0, 0), mode="reflect" if tile - width < width else "replicate")
        if height < tile:
            padded = F.pad(padded, (0, 0, 0, tile - height), mode="reflect" if tile - height < height else "replicate")
        batch = padded.numpy().astype(self.input_dtype)
        if self.dynamic_batch:
            out = self.session.run(None, {self.input_name: batch})[0]
        else:
            out = np.concatenate([self.session.run(None, {self.input_name: sample[None]})[0] for sample in batch])
        out = torch.from_numpy(out.astype(np.float32))
        scale = out.shape[-1] // tile
        return out[:, :, : height * scale, : width * scale]


def restore_onnx(
    model: str | os.PathLike | OnnxRestorer,
    images: Any,
    *,
    tile_size: int | None = None,
    tile_overlap: int | None = None,
    **kwargs: Any,
) -> Any:
    """``restore()`` with an exported ONNX model (a path or an :class:`OnnxRestorer`) on onnxruntime.

    ``tile_size`` must be None or the graph's tile size (the graph is fixed to it); ``tile_overlap`` None means
    ``restore()``'s 32 pixels, or a quarter of the tile for tiles under 128. Other keyword arguments
    (``batch_size``, ``progress``) go to ``restore()``. The adapter is baked into the graph, so
    ``adapter=`` / ``adapter_names=`` are refused. Returns the images in the kind they were given.
    """
    restorer = model if isinstance(model, OnnxRestorer) else OnnxRestorer(model)
    if tile_size is not None and tile_size != restorer.tile_size:
        raise ValueError(
            f"{restorer.path} was exported for tile size {restorer.tile_size}; got tile_size={tile_size}. Pass "
            f"tile_size={restorer.tile_size} (or None), or export another graph with --tile {tile_size}."
        )
    for key in ("adapter", "adapter_names"):
        if kwargs.get(key) is not None:
            raise ValueError(
                f"{key}= does not apply to an exported graph: its adapter ({restorer.adapter or 'none'}) is baked "
                "in. Export one file per adapter and pick the file."
            )
        kwargs.pop(key, None)
    kwargs.pop("device", None)  # onnxruntime picks its device through the session's providers (OnnxRestorer)
    if tile_overlap is None:
        tile_overlap = min(32, restorer.tile_size // 4)
    return restore(restorer, images, tile_size=restorer.tile_size, tile_overlap=tile_overlap, **kwargs)
