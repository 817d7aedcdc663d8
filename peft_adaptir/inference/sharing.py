"""One model shared by ``restore()`` calls that may run at the same time in several threads.

The first call that enters puts the model in eval mode (and on the requested device); the last one that leaves
puts its modes and device back. Calls in between share that state, so no call switches
the model under another. A call asking for another device than the running calls use is refused, not obeyed.
Each model also carries a lock for the work that cannot be shared (switching a non-AdaptIR peft model's adapter).
"""

from __future__ import annotations

import contextlib
import threading
import weakref
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
from torch import nn

__all__ = ["SharedModel", "shared_model"]

_REGISTRY_LOCK = threading.Lock()
_SESSIONS: weakref.WeakKeyDictionary[nn.Module, SharedModel] = weakref.WeakKeyDictionary()


@dataclass
class SharedModel:
    """The state of a model while ``restore()`` calls run on it; ``exclusive`` serialises what cannot be shared."""

    device: torch.device
    dtype: torch.dtype
    home: torch.device
    users: int = 0
    training: list[nn.Module] = field(default_factory=list)
    exclusive: threading.Lock = field(default_factory=threading.Lock)


def _placement(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    for param in model.parameters():
        if param.is_floating_point():
            return param.device, param.dtype
    return torch.device("cpu"), torch.float32


def _enter(model: nn.Module, device: torch.device | None) -> SharedModel:
    session = _SESSIONS.get(model)
    if session is not None and session.users > 0:
        if device is not None and device != session.device:
            raise RuntimeError(
                f"restore() is running on this model on {session.device} in another thread; device={device} would "
                "move the model under that call. Move the model once (model.to(device)) and call restore() without "
                "device=, or wait for the other call."
            )
        session.users += 1
        return session
    home, dtype = _placement(model)
    if session is None:
        session = _SESSIONS[model] = SharedModel(device=home, dtype=dtype, home=home)
    session.home, session.dtype = home, dtype
    session.device = home if device is None else device
    session.training = [module for module in model.modules() if module.training]  # usually none: nothing to do
    if session.training:
        model.eval()
    try:
        if session.device != home:
            model.to(session.device)
    except BaseException:
        session.users = 1
        _leave(model, session)
        raise
    session.users = 1
    return session


def _leave(model: nn.Module, session: SharedModel) -> None:
    session.users -= 1
    if session.users:
        return
    if session.device != session.home:
        model.to(session.home)
    for module in session.training:
        module.training = True
    session.training = []


@contextlib.contextmanager
def shared_model(model: nn.Module, device: torch.device | None) -> Iterator[SharedModel]:
    """Eval mode and ``device`` (None: where the model is) while the block runs; put back when the last call ends."""
    with _REGISTRY_LOCK:
        session = _enter(model, device)
    try:
        yield session
    finally:
        with _REGISTRY_LOCK:
            _leave(model, session)
