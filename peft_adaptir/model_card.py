"""The model card (README.md) of an AdaptIR adapter repository on the Hugging Face Hub.

>>> card = build_model_card("user/adaptir-swin2sr-derain", task="derain-heavy",
...                         base_model="caidas/swin2SR-classical-sr-x2-64", metrics={"PSNR (dB)": 31.2})
>>> card.save("out/README.md")
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping

from huggingface_hub import ModelCard, ModelCardData

from .backbones.base_name import DEFAULT_BASE_NAME, public_base_name
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


def _is_local_path(name: str | None) -> bool:
    """A base named by a path on the machine that trained it (it means nothing on the Hub or elsewhere)."""
    return bool(name) and (os.path.isabs(name) or name.startswith(("./", "../", "~", ".\\")))


def _usage(repo_id: str | None, base_model: str | None, base_model_class: str | None, subfolder: str | None) -> str:
    module, _, cls = (base_model_class or "").rpartition(".")
    lines = ["```python", "import peft_adaptir  # registers AdaptIR with peft: without it, KeyError: 'ADAPTIR'"]
    if base_model == DEFAULT_BASE_NAME:
        lines += ["from peft import PeftModel", "from peft_adaptir import load_default_base", ""]
        lines += ["base = load_default_base()  # the small Swin2SR shipped inside peft-adaptir, offline"]
    elif _is_local_path(base_model):
        lines += ["from peft import PeftModel", "from peft_adaptir import load_base_model", ""]
        name = os.path.basename(os.path.normpath(base_model))
        lines += [f"base = load_base_model({json.dumps('path/to/' + name)})  # the base folder it was trained on"]
    elif module.split(".")[0] == "transformers" and base_model:
        lines += ["from peft import PeftModel", f"from transformers import {cls}", ""]
        lines += [f"base = {cls}.from_pretrained({json.dumps(base_model)})"]
    else:
        lines += [
            "from peft import PeftModel",
            "",
            "base = ...  # the base model as a torch module (e.g. via spandrel)",
        ]
    extra = f", subfolder={json.dumps(subfolder)}" if subfolder else ""
    where = json.dumps(repo_id) if repo_id else '"path/to/this/folder"'
    lines += [f"model = PeftModel.from_pretrained(base, {where}{extra}).eval()"]
    lines += ["restored = model(pixel_values)  # pixel_values: (B, 3, H, W) float in [0, 1]", "```"]
    return "\n".join(lines)


def _base_text(base_model: str | None) -> str:
    if base_model == DEFAULT_BASE_NAME:
        return f"the embedded default base of peft-adaptir (`{DEFAULT_BASE_NAME}`, `peft_adaptir.load_default_base()`)"
    if _is_local_path(base_model):
        return f"a local model folder (`{os.path.basename(os.path.normpath(base_model))}`)"
    return base_model or "not stated"


def build_model_card(
    repo_id: str | None,
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
    (``"transformers.Swin2SRForImageSuperResolution"``), used for the usage snippet. ``repo_id`` None: a card for a
    local folder (the snippet loads ``"path/to/this/folder"``).

    The embedded default base (its package folder or ``peft-adaptir:default-base``) is published by that name with a
    ``load_default_base()`` snippet, and a local folder by its folder name only: neither goes into the ``base_model``
    metadata, which the Hub reserves for Hub model ids. No local absolute path is ever written.
    """
    base_model = public_base_name(base_model)
    hub_base = None if base_model == DEFAULT_BASE_NAME or _is_local_path(base_model) else base_model
    data = ModelCardData(library_name="peft", tags=card_tags(task), base_model=hub_base, pipeline_tag="image-to-image")
    on = "the peft-adaptir default base" if base_model == DEFAULT_BASE_NAME else hub_base
    title = f"AdaptIR adapter{f' for {task}' if task else ''}{f' on {on}' if on else ''}"
    sections = [
        f"# {title}",
        f"An [AdaptIR]({_PAPER}) adapter: a small multi-branch module added in parallel to the feed-forward network "
        "of each block of a frozen, pretrained image-restoration transformer, trained to restore one degradation. "
        "It is a [peft](https://github.com/huggingface/peft) adapter; the base model's weights are not in this repo.",
        f"- **Task:** {task or 'not stated'}\n- **Degradation:** {_degradation_text(task, degradation)}\n"
        f"- **Base model:** {_base_text(base_model)}",
        "## Usage\n\nInstall `peft-adaptir`, then import it before loading: peft has no plugin discovery, so "
        "a process that never imported `peft_adaptir` cannot load this adapter "
        "(it fails with `KeyError: 'ADAPTIR'`).\n\n" + _usage(repo_id, base_model, base_model_class, subfolder),
    ]
    if training_command:
        sections.append(f"## Training\n\n```bash\n{training_command}\n```")
    if metrics:
        sections.append("## Results\n\n" + _metrics_table(metrics))
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n\n".join(sections) + "\n")
