"""The output folder of a training run: writable before the first step, and never two runs mixed in it.

What :func:`prepare_run_folder` decides, before any training step:

- ``resume=True`` (the default) and a complete checkpoint: continue it, but only if every setting that changes the
  result is the same as the run's (:data:`RESULT_NEUTRAL` lists the few that do not); otherwise refuse, naming the
  changed options.
- ``resume=True``, no checkpoint, but a finished adapter in ``<output>/adapter``: refuse (training would replace it).
- ``resume=False``, or ``resume=True`` with only leftovers of a run that saved no complete checkpoint: move the
  earlier run's files (:data:`RUN_FILES`) to ``<output>/previous-runs/<UTC time>`` and say so, so that the new run
  starts in an empty folder.

It also checks that the folder can be written and has room for the checkpoints and the adapter
(:class:`OutputNotWritableError` otherwise), and :func:`save_with_fallback` keeps the adapter in a named rescue
folder when the final save fails after all the compute.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from peft import PeftModel

from . import checkpoints as ckpt
from .config import TrainingConfig

__all__ = [
    "CLI_ADAPTER_OPTIONS",
    "OutputNotWritableError",
    "RESULT_NEUTRAL",
    "RUN_FILES",
    "PREVIOUS_RUNS",
    "RunStart",
    "adapter_option_name",
    "adapter_settings",
    "base_fingerprint",
    "changed_settings",
    "option_name",
    "prepare_run_folder",
    "rescue_folders",
    "save_with_fallback",
]

RUN_FILES = ("checkpoints", "adapter", "training_log.json")
"""What a run writes into its output folder (anything else there is the user's and left alone)."""
PREVIOUS_RUNS = "previous-runs"
RESULT_NEUTRAL = frozenset(
    {"output_dir", "resume", "progress", "num_workers", "val_every", "checkpoint_every", "keep_checkpoints", "cpu"}
)
"""TrainingConfig fields a resumed run may change: where and how often it reports or saves, how many loader
processes read the (index-determined) data, and the device (results then agree to float rounding). Every other
field changes the trained adapter or its log and must match the run being resumed."""
CLI_ADAPTER_OPTIONS = frozenset({"fusion", "width", "reduction"})
"""AdaptIRConfig keys the ``peft-adaptir train`` command sets (``--fusion``, ``--width``, ``--reduction``)."""
_ADAPTER_IGNORED = frozenset({"base_model_name_or_path", "revision", "inference_mode"})
_FREE_SPACE_SLACK = 8 * 2**20  # plots, logs, trainer_state.json


class OutputNotWritableError(OSError):
    """The output folder cannot be written (or is full); the message names it and the fix.

    ``saved_to`` is the rescue folder the adapter was written to instead, when the final save failed.
    """

    def __init__(self, message: str, saved_to: Path | None = None) -> None:
        super().__init__(message)
        self.saved_to = saved_to


@dataclass
class RunStart:
    """Where a run starts: the checkpoint to resume (None: from scratch) and its ``trainer_state.json``."""

    checkpoint: Path | None
    state: dict[str, Any] = field(default_factory=lambda: {"step": 0, "losses": [], "validation": []})
    moved_to: Path | None = None
    """Where ``resume=False`` moved an earlier run's files (None: there were none)."""


def option_name(name: str) -> str:
    """The command-line option of a TrainingConfig field (``output_dir`` -> ``--output``)."""
    return "--output" if name == "output_dir" else "--" + name.replace("_", "-")


def adapter_option_name(key: str) -> str:
    """How a key of the adapter's config is set: ``--fusion (adapter)`` on the command line, else
    ``adapter['key']`` (``TrainingConfig.adapter``)."""
    return f"{option_name(key)} (adapter)" if key in CLI_ADAPTER_OPTIONS else f"adapter[{key!r}]"


def base_fingerprint(model: torch.nn.Module) -> dict[str, Any]:
    """The base model's name, its number of frozen parameters and their float64 sum: a resumed run must use the
    same base (another base with the same shapes would load the checkpoint and silently continue on it)."""
    frozen = [p for p in model.parameters() if not p.requires_grad]
    total = sum(float(p.detach().double().sum()) for p in frozen)
    base = model.get_base_model() if isinstance(model, PeftModel) else model
    name = getattr(base, "name_or_path", None) or type(base).__name__
    return {"name": str(name), "parameters": sum(p.numel() for p in frozen), "sum": total}


def adapter_settings(model: torch.nn.Module) -> dict[str, Any] | None:
    """The active adapter's peft config as a dict (without where the base came from); None for a plain module."""
    if not isinstance(model, PeftModel):
        return None
    settings = model.peft_config[model.active_adapter].to_dict()
    return {k: _jsonable(v) for k, v in settings.items() if k not in _ADAPTER_IGNORED}


def _jsonable(value: Any) -> Any:
    """Sets (peft keeps target_modules as one) as sorted lists, enums as their values: what json writes back."""
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    if isinstance(value, (list, tuple)):
        return [_jsonable(item) for item in value]
    if isinstance(value, dict):
        return {key: _jsonable(item) for key, item in value.items()}
    return getattr(value, "value", value) if not isinstance(value, (str, int, float, bool, type(None))) else value


def _normalised(name: str, value: Any, settings: dict[str, Any]) -> Any:
    """Equal meaning, equal value: no clipping is None or 0, the default warmup is 5% of the steps, no data is the
    bundled photos."""
    if name == "data":
        return value or "skimage"  # None means the bundled photos
    if name == "grad_clip":
        return value or None
    if name == "val_crop":
        return value or None
    if name == "warmup_steps":
        return round(0.05 * settings["steps"]) if value is None else value
    return _jsonable(value)


def changed_settings(state: dict[str, Any], config: TrainingConfig, run: dict[str, Any], num_processes: int) -> list:
    """``["--loss: 'l1' -> 'l2'", ...]``: the settings of ``config`` (and of the model, in ``run``: its
    ``adapter_config`` and ``base``) that differ from the run whose ``trainer_state.json`` is ``state``."""
    defaults = TrainingConfig().to_dict()
    saved = {**defaults, **state.get("config", {})}
    current = config.to_dict()
    changes = []
    for name in current:
        if name in RESULT_NEUTRAL or name == "adapter":
            continue
        old, new = _normalised(name, saved[name], saved), _normalised(name, current[name], current)
        if old != new:
            changes.append(f"{option_name(name)}: {old!r} -> {new!r}")
    old_adapter, new_adapter = state.get("adapter_config"), run.get("adapter_config")
    if old_adapter is None or new_adapter is None:  # a checkpoint of an older version: the adapter options given
        old_adapter, new_adapter = saved["adapter"], current["adapter"]
    for key in sorted(old_adapter.keys() | new_adapter.keys()):
        old, new = old_adapter.get(key), new_adapter.get(key)
        if _jsonable(old) != _jsonable(new):
            changes.append(f"{adapter_option_name(key)}: {old!r} -> {new!r}")
    old_base, new_base = state.get("base"), run.get("base")
    if old_base and new_base:
        same_sum = abs(old_base["sum"] - new_base["sum"]) <= 1e-9 * max(1.0, abs(old_base["sum"]))
        if old_base["parameters"] != new_base["parameters"] or not same_sum:
            changes.append(f"--base: {old_base['name']!r} -> {new_base['name']!r} (other weights)")
    if state.get("num_processes", num_processes) != num_processes:
        changes.append(f"number of processes: {state['num_processes']} -> {num_processes}")
    return changes


def _timestamp() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")


def _move_previous_run(output_dir: Path) -> Path | None:
    present = [name for name in RUN_FILES if (output_dir / name).exists()]
    if not present:
        return None
    target = output_dir / PREVIOUS_RUNS / _timestamp()
    suffix = 1
    while target.exists():
        target = output_dir / PREVIOUS_RUNS / f"{_timestamp()}-{suffix}"
        suffix += 1
    target.mkdir(parents=True)
    for name in present:
        shutil.move(str(output_dir / name), str(target / name))
    return target


def _needed_bytes(model: torch.nn.Module, keep: int, checkpoints: bool) -> int:
    """Adapter weights, plus per checkpoint weights and AdamW's two moments (``keep + 1`` exist while saving)."""
    adapter = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    return adapter + (3 * adapter * (keep + 1) if checkpoints else 0) + _FREE_SPACE_SLACK


def _check_writable(output_dir: Path, needed: int, process_index: int) -> None:
    fix = "Choose another --output (output_dir=...) or make this one writable; nothing was trained."
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        for folder in (output_dir, *(output_dir / name for name in RUN_FILES[:2] if (output_dir / name).is_dir())):
            probe = folder / f".write-test-{os.getpid()}-{process_index}"
            probe.write_bytes(b"0")
            probe.unlink()
    except OSError as err:
        raise OutputNotWritableError(f"Cannot write to the output folder {output_dir} ({err}). {fix}") from err
    free = shutil.disk_usage(output_dir).free
    if free < needed:
        raise OutputNotWritableError(
            f"The output folder {output_dir} has {free / 2**20:.1f} MiB free; checkpoints and the adapter need "
            f"about {needed / 2**20:.1f} MiB. Free some space, or use --checkpoint-every 0 / --keep-checkpoints 1. "
            f"{fix}"
        )


def prepare_run_folder(
    config: TrainingConfig,
    model: torch.nn.Module,
    run: dict[str, Any],
    num_processes: int = 1,
    is_main: bool = True,
    process_index: int = 0,
) -> RunStart:
    """Check ``config.output_dir`` and decide where the run starts (module docstring). ``run`` holds what the
    checkpoints record about the model (``adapter_config``, ``base``). Only the main process moves files."""
    output_dir = Path(config.output_dir)
    needed = _needed_bytes(model, config.keep_checkpoints, config.checkpoint_every > 0)
    _check_writable(output_dir, needed, process_index)
    if not config.resume:
        return RunStart(None, moved_to=_move_previous_run(output_dir) if is_main else None)
    checkpoint = ckpt.latest_checkpoint(output_dir)
    if checkpoint is None:
        adapter = output_dir / "adapter"
        if adapter.is_dir() and any(adapter.iterdir()):
            raise ValueError(
                f"{output_dir} already holds a trained adapter ({adapter}) and no checkpoint to resume from, so "
                "training would replace it. Use another --output (output_dir=...), or --no-resume (resume=False) "
                f"to move the earlier run to {output_dir / PREVIOUS_RUNS}/<time>/ and start over."
            )
        # leftovers of a run that never finished a checkpoint (a diverged run's log, a half-written step folder)
        return RunStart(None, moved_to=_move_previous_run(output_dir) if is_main else None)
    state = ckpt.read_trainer_state(checkpoint)
    changes = changed_settings(state, config, run, num_processes)
    if changes:
        raise ValueError(
            f"Cannot resume the run in {output_dir} from {checkpoint.name}: these settings differ from that run's "
            f"({'; '.join(changes)}). Resuming would mix two runs. Use the run's settings to continue it, another "
            f"--output for a new run, or --no-resume (resume=False) to move the earlier run to "
            f"{output_dir / PREVIOUS_RUNS}/<time>/ and start over."
        )
    return RunStart(checkpoint, state)


def rescue_folders(output_dir: Path) -> list[Path]:
    """Where an adapter goes when ``output_dir`` cannot take it: the user cache, then the temporary folder."""
    name = f"{Path(output_dir).resolve().name or 'run'}-{_timestamp()}"
    return [
        Path.home() / ".cache" / "peft-adaptir" / "rescued-adapters" / name,
        Path(tempfile.gettempdir()) / "peft-adaptir-rescued-adapters" / name,
    ]


def save_with_fallback(write: Callable[[Path], Path], target: Path, output_dir: Path) -> Path:
    """``write(target)``; if that fails with an OSError, ``write`` into the first rescue folder that works and raise
    :class:`OutputNotWritableError` saying where the adapter is (its ``saved_to``)."""
    try:
        return write(target)
    except OSError as err:
        failure = err
    tried = []
    for folder in rescue_folders(output_dir):
        try:
            folder.parent.mkdir(parents=True, exist_ok=True)
            saved = write(folder)
        except OSError as err:
            tried.append(f"{folder} ({err})")
            continue
        raise OutputNotWritableError(
            f"Could not save the adapter to {target} ({failure}). It was saved to {saved} instead: copy that folder "
            "where you want it (PeftModel.from_pretrained loads it from anywhere).",
            saved_to=saved,
        ) from failure
    last = ckpt.latest_checkpoint(output_dir)
    kept = f" The last checkpoint is {last}." if last else ""
    raise OutputNotWritableError(
        f"Could not save the adapter to {target} ({failure}), nor to a rescue folder: {'; '.join(tried)}.{kept}"
    ) from failure
