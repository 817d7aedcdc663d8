"""Hot-swap an AdaptIR adapter's weights inside a ``torch.compile``-d model, with no recompilation.

peft's ``peft.utils.hotswap`` does this for LoRA only. Same idea here: ``prepare_hotswap`` (once, before compiling)
pads every branch of one adapter to a maximum width h_max and rank r_max with zeros, and turns the adapter's scale
into a 0-dim tensor; ``hotswap_adapter`` then writes another adapter's weights into those padded tensors in place
(``copy_``, padding re-zeroed), so the compiled graph sees the same shapes, dtypes and Python values and never
recompiles.

Why zero padding is exact (h channels padded to h_max; every tensor is padded at its leading corner):
``down`` gives exact zeros on padded channels (zero weight rows and bias); BatchNorm maps 0 to 0 (zero mean, weight
and bias); the local conv is depthwise with a zero kernel (zero rows of A; zero rank columns of A and rows of B add
exact zero terms to A @ B); the frequency branch's amplitude a|F| + c is 0 for F = 0, c = 0; the channel branch's
position scores and the gates' spatial score read padded channels with zero weights (the softmax over positions is
unchanged); the MLPs' padded hidden units get zero weights and bias (GELU(0) = 0); and ``up`` reads padded channels
with zero columns. So padded channels stay exactly zero and the output is unchanged.

Refused (with the field named): adapters whose config changes the control flow or placement, that is other branches,
fusion, kernel size, layout, span end or target modules, and widths/ranks above the prepared maximum.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import torch
from peft import PeftConfig, PeftModel
from peft.utils.save_and_load import load_peft_weights

from .branch import BRANCH_NAMES, AdaptIRBranch, resolve_rank
from .config import AdaptIRConfig
from .constants import BRANCH_CONTAINER
from .fast_load import _STRUCTURE
from .layer import AdaptIRLayer
from .load_check import drop_legacy_keys

__all__ = ["HotswapError", "hotswap_adapter", "prepare_hotswap"]

# config fields that only change tensor shapes (padded away); every other structural field changes control flow
_SHAPE_ONLY = ("width", "reduction", "min_width", "rank")
CONTROL_FLOW_FIELDS: tuple[str, ...] = tuple(f for f in _STRUCTURE if f not in _SHAPE_ONLY)
_PREFIX = "base_model.model."


class HotswapError(ValueError):
    """An adapter that cannot be hot-swapped into the prepared model; the message names the field that differs."""


def _unwrap(model: torch.nn.Module) -> PeftModel:
    """The PeftModel behind ``model`` (``torch.compile`` wraps it in an OptimizedModule with ``_orig_mod``)."""
    model = getattr(model, "_orig_mod", model)
    if not isinstance(model, PeftModel):
        raise TypeError(
            "Expected a PeftModel holding an AdaptIR adapter (or its torch.compile wrapper), got "
            f"{type(model).__name__}."
        )
    return model


def _layers(model: PeftModel, adapter_name: str) -> list[AdaptIRLayer]:
    """The AdaptIR layers that hold ``adapter_name``, in module order; an error when there are none."""
    layers = [layer for layer in model.base_model.adaptir_layers() if adapter_name in layer.adaptir_branch]
    if not layers:
        loaded = list(model.peft_config)
        raise HotswapError(f"No AdaptIR adapter named {adapter_name!r} in this model (loaded: {loaded}).")
    return layers


def _branch_width(branch: AdaptIRBranch) -> int:
    return branch.down.out_channels


def _branch_rank(branch: AdaptIRBranch) -> int | None:
    return None if branch.local is None else branch.local.conv_weight_A.shape[1]


def _fill_padded(target: AdaptIRBranch, state: Mapping[str, torch.Tensor]) -> None:
    """Zero every tensor of ``target`` and copy each ``state`` tensor into its leading corner (shapes <= target's)."""
    with torch.no_grad():
        for key, tensor in target.state_dict(keep_vars=True).items():
            value = state[key]
            tensor.zero_()
            tensor[tuple(slice(0, n) for n in value.shape)].copy_(value)


def prepare_hotswap(
    model: torch.nn.Module,
    max_width: int | None = None,
    max_rank: int | None = None,
    adapter_name: str = "default",
) -> None:
    """Pad adapter ``adapter_name``'s branches to width ``max_width`` and rank ``max_rank``; call before compiling.

    Outputs are unchanged (see the module docstring). ``max_width=None``: the largest width the adapter already has;
    ``max_rank=None``: the largest of its ranks and ``max_width // 2`` (the default rank of a max_width adapter).
    The adapter's scale becomes a 0-dim float32 tensor, and its config records the padded width and rank, so a
    ``save_pretrained`` of the prepared model reloads as it is. Afterwards ``hotswap_adapter`` can load any adapter
    with the same branches, fusion, kernel size and placement, of width <= max_width and rank <= max_rank.
    """
    model = _unwrap(model)
    layers = _layers(model, adapter_name)
    branches = [layer.adaptir_branch[adapter_name] for layer in layers]
    widths = [_branch_width(b) for b in branches]
    ranks = [r for r in map(_branch_rank, branches) if r is not None]
    width = max(widths) if max_width is None else max_width
    if width < max(widths):
        raise HotswapError(f"max_width={max_width} is below the width {max(widths)} adapter {adapter_name!r} has.")
    rank = max([resolve_rank(width, None)] + ranks) if max_rank is None else max_rank
    if ranks and rank < max(ranks):
        raise HotswapError(f"max_rank={max_rank} is below the rank {max(ranks)} adapter {adapter_name!r} has.")
    for layer, old in zip(layers, branches):
        padded = AdaptIRBranch(
            layer.in_channels,
            width,
            rank=rank,
            kernel_size=old.local.kernel_size if old.local is not None else 3,
            fusion=old.fusion,
            branches=old.branches,
            init_weights=True,
            out_channels=layer.out_channels,
        ).to(device=old.down.weight.device, dtype=old.down.weight.dtype)
        _fill_padded(padded, old.state_dict())
        for param, old_param in zip(padded.parameters(), old.parameters()):
            param.requires_grad_(old_param.requires_grad)
        layer.adaptir_branch[adapter_name] = padded.train(old.training)
        scale = layer.adaptir_scale[adapter_name]
        layer.adaptir_scale[adapter_name] = torch.as_tensor(scale, dtype=torch.float32).clone()
    config = model.peft_config[adapter_name]
    config.width, config.rank = width, rank


def _read_source(
    source: str | os.PathLike | Mapping[str, torch.Tensor], hub_kwargs: dict
) -> tuple[AdaptIRConfig | None, dict[str, torch.Tensor]]:
    """(config or None for a bare state dict, weights keyed as peft saves them: ``base_model.model.<path>...``)."""
    if isinstance(source, Mapping):
        return None, drop_legacy_keys(dict(source))
    config = PeftConfig.from_pretrained(os.fspath(source), **hub_kwargs)
    if not isinstance(config, AdaptIRConfig):
        raise HotswapError(
            f"{os.fspath(source)!r} holds a {type(config).__name__}; only AdaptIR adapters can be hot-swapped here."
        )
    return config, drop_legacy_keys(load_peft_weights(os.fspath(source), device="cpu", **hub_kwargs))


def _same(a: object, b: object) -> bool:
    """Config values equal, lists/sets/tuples compared as sets (peft may turn target_modules into a set)."""
    if isinstance(a, (list, set, tuple)) and isinstance(b, (list, set, tuple)):
        return set(a) == set(b)
    return a == b


def _check_config(loaded: AdaptIRConfig, new: AdaptIRConfig, adapter_name: str) -> None:
    """Raise HotswapError naming the first control-flow field that differs."""
    if new.modules_to_save:
        raise HotswapError(
            "The adapter has modules_to_save (full modules, not AdaptIR branches): it cannot be hot-swapped."
        )
    for field in CONTROL_FLOW_FIELDS:
        if not _same(getattr(loaded, field), getattr(new, field)):
            raise HotswapError(
                f"Cannot hot-swap: {field} differs ({getattr(new, field)!r} in the new adapter, "
                f"{getattr(loaded, field)!r} in the prepared adapter {adapter_name!r}). It changes the compiled "
                "graph's control flow or placement; load it with load_adapter and compile again."
            )


def _describe(state: Mapping[str, torch.Tensor]) -> tuple[tuple[str, ...], str, int | None, int, int | None]:
    """(branches, fusion, kernel size, width, rank) of one branch's state dict (keys relative to the branch)."""
    branches = tuple(name for name in BRANCH_NAMES if any(k.startswith(name + ".") for k in state))
    fusion = "gated" if any(k.startswith("gates.") for k in state) else "sum"
    kernel, rank = None, None
    if "local.conv_weight_B" in state:
        rank, kk = state["local.conv_weight_B"].shape
        kernel = round(kk**0.5)
    width = state["down.weight"].shape[0] if "down.weight" in state else -1
    return branches, fusion, kernel, width, rank


def _check_branch(target: AdaptIRBranch, state: Mapping[str, torch.Tensor], where: str) -> None:
    """Raise HotswapError unless ``state`` is a branch like ``target`` up to a width/rank within target's."""
    branches, fusion, kernel, width, rank = _describe(state)
    if set(branches) != set(target.branches):
        raise HotswapError(
            f"Cannot hot-swap at {where}: branches differ ({list(branches)} in the new adapter, "
            f"{list(target.branches)} prepared). Other branches change the compiled graph's control flow."
        )
    if fusion != target.fusion:
        raise HotswapError(
            f"Cannot hot-swap at {where}: fusion differs ({fusion!r} in the new adapter, {target.fusion!r} prepared); "
            "another fusion changes the compiled graph's control flow."
        )
    if target.local is not None and kernel != target.local.kernel_size:
        raise HotswapError(
            f"Cannot hot-swap at {where}: kernel_size differs ({kernel} in the new adapter, "
            f"{target.local.kernel_size} prepared); another kernel size changes the compiled convolution."
        )
    max_width, max_rank = _branch_width(target), _branch_rank(target)
    if width > max_width:
        raise HotswapError(
            f"Cannot hot-swap at {where}: the new adapter's width {width} is above the prepared max_width "
            f"{max_width}; call prepare_hotswap with max_width >= {width} before compiling."
        )
    if rank is not None and max_rank is not None and rank > max_rank:
        raise HotswapError(
            f"Cannot hot-swap at {where}: the new adapter's rank {rank} is above the prepared max_rank {max_rank}; "
            f"call prepare_hotswap with max_rank >= {rank} before compiling."
        )
    # the exact shapes a branch of that width and rank has: catches a corrupt or inconsistent file
    with torch.device("meta"):
        reference = AdaptIRBranch(
            target.down.in_channels, max(width, 1), rank=rank, kernel_size=kernel or 3, fusion=fusion,
            branches=branches, out_channels=target.up.out_channels,
        )  # fmt: skip
    expected = {k: tuple(v.shape) for k, v in reference.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in state.items()}
    if expected != got:
        key = sorted(expected.keys() ^ got.keys()) or [k for k in sorted(expected) if expected[k] != got[k]]
        raise HotswapError(
            f"Cannot hot-swap at {where}: the new adapter's weights do not form a branch of width {width} for "
            f"{target.down.in_channels} -> {target.up.out_channels} channels (first misfit: {key[0]}, "
            f"{got.get(key[0])} vs {expected.get(key[0])}). Another base model or a corrupt file."
        )


def hotswap_adapter(
    model: torch.nn.Module,
    source: str | os.PathLike | Mapping[str, torch.Tensor],
    adapter_name: str = "default",
    scale: float | None = None,
    **hub_kwargs,
) -> None:
    """Write the adapter in ``source`` into the prepared adapter ``adapter_name`` in place: no recompilation.

    ``model``: a PeftModel prepared with ``prepare_hotswap`` (or its ``torch.compile`` wrapper). ``source``: a saved
    adapter folder or Hub id (``hub_kwargs``: subfolder, revision, ...), or a state dict keyed as peft saves it
    (``base_model.model.<module path>.adaptir_branch.<weight>``; its control-flow config fields cannot be checked,
    only what the weights show: branches, fusion, kernel size, targets). ``scale``: the new adapter's scale (default:
    its config's, or unchanged for a state dict). Everything is checked before anything is written.
    """
    model = _unwrap(model)
    layers = _layers(model, adapter_name)
    if not isinstance(layers[0].adaptir_scale[adapter_name], torch.Tensor):
        raise HotswapError(f"Adapter {adapter_name!r} is not prepared: call prepare_hotswap(model) before compiling.")
    config, weights = _read_source(source, hub_kwargs)
    if config is not None:
        _check_config(model.peft_config[adapter_name], config, adapter_name)
    per_layer = []
    used = set()
    for layer in layers:
        head = f"{_PREFIX}{layer.where}.{BRANCH_CONTAINER}."
        state = {key[len(head) :]: value for key, value in weights.items() if key.startswith(head)}
        if not state:
            raise HotswapError(
                f"Cannot hot-swap: the new adapter has no weights for {layer.where}, which the prepared adapter "
                f"{adapter_name!r} covers; target_modules differ."
            )
        _check_branch(layer.adaptir_branch[adapter_name], state, layer.where)
        used.update(head + key for key in state)
        per_layer.append((layer, state))
    extra = sorted(weights.keys() - used)
    if extra:
        raise HotswapError(
            f"Cannot hot-swap: the new adapter has weights the prepared adapter {adapter_name!r} has no place for "
            f"(first: {extra[0]}); target_modules differ."
        )
    new_scale = scale if scale is not None else (config.scale if config is not None else None)
    for layer, state in per_layer:
        _fill_padded(layer.adaptir_branch[adapter_name], state)
        if new_scale is not None:
            layer.adaptir_scale[adapter_name].fill_(new_scale)
    if new_scale is not None:
        model.peft_config[adapter_name].scale = new_scale
