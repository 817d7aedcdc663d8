"""State that lives for one forward pass, kept per thread so that several threads can share one model.

An AdaptIR layer keeps three things between two hooks of the same forward pass: the delta computed at the start of
an FFN span and added at its end, the token grid captured from the enclosing block, and the per-sample adapter
names of a mixed batch. Stored on the modules, two threads running the same model would read each other's values;
here each thread has its own slots, keyed by the owning object's ``id``. Nothing here is saved with a model.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Sequence
from typing import Any

__all__ = [
    "adapter_blending",
    "adapter_routing",
    "routed_adapter_names",
    "routed_adapter_weights",
    "slot_get",
    "slot_pop",
    "slot_set",
]

_LOCAL = threading.local()


def _slots() -> dict[int, Any]:
    slots = getattr(_LOCAL, "slots", None)
    if slots is None:
        slots = _LOCAL.slots = {}
    return slots


def slot_set(owner: object, value: Any) -> None:
    """Store ``value`` for ``owner`` in this thread."""
    _slots()[id(owner)] = value


def slot_get(owner: object) -> Any:
    """This thread's value for ``owner`` (None if unset)."""
    return _slots().get(id(owner))


def slot_pop(owner: object) -> Any:
    """This thread's value for ``owner``, removed (None if unset)."""
    return _slots().pop(id(owner), None)


def routed_adapter_names() -> list[str] | None:
    """The per-sample adapter names of the forward pass running in this thread, if it routes samples."""
    return getattr(_LOCAL, "adapter_names", None)


@contextlib.contextmanager
def adapter_routing(adapter_names: Sequence[str]) -> Iterator[None]:
    """Route the samples of forward passes in this thread (and only this thread) to ``adapter_names``."""
    previous = routed_adapter_names()
    _LOCAL.adapter_names = list(adapter_names)
    try:
        yield
    finally:
        _LOCAL.adapter_names = previous


def routed_adapter_weights() -> dict[str, Any] | None:
    """The per-sample blend weights ``{adapter: (B,) tensor}`` of the forward pass running in this thread, if any."""
    return getattr(_LOCAL, "adapter_weights", None)


@contextlib.contextmanager
def adapter_blending(adapter_weights: dict[str, Any]) -> Iterator[None]:
    """Blend the samples of forward passes in this thread (and only this thread) with ``adapter_weights``."""
    previous = routed_adapter_weights()
    _LOCAL.adapter_weights = adapter_weights
    try:
        yield
    finally:
        _LOCAL.adapter_weights = previous
