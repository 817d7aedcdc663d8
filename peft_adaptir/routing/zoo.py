"""The zoo: task adapters for the embedded default base, shipped inside the package (``assets/zoo/<task>/``).

Each task folder holds ``adapter_model.safetensors`` + ``adapter_config.json`` (peft's files, tens of KB) and a
``README.md`` model card (command, seed, steps, held-out PSNR). The router trained for the zoo lives in
``assets/zoo/router/``. Everything loads offline from the package folder.

    >>> from peft_adaptir.routing.zoo import load_zoo, shipped_tasks
    >>> shipped_tasks()                       # ['denoise-50', 'derain-heavy', ...]
    >>> model = load_zoo()                    # PeftModel on the default base, one adapter per task, named by task
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from peft import PeftModel
from torch import nn

from ..backbones.loading import load_base_model
from ..tuner.constants import ADAPTER_WEIGHTS_FILE

__all__ = [
    "ZOO_TASKS",
    "ZOO_DIR",
    "ROUTER_NAME",
    "shipped_tasks",
    "shipped_adapter_specs",
    "zoo_adapter_path",
    "zoo_router_path",
    "load_zoo",
]

ZOO_TASKS = ("denoise-50", "derain-heavy", "sr2-noise30", "low-light", "jpeg-q20", "sr4")
"""The tasks the zoo is trained for (``peft_adaptir.data.degradations`` presets), in a fixed order."""
ZOO_DIR = Path(__file__).resolve().parent.parent / "assets" / "zoo"
ROUTER_NAME = "router"
"""Sub-folder of the zoo router (not a task)."""
_ADAPTER_FILES = (ADAPTER_WEIGHTS_FILE, "adapter_config.json")


def shipped_tasks() -> list[str]:
    """Tasks with a complete shipped adapter (weights + config), in :data:`ZOO_TASKS` order, then any others."""
    if not ZOO_DIR.is_dir():
        return []
    found = {p.name for p in ZOO_DIR.iterdir() if p.is_dir() and all((p / f).is_file() for f in _ADAPTER_FILES)}
    found.discard(ROUTER_NAME)
    return [t for t in ZOO_TASKS if t in found] + sorted(found - set(ZOO_TASKS))


def zoo_adapter_path(task: str) -> Path:
    """The folder of the shipped adapter for ``task``; a clear error naming the shipped tasks otherwise."""
    if task not in shipped_tasks():
        raise ValueError(
            f"No shipped adapter for task {task!r}; shipped: {', '.join(shipped_tasks()) or 'none'} "
            f"(`peft-adaptir tasks`). Train one with `peft-adaptir train --task {task} --output runs/{task}` and pass "
            f"--adapter {task}=runs/{task}/adapter."
        )
    return ZOO_DIR / task


def zoo_router_path() -> Path:
    """The folder of the shipped router (``router.safetensors`` + ``router_config.json``)."""
    path = ZOO_DIR / ROUTER_NAME
    if not (path / "router_config.json").is_file():
        raise FileNotFoundError(
            f"The shipped router is missing from {path}. Reinstall peft-adaptir with its package data, or train one "
            "with `peft-adaptir train-router --output runs/router` and pass it as router=."
        )
    return path


def load_zoo(tasks: Sequence[str] | None = None, base: nn.Module | None = None) -> PeftModel:
    """A ``PeftModel`` on ``base`` (default: the embedded base) holding the shipped adapters of ``tasks`` (default:
    all shipped), each named by its task; the first is active. Offline."""
    tasks = list(shipped_tasks() if tasks is None else tasks)
    if not tasks:
        raise ValueError("No tasks to load: the package ships no zoo adapters (see `peft-adaptir tasks`).")
    paths = [zoo_adapter_path(task) for task in tasks]
    base = load_base_model(None) if base is None else base  # the embedded base, read from its folder
    model = PeftModel.from_pretrained(base, str(paths[0]), tasks[0])
    for task, path in zip(tasks[1:], paths[1:]):
        model.load_adapter(str(path), adapter_name=task)
    model.set_adapter(tasks[0])
    return model.eval()


def shipped_adapter_specs() -> dict[str, str]:
    """``{task: folder}`` of every shipped adapter, in the form ``load_adapters`` / ``--adapter`` take."""
    return {task: str(ZOO_DIR / task) for task in shipped_tasks()}
