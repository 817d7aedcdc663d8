"""Convert adapters trained with the AdaptIR authors' released code (IPT) into a peft-adaptir adapter directory.

The release keeps one module per transformer layer at ``body.encoder.layers.<i>.adaptir.<name>`` and
``body.decoder.layers.<i>.adaptir.<name>``, parallel to ``linear1 -> linear2``, with the names listed in
``RELEASE_TO_BRANCH``. The result loads with ``PeftModel.from_pretrained(ipt, output_dir)`` onto a spandrel-loaded
IPT and reproduces the released module's outputs (gated fusion; width, rank and kernel size read from the shapes).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn

from ..tuner.branch import AdaptIRBranch
from ..tuner.config import AdaptIRConfig
from ..tuner.constants import ADAPTER_WEIGHTS_FILE, BRANCH_CONTAINER
from .safe_load import load_checkpoint
from .spandrel_loader import _module_of, ipt_grid_size

__all__ = ["RELEASE_TO_BRANCH", "convert_release_checkpoint"]

# release name inside one adapter module -> our name inside AdaptIRBranch
RELEASE_TO_BRANCH: dict[str, str] = {
    "head.weight": "down.weight",
    "head.bias": "down.bias",
    "BN.weight": "norm.weight",
    "BN.bias": "norm.bias",
    "BN.running_mean": "norm.running_mean",
    "BN.running_var": "norm.running_var",
    "BN.num_batches_tracked": "norm.num_batches_tracked",
    "conv_weight_A": "local.conv_weight_A",
    "conv_weight_B": "local.conv_weight_B",
    "conv_bias": "local.conv_bias",
    "amp_fuse.weight": "frequency.amp_fuse.weight",
    "amp_fuse.bias": "frequency.amp_fuse.bias",
    "pha_fuse.weight": "frequency.pha_fuse.weight",
    "pha_fuse.bias": "frequency.pha_fuse.bias",
    "compress.weight": "channel.compress.weight",
    "proj.0.weight": "channel.proj.0.weight",
    "proj.0.bias": "channel.proj.0.bias",
    "proj.2.weight": "channel.proj.2.weight",
    "proj.2.bias": "channel.proj.2.bias",
    "channel_interaction.1.weight": "gates.channel_interaction.1.weight",
    "channel_interaction.1.bias": "gates.channel_interaction.1.bias",
    "channel_interaction.3.weight": "gates.channel_interaction.3.weight",
    "channel_interaction.3.bias": "gates.channel_interaction.3.bias",
    "spatial_interaction.weight": "gates.spatial_interaction.weight",
    "spatial_interaction.bias": "gates.spatial_interaction.bias",
    "tail.weight": "up.weight",
}
# release weights read and dropped: the position-score bias feeds a softmax over positions, which ignores a shift
RELEASE_DROPPED: frozenset[str] = frozenset({"compress.bias"})
_RELEASE_KEY = re.compile(r"^(?:.*\.)?(body\.(?:encoder|decoder)\.layers\.\d+)\.adaptir\.(.+)$")
_WRAPPER_KEYS = ("state_dict", "model_state_dict", "params_ema", "params", "model", "net")


def _adapter_tensors(state_dict: Mapping[str, Any]) -> dict[str, dict[str, torch.Tensor]]:
    """{layer path: {release name: tensor}} for every ``...body.<encoder|decoder>.layers.<i>.adaptir.<name>`` key."""
    layers: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in state_dict.items():
        match = _RELEASE_KEY.match(key)
        if match and isinstance(value, torch.Tensor):
            layers.setdefault(match.group(1), {})[match.group(2)] = value
    return layers


def _unwrap(checkpoint: Mapping[str, Any]) -> dict[str, dict[str, torch.Tensor]]:
    layers = _adapter_tensors(checkpoint)
    for key in _WRAPPER_KEYS:
        if not layers and isinstance(checkpoint.get(key), Mapping):
            layers = _adapter_tensors(checkpoint[key])
    if not layers:
        raise ValueError(
            "The checkpoint holds no AdaptIR release modules: expected keys like "
            "'body.encoder.layers.0.adaptir.head.weight' (optionally inside 'state_dict'/'model')."
        )
    return layers


def _layer_order(path: str) -> tuple[int, int]:
    _, stack, _, index = path.split(".")
    return (0 if stack == "encoder" else 1, int(index))


def _dimensions(layers: dict[str, dict[str, torch.Tensor]]) -> tuple[int, int, int]:
    """(width h, rank r, kernel size k) from the first layer's ``head`` and ``conv_weight_A/B`` shapes."""
    first_path = min(layers, key=_layer_order)
    first = layers[first_path]
    for name in ("head.weight", "conv_weight_A", "conv_weight_B"):
        if name not in first:
            raise ValueError(f"The checkpoint lacks {first_path}.adaptir.{name}, needed to read the adapter's size.")
    width, rank = first["conv_weight_A"].shape[0], first["conv_weight_A"].shape[1]
    kernel_size = math.isqrt(first["conv_weight_B"].shape[-1])
    if kernel_size * kernel_size != first["conv_weight_B"].shape[-1] or first["head.weight"].shape[0] != width:
        raise ValueError(
            f"{first_path}.adaptir: conv_weight_B {tuple(first['conv_weight_B'].shape)} is not (rank, k*k) or "
            f"head.weight {tuple(first['head.weight'].shape)} does not have conv_weight_A's width {width}."
        )
    return width, rank, kernel_size


