"""Training checkpoints: ``<output>/checkpoints/step-N`` written with ``accelerator.save_state``.

A checkpoint holds the adapter weights alone (``adapter_model.safetensors``, peft's state dict of the adapter: the
frozen base is never copied), the optimizer, the learning-rate scheduler, the gradient scaler (fp16), the RNG states
of every process and Accelerate's micro-step counter, plus ``trainer_state.json`` (step, loss and validation
history, the settings a resume must share). ``trainer_state.json`` is written last, so a folder without it (a run
killed while saving) is ignored on resume.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

from accelerate import Accelerator
from peft import get_peft_model_state_dict, set_peft_model_state_dict
from safetensors.torch import load_file, save_file

from ..tuner.constants import ADAPTER_WEIGHTS_FILE

__all__ = [
    "TRAINER_STATE",
    "checkpoint_root",
    "register_adapter_only_state",
    "latest_checkpoint",
    "read_trainer_state",
    "save_checkpoint",
    "prune_checkpoints",
]

TRAINER_STATE = "trainer_state.json"
_STEP_DIR = re.compile(r"^step-(\d+)$")


def checkpoint_root(output_dir: str | Path) -> Path:
    """``<output_dir>/checkpoints``."""
    return Path(output_dir) / "checkpoints"


def register_adapter_only_state(accelerator: Accelerator) -> None:
    """Make ``save_state``/``load_state`` store and restore the adapter's weights instead of the whole model."""

    def save_hook(models: list, weights: list, output_dir: str) -> None:
        for index, model in enumerate(models):
            if accelerator.is_main_process:
                peft_model = accelerator.unwrap_model(model)
                state = get_peft_model_state_dict(peft_model, adapter_name=peft_model.active_adapter)
                name = ADAPTER_WEIGHTS_FILE if index == 0 else f"adapter_model_{index}.safetensors"
                save_file({k: v.detach().cpu().contiguous() for k, v in state.items()}, str(Path(output_dir) / name))
        weights.clear()  # accelerate would otherwise save the full model (frozen base included)

    def load_hook(models: list, input_dir: str) -> None:
        for index, model in enumerate(models):
            peft_model = accelerator.unwrap_model(model)
            name = ADAPTER_WEIGHTS_FILE if index == 0 else f"adapter_model_{index}.safetensors"
            state = load_file(str(Path(input_dir) / name))
            result = set_peft_model_state_dict(peft_model, state, adapter_name=peft_model.active_adapter)
            missing = [k for k in result.missing_keys if peft_model.active_adapter in k]
            if result.unexpected_keys or missing:
                raise ValueError(
                    f"The checkpoint {input_dir} does not match this adapter (unexpected keys "
                    f"{result.unexpected_keys[:3]}, missing {missing[:3]}); was it written with other adapter "
                    "settings? Use another output directory or the same settings."
                )
        models.clear()  # already restored; keep accelerate from looking for full-model weights

    accelerator.register_save_state_pre_hook(save_hook)
    accelerator.register_load_state_pre_hook(load_hook)


def _complete_checkpoints(output_dir: str | Path) -> list[tuple[int, Path]]:
    root = checkpoint_root(output_dir)
    if not root.is_dir():
        return []
    found = []
    for folder in root.iterdir():
        match = _STEP_DIR.match(folder.name)
        if match and (folder / TRAINER_STATE).is_file():
            found.append((int(match.group(1)), folder))
    return sorted(found)


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    """The complete checkpoint with the highest step under ``<output_dir>/checkpoints``, or None."""
    found = _complete_checkpoints(output_dir)
    return found[-1][1] if found else None


def read_trainer_state(checkpoint: str | Path) -> dict[str, Any]:
    """The ``trainer_state.json`` of a checkpoint folder."""
    path = Path(checkpoint) / TRAINER_STATE
    if not path.is_file():
        raise FileNotFoundError(f"{checkpoint} is not a complete checkpoint (no {TRAINER_STATE}).")
    return json.loads(path.read_text())


def save_checkpoint(accelerator: Accelerator, output_dir: str | Path, step: int, trainer_state: dict) -> Path:
    """Save the training state after optimizer step ``step`` to ``<output_dir>/checkpoints/step-<step>``.

    Call on every process (each saves its RNG state); only the main process writes the shared files.
    """
    folder = checkpoint_root(output_dir) / f"step-{step}"
    if accelerator.is_main_process and folder.exists():
        shutil.rmtree(folder)  # an incomplete leftover of a killed run
    accelerator.wait_for_everyone()
    accelerator.save_state(str(folder))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        tmp = folder / (TRAINER_STATE + ".tmp")
        tmp.write_text(json.dumps(trainer_state, indent=1))
        tmp.replace(folder / TRAINER_STATE)
    accelerator.wait_for_everyone()
    return folder


def prune_checkpoints(output_dir: str | Path, keep: int) -> None:
    """Delete all but the ``keep`` newest complete checkpoints (and incomplete ones older than them)."""
    if keep < 1:
        return
    complete = _complete_checkpoints(output_dir)
    if len(complete) <= keep:
        return
    oldest_kept = complete[-keep][0]
    for folder in checkpoint_root(output_dir).iterdir():
        match = _STEP_DIR.match(folder.name)
        if match and int(match.group(1)) < oldest_kept:
            shutil.rmtree(folder)
