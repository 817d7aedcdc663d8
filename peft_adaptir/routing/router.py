"""The degradation router: a 2-layer MLP over 14 degradation statistics, one class per adapter plus clean.

Saved like an adapter: ``router.safetensors`` (weights and the feature normalisation) and ``router_config.json``
(classes, sizes, feature recipe, the fingerprint of the base it was trained on), loadable from a folder or a Hub repo
and pushable with :meth:`DegradationRouter.push_to_hub`.

    >>> router = DegradationRouter.from_pretrained(zoo_router_path())
    >>> probs = router.probabilities(features)          # (B, len(router.classes)), rows sum to 1
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import hf_hub_download
from safetensors.torch import load_file, save_file
from torch import nn

from ..tuner.constants import BASE_ADAPTER_NAME
from .features import FEATURE_KIND

__all__ = ["RouterConfig", "DegradationRouter", "ROUTER_WEIGHTS", "ROUTER_CONFIG", "router_card"]

ROUTER_WEIGHTS = "router.safetensors"
ROUTER_CONFIG = "router_config.json"


@dataclass
class RouterConfig:
    """What a router decides between and what it reads. ``classes``: adapter names, ``"__base__"`` for clean."""

    classes: list[str]
    in_features: int
    hidden: int = 12
    feature_kind: str = FEATURE_KIND
    base_fingerprint: str = ""
    """Hash of the base's first convolution (``features.base_fingerprint``); empty: not checked."""
    max_side: int = 384
    """Features are pooled over a centre crop of at most this side."""
    training: dict[str, Any] = field(default_factory=dict)
    """How it was trained (command, seed, steps, accuracy): informative only."""

    def __post_init__(self) -> None:
        if len(self.classes) < 2 or len(set(self.classes)) != len(self.classes):
            raise ValueError(f"A router needs at least 2 distinct classes, got {self.classes}.")
        if self.in_features < 1 or self.hidden < 1:
            raise ValueError(f"in_features and hidden must be positive, got {self.in_features} and {self.hidden}.")

    @property
    def tasks(self) -> list[str]:
        """The adapter classes (without ``"__base__"``)."""
        return [name for name in self.classes if name != BASE_ADAPTER_NAME]


class DegradationRouter(nn.Module):
    """``(B, in_features)`` pooled features -> ``(B, K)`` logits: normalise, Linear, GELU, Linear."""

    def __init__(self, config: RouterConfig) -> None:
        super().__init__()
        self.config = config
        self.register_buffer("feature_mean", torch.zeros(config.in_features))
        self.register_buffer("feature_std", torch.ones(config.in_features))
        self.hidden = nn.Linear(config.in_features, config.hidden)
        self.out = nn.Linear(config.hidden, len(config.classes))

    @property
    def classes(self) -> list[str]:
        return list(self.config.classes)

    def set_normalisation(self, features: torch.Tensor) -> None:
        """Standardise inputs with the mean and std of ``(N, in_features)`` training features."""
        self.feature_mean.copy_(features.mean(0))
        self.feature_std.copy_(features.std(0).clamp_min(1e-6))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        x = (features - self.feature_mean) / self.feature_std  # (B, F)
        return self.out(nn.functional.gelu(self.hidden(x)))  # (B, K)

    @torch.no_grad()
    def probabilities(self, features: torch.Tensor) -> torch.Tensor:
        """``(B, F)`` -> ``(B, K)`` softmax probabilities in :attr:`classes` order."""
        return self(features.float()).softmax(dim=-1)

    def num_parameters(self) -> int:
        """Trainable parameters (the normalisation buffers are not counted: 2 x in_features more numbers)."""
        return sum(p.numel() for p in self.parameters())

    def save_pretrained(self, folder: str | os.PathLike) -> Path:
        """Write ``router.safetensors`` and ``router_config.json`` into ``folder`` (created)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        save_file({k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}, folder / ROUTER_WEIGHTS)
        (folder / ROUTER_CONFIG).write_text(json.dumps(asdict(self.config), indent=1) + "\n")
        return folder

    @classmethod
    def from_pretrained(cls, location: str | os.PathLike, revision: str | None = None) -> DegradationRouter:
        """A router from a local folder or a Hub repo id (``router_config.json`` + ``router.safetensors``)."""
        folder = Path(location)
        if folder.is_dir():
            missing = [name for name in (ROUTER_CONFIG, ROUTER_WEIGHTS) if not (folder / name).is_file()]
            if missing:
                raise FileNotFoundError(
                    f"{folder} is not a router folder: {', '.join(missing)} missing (write one with "
                    "DegradationRouter.save_pretrained or `peft-adaptir train-router`)."
                )
            config_path, weights_path = folder / ROUTER_CONFIG, folder / ROUTER_WEIGHTS
        else:
            config_path = Path(hf_hub_download(str(location), ROUTER_CONFIG, revision=revision))
            weights_path = Path(hf_hub_download(str(location), ROUTER_WEIGHTS, revision=revision))
        config = RouterConfig(**json.loads(config_path.read_text()))
        router = cls(config)
        router.load_state_dict(load_file(str(weights_path)))
        return router.eval()

    def push_to_hub(
        self,
        repo_id: str,
        *,
        private: bool = False,
        token: str | None = None,
        revision: str | None = None,
        commit_message: str = "Upload AdaptIR degradation router",
    ) -> str:
        """Upload the router's two files (and a short model card) to ``repo_id``; return the commit URL."""
        from ..hub import _upload  # the same repo/branch handling and error messages as adapters

        with tempfile.TemporaryDirectory() as folder:
            self.save_pretrained(folder)
            (Path(folder) / "README.md").write_text(router_card(self.config))
            return _upload(
                folder, repo_id, private=private, token=token, revision=revision, path_in_repo=None,
                commit_message=commit_message,
            )  # fmt: skip


def router_card(config: RouterConfig) -> str:
    """The router's model card (README.md): what it chooses between, its size, how it was trained, its accuracy."""
    info = config.training
    accuracy = info.get("heldout_accuracy")
    lines = [
        "---", "library_name: peft-adaptir", "tags:", "- adaptir", "- degradation-router", "---", "",
        "# AdaptIR degradation router", "",
        f"A 2-layer MLP ({config.in_features} -> {config.hidden} -> {len(config.classes)}, GELU) over "
        f"{config.in_features} degradation statistics (`{config.feature_kind}`, centre crop of at most "
        f"{config.max_side} px), choosing "
        f"between {', '.join(f'`{name}`' for name in config.classes)} (`__base__`: clean, no adapter). "
        f"{info.get('parameters', '?')} parameters. Base fingerprint `{config.base_fingerprint}`.", "",
    ]  # fmt: skip
    if info:
        lines += [
            "## Training", "",
            f"- {info.get('examples')} degraded crops ({info.get('crops_per_photo')} per photo and class) of "
            f"{info.get('photos')} training photos; full-batch AdamW, {info.get('steps')} steps, lr {info.get('lr')}, "
            f"seed {info.get('seed')}; training accuracy {info.get('train_accuracy', float('nan')):.1%}.",
        ]  # fmt: skip
        if isinstance(accuracy, float):
            photos = ", ".join(info.get("heldout_photos", []))
            lines.append(f"- Held-out accuracy: **{accuracy:.1%}** on crops of photos it never saw ({photos}).")
        if info.get("command"):
            lines += ["", "```bash", info["command"], "```"]
    lines += ["", "Load: `peft_adaptir.DegradationRouter.from_pretrained(folder_or_repo_id)`; use: "
              "`restore(model, images, adapter=\"auto\", router=router)`.", ""]  # fmt: skip
    return "\n".join(lines)
