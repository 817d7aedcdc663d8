"""``train(base_model, config)``: fit an AdaptIR adapter on a degradation task with Accelerate.

One process on a CPU or GPU, or several (``accelerate launch``, DistributedDataParallel). The data order is a pure
function of ``(seed, step)``: optimizer step ``s`` of process ``r`` (of ``n``) with ``a`` accumulation micro-batches
of ``b`` patches reads the training items ``((s - 1) * a * n + m * n + r) * b ... + b - 1`` for micro-batch ``m``,
and item ``i`` is fixed by ``(seed, i)`` (:class:`peft_adaptir.patches.PatchPairs`). A resumed run therefore sees
exactly the batches an uninterrupted one would. Only the main process writes files (and validates).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from peft import PeftModel, get_peft_model
from torch import nn
from tqdm.auto import tqdm

from ..metrics import psnr_batch, ssim_batch
from ..tuner.config import AdaptIRConfig
from . import checkpoints as ckpt
from .config import TrainingConfig
from .datasets import build_datasets, check_batch, check_model_fits, reconstruction
from .optim import adapter_optimizer
from .plots import plot_preview, plot_training_curve

__all__ = ["TrainingConfig", "TrainingDivergedError", "TrainingResult", "train", "wrap_with_adapter", "LOSS_FUNCTIONS"]

LOG_FILE = "training_log.json"
CURVE_FILE = "training_curve.png"
PREVIEW_FILE = "preview.png"


class TrainingDivergedError(RuntimeError):
    """The loss became NaN or infinite; the run stopped without saving that state."""


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


def _write_outputs(model, output_dir: Path, config: TrainingConfig, log: dict, preview) -> Path:
    adapter_dir = output_dir / "adapter"
    model.save_pretrained(str(adapter_dir), safe_serialization=True)
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
    (``save_pretrained``, safetensors), ``training_log.json``, ``training_curve.png`` and ``preview.png``.
    Raises :class:`TrainingDivergedError` when the loss is not finite (the last good checkpoint stays).
    """
    config.validate()
    accelerator = Accelerator(
        mixed_precision=config.mixed_precision, gradient_accumulation_steps=config.grad_accum, cpu=config.cpu
    )
    set_seed(config.seed)
    output_dir = Path(config.output_dir)
    model = wrap_with_adapter(base_model, config)
    window = check_model_fits(model, config.patch_size)
    resume_from = ckpt.latest_checkpoint(output_dir) if config.resume else None
    state = ckpt.read_trainer_state(resume_from) if resume_from else {"step": 0, "losses": [], "validation": []}
    _check_resumable(state, config, accelerator.num_processes, resume_from)
    start = state["step"]
    with accelerator.main_process_first():
        train_set, val_set = build_datasets(config, window, start, accelerator.num_processes)
    loader = torch.utils.data.DataLoader(train_set, batch_size=config.batch_size, num_workers=config.num_workers)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = adapter_optimizer(params, lr=config.lr, weight_decay=config.weight_decay)  # fused AdamW
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(config, accelerator.num_processes))
    model.train()
    model, optimizer, loader, scheduler = accelerator.prepare(model, optimizer, loader, scheduler)
    ckpt.register_adapter_only_state(accelerator)
    if resume_from is not None:
        accelerator.load_state(str(resume_from))
        accelerator.print(f"Resumed from {resume_from} (step {start} of {config.steps}).")
    unwrapped = accelerator.unwrap_model(model)
    loss_fn = LOSS_FUNCTIONS[config.loss]
    losses, validation = list(state["losses"]), list(state["validation"])
    main = accelerator.is_main_process

    def validate(step: int):
        result = None
        if main:
            metrics, result = _validate(unwrapped, val_set, accelerator.device, loss_fn)
            validation.append({"step": step, **metrics})
            bar.write(f"step {step}: val {config.loss} {metrics['val_loss']:.5f}, PSNR {metrics['psnr']:.3f} dB, "
                      f"SSIM {metrics['ssim']:.4f}")  # fmt: skip
        accelerator.wait_for_everyone()
        return result

    def trainer_state(step: int) -> dict[str, Any]:
        shared = {"num_processes": accelerator.num_processes, "config": config.to_dict()}
        return {"step": step, "losses": losses, "validation": validation, **shared}

    bar = tqdm(total=config.steps, initial=start, disable=not (main and config.progress), desc="train", unit="step")
    preview = validate(0) if start == 0 else None
    batches = iter(loader)
    for step in range(start + 1, config.steps + 1):
        step_loss = 0.0
        for _ in range(config.grad_accum):
            degraded, clean = next(batches)
            check_batch(degraded, clean, step)
            with accelerator.accumulate(model):
                loss = loss_fn(reconstruction(model(degraded)).float(), clean)
                gathered = accelerator.gather(loss.detach()[None])
                if not torch.isfinite(gathered).all():
                    _stop_diverged(accelerator, output_dir, step, gathered, trainer_state(step - 1), bar)
                accelerator.backward(loss)
                if accelerator.sync_gradients and config.grad_clip:
                    accelerator.clip_grad_norm_(params, config.grad_clip)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
            step_loss += gathered.mean().item() / config.grad_accum
        losses.append(step_loss)
        bar.update(1)
        bar.set_postfix(loss=f"{step_loss:.4f}", lr=f"{scheduler.get_last_lr()[0]:.2e}")
        if step == config.steps or (config.val_every and step % config.val_every == 0):
            preview = validate(step)
        if config.checkpoint_every and (step % config.checkpoint_every == 0 or step == config.steps):
            ckpt.save_checkpoint(accelerator, output_dir, step, trainer_state(step))
            if main:
                ckpt.prune_checkpoints(output_dir, config.keep_checkpoints)
    bar.close()
    if start >= config.steps and main:  # resumed a finished run: only the preview is missing
        preview = _validate(unwrapped, val_set, accelerator.device, loss_fn)[1]
    adapter_dir = None
    if main:
        log = {**trainer_state(config.steps), "final": validation[-1] if validation else None}
        adapter_dir = _write_outputs(unwrapped, output_dir, config, log, preview)
    accelerator.wait_for_everyone()
    return TrainingResult(unwrapped, adapter_dir, config.steps, losses, validation)


