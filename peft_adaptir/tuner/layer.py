"""The peft tuner layer: wraps the first module of an FFN span and adds the AdaptIR branch's result to the span."""

from __future__ import annotations

from typing import Any

import torch
from peft.tuners.tuners_utils import BaseTunerLayer
from torch import nn

from .branch import AdaptIRBranch, resolve_width
from .call_state import routed_adapter_names, routed_adapter_weights, slot_pop, slot_set
from .config import AdaptIRConfig
from .constants import BASE_ADAPTER_NAME, BRANCH_CONTAINER, SCALE_CONTAINER
from .grid import BlockGridCapture, InputSizeRecorder, resolve_grid
from .layout import TOKEN_LAYOUTS, batch_size_of, from_feature_map, resolve_layout, to_feature_map


def infer_in_channels(module: nn.Module) -> int:
    """Channels C entering an FFN: from the module itself, its first Linear/Conv child, or else its first Linear/Conv
    anywhere inside (direct children first: Swin2SR's attention registers a position-bias MLP, 2 -> 512, before its
    query projection)."""
    children = [module, *module.children()]
    for candidate in [*children, *(m for m in module.modules() if m not in children)]:
        if isinstance(candidate, nn.Linear):
            return candidate.in_features
        if isinstance(candidate, nn.modules.conv._ConvNd):
            return candidate.in_channels
    raise ValueError(
        f"Cannot tell how many channels enter {type(module).__name__}: it holds no Linear or Conv layer. Target the "
        "module where the FFN starts (its first Linear/Conv, or a module containing it)."
    )


def infer_out_channels(module: nn.Module) -> int | None:
    """Channels leaving a module: from the module itself or its last Linear/Conv sub-module; None if it holds none."""
    out = None
    for candidate in module.modules():
        if isinstance(candidate, nn.Linear):
            out = candidate.out_features
        elif isinstance(candidate, nn.modules.conv._ConvNd):
            out = candidate.out_channels
    return out


def _per_window(
    adapter_names: list[str] | None, adapter_weights: dict[str, torch.Tensor] | None, repeat: int
) -> tuple[list[str] | None, dict[str, torch.Tensor] | None]:
    """Per-sample routing repeated for each of a sample's ``repeat`` windows (rows ``b * repeat ... + repeat - 1``)."""
    if adapter_names is not None:
        adapter_names = [name for name in adapter_names for _ in range(repeat)]
    if adapter_weights is not None:
        adapter_weights = {name: column.repeat_interleave(repeat) for name, column in adapter_weights.items()}
    return adapter_names, adapter_weights


