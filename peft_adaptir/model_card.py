"""The model card (README.md) of an AdaptIR adapter repository on the Hugging Face Hub.

>>> card = build_model_card("user/adaptir-swin2sr-derain", task="derain-heavy",
...                         base_model="caidas/swin2SR-classical-sr-x2-64", metrics={"PSNR (dB)": 31.2})
>>> card.save("out/README.md")
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from huggingface_hub import ModelCard, ModelCardData

from .data.degradations import get_task_spec, list_tasks

__all__ = ["build_model_card", "card_tags"]

_BASE_TAGS = ("adaptir", "image-to-image", "peft")
_PAPER = "https://arxiv.org/abs/2312.08881"


def card_tags(task: str | None) -> list[str]:
    """The card's tags: ``adaptir``, ``image-to-image``, ``peft`` and the task name when known."""
    return list(_BASE_TAGS) + ([task] if task and task not in _BASE_TAGS else [])


def _degradation_text(task: str | None, degradation: str | None) -> str:
    if degradation:
        return degradation
    if task is None:
        return "not stated"
    return get_task_spec(task).description if task in list_tasks() else "not stated (custom task)"


def _metrics_table(metrics: Mapping[str, float | str]) -> str:
    rows = [f"| {name} | {f'{value:.4g}' if isinstance(value, float) else value} |" for name, value in metrics.items()]
    return "\n".join(["| Metric | Value |", "| --- | --- |", *rows])


def _usage(repo_id: str, base_model: str | None, base_model_class: str | None, subfolder: str | None) -> str:
    module, _, cls = (base_model_class or "").rpartition(".")
    lines = ["```python", "import peft_adaptir  # registers AdaptIR with peft: without it, KeyError: 'ADAPTIR'"]
    if module.split(".")[0] == "transformers" and base_model:
        lines += ["from peft import PeftModel", f"from transformers import {cls}", ""]
        lines += [f"base = {cls}.from_pretrained({json.dumps(base_model)})"]
    else:
        lines += [
            "from peft import PeftModel",
            "",
            "base = ...  # the base model as a torch module (e.g. via spandrel)",
        ]
    extra = f", subfolder={json.dumps(subfolder)}" if subfolder else ""
    lines += [f"model = PeftModel.from_pretrained(base, {json.dumps(repo_id)}{extra}).eval()"]
    lines += ["restored = model(pixel_values)  # pixel_values: (B, 3, H, W) float in [0, 1]", "```"]
    return "\n".join(lines)


def build_model_card(
    repo_id: str,
    *,
    task: str | None = None,
    base_model: str | None = None,
    base_model_class: str | None = None,
    degradation: str | None = None,
    training_command: str | None = None,
    metrics: Mapping[str, float | str] | None = None,
    subfolder: str | None = None,
) -> ModelCard:
    """The card of an AdaptIR adapter: YAML metadata (``library_name: peft``, tags, ``base_model``,
    ``pipeline_tag: image-to-image``) and a body with the task's degradation, training command, metrics and usage.

    ``task`` is a degradation preset name (see ``peft_adaptir.degradations.list_tasks``) or any short name;
    ``degradation`` overrides the preset's description. ``base_model_class`` is the dotted class path of the base
    (``"transformers.Swin2SRForImageSuperResolution"``), used for the usage snippet.
    """
    data = ModelCardData(
        library_name="peft",
        tags=card_tags(task),
        base_model=base_model or None,
        pipeline_tag="image-to-image",
    )
    title = f"AdaptIR adapter{f' for {task}' if task else ''}{f' on {base_model}' if base_model else ''}"
    sections = [
        f"# {title}",
        f"An [AdaptIR]({_PAPER}) adapter: a small multi-branch module added in parallel to the feed-forward network "
        "of each block of a frozen, pretrained image-restoration transformer, trained to restore one degradation. "
        "It is a [peft](https://github.com/huggingface/peft) adapter; the base model's weights are not in this repo.",
        f"- **Task:** {task or 'not stated'}\n- **Degradation:** {_degradation_text(task, degradation)}\n"
        f"- **Base model:** {base_model or 'not stated'}",
        "## Usage\n\nInstall `peft-adaptir`, then import it before loading: peft has no plugin discovery, so "
        "a process that never imported `peft_adaptir` cannot load this adapter "
        "(it fails with `KeyError: 'ADAPTIR'`).\n\n" + _usage(repo_id, base_model, base_model_class, subfolder),
    ]
    if training_command:
        sections.append(f"## Training\n\n```bash\n{training_command}\n```")
    if metrics:
        sections.append("## Results\n\n" + _metrics_table(metrics))
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n\n".join(sections) + "\n")
