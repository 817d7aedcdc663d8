"""Load a saved AdaptIR adapter into a prepared model in milliseconds, and an adapter bank for serving.

peft's ``load_adapter`` walks every module of the model twice (injection, then ``state_dict()`` for the key check)
and spends its time there, not on the ~100 KB of weights. A model that already holds an adapter of the same shape
("prepared") can take a new one by copying that adapter's branches and filling them from the file. Anything this
fast path cannot vouch for (another width or target set, a corrupt or missing file, ``modules_to_save``) goes through
peft's own path, which raises the clear errors of ``load_check`` and ``peft_patches`` and rolls back.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping, Sequence

import torch
from peft import PeftConfig, PeftModel
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


def _fill(
    layers: list[AdaptIRLayer], template: str, weights: Mapping[str, torch.Tensor]
) -> list[tuple[AdaptIRLayer, torch.nn.Module]] | None:
    """One new branch per layer, copied from ``template`` and filled from ``weights``; None if anything misfits."""
    prefix = "base_model.model."
    new = []
    used = 0
    for layer in layers:
        if template not in layer.adaptir_branch:
            continue
        branch = copy.deepcopy(layer.adaptir_branch[template])
        head = f"{prefix}{layer.where}.{BRANCH_CONTAINER}."
        state = branch.state_dict()
        for key, target in state.items():
            value = weights.get(head + key)
            if value is None or value.shape != target.shape:
                return None
            target.copy_(value)
        used += len(state)
        new.append((layer, branch))
    return new if used == len(weights) else None


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
            weights = drop_legacy_keys(load_peft_weights(os.fspath(source), device="cpu", **hub_kwargs))
            new = _fill(model.base_model.adaptir_layers(), template, weights)
    except Exception:  # noqa: BLE001  (peft's path below names the problem: missing folder, corrupt file, ...)
        new = None
    if new is None:
        model.load_adapter(source, adapter_name, **kwargs)
        return
    config.inference_mode = True
    model.peft_config[adapter_name] = config
    for layer, branch in new:
        for param in branch.parameters():
            param.requires_grad_(False)
        layer.adaptir_branch[adapter_name] = branch.train(layer.training)
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
