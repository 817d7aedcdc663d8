"""One benchmark run: train one method on one task at one learning rate, then evaluate it on the held-out photos.

A lean plain-torch loop, identical for every method: AdamW (no weight decay), L1 loss, linear warm-up (5% of the
steps unless ``Job.warmup`` says otherwise) then cosine decay to 0, gradient-norm clipping at 1.0 over the trainable
parameters, batches of :class:`peft_adaptir.data.pairs.PatchPairs` read in order (so every method sees the same
patches for a given seed).
Images are ``(B, 3, H, W)`` float in [0, 1] throughout.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import gc
import math
import os
import resource
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from peft_adaptir.data.pairs import EvalPairs, PatchPairs
from peft_adaptir.data.sources import load_skimage_photos, pil_to_tensor
from peft_adaptir.metrics import psnr_batch, ssim_batch
from peft_adaptir.training.datasets import reconstruction

try:  # run as a script from benchmarks/ or imported with benchmarks/ on sys.path
    from quality_methods import load_base, saved_size, trainable_count, wrap
except ImportError:  # pragma: no cover - imported as benchmarks.quality_run
    from .quality_methods import load_base, saved_size, trainable_count, wrap

Y_CROP = 4  # border crop (pixels) of the Y-channel metrics, the restoration papers' convention


@dataclass
class Job:
    """Everything one run needs (picklable, sent to worker processes)."""

    task: str
    method: str
    lr: float
    base_path: str
    steps: int
    batch_size: int
    patch_size: int
    seed: int = 0
    eval_seed: int = 1234
    eval_crop: int | None = 192
    lora_rank: int = 1
    lora_targets: str = "ffn"
    adapter: dict = field(default_factory=dict)
    device: str = "cpu"
    threads: int | None = None
    warmup: float = 0.05  # share of the steps with a linear warm-up


@functools.cache
def photos(split: str) -> tuple[list[torch.Tensor], list[str]]:
    """scikit-image's ``train`` / ``validation`` photos, (3, H, W) float in [0, 1], decoded once per process."""
    dataset = load_skimage_photos(split)
    return [pil_to_tensor(image) for image in dataset["image"]], list(dataset["name"])


@functools.cache
def eval_pairs(task: str, seed: int, crop: int | None) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], list[str]]:
    """The held-out ``(degraded, clean)`` pairs of ``task`` (fixed seed and centre crop) and the photo names."""
    images, names = photos("validation")
    return EvalPairs(images, task, seed=seed, crop=crop).items, names


def _rss_bytes(field_name: str) -> int | None:
    """A ``/proc/self/status`` memory field (VmRSS, VmHWM) in bytes; None where /proc is unavailable."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _reset_peak_memory(device: torch.device) -> tuple[str, int | None]:
    """Start a peak-memory window; returns (method, baseline bytes) for :func:`_peak_memory`."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        return "cuda_max_allocated", torch.cuda.memory_allocated(device)
    gc.collect()
    try:  # hand memory freed by earlier runs in this worker back to the OS, so that it is not counted as "start"
        ctypes.CDLL(ctypes.util.find_library("c")).malloc_trim(0)
    except (OSError, AttributeError, TypeError):
        pass
    try:  # Linux: writing 5 resets the process's peak RSS (VmHWM) to its current RSS
        Path("/proc/self/clear_refs").write_text("5")
        return "vm_hwm", _rss_bytes("VmRSS")
    except OSError:
        return "ru_maxrss", _rss_bytes("VmRSS")


def _peak_memory(device: torch.device, how: str, baseline: int | None) -> dict:
    if how == "cuda_max_allocated":
        peak = torch.cuda.max_memory_allocated(device)
    elif how == "vm_hwm":
        peak = _rss_bytes("VmHWM")
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    mb = lambda b: None if b is None else round(b / 2**20, 1)  # noqa: E731
    return {
        "peak_mem_how": how,
        "peak_mem_mb": mb(peak),
        "peak_mem_over_start_mb": mb(None if peak is None or baseline is None else peak - baseline),
    }


def _schedule(steps: int, share: float = 0.05):
    warmup = max(1, round(share * steps))
    return lambda t: (
        (t + 1) / (warmup + 1) if t < warmup else 0.5 * (1 + math.cos(math.pi * (t - warmup) / max(1, steps - warmup)))
    )


