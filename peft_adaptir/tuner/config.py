"""AdaptIRConfig: the peft configuration of an AdaptIR adapter."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from peft.config import PeftConfig
from peft.utils.peft_types import PeftType

from .branch import BRANCH_NAMES, validate_branch_options
from .constants import PEFT_TYPE_NAME
from .layout import LAYOUTS, TOKEN_LAYOUTS
from .presets import Preset, get_preset


@dataclass
class AdaptIRConfig(PeftConfig):
    """Configuration of an AdaptIR adapter (arXiv 2312.08881): a multi-branch adapter parallel to each FFN.

    Targeting follows peft's conventions (``target_modules``, ``exclude_modules``, ``layers_to_transform``,
    ``layers_pattern``, ``modules_to_save``). A target is the first module of an FFN span: the adapter reads that
    module's input and adds its result to the output of the sibling ``span_end`` (or of the target itself when
    ``span_end`` is None). ``layout`` says how the FFN input is laid out; for token layouts the grid (H, W) comes from
    ``grid_argument`` (an argument of the enclosing block's forward, captured exactly), ``grid_size`` (stated), or
    ``infer_grid_from_input`` (from the model's input image size, when unambiguous). For known architectures
    (transformers Swin2SR, SwinIR/HAT, IPT, NAFNet) all of this comes from a preset; see ``peft_adaptir.presets``.
    """

    target_modules: list[str] | str | None = field(
        default=None,
        metadata={
            "help": "Names (suffix match) or a regex of the modules where FFN spans start. None: taken from the "
            "preset of the model's architecture."
        },
    )
    exclude_modules: list[str] | str | None = field(
        default=None, metadata={"help": "Names (suffix match) or a regex of modules not to adapt."}
    )
    layers_to_transform: list[int] | int | None = field(
        default=None, metadata={"help": "Only adapt the layers with these indices."}
    )
    layers_pattern: list[str] | str | None = field(
        default=None,
        metadata={"help": "Name of the module list holding the layers, used with `layers_to_transform`."},
    )
    modules_to_save: list[str] | None = field(
        default=None, metadata={"help": "Modules apart from the adapters to train fully and save with the adapter."}
    )
    preset: str | None = field(
        default=None,
        metadata={"help": "Name of a preset (see peft_adaptir.presets.PRESETS) filling the fields left at None."},
    )
    span_end: str | None = field(
        default=None,
        metadata={
            "help": "Name of the target's sibling module whose output receives the adapter's result (e.g. 'output' "
            "for Swin2SR's intermediate -> output). None: the target is the whole FFN."
        },
    )
    layout: str | None = field(
        default=None,
        metadata={
            "help": f"Layout of the FFN's input: one of {list(LAYOUTS)}. None: 4-D inputs are read by the position "
            "of the channel dimension, 3-D inputs as batch-first tokens (B, N, C)."
        },
    )
    grid_argument: str | None = field(
        default=None,
        metadata={
            "help": "Name of the argument holding (H, W) in the forward of the nearest enclosing module that takes "
            "it, e.g. 'input_dimensions' (Swin2SR) or 'x_size' (SwinIR)."
        },
    )
    grid_size: list[int] | None = field(
        default=None, metadata={"help": "A fixed token grid [H, W] for token layouts."}
    )
    infer_grid_from_input: bool = field(
        default=False,
        metadata={
            "help": "Infer the grid from the model's input image size (H, W) and the token count N: the integer "
            "stride d with (H/d)(W/d) = N. Errors when no such stride exists."
        },
    )
    window_targets: list[str] | str | None = field(
        default=None,
        metadata={
            "help": "Targets (names by suffix, or a regex, matched like target_modules) whose input holds one "
            "attention window per row, (B * windows, window_size ** 2, C) with each sample's windows together (Swin's "
            "window partition): the branch sees each window as a window_size x window_size map. E.g. 'self' for "
            "Swin2SR's attention (preset 'swin2sr-attention')."
        },
    )
    window_size: int | None = field(
        default=None,
        metadata={"help": "Side of the attention windows of window_targets. None: the model config's window_size."},
    )
    width: int | None = field(
        default=None, metadata={"help": "Adapter width h. None: in_channels // reduction, at least min_width."}
    )
    reduction: int = field(default=24, metadata={"help": "h = C // reduction when width is None (24 in the paper)."})
    min_width: int = field(default=4, metadata={"help": "Smallest width chosen by `reduction`."})
    rank: int | None = field(
        default=None, metadata={"help": "Rank of the local branch's kernel bank. None: h // 2 (at least 1)."}
    )
    kernel_size: int = field(default=3, metadata={"help": "Kernel size of the local depthwise convolution."})
    fusion: str = field(
        default="sum",
        metadata={
            "help": "'sum' (the paper's first version; the default: ahead on low light in docs/benchmarks.md) or "
            "'gated' (the authors' released code)."
        },
    )
    branches: list[str] | str = field(
        default_factory=lambda: list(BRANCH_NAMES),
        metadata={
            "help": "Branches used with fusion='sum' (any subset of local, frequency, channel; empty: plain "
            "bottleneck adapter). fusion='gated' needs all three."
        },
    )
    scale: float = field(default=1.0, metadata={"help": "Multiplier of the adapter's output."})
    init_weights: bool = field(
        default=True,
        metadata={"help": "Zero-init the up-projection (identity at start). False only for tests and debugging."},
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        self.peft_type = PeftType(PEFT_TYPE_NAME)  # the member peft_adaptir.peft_patches adds on import
        if isinstance(self.target_modules, list):
            self.target_modules = set(self.target_modules)
        if isinstance(self.exclude_modules, list):
            self.exclude_modules = set(self.exclude_modules)
        if isinstance(self.window_targets, (list, tuple)):
            self.window_targets = set(self.window_targets)
        if self.grid_size is not None:
            self.grid_size = [int(v) for v in self.grid_size]
        # one branch given as a plain string ("local") is that branch, not its letters
        self.branches = [self.branches] if isinstance(self.branches, str) else list(self.branches)
        if self.preset is not None:
            self.apply_preset(get_preset(self.preset))
        self.validate()

    def apply_preset(self, preset: Preset) -> None:
        """Fill the placement fields left at None from ``preset`` (explicit values win)."""
        self.preset = preset.name
        if self.target_modules is None:
            self.target_modules = set(preset.target_modules)
            self.span_end = preset.span_end if self.span_end is None else self.span_end
            if self.window_targets is None and preset.window_targets:
                self.window_targets = set(preset.window_targets)
        if self.layout is None:
            self.layout = preset.layout
        if self.grid_argument is None and self.grid_size is None and not self.infer_grid_from_input:
            self.grid_argument = preset.grid_argument
            self.grid_size = list(preset.grid_size) if preset.grid_size else None

    def validate(self) -> None:
        """Raise ValueError for impossible combinations, naming the bad value and what is allowed."""
        validate_branch_options(
            self.fusion, tuple(self.branches), width=self.width, rank=self.rank, kernel_size=self.kernel_size
        )
        if self.reduction < 1 or self.min_width < 1:
            raise ValueError(f"reduction={self.reduction} and min_width={self.min_width} must both be >= 1.")
        if not math.isfinite(self.scale):
            raise ValueError(f"scale={self.scale} must be a finite number.")
        if self.layout is not None and self.layout not in LAYOUTS:
            raise ValueError(f"layout={self.layout!r} is not supported; choose one of {list(LAYOUTS)} or None.")
        if self.grid_size is not None and (len(self.grid_size) != 2 or min(self.grid_size) < 1):
            raise ValueError(f"grid_size={self.grid_size} must be two positive integers [H, W].")
        grid_sources = [
            name
            for name, given in (
                ("grid_argument", self.grid_argument is not None),
                ("grid_size", self.grid_size is not None),
                ("infer_grid_from_input", self.infer_grid_from_input),
            )
            if given
        ]
        if len(grid_sources) > 1:
            raise ValueError(f"Give one source for the token grid, not {grid_sources}.")
        if grid_sources and self.layout is not None and self.layout not in TOKEN_LAYOUTS:
            raise ValueError(
                f"{grid_sources[0]} only applies to token layouts {list(TOKEN_LAYOUTS)}; layout={self.layout!r} "
                "carries its grid in the tensor. Remove it."
            )
        if self.target_modules is not None and (self.layout is None or self.layout in TOKEN_LAYOUTS):
            if not grid_sources and self.layout is not None:
                raise ValueError(
                    f"layout={self.layout!r} holds flat tokens, so the (H, W) grid cannot be known from the tensor. "
                    "Set grid_argument (the enclosing block's forward argument holding (H, W), e.g. 'x_size'), "
                    "grid_size=[H, W], or infer_grid_from_input=True."
                )
        if self.window_size is not None and self.window_size < 1:
            raise ValueError(f"window_size={self.window_size} must be a positive integer (or None: the model's).")
        if self.window_targets and self.layout is not None and self.layout not in TOKEN_LAYOUTS:
            raise ValueError(
                f"window_targets only applies to token layouts {list(TOKEN_LAYOUTS)} (one window of tokens per row); "
                f"layout={self.layout!r} is a feature map. Remove window_targets or set layout='BNC'."
            )
        if self.layers_pattern and self.layers_to_transform is None:
            raise ValueError("layers_pattern only applies together with layers_to_transform; set both or neither.")
        if isinstance(self.target_modules, str) and self.layers_to_transform is not None:
            raise ValueError(
                "layers_to_transform cannot be combined with a regex target_modules; put the layer indices into the "
                "regex instead."
            )
        if self.span_end is not None and (not self.span_end or "." in self.span_end):
            raise ValueError(f"span_end={self.span_end!r} must be the plain name of a sibling module (no dots).")
