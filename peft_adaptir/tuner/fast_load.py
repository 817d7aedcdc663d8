"""Load a saved AdaptIR adapter into a prepared model in milliseconds, and an adapter bank for serving.

peft's ``load_adapter`` walks every module of the model twice (injection, then ``state_dict()`` for the key check)
and spends its time there, not on the ~100 KB of weights. A model that already holds an adapter of the same shape
("prepared") can take a new one by copying that adapter's branches and filling them from the file. Anything this
fast path cannot vouch for (another width or target set, a corrupt or missing file, ``modules_to_save``) goes through
peft's own path, which raises the clear errors of ``load_check`` and ``peft_patches`` and rolls back.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import safetensors.torch
import torch
from peft import PeftConfig, PeftModel
from peft.utils.constants import SAFETENSORS_WEIGHTS_NAME
from peft.utils.save_and_load import load_peft_weights

from .config import AdaptIRConfig
from .constants import BRANCH_CONTAINER
from .layer import AdaptIRLayer
from .load_check import drop_legacy_keys

__all__ = ["AdapterBank", "load_adapter_fast"]

# config fields that decide the branches' shapes and placement: equal fields mean an equal set of weights
_STRUCTURE = (
    "target_modules", "exclude_modules", "layers_to_transform", "layers_pattern", "span_end", "layout", "width",
    "reduction", "min_width", "rank", "kernel_size", "fusion", "branches",
)  # fmt: skip


def _template_for(model: PeftModel, config: PeftConfig) -> str | None:
    """Name of a loaded adapter with the same structure as ``config`` (None: use peft's path)."""
    if not isinstance(config, AdaptIRConfig) or config.modules_to_save:
        return None
    for name, loaded in model.peft_config.items():
        if isinstance(loaded, AdaptIRConfig) and not loaded.modules_to_save:
            if all(getattr(loaded, field) == getattr(config, field) for field in _STRUCTURE):
                return name
    return None


def _by_layer(weights: Mapping[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    """The file's tensors grouped by span: ``{layer.where: {key inside the branch: tensor}}``."""
    prefix, marker = "base_model.model.", f".{BRANCH_CONTAINER}."
    grouped: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in weights.items():
        head, found, inner = key.partition(marker)
        if not found or not head.startswith(prefix):
            grouped.setdefault("", {})[key] = value  # a key this path does not know: refused below
            continue
        grouped.setdefault(head[len(prefix) :], {})[inner] = value
    return grouped


def _clone_with(module: torch.nn.Module, state: dict[str, torch.Tensor], used: set[str], prefix: str = ""):
    """A copy of ``module``'s structure whose parameters and buffers are ``state``'s tensors (frozen).

    ``copy.deepcopy`` or building the branch anew costs milliseconds per span in Python; this copies each
    sub-module's attribute dict (containers shallow-copied) and takes every tensor from ``state`` (key: the path
    inside the branch) cast to the dtype and device of the tensor it replaces. A missing key or another shape raises
    KeyError / ValueError.
    """

    def take(name: str, current: torch.Tensor) -> torch.Tensor:
        key = prefix + name
        value = state[key]
        if value.shape != current.shape:
            raise ValueError(f"{key}: {tuple(value.shape)} in the file, {tuple(current.shape)} in the model")
        used.add(key)
        return value.to(device=current.device, dtype=current.dtype)

    attrs = {k: (type(v)(v) if isinstance(v, (dict, list, set)) else v) for k, v in module.__dict__.items()}
    attrs["_parameters"] = {
        name: None if p is None else torch.nn.Parameter(take(name, p), requires_grad=False)
        for name, p in module._parameters.items()
    }
    attrs["_buffers"] = {
        name: None if b is None else (b.clone() if name in module._non_persistent_buffers_set else take(name, b))
        for name, b in module._buffers.items()
    }
    attrs["_modules"] = {
        name: None if child is None else _clone_with(child, state, used, f"{prefix}{name}.")
        for name, child in module._modules.items()
    }
    clone = object.__new__(type(module))
    object.__setattr__(clone, "__dict__", attrs)
    return clone


def _fill(
    layers: list[AdaptIRLayer], template: str, weights: Mapping[str, torch.Tensor]
) -> list[tuple[AdaptIRLayer, torch.nn.Module]] | None:
    """One new branch per layer holding ``template``: its structure, the file's tensors (see ``_clone_with``).

    None if any key, shape or span misfits, so the caller falls back to peft's path.
    """
    grouped = _by_layer(weights)
    new = []
    for layer in layers:
        old = layer.adaptir_branch._modules.get(template)
        if old is None:
            continue
        state = grouped.pop(layer.where, None)
        if state is None:
            return None
        used: set[str] = set()
        try:
            branch = _clone_with(old, state, used)
        except (KeyError, ValueError):
            return None
        if len(used) != len(state):
            return None
        new.append((layer, branch))
    return new if not grouped else None


def _read_weights(source: str | os.PathLike, hub_kwargs: dict) -> dict[str, torch.Tensor]:
    """The adapter file's tensors on the CPU; a local safetensors file is read in one go (``load_file`` maps it and
    builds each of the ~1,000 small tensors separately: ~3x slower here), anything else through peft's loader."""
    folder = Path(source) / (hub_kwargs.get("subfolder") or "")
    local = folder / SAFETENSORS_WEIGHTS_NAME
    if local.is_file():
        return safetensors.torch.load(local.read_bytes())
    return load_peft_weights(os.fspath(source), device="cpu", **hub_kwargs)


def load_adapter_fast(model: PeftModel, source: str | os.PathLike, adapter_name: str, **kwargs) -> None:
    """``model.load_adapter(source, adapter_name)`` for inference, fast when an adapter of the same shape is loaded.

    ``source``: a saved adapter folder or a Hub id (as for peft). The new adapter is frozen and not made active (as
    peft's ``load_adapter``). Outputs are identical to peft's path; ``kwargs`` other than peft's download options
    (``subfolder``, ``revision``, ...) send the call to peft's ``load_adapter``.
    """
    if adapter_name in model.peft_config:
        raise ValueError(
            f"An adapter named {adapter_name!r} is already loaded; delete it first or choose another name."
        )
    hub_kwargs = {k: v for k, v in kwargs.items() if k in ("subfolder", "revision", "token", "cache_dir")}
    other = {k: v for k, v in kwargs.items() if k not in hub_kwargs}
    try:
        config = PeftConfig.from_pretrained(os.fspath(source), **hub_kwargs)
        template = None if other else _template_for(model, config)
        new = None
        if template is not None:
            weights = drop_legacy_keys(_read_weights(source, hub_kwargs))
            new = _fill(model.base_model.adaptir_layers(), template, weights)
    except Exception:  # noqa: BLE001  (peft's path below names the problem: missing folder, corrupt file, ...)
        new = None
    if new is None:
        model.load_adapter(source, adapter_name, **kwargs)
        return
    config.inference_mode = True
    model.peft_config[adapter_name] = config
    for layer, branch in new:
        if branch.training != layer.training:
            branch.train(layer.training)
        layer.adaptir_branch[adapter_name] = branch
        layer.adaptir_scale[adapter_name] = config.scale


class AdapterBank:
    """N task adapters loaded once into one model; each request (or each sample) routed by name, nothing reloaded.

    >>> bank = AdapterBank(model)                      # a PeftModel holding one AdaptIR adapter
    >>> bank.add("derain", "path/or/hub-id")           # fast load (see load_adapter_fast)
    >>> bank(x, "derain")                              # one task for the whole batch (cached set_adapter)
    >>> bank(x, ["derain", "denoise", "__base__"])     # one task per sample (peft's adapter_names)
    """

    def __init__(self, model: PeftModel) -> None:
        self.model = model.eval()

    @property
    def names(self) -> list[str]:
        return list(self.model.peft_config)

    def add(self, name: str, source: str | os.PathLike, **kwargs) -> None:
        load_adapter_fast(self.model, source, name, **kwargs)

    @torch.inference_mode()
    def __call__(self, x: torch.Tensor, tasks: str | Sequence[str]) -> torch.Tensor:
        if isinstance(tasks, str):
            if self.model.active_adapters != [tasks]:
                self.model.set_adapter(tasks, inference_mode=True)
            out = self.model(x)
        else:
            out = self.model(x, adapter_names=list(tasks))
        return out.reconstruction if hasattr(out, "reconstruction") else out
