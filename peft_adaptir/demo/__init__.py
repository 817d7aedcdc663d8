"""``peft-adaptir demo``: a Gradio page (a Hugging Face Space) to try task adapters in a browser.

    >>> from peft_adaptir.demo import build_app, load_engine
    >>> build_app(load_engine(adapters={"derain": "runs/derain/adapter"})).launch()

``engine`` (the shared model, per-request routing) and ``uploads`` (checks on uploaded files) need no Gradio;
``build_app`` (in ``ui``) needs the ``demo`` extra: ``pip install 'peft-adaptir[demo]'``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .engine import AUTO_TASK, DemoEngine, Restored, UnknownTaskError, find_router
from .loading import load_engine
from .uploads import MAX_FILE_BYTES, MAX_PIXELS, UploadError

if TYPE_CHECKING:
    from .ui import build_app

__all__ = [
    "AUTO_TASK",
    "DemoEngine",
    "MAX_FILE_BYTES",
    "MAX_PIXELS",
    "Restored",
    "UnknownTaskError",
    "UploadError",
    "build_app",
    "find_router",
    "load_engine",
]


def __getattr__(name: str) -> Any:
    if name == "build_app":  # imports gradio: only when asked for
        from .ui import build_app

        return build_app
    raise AttributeError(f"module 'peft_adaptir.demo' has no attribute {name!r}")
