"""``device=`` / ``--device`` strings checked before any work, with errors that say what this machine has."""

from __future__ import annotations

import torch

__all__ = ["resolve_device"]


def _available() -> str:
    found = ["cpu"]
    if torch.cuda.is_available():
        count = torch.cuda.device_count()
        found.append("cuda" + (f" (cuda:0 .. cuda:{count - 1})" if count > 1 else ""))
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        found.append("mps")
    return ", ".join(found)


def resolve_device(device: str | torch.device | None) -> torch.device | None:
    """``device`` as a ``torch.device`` that exists here (None stays None: "where the model is").

    Raises ValueError for a name torch does not know (``"gpu"``) or a device this machine lacks (``"cuda"``
    without CUDA, ``"cuda:3"`` on a one-GPU machine), naming the devices it has.
    """
    if device is None:
        return None
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as err:
        hint = " (for an NVIDIA GPU write 'cuda')" if str(device).lower().startswith("gpu") else ""
        raise ValueError(f"Unknown device {device!r}{hint}; this machine has: {_available()}.") from err
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            why = "this torch build has no CUDA" if torch.version.cuda is None else "no CUDA GPU is visible"
            raise ValueError(f"Device {device!r} is not available: {why}; this machine has: {_available()}.")
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise ValueError(f"Device {device!r} does not exist; this machine has: {_available()}.")
    elif resolved.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ValueError(f"Device {device!r} is not available; this machine has: {_available()}.")
    return resolved