class AdaptIRLayer(BaseTunerLayer):
    """Mixin holding the AdaptIR branches of one FFN span, one per adapter name."""

    adapter_layer_names: tuple[str, ...] = (BRANCH_CONTAINER,)
    other_param_names: tuple[str, ...] = (SCALE_CONTAINER,)

    def __init__(self, base_layer: nn.Module, where: str, layout: str | None, out_channels: int | None = None) -> None:
        self.base_layer = base_layer
        self.adaptir_branch = nn.ModuleDict()
        self.adaptir_scale: dict[str, float] = {}
        self.in_channels = infer_in_channels(base_layer)  # C_in: what the branch reads
        self.out_channels = self.in_channels if out_channels is None else out_channels  # C_out: what it writes
        # peft's names for the same counts
        self.in_features, self.out_features = self.in_channels, self.out_channels
        self.where = where  # the target's module path, for error messages
        self.layout = layout
        self.grid_size: tuple[int, int] | None = None
        self.windowed = False  # rows are attention windows, each sample's together (window_targets)
        self.grid_capture: BlockGridCapture | None = None
        self.input_recorder: InputSizeRecorder | None = None
        self.span_end_name: str | None = None
        self.hook_handles: list[torch.utils.hooks.RemovableHandle] = []
        # {adapter name: weight} set by AdaptIRModel.set_adapter_weights; None: the active adapters count once each
        self.blend_weights: dict[str, float] | None = None
        self._disable_adapters = False
        self.merged_adapters = []

    def update_layer(self, adapter_name: str, config: AdaptIRConfig) -> None:
        """Add a freshly initialised branch for ``adapter_name`` (on the base layer's device and dtype)."""
        branch = self.new_branch(config)
        self.adaptir_branch[adapter_name] = branch
        self.adaptir_scale[adapter_name] = config.scale
        # peft's helper: the base layer's device and float dtype; skipped for weights still on the meta device
        self._move_adapter_to_device_of_base_layer(adapter_name)
        blend = self.blend_weights
        self.set_adapter(self.active_adapters)
        self.blend_weights = blend  # adding an adapter leaves a running blend as it was

    def new_branch(self, config: AdaptIRConfig) -> AdaptIRBranch:
        """A branch of ``config``'s shape for this span, initialised as ``config`` says, on the current device."""
        if config.width is not None and config.width > self.in_channels:
            raise ValueError(
                f"width={config.width} is above the {self.in_channels} channels the adapter reads at {self.where}: "
                "a bottleneck adapter narrows the features. Choose width <= "
                f"{self.in_channels} (None: {self.in_channels} // reduction)."
            )
        width = resolve_width(self.in_channels, config.width, config.reduction, config.min_width)
        return AdaptIRBranch(
            self.in_channels,
            width,
            rank=config.rank,
            kernel_size=config.kernel_size,
            fusion=config.fusion,
            branches=config.branches,
            init_weights=config.init_weights,
            out_channels=self.out_channels,
        )

    def set_adapter(self, adapter_names: str | list[str], inference_mode: bool = False) -> None:
        """peft's ``set_adapter``; also ends a blend from ``set_adapter_weights`` (each active adapter counts once).

        Same semantics as peft's (active adapters trainable unless ``inference_mode``, all others frozen), but a
        parameter's flag is only written when it changes: switching between frozen adapters touches no parameter.
        """
        names = [adapter_names] if isinstance(adapter_names, str) else list(adapter_names)
        for key, branch in self.adaptir_branch.items():
            flag = key in names and not inference_mode
            for parameters in self._parameter_dicts_of(key, branch):
                for param in parameters.values():
                    if param is not None and param.requires_grad != flag and param.is_leaf:
                        param.requires_grad_(flag)
        self._freeze_non_trainable_peft_weights(names)
        # plain attributes: skip nn.Module.__setattr__'s checks for parameters and modules (24 spans: ~0.1 ms)
        object.__setattr__(self, "_active_adapter", names)
        object.__setattr__(self, "blend_weights", None)

    def _parameter_dicts_of(self, adapter_name: str, branch: nn.Module) -> tuple[dict, ...]:
        """The ``_parameters`` dicts of ``branch``'s sub-modules that hold any, listed once per branch object
        (``Module.parameters()`` walks the modules anew at every call).

        The dicts are read at every call, so a parameter replaced in place is still seen; a sub-module replaced inside
        a branch by hand needs ``layer.__dict__.pop("_branch_parameters")``.
        """
        cache = self.__dict__.setdefault("_branch_parameters", {})
        hit = cache.get(adapter_name)
        if hit is None or hit[0] is not branch:
            dicts = tuple(module._parameters for module in branch.modules() if module._parameters)
            hit = cache[adapter_name] = (branch, dicts)
        return hit[1]

    def delete_adapter(self, adapter_name: str) -> None:
        """peft's ``delete_adapter``; the adapter also leaves a running blend."""
        blend = self.blend_weights
        super().delete_adapter(adapter_name)
        self.__dict__.get("_branch_parameters", {}).pop(adapter_name, None)  # let the deleted branch be freed
        if blend is not None:
            blend.pop(adapter_name, None)
            self.blend_weights = blend or None

    def _get_base_layer_device_and_dtype(self, base_layer: nn.Module) -> tuple:
        """peft's helper reads ``base_layer.weight``; a composite target (an FFN module) has none: its first tensor."""
        device, dtype = super()._get_base_layer_device_and_dtype(base_layer)
        if device is None:
            reference = next(base_layer.parameters(), None)
            if reference is not None:
                device, dtype = reference.device, reference.dtype
        return device, dtype

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

    def adapter_delta(
        self,
        x: torch.Tensor,
        adapter_names: list[str] | None,
        adapter_weights: dict[str, torch.Tensor] | None = None,
    ) -> torch.Tensor | None:
        """The contribution of the adapters to this span, in ``x``'s layout.

        Without routing: the active adapters, each times its blend weight (1 unless ``set_adapter_weights`` set one).
        ``adapter_names``: one adapter per sample. ``adapter_weights``: {name: (B,) weights}, per sample the weighted
        sum of the adapters' contributions (every named adapter runs on the whole batch).
        """
        if self.disable_adapters:
            return None
        active = [name for name in self.active_adapters if name in self.adaptir_branch]
        if adapter_names is None and adapter_weights is None and not active:
            return None
        layout = resolve_layout(self.layout, x, self.in_channels, self.where)
        routing = adapter_names
        if routing is None and adapter_weights is not None:
            routing = next(iter(adapter_weights.values()))
        if routing is not None:
            rows = batch_size_of(x, layout)
            repeat = rows // len(routing) if self.windowed and len(routing) and rows % len(routing) == 0 else 1
            if len(routing) * repeat != rows:
                what = "adapter_names" if adapter_names is not None else "adapter_weights"
                raise ValueError(
                    f"{what} has {len(routing)} entries but the batch holds {rows} samples; give exactly one per "
                    "sample."
                )
            if repeat > 1:  # one entry per window: a sample's windows are consecutive rows
                adapter_names, adapter_weights = _per_window(adapter_names, adapter_weights, repeat)
        grid = None
        if layout in TOKEN_LAYOUTS:
            num_tokens = x.shape[0] if layout == "NBC" else x.shape[1]
            if self.windowed and num_tokens != self.grid_size[0] * self.grid_size[1]:
                raise ValueError(
                    f"{self.where} is a window target, so each row should be one {self.grid_size[0]} x "
                    f"{self.grid_size[1]} attention window ({self.grid_size[0] * self.grid_size[1]} tokens), but "
                    f"its input {tuple(x.shape)} has {num_tokens}. Set window_size in AdaptIRConfig to the model's "
                    "attention window, or remove this module from window_targets."
                )
            grid = resolve_grid(num_tokens, self.where, self.grid_size, self.grid_capture, self.input_recorder)
        features = to_feature_map(x, layout, grid)  # (B, C, H, W)
        if adapter_weights is not None:
            delta = self._per_sample_blend(features, adapter_weights)
        elif adapter_names is None:
            delta = None
            blend = self.blend_weights
            for name in active:
                out = self._run_branch(name, features)
                if blend is not None:
                    out = out * blend.get(name, 1.0)
                delta = out if delta is None else delta + out
        elif len(set(adapter_names)) == 1:  # one adapter for the whole batch (restore(adapter=...)): no scatter
            name = adapter_names[0]
            if name == BASE_ADAPTER_NAME or name not in self.adaptir_branch:
                return None
            delta = self._run_branch(name, features)
        else:
            batch, _, height, width = features.shape
            delta = features.new_zeros(batch, self.out_channels, height, width)
            for name in dict.fromkeys(adapter_names):
                if name == BASE_ADAPTER_NAME or name not in self.adaptir_branch:
                    continue  # the base path, or an adapter that does not cover this layer
                rows = [i for i, n in enumerate(adapter_names) if n == name]
                delta[rows] = self._run_branch(name, features[rows]).to(delta.dtype)
        return None if delta is None else from_feature_map(delta, layout).to(x.dtype)

    def _per_sample_blend(self, features: torch.Tensor, adapter_weights: dict[str, torch.Tensor]) -> torch.Tensor:
        """(B, C, H, W) -> sum over adapters of weight[b] * scale * branch(features)[b], (B, C, H, W)."""
        delta = None
        for name, column in adapter_weights.items():
            if name not in self.adaptir_branch:
                continue  # an adapter that does not cover this layer adds nothing here
            if not column.requires_grad and not bool(column.any()):
                continue  # weight 0 for every sample
            out = self._run_branch(name, features)
            out = out * column.to(device=out.device, dtype=out.dtype).view(-1, 1, 1, 1)
            delta = out if delta is None else delta + out
        if delta is None:
            batch, _, height, width = features.shape
            return features.new_zeros(batch, self.out_channels, height, width)
        return delta

    def _run_branch(self, adapter_name: str, features: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> scale * branch(features), computed in the branch's dtype."""
        branch = self.adaptir_branch[adapter_name]
        out = branch(self._cast_input_dtype(features, branch.down.weight.dtype))
        return out * self.adaptir_scale[adapter_name]

    def add_pending_delta(self, module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
        """Forward hook on the span's last module: add the delta computed from the span's input (this thread's)."""
        delta = slot_pop(self)
        if delta is not None and delta.shape != output.shape:
            raise ValueError(
                f"The span from {self.where} to its sibling {self.span_end_name!r} ends in {tuple(output.shape)}, but "
                f"the adapter's output is {tuple(delta.shape)} ({self.in_channels} -> {self.out_channels} channels). "
                "Fix span_end so the span keeps the positions."
            )
        return output if delta is None else output + delta


class AdaptIRModule(nn.Module, AdaptIRLayer):
    """A module wrapped by AdaptIR; ``forward`` and ``__repr__`` live here so ``nn.Module`` does not shadow them."""

    def __init__(
        self,
        base_layer: nn.Module,
        adapter_name: str,
        config: AdaptIRConfig,
        where: str,
        out_channels: int | None = None,
    ) -> None:
        super().__init__()
        AdaptIRLayer.__init__(self, base_layer, where=where, layout=config.layout, out_channels=out_channels)
        self._active_adapter = adapter_name
        self.update_layer(adapter_name, config)

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        adapter_names = kwargs.pop("adapter_names", None)
        adapter_weights = kwargs.pop("adapter_weights", None)
        if adapter_names is None and adapter_weights is None:
            # a mixed batch or a per-sample blend routed by this thread's PeftModel call (call_state)
            adapter_names, adapter_weights = routed_adapter_names(), routed_adapter_weights()
        result = self.base_layer(x, *args, **kwargs)
        delta = self.adapter_delta(x, adapter_names, adapter_weights)
        if delta is not None and self.span_end_name is None and delta.shape != result.shape:
            raise ValueError(
                f"{self.where} maps {tuple(x.shape)} to {tuple(result.shape)}, but the adapter's output is "
                f"{tuple(delta.shape)}: this target changes more than the channel count ({self.in_channels} -> "
                f"{self.out_channels}). Target a module that keeps the positions (a Linear, or a 1x1 / padded "
                "stride-1 Conv2d), or set span_end."
            )
        if self.span_end_name is not None:
            slot_set(self, delta)  # added by the hook on the span's last module; per thread (call_state)
            return result
        return result if delta is None else result + delta

    def __repr__(self) -> str:
        return "adaptir." + super().__repr__()
