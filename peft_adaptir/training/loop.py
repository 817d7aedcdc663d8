"""``train(base_model, config)``: fit an AdaptIR adapter on a degradation task with Accelerate.

One process on a CPU or GPU, or several (``accelerate launch``, DistributedDataParallel). The data order is a pure
function of ``(seed, step)``: optimizer step ``s`` of process ``r`` (of ``n``) with ``a`` accumulation micro-batches
of ``b`` patches reads the training items ``((s - 1) * a * n + m * n + r) * b ... + b - 1`` for micro-batch ``m``,
and item ``i`` is fixed by ``(seed, i)`` (:class:`peft_adaptir.patches.PatchPairs`). A resumed run therefore sees
exactly the batches an uninterrupted one would. Only the main process writes files (and validates).

The output folder is checked before the first step (``run_folder``): writable, with room, and never holding two runs.
"""

from __future__ import annotations

import json
import math
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from peft import PeftModel, get_peft_model
from torch import nn
from tqdm.auto import tqdm

from ..backbones.base_name import publish_base_name
from ..metrics import psnr_batch, ssim_batch
from ..tuner.config import AdaptIRConfig
from . import checkpoints as ckpt
from .adapter_card import write_adapter_card
from .config import TrainingConfig
from .datasets import build_datasets, check_batch, check_data_sources, check_model_fits, reconstruction
from .optim import adapter_optimizer
from .plots import plot_preview, plot_training_curve
from .run_folder import (
    OutputNotWritableError,
    adapter_settings,
    base_fingerprint,
    prepare_run_folder,
    save_with_fallback,
)

__all__ = [
    "TrainingConfig",
    "TrainingDivergedError",
    "TrainingInterrupted",
    "OutputNotWritableError",
    "TrainingResult",
    "train",
    "wrap_with_adapter",
    "LOSS_FUNCTIONS",
]

LOG_FILE = "training_log.json"
CURVE_FILE = "training_curve.png"
PREVIEW_FILE = "preview.png"


