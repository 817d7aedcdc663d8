"""The public name of the embedded default base, for files that leave this machine (adapter configs, model cards).

The embedded base lives in the installed package (``.../peft_adaptir/assets/default_base``); that absolute path means
nothing on another machine. Published adapters (``adapter_config.json``) and cards name it
``peft-adaptir:default-base`` instead, and say to load it with ``peft_adaptir.load_default_base()``
(``load_base_model("peft-adaptir:default-base")`` loads it too). Imports nothing heavy: the model card needs it
at ``import peft_adaptir``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path, PurePath

__all__ = ["DEFAULT_BASE_NAME", "is_default_base", "public_base_name", "publish_base_name"]

DEFAULT_BASE_NAME = "peft-adaptir:default-base"
_ASSET_PARTS = ("peft_adaptir", "assets", "default_base")


def is_default_base(name_or_path: str | os.PathLike | None) -> bool:
    """True for :data:`DEFAULT_BASE_NAME` and for the embedded base's folder in any installation of the package."""
    if name_or_path is None:
        return False
    text = os.fspath(name_or_path)
    if text == DEFAULT_BASE_NAME:
        return True
    parts = PurePath(text.replace("\\", "/").rstrip("/")).parts
    return tuple(parts[-3:]) == _ASSET_PARTS


def public_base_name(name_or_path: str | os.PathLike | None) -> str | None:
    """The name to publish for a base: :data:`DEFAULT_BASE_NAME` for the embedded base, else ``name_or_path``."""
    if name_or_path is None or os.fspath(name_or_path) == "":
        return None
    return DEFAULT_BASE_NAME if is_default_base(name_or_path) else os.fspath(name_or_path)


def publish_base_name(folder: str | os.PathLike) -> None:
    """Rewrite ``base_model_name_or_path`` in every ``adapter_config.json`` under ``folder`` to its public name.

    For files about to leave this machine (a Hub upload, a trained adapter folder). The live model keeps the local
    folder: peft looks for ``config.json`` there when it saves, and a name that is not a folder makes it warn.
    """
    for path in Path(folder).rglob("adapter_config.json"):
        config = json.loads(path.read_text())
        public = public_base_name(config.get("base_model_name_or_path"))
        if public != config.get("base_model_name_or_path"):
            config["base_model_name_or_path"] = public
            path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
