"""The peft tuner layer: wraps the first module of an FFN span and adds the AdaptIR branch's result to the span."""

from __future__ import annotations

from typing import Any

import torch
from peft.tuners.tuners_utils import BaseTunerLayer
from torch import nn

from .branch import AdaptIRBranch, resolve_width
from .call_state import routed_adapter_names, slot_pop, slot_set
from .config import AdaptIRConfig
from .constants import BASE_ADAPTER_NAME, BRANCH_CONTAINER, SCALE_CONTAINER
from .grid import BlockGridCapture, InputSizeRecorder, resolve_grid
from .layout import TOKEN_LAYOUTS, batch_size_of, from_feature_map, resolve_layout, to_feature_map


def infer_in_channels(module: nn.Module) -> int:
    """Channels C entering an FFN: from the module itself or its first Linear/Conv sub-module."""
    for candidate in module.modules():
        if isinstance(candidate, nn.Linear):
            return candidate.in_features
        if isinstance(candidate, nn.modules.conv._ConvNd):
            return candidate.in_channels
    raise ValueError(
        f"Cannot tell how many channels enter {type(module).__name__}: it holds no Linear or Conv layer. Target the "
        "module where the FFN starts (its first Linear/Conv, or a module containing it)."
    )


class AdaptIRLayer(BaseTunerLayer):
    """Mixin holding the AdaptIR branches of one FFN span, one per adapter name."""

    adapter_layer_names: tuple[str, ...] = (BRANCH_CONTAINER,)
    other_param_names: tuple[str, ...] = (SCALE_CONTAINER,)

    def __init__(self, base_layer: nn.Module, where: str, layout: str | None) -> None:
        self.base_layer = base_layer
        self.adaptir_branch = nn.ModuleDict()
        self.adaptir_scale: dict[str, float] = {}
        self.in_channels = infer_in_channels(base_layer)
        self.where = where  # the target's module path, for error messages
        self.layout = layout
        self.grid_size: tuple[int, int] | None = None
        self.grid_capture: BlockGridCapture | None = None
        self.input_recorder: InputSizeRecorder | None = None
        self.span_end_name: str | None = None
        self.hook_handles: list[torch.utils.hooks.RemovableHandle] = []
        self._disable_adapters = False
        self.merged_adapters = []

    def update_layer(self, adapter_name: str, config: AdaptIRConfig) -> None:
        """Add a freshly initialised branch for ``adapter_name`` (on the base layer's device and dtype)."""
        width = resolve_width(self.in_channels, config.width, config.reduction, config.min_width)
        branch = AdaptIRBranch(
            self.in_channels,
            width,
            rank=config.rank,
            kernel_size=config.kernel_size,
            fusion=config.fusion,
            branches=config.branches,
            init_weights=config.init_weights,
        )
        reference = next(self.get_base_layer().parameters(), None)
        if reference is not None:
            branch.to(device=reference.device, dtype=reference.dtype if reference.is_floating_point() else None)
        self.adaptir_branch[adapter_name] = branch
        self.adaptir_scale[adapter_name] = config.scale
        self.set_adapter(self.active_adapters)

    def remove_hooks(self) -> None:
        """Detach the hooks this layer placed on other modules (span end, enclosing block)."""
        for handle in self.hook_handles:
            handle.remove()
        self.hook_handles.clear()
        slot_pop(self)

    def merge(self, safe_merge: bool = False, adapter_names: list[str] | None = None) -> None:
        raise ValueError(
            "AdaptIR adapters cannot be merged into the base weights: the branch is nonlinear (BatchNorm, FFT "
            "amplitude/phase, softmax pooling, gates), so no weight update reproduces it. Keep the adapter "
            "separate, or use unload() to get the base model back."
        )

    def unmerge(self) -> None:
        """Nothing is ever merged (see ``merge``)."""

    def adapter_delta(self, x: torch.Tensor, adapter_names: list[str] | None) -> torch.Tensor | None:
        """The summed contribution of the active adapters (or per-sample ``adapter_names``), in ``x``'s layout."""
        if self.disable_adapters:
            return None
        active = [name for name in self.active_adapters if name in self.adaptir_branch]
        if adapter_names is None and not active:
            return None
        layout = resolve_layout(self.layout, x, self.in_channels, self.where)
        if adapter_names is not None and len(adapter_names) != batch_size_of(x, layout):
            raise ValueError(
                f"adapter_names has {len(adapter_names)} entries but the batch holds {batch_size_of(x, layout)} "
                "samples; give exactly one adapter name per sample."
            )
        grid = None
        if layout in TOKEN_LAYOUTS:
            num_tokens = x.shape[0] if layout == "NBC" else x.shape[1]
            grid = resolve_grid(num_tokens, self.where, self.grid_size, self.grid_capture, self.input_recorder)
        features = to_feature_map(x, layout, grid)  # (B, C, H, W)
        if adapter_names is None:
            delta = None
            for name in active:
                out = self._run_branch(name, features)
                delta = out if delta is None else delta + out
        elif len(set(adapter_names)) == 1:  # one adapter for the whole batch (restore(adapter=...)): no scatter
            name = adapter_names[0]
            if name == BASE_ADAPTER_NAME or name not in self.adaptir_branch:
                return None
            delta = self._run_branch(name, features)
        else:
            delta = torch.zeros_like(features)
            for name in dict.fromkeys(adapter_names):
                if name == BASE_ADAPTER_NAME or name not in self.adaptir_branch:
                    continue  # the base path, or an adapter that does not cover this layer
                rows = [i for i, n in enumerate(adapter_names) if n == name]
                delta[rows] = self._run_branch(name, features[rows]).to(delta.dtype)
        return from_feature_map(delta, layout).to(x.dtype)

    def _run_branch(self, adapter_name: str, features: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> scale * branch(features), computed in the branch's dtype."""
        branch = self.adaptir_branch[adapter_name]
        out = branch(self._cast_input_dtype(features, branch.down.weight.dtype))
        return out * self.adaptir_scale[adapter_name]

    def add_pending_delta(self, module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
        """Forward hook on the span's last module: add the delta computed from the span's input (this thread's)."""
        delta = slot_pop(self)
        return output if delta is None else output + delta


class AdaptIRModule(nn.Module, AdaptIRLayer):
    """A module wrapped by AdaptIR; ``forward`` and ``__repr__`` live here so ``nn.Module`` does not shadow them."""

    def __init__(self, base_layer: nn.Module, adapter_name: str, config: AdaptIRConfig, where: str) -> None:
        super().__init__()
        AdaptIRLayer.__init__(self, base_layer, where=where, layout=config.layout)
        self._active_adapter = adapter_name
        self.update_layer(adapter_name, config)

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        adapter_names = kwargs.pop("adapter_names", None)
        if adapter_names is None:
            adapter_names = routed_adapter_names()  # a mixed batch routed by this thread's PeftModel call
        result = self.base_layer(x, *args, **kwargs)
        delta = self.adapter_delta(x, adapter_names)
        if self.span_end_name is not None:
            slot_set(self, delta)  # added by the hook on the span's last module; per thread (call_state)
            return result
        return result if delta is None else result + delta

    def __repr__(self) -> str:
        return "adaptir." + super().__repr__()