def convert_release_checkpoint(
    checkpoint: Mapping[str, Any] | str | os.PathLike,
    ipt_model: Any,
    output_dir: str | os.PathLike,
    base_model_name_or_path: str | None = None,
) -> Path:
    """Write ``output_dir/adapter_config.json`` and ``adapter_model.safetensors`` from a release checkpoint.

    ``checkpoint``: a state dict or a ``.pth``/``.ckpt``/``.safetensors`` file (read with restricted unpickling only,
    which here also admits the ``argparse.Namespace`` of a Lightning ``last.ckpt``); keys
    other than the adapters' (the frozen IPT weights) are ignored. ``ipt_model``: the spandrel-loaded IPT (module or
    descriptor) the adapters will be loaded onto; nothing in it is changed. Every shape is checked against the
    modules this IPT needs; the first mismatch raises a ValueError naming the key, its shape and the expected one.
    """
    if isinstance(checkpoint, (str, os.PathLike)):  # a Lightning last.ckpt keeps its argparse options: harmless
        state = load_checkpoint(checkpoint, allow_argparse_namespace=True)
    else:
        state = checkpoint
    layers = _unwrap(state)
    width, rank, kernel_size = _dimensions(layers)
    ipt = _module_of(ipt_model)
    tensors: dict[str, torch.Tensor] = {}
    for path in sorted(layers, key=_layer_order):
        in_channels = _span_channels(ipt, path)
        expected = AdaptIRBranch(in_channels, width, rank=rank, kernel_size=kernel_size, fusion="gated").state_dict()
        tensors.update(_convert_layer(path, layers[path], expected, in_channels, width, rank))
    all_layers = {name.rpartition(".")[0] for name, module in ipt.named_modules() if name.endswith(".linear1")}
    covers_all = all_layers == set(layers) and isinstance(ipt.get_submodule(next(iter(layers))).linear1, nn.Linear)
    config = AdaptIRConfig(
        preset="ipt",
        target_modules=["linear1"] if covers_all else [f"{p}.linear1" for p in sorted(layers, key=_layer_order)],
        span_end="linear2",
        layout="NBC",
        grid_size=ipt_grid_size(ipt),
        width=width,
        rank=rank,
        kernel_size=kernel_size,
        fusion="gated",
        base_model_name_or_path=base_model_name_or_path,
    )
    output = Path(output_dir)
    output.mkdir(parents=True, exist_ok=True)
    config.save_pretrained(str(output))
    save_file(tensors, str(output / ADAPTER_WEIGHTS_FILE), metadata={"format": "pt"})
    return output


def _span_channels(ipt: nn.Module, path: str) -> int:
    """Width C of the FFN span ``<path>.linear1 -> linear2`` in the target IPT; a ValueError if it is not there."""
    try:
        layer = ipt.get_submodule(path)
    except AttributeError:
        raise ValueError(
            f"The checkpoint has an adapter at {path}.adaptir but the IPT model has no layer {path!r} (it has "
            f"{len(ipt.body.encoder.layers)} encoder and {len(ipt.body.decoder.layers)} decoder layers)."
        ) from None
    linear1 = getattr(layer, "linear1", None)
    base = linear1.get_base_layer() if hasattr(linear1, "get_base_layer") else linear1
    if not isinstance(base, nn.Linear) or not isinstance(getattr(layer, "linear2", None), nn.Module):
        raise ValueError(f"{path} in the IPT model has no linear1 -> linear2 feed-forward span.")
    return base.in_features


def _convert_layer(
    path: str,
    release: dict[str, torch.Tensor],
    expected: dict[str, torch.Tensor],
    in_channels: int,
    width: int,
    rank: int,
) -> dict[str, torch.Tensor]:
    """One layer's tensors under their saved peft-adaptir keys, every shape checked against ``expected``."""
    unknown = sorted(set(release) - set(RELEASE_TO_BRANCH) - RELEASE_DROPPED)
    if unknown:
        raise ValueError(
            f"{path}.adaptir.{unknown[0]} is not a parameter of the released AdaptIR module (known: "
            f"{sorted(RELEASE_TO_BRANCH)}); this checkpoint comes from another variant."
        )
    converted = {}
    for release_name, ours in RELEASE_TO_BRANCH.items():
        if release_name not in release:
            if release_name == "BN.num_batches_tracked":  # absent in checkpoints from old torch versions
                release[release_name] = torch.tensor(0)
            else:
                raise ValueError(f"The checkpoint lacks {path}.adaptir.{release_name}.")
        tensor, want = release[release_name], expected[ours]
        if tuple(tensor.shape) != tuple(want.shape):
            raise ValueError(
                f"Shape mismatch at {path}.adaptir.{release_name}: the checkpoint has {tuple(tensor.shape)}, but an "
                f"adapter for this IPT (C={in_channels}, width h={width}, rank r={rank}) needs {tuple(want.shape)}."
            )
        converted[f"base_model.model.{path}.linear1.{BRANCH_CONTAINER}.{ours}"] = tensor.detach().contiguous().clone()
    return converted
