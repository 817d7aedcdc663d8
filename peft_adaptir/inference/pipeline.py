"""``restore``: run an image-restoration model (optionally with AdaptIR task adapters) on user images.

See :func:`restore`. Input/output conventions live in :mod:`peft_adaptir.inference.image_io`, tiling in
:mod:`peft_adaptir.inference.tiling`.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from ..backbones.loading import reconstruction
from ..backbones.size_multiple import size_multiple as size_multiple_of
from ..routing.auto import auto_routes, batch_kwargs, wants_auto
from ..tuner.constants import BASE_ADAPTER_NAME, PEFT_TYPE_NAME
from .devices import resolve_device
from .image_io import ImageItem, merge_channels, to_items
from .sharing import SharedModel, shared_model
from .tiling import Canvas, Tile, pad_to_multiple, plan_tiles

DEFAULT_TILE_SIZE = 512
"""With ``tile_size=None``, images with a side longer than this are tiled in tiles of this size."""
_PROGRESS_AUTO_THRESHOLD = 8


def restore(
    model: nn.Module,
    images: Any,
    *,
    adapter: str | None = None,
    adapter_names: Sequence[str] | None = None,
    tile_size: int | None = None,
    tile_overlap: int = 32,
    batch_size: int = 4,
    size_multiple: int | None = None,
    progress: bool | None = None,
    device: str | torch.device | None = None,
    router: Any = None,
    routing: str = "hard",
) -> Any:
    """Restore ``images`` with ``model`` and return them in the kind they were given.

    Args:
        model: a transformers image-restoration model (its output has ``.reconstruction``), a peft ``PeftModel``
            wrapping one, or any ``nn.Module`` mapping (B, 3, H, W) float in [0, 1] to (B, 3, sH, sW) for an
            integer scale s (detected from the output; super-resolution models return larger images).
        images: a PIL image, a numpy array ((H, W), (H, W, C) or (B, H, W, C); uint8, uint16 or float in [0, 1]),
            a torch tensor ((C, H, W) or (B, C, H, W) float in [0, 1]), or a list of these of any sizes.
            C is 1 (grey), 2 (grey + alpha), 3 (RGB) or 4 (RGBA). Greyscale is replicated to RGB and the result
            averaged back to one channel; alpha is passed through (bilinearly resized when s > 1). The result
            has the input's kind, layout, dtype and device, s times its size, values clamped to [0, 1].
        adapter: activate this adapter of a peft model for the call (the previous one is restored afterwards).
        adapter_names: one adapter name per image ("__base__": no adapter), for per-image tasks; images of any
            adapters share a batch (peft's mixed-batch ``adapter_names=`` forward argument).
        tile_size: run images with a side longer than this in overlapping tiles of this size (rounded down to
            a multiple of the size requirement). None: tile only images with a side over 512; 0: never tile.
        tile_overlap: minimum overlap in input pixels between neighbouring tiles, blended with linear ramps.
        batch_size: images or tiles per forward pass; memory is bounded by ``batch_size`` x tile area.
        size_multiple: the model's size requirement: inputs are padded (reflect; replicate for tiny images)
            on the bottom/right to multiples of it and outputs cropped back. None: ``config.window_size`` for
            transformers Swin2SR (seen through a ``PeftModel``), else 1.
        progress: show a tqdm bar over batches (of images or tiles); None: only for more than 8 images or 8
            batches, so a large tiled image shows its tile progress.
        device: where to run; None: the device of the model's parameters. A model elsewhere is moved there
            for the call and moved back afterwards. A device this machine lacks is a ValueError.

    ``adapter="auto"`` (or ``"auto"`` among ``adapter_names``) lets a degradation router pick the adapter per image,
    once per whole image (see :mod:`peft_adaptir.routing.auto`): ``router`` is a ``DegradationRouter``, its folder
    or Hub id (None: the router shipped with the zoo), ``routing`` is ``"hard"`` or ``"soft"``; the call then returns
    ``(restored, decisions)`` with one ``Decision`` (task, probability, mode, weights) per image, None where named.

    The model runs in eval mode under ``torch.inference_mode``; its train/eval modes and ``requires_grad`` flags
    are restored afterwards, also when an error is raised; the active adapter is never changed.

    Threads: calls may run at the same time on one shared model. With AdaptIR adapters each call routes its own
    samples (``adapter=`` / ``adapter_names=``) without touching the model's active adapter, so threads using
    different adapters get exactly what sequential calls give. Other peft methods switch or hook the shared model,
    so their calls take turns (a per-model lock). See docs/inference.md, "Threads".
    """
    items, rebuild = to_items(images)
    auto = wants_auto(adapter, adapter_names)
    if auto:  # decided once per whole image, before padding and tiling
        names, decisions = auto_routes(model, [item.rgb for item in items], adapter, adapter_names, router, routing)
        adapter = None
    else:
        names = _resolve_adapter_names(model, adapter, adapter_names, len(items))
    multiple = _size_multiple(model, size_multiple)
    tile = _tile_size(tile_size, multiple, items)
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}.")
    if not isinstance(tile_overlap, int) or tile_overlap < 0:
        raise ValueError(f"tile_overlap must be a non-negative integer, got {tile_overlap!r}.")
    if tile_size != 0 and tile_overlap >= tile:
        raise ValueError(
            f"tile_overlap ({tile_overlap}) must be smaller than the tile size ({tile}, tile_size={tile_size} rounded "
            f"down to a multiple of {multiple}); use a smaller tile_overlap (CLI: --tile-overlap) or a larger "
            "tile_size."
        )
    run_device = resolve_device(device)
    if not items:
        return (rebuild([]), []) if auto else rebuild([])
    routed = adapter is not None and _is_adaptir_model(model)
    if routed:
        names = [adapter] * len(items)  # per-call routing: the model's active adapter is never switched
    with shared_model(model, run_device) as shared:
        # AdaptIR routes per thread; other peft models are switched or hooked as a whole, so they take turns
        exclusive = shared.exclusive if _adapter_names_of(model) is not None and not _is_adaptir_model(model) else None
        with exclusive or contextlib.nullcontext(), _active_adapter(model, None if routed else adapter):
            restored = _run(model, items, names, multiple, tile, tile_overlap, batch_size, progress, shared)
    result = rebuild([merge_channels(item, rgb) for item, rgb in zip(items, restored)])
    return (result, decisions) if auto else result


def _is_adaptir_model(model: nn.Module) -> bool:
    """A peft model whose adapters are all AdaptIR (they route samples per thread)."""
    config = getattr(model, "peft_config", None)
    return isinstance(config, dict) and bool(config) and all(c.peft_type == PEFT_TYPE_NAME for c in config.values())


def _adapter_names_of(model: nn.Module) -> list[str] | None:
    """Names of a peft model's adapters; None for a model without adapters."""
    config = getattr(model, "peft_config", None)
    if isinstance(config, dict) and config and callable(getattr(model, "set_adapter", None)):
        return list(config)
    return None


def _resolve_adapter_names(
    model: nn.Module, adapter: str | None, adapter_names: Sequence[str] | None, count: int
) -> list[str] | None:
    known = _adapter_names_of(model)
    if adapter is not None and adapter_names is not None:
        raise ValueError(
            "Pass either adapter= (one adapter for all images) or adapter_names= (one per image), not both."
        )
    if adapter is not None:
        if known is None:
            raise ValueError(
                f"adapter={adapter!r} was given but the model has no adapters ({type(model).__name__}); wrap it "
                "with peft (PeftModel.from_pretrained / get_peft_model) or drop adapter=."
            )
        if adapter not in known:
            raise ValueError(f"Unknown adapter {adapter!r}; the model has {known}.")
        return None
    if adapter_names is None:
        return None
    if isinstance(adapter_names, str):
        raise TypeError(
            f"adapter_names must be a list with one name per image; for one adapter use adapter={adapter_names!r}."
        )
    names = list(adapter_names)
    if known is None:
        raise ValueError(
            f"adapter_names= was given but the model has no adapters ({type(model).__name__}); wrap it with peft "
            "or drop adapter_names=."
        )
    if len(names) != count:
        raise ValueError(f"adapter_names has {len(names)} names but {count} images were given; pass one per image.")
    unknown = sorted({name for name in names if name not in known and name != BASE_ADAPTER_NAME})
    if unknown:
        raise ValueError(
            f"Unknown adapter names {unknown}; the model has {known} (and {BASE_ADAPTER_NAME!r} for none)."
        )
    return names


def _size_multiple(model: nn.Module, size_multiple: int | None) -> int:
    needed = size_multiple_of(model)
    if size_multiple is not None:
        if not isinstance(size_multiple, int) or size_multiple < 1:
            raise ValueError(f"size_multiple must be a positive integer, got {size_multiple!r}.")
        if size_multiple % needed:
            raise ValueError(
                f"size_multiple={size_multiple} is not a multiple of {needed}, the size this model needs (its window "
                f"size); pass a multiple of {needed}, or leave size_multiple=None to use {needed}."
            )
        return size_multiple
    return needed


def _tile_size(tile_size: int | None, multiple: int, items: list[ImageItem]) -> int:
    """The tile side in input pixels, a multiple of ``multiple``; for ``tile_size=0`` one covering every image."""
    if tile_size is None:
        tile_size = DEFAULT_TILE_SIZE
    elif not isinstance(tile_size, int) or tile_size < 0:
        raise ValueError(f"tile_size must be a non-negative integer or None, got {tile_size!r}.")
    if tile_size == 0:
        largest = max((max(item.rgb.shape[-2:]) for item in items), default=1)
        return math.ceil(largest / multiple) * multiple
    return max(multiple, tile_size // multiple * multiple)


@contextlib.contextmanager
def _active_adapter(model: nn.Module, adapter: str | None) -> Iterator[None]:
    """``adapter`` active for the block (None: leave it); the previous one and ``requires_grad`` put back after."""
    if adapter is None:
        yield
        return
    previous = getattr(model, "active_adapter", None)
    grads = [(param, param.requires_grad) for param in model.parameters()]  # set_adapter changes them
    model.set_adapter(adapter)
    try:
        yield
    finally:
        if previous is not None:
            model.set_adapter(previous)
        for param, requires_grad in grads:
            param.requires_grad_(requires_grad)


def _run(
    model: nn.Module,
    items: list[ImageItem],
    names: list[str] | None,
    multiple: int,
    tile: int,
    overlap: int,
    batch_size: int,
    progress: bool | None,
    shared: SharedModel,
) -> list[torch.Tensor]:
    """Restored (3, sH, sW) float32 CPU images: padded, tiled, batched by tile shape, blended, cropped."""
    padded = [pad_to_multiple(item.rgb, multiple) for item in items]
    groups: dict[tuple[int, int], list[tuple[int, Tile]]] = {}
    for index, image in enumerate(padded):
        for tile_ in plan_tiles(image.shape[-2], image.shape[-1], tile, overlap, multiple):
            groups.setdefault((tile_.height, tile_.width), []).append((index, tile_))
    batches = [jobs[i : i + batch_size] for jobs in groups.values() for i in range(0, len(jobs), batch_size)]
    canvases: list[Canvas | None] = [None] * len(items)
    scale: int | None = None
    auto = len(items) > _PROGRESS_AUTO_THRESHOLD or len(batches) > _PROGRESS_AUTO_THRESHOLD  # many images or tiles
    show = auto if progress is None else bool(progress)
    unit = "tile batch" if len(batches) > len(items) else "batch"
    for batch in tqdm(batches, desc="restore", unit=unit, disable=not show, leave=False):
        inputs = torch.stack([padded[i][:, t.top : t.top + t.height, t.left : t.left + t.width] for i, t in batch]).to(
            device=shared.device, dtype=shared.dtype
        )
        kwargs = batch_kwargs([names[i] for i, _ in batch]) if names is not None else {}
        with torch.inference_mode():
            output = reconstruction(model(inputs, **kwargs))
        scale = _check_scale(inputs, output, scale)
        output = output.to("cpu", torch.float32)  # a normal (non-inference) tensor from here on
        for (index, tile_), out in zip(batch, output):
            if canvases[index] is None:
                canvases[index] = Canvas(padded[index].shape[-2], padded[index].shape[-1], scale)
            canvases[index].add(tile_, out)
    return [
        canvas.result()[:, : item.rgb.shape[-2] * scale, : item.rgb.shape[-1] * scale]
        for canvas, item in zip(canvases, items)
    ]


def _check_scale(inputs: torch.Tensor, output: torch.Tensor, scale: int | None) -> int:
    """The integer upscale factor of ``output`` over ``inputs``; it must be the same for every batch."""
    (batch, _, in_h, in_w), out_shape = inputs.shape, tuple(output.shape)
    if output.ndim != 4 or out_shape[:2] != (batch, 3) or out_shape[2] % in_h or out_shape[3] % in_w:
        raise ValueError(
            f"The model mapped input {tuple(inputs.shape)} to {out_shape}; expected (B, 3, s*H, s*W) for an "
            "integer scale s."
        )
    found = out_shape[2] // in_h
    if out_shape[3] // in_w != found or (scale is not None and found != scale):
        raise ValueError(f"The model's output scale is not consistent: input {tuple(inputs.shape)} -> {out_shape}.")
    return found
