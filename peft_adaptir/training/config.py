"""``TrainingConfig``: every setting of an AdaptIR training run (see :func:`peft_adaptir.training.train`)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from ..data.degradations import get_task_spec

__all__ = ["TrainingConfig", "LOSSES", "SCHEDULES", "MIXED_PRECISION"]

LOSSES = ("l1", "l2", "charbonnier")
SCHEDULES = ("cosine", "constant")
MIXED_PRECISION = ("no", "bf16", "fp16")


@dataclass
class TrainingConfig:
    """Settings of one training run. Batch sizes are per process; one step is one optimizer update."""

    output_dir: str = "adaptir-output"
    """Checkpoints go to ``<output_dir>/checkpoints/step-N``, the adapter and its plots to ``<output_dir>/adapter``."""
    task: str | None = None
    """Degradation preset (``peft_adaptir.degradations.list_tasks()``); None only with ``degraded_data``."""
    data: str | None = None
    """Clean images: None / "skimage" (bundled photos), a local folder, or a Hub dataset id. With ``degraded_data``:
    the folder of clean images paired by file name."""
    degraded_data: str | None = None
    """A folder of real degraded images matching ``data`` by file name (no synthetic degradation)."""
    image_column: str | None = None
    holdout_fraction: float = 0.1
    """Share of the images held out for validation when the source has no validation split (fixed by name)."""
    patch_size: int = 64
    batch_size: int = 8
    steps: int = 2000
    lr: float = 1e-3
    weight_decay: float = 0.0
    schedule: str = "cosine"
    """"cosine": linear warmup, then cosine decay to 0; "constant": linear warmup, then constant."""
    warmup_steps: int | None = None
    """None: 5% of ``steps``."""
    loss: str = "l1"
    grad_accum: int = 1
    grad_clip: float | None = 1.0
    """Clip the gradient norm of the adapter's parameters to this; None or 0: no clipping."""
    mixed_precision: str = "no"
    seed: int = 0
    val_every: int = 250
    """Validate every this many steps (and before the first and after the last); 0: only at the start and the end."""
    val_crop: int | None = 256
    """Centre crop of the validation images (None: whole images)."""
    checkpoint_every: int = 500
    """Save a resumable checkpoint every this many steps and at the end; 0: none."""
    keep_checkpoints: int = 2
    resume: bool = True
    """Continue from the newest checkpoint in ``output_dir`` when there is one."""
    num_workers: int = 0
    adapter_name: str = "default"
    adapter: dict[str, Any] = field(default_factory=dict)
    """Keyword arguments of ``AdaptIRConfig`` (e.g. ``{"fusion": "sum", "width": 8}``)."""
    cpu: bool = False
    """Train on the CPU even when a GPU is available."""
    progress: bool = True

    def validate(self) -> None:
        """Raise ValueError naming the bad setting and what is allowed."""
        if self.task is None and self.degraded_data is None:
            raise ValueError("Give a task (a degradation preset such as 'denoise-50') or degraded_data (real pairs).")
        if self.task is not None and self.degraded_data is not None:
            raise ValueError("Give either task (synthetic degradation) or degraded_data (real pairs), not both.")
        if self.degraded_data is not None and self.data is None:
            raise ValueError("degraded_data needs data: the folder of clean images with the same file names.")
        if self.task is not None:
            get_task_spec(self.task)  # raises for unknown names, listing the valid ones
        positive = {"patch_size": self.patch_size, "batch_size": self.batch_size, "steps": self.steps}
        positive["grad_accum"] = self.grad_accum
        for name, value in positive.items():
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}.")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be a positive number, got {self.lr}.")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}.")
        choices = {"schedule": SCHEDULES, "loss": LOSSES, "mixed_precision": MIXED_PRECISION}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name}={getattr(self, name)!r} is not one of {list(allowed)}.")
        if self.warmup_steps is not None and not 0 <= self.warmup_steps <= self.steps:
            raise ValueError(f"warmup_steps must be in [0, steps={self.steps}], got {self.warmup_steps}.")
        for name in ("val_every", "checkpoint_every", "num_workers"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}.")
        if self.grad_clip is not None and self.grad_clip < 0:
            raise ValueError(f"grad_clip must be positive (or None/0 for no clipping), got {self.grad_clip}.")
        if self.val_crop is not None and self.val_crop < 16:
            raise ValueError(f"val_crop must be at least 16 (SSIM needs 11 x 11 pixels), got {self.val_crop}.")

    @property
    def warmup(self) -> int:
        """Warmup length in steps."""
        return round(0.05 * self.steps) if self.warmup_steps is None else self.warmup_steps

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable settings."""
        return asdict(self)