class TrainingDivergedError(RuntimeError):
    """The loss became NaN or infinite; the run stopped without saving that state."""


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during training. The message says where the last checkpoint is; ``step`` is the step interrupted,
    ``checkpoint`` the newest complete checkpoint (None: none yet)."""

    def __init__(self, message: str, step: int, checkpoint: Path | None) -> None:
        super().__init__(message)
        self.step, self.checkpoint = step, checkpoint

    def __str__(self) -> str:
        return str(self.args[0])


@dataclass
class TrainingResult:
    """What :func:`train` returns. ``model`` is the trained (unwrapped) PeftModel on its training device."""

    model: nn.Module
    adapter_dir: Path | None
    steps: int
    losses: list[float] = field(default_factory=list)
    validation: list[dict[str, float]] = field(default_factory=list)


def _charbonnier(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    return torch.sqrt((pred - target) ** 2 + eps**2).mean()


LOSS_FUNCTIONS = {"l1": nn.functional.l1_loss, "l2": nn.functional.mse_loss, "charbonnier": _charbonnier}


def wrap_with_adapter(base_model: nn.Module, config: TrainingConfig) -> nn.Module:
    """``get_peft_model(base, AdaptIRConfig(**config.adapter))``, or ``base_model`` itself if already a PeftModel."""
    if isinstance(base_model, PeftModel):
        if not any(p.requires_grad for p in base_model.parameters()):
            raise ValueError("The PeftModel passed to train() has no trainable parameters; set_adapter(...) first.")
        return base_model
    return get_peft_model(base_model, AdaptIRConfig(**config.adapter), adapter_name=config.adapter_name)


def _lr_lambda(config: TrainingConfig, num_processes: int):
    # accelerate steps a prepared scheduler num_processes times per optimizer step: count in those units
    warmup, total = config.warmup * num_processes, config.steps * num_processes

    def factor(tick: int) -> float:
        if tick < warmup:
            return (tick + 1) / (warmup + 1)
        if config.schedule == "constant":
            return 1.0
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (tick - warmup) / max(1, total - warmup))))

    return factor


@torch.no_grad()
def _validate(model: nn.Module, val_set, device: torch.device, loss_fn) -> tuple[dict[str, float], tuple]:
    """Mean loss / PSNR / SSIM (RGB, 8-bit rounded) over the validation images; model in eval mode meanwhile."""
    was_training = model.training
    model.eval()
    losses, psnrs, ssims, first = [], [], [], None
    for degraded, clean, _ in val_set:
        restored = reconstruction(model(degraded[None].to(device))).float().clamp(0, 1).cpu()
        losses.append(loss_fn(restored, clean[None]).item())
        psnrs.append(psnr_batch(restored, clean[None], quantize=True).item())
        ssims.append(ssim_batch(restored, clean[None], quantize=True).item())
        first = first or (degraded, restored[0], clean)
    model.train(was_training)
    mean = lambda values: sum(values) / len(values)  # noqa: E731
    return {"val_loss": mean(losses), "psnr": mean(psnrs), "ssim": mean(ssims)}, first


def _write_outputs(model, adapter_dir: Path, config: TrainingConfig, log: dict, preview) -> Path:
    """The adapter (safetensors), its card, the training log and the two figures -> ``adapter_dir``."""
    adapter_dir.mkdir(parents=True, exist_ok=True)  # an OSError (not peft's ValueError) if a file is in the way
    model.save_pretrained(str(adapter_dir), safe_serialization=True)
    publish_base_name(adapter_dir)  # the embedded base by its public name, not this machine's package folder
    write_adapter_card(model, adapter_dir, config, log.get("final"))
    (adapter_dir / LOG_FILE).write_text(json.dumps(log, indent=1))
    plot_training_curve(log["losses"], log["validation"], adapter_dir / CURVE_FILE, config.loss)
    degraded, restored, clean = preview
    psnr = lambda x: psnr_batch(x[None].float(), clean[None], quantize=True).item()  # noqa: E731
    titles = (f"degraded ({psnr(degraded):.2f} dB)", f"restored ({psnr(restored):.2f} dB)", "clean")
    plot_preview(degraded, restored, clean, adapter_dir / PREVIEW_FILE, titles)
    return adapter_dir


def train(base_model: nn.Module, config: TrainingConfig) -> TrainingResult:
    """Train an AdaptIR adapter on ``base_model`` (a scale-1 restorer or a PeftModel holding the adapter to train).

    Writes ``<output_dir>/checkpoints/step-N`` (resumable) and, at the end, ``<output_dir>/adapter`` with the adapter
    (``save_pretrained``, safetensors), ``README.md`` (its card), ``training_log.json``, ``training_curve.png`` and
    ``preview.png``. Before the first step the output folder is checked (``run_folder``): an earlier run there is
    resumed only with the same settings, moved to ``previous-runs/`` with ``resume=False``, never mixed in.

    Raises :class:`TrainingDivergedError` when the loss is not finite (the last good checkpoint stays),
    :class:`TrainingInterrupted` on Ctrl-C and :class:`OutputNotWritableError` when the folder cannot be written
    (before the first step; at the end, after saving the adapter to a rescue folder that the message names).
    """
    config.validate()
    check_data_sources(config)
    return _Run(base_model, config).execute()


class _Run:
    """One call of :func:`train`: the setup (model, output folder, data, optimizer), the steps, the outputs."""

    def __init__(self, base_model: nn.Module, config: TrainingConfig) -> None:
        self.config = config
        self.accelerator = accelerator = Accelerator(
            mixed_precision=config.mixed_precision, gradient_accumulation_steps=config.grad_accum, cpu=config.cpu
        )
        self.main = accelerator.is_main_process
        set_seed(config.seed)
        self.output_dir = Path(config.output_dir)
        model = wrap_with_adapter(base_model, config)
        window = check_model_fits(model, config.patch_size)
        self.record = {"adapter_config": adapter_settings(model), "base": base_fingerprint(model)}
        start = prepare_run_folder(
            config, model, self.record, accelerator.num_processes, self.main, accelerator.process_index
        )
        accelerator.wait_for_everyone()
        if start.moved_to is not None:
            accelerator.print(f"Moved the earlier run in {self.output_dir} to {start.moved_to}.")
        self.resume_from, self.start = start.checkpoint, start.state["step"]
        self.losses, self.validation = list(start.state["losses"]), list(start.state["validation"])
        self.failed_checkpoints: list[int] = []
        with accelerator.main_process_first():
            train_set, self.val_set = build_datasets(config, window, self.start, accelerator.num_processes)
        loader = torch.utils.data.DataLoader(train_set, batch_size=config.batch_size, num_workers=config.num_workers)
        self.params = [p for p in model.parameters() if p.requires_grad]
        optimizer = adapter_optimizer(self.params, lr=config.lr, weight_decay=config.weight_decay)  # fused AdamW
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(config, accelerator.num_processes))
        model.train()
        prepared = accelerator.prepare(model, optimizer, loader, scheduler)
        self.model, self.optimizer, self.loader, self.scheduler = prepared
        ckpt.register_adapter_only_state(accelerator)
        if self.resume_from is not None:
            accelerator.load_state(str(self.resume_from))
            accelerator.print(f"Resumed from {self.resume_from} (step {self.start} of {config.steps}).")
        self.unwrapped = accelerator.unwrap_model(self.model)
        self.loss_fn = LOSS_FUNCTIONS[config.loss]
        self.bar = None

    def execute(self) -> TrainingResult:
        """Train the remaining steps, then write the adapter (main process)."""
        config = self.config
        show = self.main and config.progress
        self.bar = tqdm(total=config.steps, initial=self.start, disable=not show, desc="train", unit="step")
        preview, step = None, self.start
        try:
            if self.start == 0:
                preview = self.validate(0)
            batches = iter(self.loader)
            for step in range(self.start + 1, config.steps + 1):
                self.train_step(step, batches)
                if step == config.steps or (config.val_every and step % config.val_every == 0):
                    preview = self.validate(step)
                if config.checkpoint_every and (step % config.checkpoint_every == 0 or step == config.steps):
                    self.save_checkpoint(step)
        except KeyboardInterrupt:
            raise self.interrupted(step) from None
        finally:
            self.bar.close()
        if self.start >= config.steps and self.main:  # resumed a finished run: only the preview is missing
            preview = _validate(self.unwrapped, self.val_set, self.accelerator.device, self.loss_fn)[1]
        adapter_dir = self.write_adapter(preview) if self.main else None
        self.accelerator.wait_for_everyone()
        return TrainingResult(self.unwrapped, adapter_dir, config.steps, self.losses, self.validation)

    def save_checkpoint(self, step: int) -> None:
        """``checkpoints/step-<step>``, then prune. In a single-process run a checkpoint that cannot be written (disk
        full, permissions) is reported and training goes on: the trained state is still in memory and the final
        adapter save has its own rescue. Several processes stop instead (their barriers would no longer match)."""
        try:
            ckpt.save_checkpoint(self.accelerator, self.output_dir, step, self.trainer_state(step))
        except OSError as error:
            if self.accelerator.num_processes > 1:
                raise
            shutil.rmtree(ckpt.checkpoint_root(self.output_dir) / f"step-{step}", ignore_errors=True)
            self.failed_checkpoints.append(step)
            last = ckpt.latest_checkpoint(self.output_dir)
            self.bar.write(
                f"Could not write the checkpoint of step {step} ({error}); training goes on and the adapter is saved "
                f"at the end. A resume would start from {last or 'the beginning (no checkpoint yet)'}. Free space or "
                "fix the folder's permissions to have the next checkpoints written.",
                file=sys.stderr,
            )
            return
        if self.main:
            ckpt.prune_checkpoints(self.output_dir, self.config.keep_checkpoints)

    def train_step(self, step: int, batches) -> None:
        """One optimizer step of ``grad_accum`` micro-batches; records its loss."""
        config, accelerator = self.config, self.accelerator
        step_loss = 0.0
        for _ in range(config.grad_accum):
            degraded, clean = next(batches)
            check_batch(degraded, clean, step)
            with accelerator.accumulate(self.model):
                loss = self.loss_fn(reconstruction(self.model(degraded)).float(), clean)
                gathered = accelerator.gather(loss.detach()[None])
                if not torch.isfinite(gathered).all():
                    self.stop_diverged(step, gathered)
                accelerator.backward(loss)
                if accelerator.sync_gradients and config.grad_clip:
                    accelerator.clip_grad_norm_(self.params, config.grad_clip)
                self.optimizer.step()
                self.scheduler.step()
                self.optimizer.zero_grad(set_to_none=True)
            step_loss += gathered.mean().item() / config.grad_accum
        self.losses.append(step_loss)
        self.bar.update(1)
        self.bar.set_postfix(loss=f"{step_loss:.4f}", lr=f"{self.scheduler.get_last_lr()[0]:.2e}")

    def validate(self, step: int) -> tuple | None:
        """Validate on the main process and log the metrics; returns the preview triple (None elsewhere)."""
        result = None
        if self.main:
            metrics, result = _validate(self.unwrapped, self.val_set, self.accelerator.device, self.loss_fn)
            self.validation.append({"step": step, **metrics})
            self.bar.write(
                f"step {step}: val {self.config.loss} {metrics['val_loss']:.5f}, PSNR {metrics['psnr']:.3f} dB, "
                f"SSIM {metrics['ssim']:.4f}"
            )
        self.accelerator.wait_for_everyone()
        return result

    def trainer_state(self, step: int) -> dict[str, Any]:
        """``trainer_state.json``: progress, history and every setting a resume must share."""
        shared = {"num_processes": self.accelerator.num_processes, "config": self.config.to_dict(), **self.record}
        return {"step": step, "losses": self.losses, "validation": self.validation, **shared}

    def write_adapter(self, preview) -> Path:
        """``<output>/adapter``; a rescue folder (named in the raised error) if that cannot be written."""
        log = {**self.trainer_state(self.config.steps), "final": self.validation[-1] if self.validation else None}
        if self.failed_checkpoints:
            log["failed_checkpoints"] = self.failed_checkpoints  # steps whose checkpoint could not be written

        def write(folder: Path) -> Path:
            return _write_outputs(self.unwrapped, folder, self.config, log, preview)

        return save_with_fallback(write, self.output_dir / "adapter", self.output_dir)

    def interrupted(self, step: int) -> TrainingInterrupted:
        last = ckpt.latest_checkpoint(self.output_dir)
        where = (
            f"the last checkpoint is {last} (step {ckpt.read_trainer_state(last)['step']}); the same command resumes "
            "from it"
            if last
            else "no checkpoint was saved yet, so the same command starts over"
        )
        return TrainingInterrupted(f"Interrupted at step {step} of {self.config.steps}: {where}.", step, last)

    def stop_diverged(self, step: int, losses: torch.Tensor) -> None:
        self.bar.close()
        last = ckpt.latest_checkpoint(self.output_dir)
        kept = f"The last good checkpoint is {last}." if last else "No checkpoint had been saved yet."
        message = (
            f"Loss became {losses.tolist()} (not finite) at step {step}; training stopped without saving this state. "
            f"{kept} Lower the learning rate (--lr), keep gradient clipping on (--grad-clip), or use bf16 instead of "
            "fp16."
        )
        if self.main:
            state = self.trainer_state(step - 1)
            (self.output_dir / LOG_FILE).write_text(json.dumps({**state, "stopped": message}, indent=1))
        raise TrainingDivergedError(message)
