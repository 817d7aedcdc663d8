"""Reading checkpoint files without running code hidden in them.

A ``.pth`` / ``.pt`` / ``.ckpt`` file is a pickle, and unpickling may call any importable function (``__reduce__``).
Here it is read with ``torch.load(weights_only=True)``: torch's restricted unpickler, which only rebuilds tensors and
plain containers and refuses every other global. ``.safetensors`` files hold no code at all.
(spandrel's own ``ModelLoader.load_from_file`` uses a similar allow-list unpickler of its own; we read the file
ourselves so the rule does not depend on the spandrel version.)
"""

from __future__ import annotations

import argparse
import os
import pickle
import re
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors.torch import load_file

__all__ = ["UnsafeCheckpointError", "load_checkpoint"]

PICKLE_SUFFIXES = (".pth", ".pt", ".ckpt", ".bin")
SAFETENSORS_SUFFIXES = (".safetensors",)


class UnsafeCheckpointError(ValueError):
    """A pickled checkpoint asked to build something other than tensors and plain containers."""


def load_checkpoint(path: str | os.PathLike, allow_argparse_namespace: bool = False) -> dict[str, object]:
    """The top-level mapping stored in a checkpoint file, tensors on the CPU.

    ``.safetensors`` files are read with safetensors; ``.pth``/``.pt``/``.ckpt``/``.bin`` with
    ``torch.load(weights_only=True)``. A pickle that references any other global (code to run, custom classes)
    raises ``UnsafeCheckpointError`` before anything in it is executed. ``allow_argparse_namespace``: also rebuild
    ``argparse.Namespace`` (a plain attribute bag: its rebuilding runs no code of the file's choosing), which a
    Lightning ``last.ckpt`` from the AdaptIR authors' training script keeps in ``hyper_parameters``; only the release
    converter sets it.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"Checkpoint {str(path)!r} does not exist or is not a file.")
    suffix = path.suffix.lower()
    if suffix in SAFETENSORS_SUFFIXES:
        return dict(load_file(str(path), device="cpu"))
    if suffix not in PICKLE_SUFFIXES:
        raise ValueError(
            f"Checkpoint {path.name!r} has an unknown extension {suffix!r}; expected one of "
            f"{list(PICKLE_SUFFIXES + SAFETENSORS_SUFFIXES)}."
        )
    allowed = [argparse.Namespace] if allow_argparse_namespace else []
    try:
        with torch.serialization.safe_globals(allowed):
            loaded = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        found = re.search(r"GLOBAL (\S+)", str(err))
        what = f"the global {found.group(1)!r}" if found else "objects other than tensors and plain containers"
        hint = ""
        if found and found.group(1) == "argparse.Namespace":
            hint = (
                " A Lightning checkpoint of the AdaptIR authors' training script holds one: convert it with "
                "peft_adaptir.backbones.convert_release.convert_release_checkpoint, which accepts exactly that."
            )
        raise UnsafeCheckpointError(
            f"Refused to load {path.name!r}: the pickle references {what}, which could run code on loading. Only "
            "weights-only checkpoints (tensors in plain containers) are read; re-save "
            "the state dict (torch.save(model.state_dict(), ...)) or convert it to .safetensors from a trusted "
            f"environment.{hint}"
        ) from None
    if not isinstance(loaded, Mapping):
        raise ValueError(
            f"Checkpoint {path.name!r} holds a {type(loaded).__name__}, not a state dict (a mapping of names to "
            "tensors)."
        )
    return dict(loaded)
