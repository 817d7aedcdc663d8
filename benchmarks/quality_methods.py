"""The methods compared by ``adapt_quality.py``: how each wraps the same Swin2SR base, and what it costs.

Every method starts from a fresh copy of the base loaded from disk. ``base`` trains nothing; ``full`` trains every
weight; ``lora`` is peft's LoRA on the FFN linears (or all attention + FFN linears) with the rank whose trainable count
is closest to AdaptIR gated's; ``bottleneck`` is AdaptIR with no branches (the AdaptFormer adapter) at AdaptIR's
width; ``adaptir-sum`` / ``adaptir-gated`` are the two AdaptIR fusions with the package defaults.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from peft import LoraConfig, get_peft_model
from torch import nn
from transformers import Swin2SRForImageSuperResolution

import peft_adaptir  # noqa: F401 - registers AdaptIR with peft
from peft_adaptir import AdaptIRConfig

METHODS = ("base", "full", "lora", "bottleneck", "adaptir-sum", "adaptir-gated")
TRAINED = tuple(m for m in METHODS if m != "base")
LABELS = {
    "input": "degraded input",
    "base": "pretrained base",
    "full": "full fine-tuning",
    "lora": "LoRA",
    "bottleneck": "bottleneck (AdaptFormer)",
    "adaptir-sum": "AdaptIR sum",
    "adaptir-gated": "AdaptIR gated",
}
ADAPTER_KWARGS = {
    "bottleneck": {"fusion": "sum", "branches": []},
    "adaptir-sum": {"fusion": "sum"},
    "adaptir-gated": {"fusion": "gated"},
}
LORA_TARGETS = {
    "ffn": r".*\.layers\.\d+\.(intermediate|output)\.dense",
    "all": r".*\.layers\.\d+\.(attention\.self\.(query|key|value)|attention\.output\.dense|intermediate\.dense"
    r"|output\.dense)",
}


def load_base(path: str | Path) -> Swin2SRForImageSuperResolution:
    """A fresh copy of the Swin2SR base saved at ``path`` (``save_pretrained`` folder), offline."""
    return Swin2SRForImageSuperResolution.from_pretrained(str(path), local_files_only=True)


def wrap(base: nn.Module, method: str, adapter: dict | None = None, lora_rank: int = 1, lora_targets: str = "ffn"):
    """``base`` prepared for ``method`` (see module docstring); ``adapter`` overrides AdaptIRConfig fields (LoraConfig
    fields for ``lora``)."""
    if method == "base":
        return base.requires_grad_(False)
    if method == "full":
        return base.requires_grad_(True)
    if method == "lora":  # ``adapter`` overrides LoraConfig fields here (e.g. r, modules_to_save); alpha = 2 r
        fields = {"r": lora_rank, "lora_dropout": 0.0, "target_modules": LORA_TARGETS[lora_targets], **(adapter or {})}
        return get_peft_model(base, LoraConfig(lora_alpha=2 * fields["r"], **fields))
    if method in ADAPTER_KWARGS:
        return get_peft_model(base, AdaptIRConfig(**{**ADAPTER_KWARGS[method], **(adapter or {})}))
    raise ValueError(f"Unknown method {method!r}; choose from {list(METHODS)}.")


def trainable_count(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def matched_lora_rank(base_path: str | Path, target: int, lora_targets: str = "ffn") -> tuple[int, int]:
    """``(rank, trainable count)`` of the LoRA whose trainable count is closest to ``target`` (LoRA is linear in r)."""
    per_rank = trainable_count(wrap(load_base(base_path), "lora", lora_rank=1, lora_targets=lora_targets))
    lower = max(1, target // per_rank)
    rank = min((lower, lower + 1), key=lambda r: abs(r * per_rank - target))
    return rank, rank * per_rank


def saved_size(model: nn.Module, method: str) -> int | None:
    """Bytes of the weights file ``save_pretrained`` writes (the adapter for peft methods, the model for ``full``)."""
    if method == "base":
        return None
    with tempfile.TemporaryDirectory() as folder:
        model.save_pretrained(folder, safe_serialization=True)
        return sum(f.stat().st_size for f in Path(folder).rglob("*.safetensors"))