def _check_resumable(state: dict, config: TrainingConfig, num_processes: int, checkpoint: Path | None) -> None:
    if checkpoint is None:
        return
    saved = state.get("config", {})
    keys = ("task", "data", "degraded_data", "patch_size", "batch_size", "grad_accum", "seed", "steps", "lr")
    changed = [f"{k}: {saved.get(k)!r} -> {getattr(config, k)!r}" for k in keys if saved.get(k) != getattr(config, k)]
    if state.get("num_processes", num_processes) != num_processes:
        changed.append(f"num_processes: {state['num_processes']} -> {num_processes}")
    if changed:
        raise ValueError(
            f"Cannot resume from {checkpoint}: settings differ ({'; '.join(changed)}), so the run would not continue "
            "the same schedule and data order. Use the same settings, another output_dir, or resume=False "
            "(--no-resume) to start over."
        )


def _stop_diverged(accelerator, output_dir: Path, step: int, losses: torch.Tensor, state: dict, bar) -> None:
    bar.close()
    last = ckpt.latest_checkpoint(output_dir)
    kept = f"The last good checkpoint is {last}." if last else "No checkpoint had been saved yet."
    message = (
        f"Loss became {losses.tolist()} (not finite) at step {step}; training stopped without saving this state. "
        f"{kept} Lower the learning rate (--lr), keep gradient clipping on (--grad-clip), or use bf16 instead of fp16."
    )
    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / LOG_FILE).write_text(json.dumps({**state, "stopped": message}, indent=1))
    raise TrainingDivergedError(message)