def train(model: nn.Module, job: Job, device: torch.device, images: list | tuple | None = None) -> dict:
    """Train the trainable parameters of ``model`` in place; returns losses, timing and peak memory.

    ``images``: the training photos, ``(3, H, W)`` in [0, 1] (default: scikit-image's training split).
    """
    images = photos("train")[0] if images is None else images
    data = PatchPairs(images, job.task, job.patch_size, seed=job.seed, length=job.steps * job.batch_size)
    loader = torch.utils.data.DataLoader(data, batch_size=job.batch_size, shuffle=False, num_workers=0)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=job.lr, weight_decay=0.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _schedule(job.steps, job.warmup))
    model.train()
    how, baseline = _reset_peak_memory(device)
    losses, step_times = [], []
    for degraded, clean in loader:
        degraded, clean = degraded.to(device), clean.to(device)
        start = time.perf_counter()
        loss = nn.functional.l1_loss(reconstruction(model(degraded)), clean)
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"{job.method} on {job.task} at lr {job.lr}: loss {loss.item()} at step {len(losses) + 1}."
            )
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        step_times.append(time.perf_counter() - start)
        losses.append(loss.item())
    timed = step_times[1:] or step_times  # the first step pays one-off allocation costs
    return {
        "first_loss": losses[0],
        "final_loss": statistics.fmean(losses[-max(1, len(losses) // 10) :]),
        "step_time_s": statistics.median(timed),
        "train_time_s": sum(step_times),
        **_peak_memory(device, how, baseline),
    }


@torch.no_grad()
def evaluate(model: nn.Module | None, job: Job, device: torch.device) -> tuple[dict, torch.Tensor]:
    """Mean PSNR/SSIM (RGB, and Y with a border crop; 8-bit rounded) over the held-out photos.

    ``model=None`` scores the degraded input itself (and adds the first clean photo as ``clean_preview``). Returns
    the metrics and the first photo's result ``(3, H, W)`` uint8.
    """
    items, names = eval_pairs(job.task, job.eval_seed, job.eval_crop)
    if model is not None:
        model.eval()
    scores = {k: [] for k in ("psnr_rgb", "ssim_rgb", "psnr_y", "ssim_y")}
    first = clean_first = None
    for degraded, clean in items:
        x = degraded[None].to(device)
        restored = x if model is None else reconstruction(model(x)).float()
        restored = restored.clamp(0, 1).cpu()
        target = clean[None]
        scores["psnr_rgb"].append(psnr_batch(restored, target, quantize=True).item())
        scores["ssim_rgb"].append(ssim_batch(restored, target, quantize=True).item())
        scores["psnr_y"].append(psnr_batch(restored, target, Y_CROP, test_y_channel=True, quantize=True).item())
        scores["ssim_y"].append(ssim_batch(restored, target, Y_CROP, test_y_channel=True, quantize=True).item())
        if first is None:
            first = (restored[0] * 255).round().to(torch.uint8)
            clean_first = (clean * 255).round().to(torch.uint8)
    metrics = {k: statistics.fmean(v) for k, v in scores.items()}
    metrics["psnr_rgb_per_image"] = dict(zip(names, scores["psnr_rgb"]))
    if model is None:
        metrics["clean_preview"] = clean_first
    return metrics, first


def run_job(job: Job) -> dict:
    """Train (unless ``job.method`` is ``base`` or ``input``) and evaluate; a JSON-ready dict plus ``preview``."""
    if job.threads:
        torch.set_num_threads(job.threads)
    device = torch.device(job.device)
    result = {**asdict(job), "pid": os.getpid()}
    if job.method == "input":
        metrics, preview = evaluate(None, job, device)
        return {**result, **metrics, "preview": preview}
    torch.manual_seed(job.seed)  # same adapter / LoRA initialisation for every task and lr
    base = load_base(job.base_path)
    base_params = sum(p.numel() for p in base.parameters())
    model = wrap(base, job.method, job.adapter, job.lora_rank, job.lora_targets).to(device)
    trainable = trainable_count(model)
    result.update(trainable=trainable, base_params=base_params, trainable_pct=100 * trainable / base_params)
    if job.method != "base":
        result.update(train(model, job, device))
    metrics, preview = evaluate(model, job, device)
    result.update(metrics, file_bytes=saved_size(model, job.method), preview=preview)
    return result
