"""AdaptIRModel: the peft tuner that finds FFN spans, injects AdaptIR layers and wires their hooks."""

from __future__ import annotations

import threading
from contextlib import contextmanager

import torch
from peft.tuners.tuners_utils import BaseTuner
from peft.utils import ModulesToSaveWrapper
from torch import nn

from .blend import check_blend_weights, per_sample_weights
from .branch import FUSIONS, AdaptIRBranch
from .call_state import adapter_blending, adapter_routing, routed_adapter_names
from .config import AdaptIRConfig
from .constants import BASE_ADAPTER_NAME, BRANCH_CONTAINER, PREFIX
from .grid import BlockGridCapture, InputSizeRecorder, find_enclosing_block
from .layer import AdaptIRLayer, AdaptIRModule
from .load_check import check_adapter_fits, drop_legacy_keys
from .presets import PRESETS, find_preset
from .targets import matches_module_names, span_channels


def _branch_key_segments() -> frozenset[str]:
    """Every name inside the state-dict keys of a branch (both fusions, all branches), plus the containers.

    An adapter may not be called like one: peft filters saved keys by ".<adapter name>." segments, so such a name
    would drop or mix up another adapter's weights.
    """
    segments = {BRANCH_CONTAINER, "base_layer"}
    for fusion in FUSIONS:
        for key in AdaptIRBranch(8, 4, fusion=fusion).state_dict():
            segments.update(key.split("."))
    return frozenset(segment for segment in segments if not segment.isdigit())


_BRANCH_KEY_SEGMENTS = _branch_key_segments()


_ROUTING_HOOK_LOCK = threading.Lock()


def _route_modules_to_save(module: ModulesToSaveWrapper, args: tuple, kwargs: dict) -> tuple | None:
    """A lasting pre-hook: pass this thread's routed names on; samples whose adapter has no copy use the base."""
    names = routed_adapter_names()
    if names is None or "adapter_names" in kwargs:
        return None
    routed = [n if n in module.modules_to_save else BASE_ADAPTER_NAME for n in names]
    return args, {**kwargs, "adapter_names": routed}


def _image_batch(args: tuple, kwargs: dict) -> torch.Tensor | None:
    """The model's input image batch (B, C, H, W): ``pixel_values`` or the first positional argument, if 4-D."""
    image = kwargs.get("pixel_values", args[0] if args else None)
    return image if isinstance(image, torch.Tensor) and image.dim() == 4 else None


def _check_one_per_sample(what: str, entries: int, images: torch.Tensor | None) -> None:
    """Per-sample routing must name each image of the input once. Checked here, on the model's input, because a
    layer may see more rows than images (a window target sees every attention window of every image)."""
    if images is not None and entries != images.shape[0]:
        raise ValueError(
            f"{what} has {entries} entries but the batch holds {images.shape[0]} samples; give exactly one per sample."
        )


def adapter_names_of(model: nn.Module) -> list[str]:
    """The names of the adapters loaded in a peft model, in loading order; [] for a model without adapters."""
    config = getattr(model, "peft_config", None)
    return list(config) if isinstance(config, dict) else []


