"""Training figures: the loss / validation PSNR curve and a degraded | restored | clean preview (matplotlib, Agg).

matplotlib is optional (``pip install peft-adaptir[plots]``); without it the figures are skipped with a warning.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import torch

__all__ = ["plot_training_curve", "plot_preview"]


def _pyplot():
    """matplotlib's pyplot on the Agg backend, or None (with a warning) when matplotlib is not installed."""
    try:
        import matplotlib
    except ImportError:
        warnings.warn(
            "matplotlib is not installed: skipping the training plots (pip install matplotlib).", stacklevel=3
        )
        return None
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def plot_training_curve(
    losses: Sequence[float], validation: Sequence[dict], path: str | Path, loss_name: str = "l1"
) -> Path | None:
    """Training loss per step (raw and smoothed) and validation PSNR per validation step -> a PNG at ``path``.

    ``losses[i]`` is the loss of step ``i + 1``; ``validation`` holds dicts with ``step`` and ``psnr``.
    Returns ``path``, or None when matplotlib is missing.
    """
    plt = _pyplot()
    if plt is None:
        return None
    fig, (ax_loss, ax_psnr) = plt.subplots(1, 2, figsize=(10, 3.6))
    steps = list(range(1, len(losses) + 1))
    ax_loss.plot(steps, losses, color="tab:blue", alpha=0.35, linewidth=0.8, label="per step")
    window = max(1, len(losses) // 50)
    if window > 1:
        smooth = torch.tensor(losses, dtype=torch.float64).unfold(0, window, 1).mean(dim=1).tolist()
        ax_loss.plot(steps[window - 1 :], smooth, color="tab:blue", label=f"mean of {window}")
    ax_loss.set(xlabel="step", ylabel=f"training loss ({loss_name})", title="Training loss")
    if losses and min(losses) > 0 and max(losses) / min(losses) > 10:
        ax_loss.set_yscale("log")
    ax_loss.legend(loc="upper right")
    ax_psnr.plot([v["step"] for v in validation], [v["psnr"] for v in validation], "o-", color="tab:green")
    ax_psnr.set(xlabel="step", ylabel="PSNR (dB, RGB)", title="Validation PSNR")
    for ax in (ax_loss, ax_psnr):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


def plot_preview(
    degraded: torch.Tensor,
    restored: torch.Tensor,
    clean: torch.Tensor,
    path: str | Path,
    titles: Sequence[str] = ("degraded", "restored", "clean"),
) -> Path | None:
    """Three ``(3, H, W)`` images in [0, 1] side by side with ``titles`` -> a PNG at ``path`` (None: no matplotlib)."""
    plt = _pyplot()
    if plt is None:
        return None
    height, width = clean.shape[-2:]
    fig, axes = plt.subplots(1, 3, figsize=(12, 4.3 * height / width + 0.4))
    for ax, image, title in zip(axes, (degraded, restored, clean), titles):
        ax.imshow(image.detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy())
        ax.set_title(title)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return Path(path)
