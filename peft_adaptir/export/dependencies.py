"""The optional export dependencies (onnx, onnxscript, onnxruntime), imported lazily with an install hint."""

from __future__ import annotations

import importlib
from types import ModuleType

INSTALL_HINT = "pip install 'peft-adaptir[export]'"


def require(name: str) -> ModuleType:
    """Import ``name`` (``onnx``, ``onnxscript`` or ``onnxruntime``) or raise ImportError saying how to install it."""
    try:
        return importlib.import_module(name)
    except ImportError as err:
        raise ImportError(
            f"Exporting or running ONNX models needs the '{name}' package, which is not installed: {INSTALL_HINT} "
            "(installs onnx, onnxscript and onnxruntime in versions tested together)."
        ) from err