class AdaptIRModel(BaseTuner):
    """Injects AdaptIR branches next to the FFNs of a model. Created by ``peft.get_peft_model``; see AdaptIRConfig."""

    prefix: str = PREFIX
    tuner_layer_cls = AdaptIRLayer
    target_module_mapping = {
        model_type: list(preset.target_modules) for preset in PRESETS.values() for model_type in preset.model_types
    }

    def _prepare_adapter_config(self, peft_config: AdaptIRConfig, model_config: dict) -> AdaptIRConfig:
        """Fill targets, span, layout and grid source from the architecture's preset when none were given."""
        # a plain module's `config` attribute may be anything (SCUNet keeps a list there): only a dict has a type
        model_type = model_config.get("model_type") if isinstance(model_config, dict) else None
        preset = find_preset(model_type, type(self.model).__name__)
        if peft_config.target_modules is None and preset is None:
            raise ValueError(
                f"No AdaptIR preset knows {type(self.model).__name__} (model_type="
                f"{model_type!r}). Pass preset=... (one of {sorted(PRESETS)}) or "
                "target_modules=[...] with layout and a grid source in AdaptIRConfig."
            )
        if preset is not None and peft_config.preset is None:
            # explicit targets stay; the architecture's layout and grid source fill what was left open
            peft_config.apply_preset(preset)
            peft_config.validate()
        return peft_config

    def _create_and_replace(
        self,
        config: AdaptIRConfig,
        adapter_name: str,
        target: nn.Module,
        target_name: str,
        parent: nn.Module,
        current_key: str,
        **kwargs,
    ) -> None:
        self._check_adapter_name(adapter_name)
        self._forget_layers()
        if isinstance(target, AdaptIRLayer):
            target.update_layer(adapter_name, config)
            return
        span_end = self._find_span_end(config, parent, current_key)
        _, out_channels = span_channels(target, span_end, current_key)
        new_module = AdaptIRModule(target, adapter_name, config, where=current_key, out_channels=out_channels)
        if span_end is not None:
            new_module.span_end_name = config.span_end
            new_module.hook_handles.append(span_end.register_forward_hook(new_module.add_pending_delta))
        self._wire_grid_source(new_module, config, current_key)
        if adapter_name not in self.active_adapters:
            new_module.requires_grad_(False)  # an added adapter is not trainable until set_adapter
        self._replace_module(parent, target_name, new_module, target)

    def _find_span_end(self, config: AdaptIRConfig, parent: nn.Module, key: str) -> nn.Module | None:
        if config.span_end is None:
            return None
        span_end = getattr(parent, config.span_end, None)
        if not isinstance(span_end, nn.Module):
            siblings = [name for name, _ in parent.named_children()]
            raise ValueError(
                f"The FFN span starting at {key!r} should end at its sibling {config.span_end!r}, which does not "
                f"exist; siblings are {siblings}. Fix span_end in AdaptIRConfig."
            )
        return span_end

    def _wire_grid_source(self, layer: AdaptIRModule, config: AdaptIRConfig, key: str) -> None:
        if matches_module_names(config.window_targets, key):
            layer.grid_size, layer.windowed = (window := self._window_size(config, key), window), True
        elif config.grid_size is not None:
            layer.grid_size = tuple(config.grid_size)
        elif config.grid_argument is not None:
            _, block = find_enclosing_block(self.model, key, config.grid_argument)
            layer.grid_capture = BlockGridCapture(block, config.grid_argument)
            layer.hook_handles.append(block.register_forward_pre_hook(layer.grid_capture, with_kwargs=True))
        elif config.infer_grid_from_input:
            recorder = InputSizeRecorder()
            layer.input_recorder = recorder
            layer.hook_handles.append(self.model.register_forward_pre_hook(recorder, with_kwargs=True))

    def _window_size(self, config: AdaptIRConfig, key: str) -> int:
        """The side of the attention windows a window target sees: stated, or the model config's ``window_size``."""
        if config.window_size is not None:
            return config.window_size
        model_config = getattr(self.model, "config", None)
        window = model_config.get("window_size") if isinstance(model_config, dict) else None
        window = getattr(model_config, "window_size", None) if window is None else window
        if not isinstance(window, int) or window < 1:
            raise ValueError(
                f"{key!r} is a window target (window_targets), but the model's config states no window_size, so the "
                "window's grid cannot be known. Set window_size=<side of the attention windows> in AdaptIRConfig."
            )
        return window

    def _check_adapter_name(self, adapter_name: str) -> None:
        clashes = _BRANCH_KEY_SEGMENTS | {BASE_ADAPTER_NAME}
        if adapter_name in clashes or "." in adapter_name:
            raise ValueError(
                f"Adapter name {adapter_name!r} is reserved or contains a dot; peft finds an adapter's weights by "
                f"its name in the state-dict keys. Choose another name (not one of {sorted(clashes)})."
            )

    @classmethod
    def _remove_adapter_name_from_key(cls, key: str, adapter_name: str) -> str:
        """'...fc.adaptir_branch.<adapter>.down.weight' <-> '...fc.adaptir_branch.down.weight' (saved files)."""
        marker = f"{BRANCH_CONTAINER}.{adapter_name}."
        if key.startswith(marker) or f".{marker}" in key:
            head, _, tail = key.partition(marker)
            return f"{head}{BRANCH_CONTAINER}.{tail}"
        return super()._remove_adapter_name_from_key(key, adapter_name)

    @classmethod
    def _remap_adapter_state_dict_for_load(cls, model, config, adapter_name, state_dict):
        """peft's key mapping, then a check that the file fits this model (see load_check)."""
        remapped = super()._remap_adapter_state_dict_for_load(model, config, adapter_name, state_dict)
        remapped = drop_legacy_keys(remapped)  # e.g. the channel branch's old position-score bias
        check_adapter_fits(model, adapter_name, remapped, config.base_model_name_or_path)
        return remapped

    def _cast_adapter_dtype(self, adapter_name: str, autocast_adapter_dtype: bool = True) -> None:
        """peft's cast (half-precision adapter parameters -> float32), plus the BatchNorm statistics (buffers).

        peft leaves buffers alone; a float32 BatchNorm with bfloat16 running statistics fails, so with
        ``autocast_adapter_dtype=True`` (peft's default) the whole branch runs in float32 on a half-precision base.
        """
        super()._cast_adapter_dtype(adapter_name, autocast_adapter_dtype=autocast_adapter_dtype)
        if not autocast_adapter_dtype:
            return
        for module in self.model.modules():
            if not isinstance(module, AdaptIRLayer) or adapter_name not in module.adaptir_branch:
                continue
            for owner in module.adaptir_branch[adapter_name].modules():
                for name, buffer in owner.named_buffers(recurse=False):
                    if buffer.dtype in (torch.float16, torch.bfloat16):
                        owner._buffers[name] = buffer.float()

    def _check_merge_allowed(self) -> None:
        raise ValueError(
            "merge_and_unload() is not possible with AdaptIR: the branch is nonlinear (BatchNorm, FFT amplitude and "
            "phase, softmax pooling, gates) and runs beside the FFN, so no change of the base weights reproduces it. "
            "Keep the adapter (it is tiny), or call unload() to get the unchanged base model back."
        )

    def _unload_and_optionally_merge(self, merge: bool = True, **kwargs) -> nn.Module:
        if merge:
            self._check_merge_allowed()
        self._forget_layers()
        for name, module in list(self.model.named_modules()):
            if isinstance(module, AdaptIRLayer):
                module.remove_hooks()
                parent_name, _, child_name = name.rpartition(".")
                setattr(self.model.get_submodule(parent_name), child_name, module.get_base_layer())
        # peft's own pass handles the rest (modules_to_save wrappers, the model's peft_config)
        return super()._unload_and_optionally_merge(merge=False, **kwargs)

    def adaptir_layers(self) -> list[AdaptIRLayer]:
        """Every AdaptIR layer of the model, in module order; found once, then cached (peft walks every module).

        The cache is dropped whenever this tuner injects or removes layers; code that swaps modules by hand calls
        ``_forget_layers()``.
        """
        cached = self.__dict__.get("_layer_cache")
        if cached is None:
            cached = [m for m in self.model.modules() if isinstance(m, AdaptIRLayer)]
            self.__dict__["_layer_cache"] = cached
        return cached

    def _forget_layers(self) -> None:
        self.__dict__["_layer_cache"] = None

    def set_adapter(self, adapter_name: str | list[str], inference_mode: bool = False) -> None:
        """peft's ``set_adapter`` over the cached AdaptIR layers (no walk of the model's modules).

        Models with ``modules_to_save`` take peft's own path, which also switches those copies.
        """
        if any(config.modules_to_save for config in self.peft_config.values()):
            super().set_adapter(adapter_name, inference_mode=inference_mode)
            return
        for layer in self.adaptir_layers():
            layer.set_adapter(adapter_name, inference_mode=inference_mode)
        self.active_adapter = adapter_name

    def set_adapter_weights(self, weights: dict[str, float], inference_mode: bool = True) -> None:
        """Blend adapters exactly: every span adds ``sum_i weights[i] * adapter_i``'s contribution there.

        ``model.set_adapter_weights({"derain": 0.7, "denoise": 0.3})`` makes the named adapters active with these
        weights, until the next ``set_adapter``. Exact, not an average of parameters (the branch is nonlinear). The
        base path always counts once; weights need not sum to 1 (0.5 alone: half the adapter's effect; 1 and 1: both
        stacked, like peft's several active adapters) and may be negative. ``inference_mode`` (default True) keeps the
        blended adapters frozen; False makes them trainable, as ``set_adapter`` does. Per sample, pass
        ``adapter_weights=`` to the forward instead (see ``peft_adaptir.tuner.blend.per_sample_weights``).
        """
        checked = check_blend_weights(weights, set(self.peft_config))
        self._check_no_modules_to_save(checked, "set_adapter_weights")
        self.set_adapter(list(checked), inference_mode=inference_mode)
        for layer in self.adaptir_layers():
            layer.blend_weights = dict(checked)

    def _check_no_modules_to_save(self, names, what: str) -> None:
        owners = sorted(name for name in names if self.peft_config[name].modules_to_save)
        if owners:
            raise ValueError(
                f"{what} cannot blend adapter(s) {owners}: they carry modules_to_save, whole copies of modules that "
                "have no weighted sum. Blend adapters without modules_to_save, or route by adapter_names."
            )

    @contextmanager
    def _enable_peft_forward_hooks(self, *args, **kwargs):
        """Route ``adapter_names=[...]`` (one per sample) or ``adapter_weights=`` (blend per sample) to every layer.

        Both live in this thread's call state (``call_state``), not in hooks added to shared modules, so threads
        running the same model with different routing do not see each other's.
        """
        adapter_weights = kwargs.pop("adapter_weights", None)
        images = _image_batch(args, kwargs)
        if adapter_weights is not None:
            if kwargs.get("adapter_names") is not None:
                raise ValueError("Pass adapter_names (one adapter per sample) or adapter_weights (a blend), not both.")
            weights = per_sample_weights(adapter_weights, set(self.peft_config))
            self._check_no_modules_to_save(weights, "adapter_weights")
            _check_one_per_sample("adapter_weights", len(next(iter(weights.values()))), images)
            with adapter_blending(weights):
                yield
            return
        adapter_names = kwargs.pop("adapter_names", None)
        if adapter_names is not None and not isinstance(adapter_names, str):
            _check_one_per_sample("adapter_names", len(adapter_names), images)
        with self._route_adapter_names(adapter_names):
            yield

    @contextmanager
    def _route_adapter_names(self, adapter_names: list[str] | None):
        """Route ``adapter_names=[...]`` (one per sample, "__base__" for none) to every AdaptIR layer."""
        if adapter_names is None:
            yield
            return
        self._check_mixed_batch(adapter_names)
        for module in self.model.modules():
            if isinstance(module, ModulesToSaveWrapper) and not getattr(module, "_adaptir_routed", False):
                with _ROUTING_HOOK_LOCK:
                    if not getattr(module, "_adaptir_routed", False):
                        module.register_forward_pre_hook(_route_modules_to_save, with_kwargs=True)
                        module._adaptir_routed = True
        with adapter_routing(adapter_names):
            yield

    def _check_mixed_batch(self, adapter_names: list[str]) -> None:
        if self.training:
            raise ValueError("adapter_names=[...] is for inference: call model.eval() first (BatchNorm and dropout).")
        if isinstance(adapter_names, str) or not all(isinstance(n, str) for n in adapter_names):
            raise ValueError("adapter_names must be a list with one adapter name (str) per sample.")
        known = set(self.peft_config)
        unknown = sorted({n for n in adapter_names if n != BASE_ADAPTER_NAME} - known)
        if unknown:
            raise ValueError(
                f"Unknown adapter name(s) {unknown} in adapter_names; loaded adapters are {sorted(known)}, and "
                f"{BASE_ADAPTER_NAME!r} means the base model."
            )
