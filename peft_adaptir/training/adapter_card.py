"""The ``README.md`` written next to a trained adapter: the AdaptIR model card with the run's task, base, settings
(as the equivalent ``peft-adaptir train`` command) and final validation metrics. No local absolute path goes in:
the embedded base is named ``peft-adaptir:default-base`` and local folders by their last name only."""

from __future__ import annotations

import os
import shlex
from dataclasses import fields
from pathlib import Path
from typing import Any

from torch import nn

from ..backbones.base_name import DEFAULT_BASE_NAME, public_base_name
from ..model_card import build_model_card
from .config import TrainingConfig
from .run_folder import CLI_ADAPTER_OPTIONS, option_name

__all__ = ["training_command", "write_adapter_card"]

_NOT_IN_COMMAND = frozenset({"output_dir", "resume", "progress", "num_workers", "cpu", "adapter"})


def _shareable(value: Any) -> str:
    """A setting as it can be shown to others: local absolute paths reduced to ``path/to/<last name>``."""
    text = str(value)
    if os.path.isabs(text) or text.startswith(("./", "../", "~")):
        return "path/to/" + os.path.basename(os.path.normpath(text))
    return text


def training_command(config: TrainingConfig, base_model: str | None) -> str:
    """The ``peft-adaptir train`` command with ``config``'s non-default settings (output folder left as OUTPUT)."""
    parts = ["peft-adaptir", "train"]
    base = public_base_name(base_model)
    if base and base != DEFAULT_BASE_NAME:
        parts += ["--base", _shareable(base)]
    defaults = TrainingConfig()
    for item in fields(TrainingConfig):
        value = getattr(config, item.name)
        if item.name in _NOT_IN_COMMAND or value == getattr(defaults, item.name):
            continue
        parts += [option_name(item.name), "none" if value is None and item.name == "grad_clip" else _shareable(value)]
    extra = []
    for key, value in config.adapter.items():
        if key in CLI_ADAPTER_OPTIONS:
            parts += [option_name(key), str(value)]
        else:
            extra.append(f"{key}={value!r}")
    parts += ["--output", "OUTPUT"]
    command = " ".join(shlex.quote(part) if part != "OUTPUT" else part for part in parts)
    return command + (f"\n# and AdaptIRConfig({', '.join(extra)})" if extra else "")


def write_adapter_card(model: nn.Module, adapter_dir: Path, config: TrainingConfig, final: dict | None) -> Path:
    """Write the card of the adapter ``model`` was trained with to ``adapter_dir/README.md`` (replacing peft's)."""
    name = model.active_adapter
    base = model.get_base_model()
    base_model = model.peft_config[name].base_model_name_or_path
    metrics = {}
    if final:
        metrics = {"Validation PSNR (dB, RGB)": final["psnr"], "Validation SSIM": final["ssim"]}
        metrics["Training steps"] = str(config.steps)
    degradation = None
    if config.degraded_data is not None:
        degradation = f"real degraded photos paired with clean ones (folder {_shareable(config.degraded_data)})"
    card = build_model_card(
        None,
        task=config.task,
        base_model=base_model,
        base_model_class=f"{type(base).__module__}.{type(base).__name__}",
        degradation=degradation,
        training_command=training_command(config, base_model),
        metrics=metrics,
        subfolder=None if name == "default" else name,
    )
    path = Path(adapter_dir) / "README.md"
    card.save(path)
    return path
