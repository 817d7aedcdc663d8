"""The embedded default base model: a small scale-1 Swin2SR restorer shipped inside the package.

It was pretrained by ``examples/pretrain_base.py`` on the pretraining tasks (Gaussian noise sigma <= 25, light rain,
x2 SR from a bicubic-upsampled input) using scikit-image's training photos; its model card
(``assets/default_base/README.md``) states the exact command, seed, steps, wall time and PSNR per task. It loads
offline, from the package folder, with no network access.

    >>> from peft_adaptir.default_base import load_default_base
    >>> model = load_default_base()                      # Swin2SRForImageSuperResolution, eval mode
    >>> restored = model(pixel_values).reconstruction    # (B, 3, H, W) float in [0, 1] -> same
"""

from __future__ import annotations

from pathlib import Path

from transformers import Swin2SRForImageSuperResolution

__all__ = ["DEFAULT_BASE_FILES", "default_base_path", "load_default_base"]

DEFAULT_BASE_FILES = ("config.json", "model.safetensors")
_ASSET_DIR = Path(__file__).resolve().parent.parent / "assets" / "default_base"


def default_base_path() -> Path:
    """The folder of the embedded base (``config.json`` + ``model.safetensors``), checked to be complete.

    Raises ``FileNotFoundError`` naming the missing files and how to restore them if the package was installed
    without its assets.
    """
    missing = [name for name in DEFAULT_BASE_FILES if not (_ASSET_DIR / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"The embedded default base model is incomplete: {', '.join(missing)} missing from {_ASSET_DIR}. "
            "Reinstall peft-adaptir with its package data (pip install --force-reinstall peft-adaptir), "
            "or regenerate it with examples/pretrain_base.py --output peft_adaptir/assets/default_base, "
            "or pass your own base model (--base / a Swin2SR checkpoint path)."
        )
    return _ASSET_DIR


def load_default_base() -> Swin2SRForImageSuperResolution:
    """The embedded scale-1 Swin2SR restorer, offline, in eval mode: ``(B, 3, H, W)`` float in [0, 1] -> same."""
    model = Swin2SRForImageSuperResolution.from_pretrained(default_base_path(), local_files_only=True)
    return model.eval()
