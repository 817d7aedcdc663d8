"""Outputs of ``adapt_quality.py``: the markdown table, the PSNR bar plot per task, and the image grid."""

from __future__ import annotations

import statistics
from pathlib import Path

import torch

try:
    from quality_methods import LABELS
except ImportError:  # pragma: no cover
    from .quality_methods import LABELS


def _size(num_bytes: int | None) -> str:
    if num_bytes is None:
        return "-"
    return f"{num_bytes / 1024:.1f} KiB" if num_bytes < 2**20 else f"{num_bytes / 2**20:.2f} MiB"


def averages(best: dict[str, dict[str, dict]], methods: list[str]) -> dict[str, dict[str, float]]:
    """Mean over tasks of each method's best-lr metrics."""
    keys = ("psnr_rgb", "ssim_rgb", "psnr_y", "ssim_y")
    return {m: {k: statistics.fmean(best[t][m][k] for t in best) for k in keys} for m in methods}


def markdown_table(best: dict[str, dict[str, dict]], methods: list[str]) -> str:
    """One row per task and method (best learning rate), then the mean over tasks."""
    head = (
        "| task | method | best lr | PSNR RGB | SSIM RGB | PSNR Y | SSIM Y | trainable params | % of base "
        "| weights file | step time | peak mem (over start) |\n"
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    )
    rows = [head]
    for task, by_method in best.items():
        for m in methods:
            r = by_method[m]
            trained = r.get("step_time_s") is not None
            lr = f"{r['lr']:.1e}" if trained else "-"
            params = f"{r['trainable']:,}" if "trainable" in r else "-"
            pct = f"{r['trainable_pct']:.2f}%" if "trainable_pct" in r else "-"
            step = f"{1000 * r['step_time_s']:.0f} ms" if trained else "-"
            mem = f"{r['peak_mem_mb']:.0f} MB ({r['peak_mem_over_start_mb']:+.0f})" if trained else "-"
            rows.append(
                f"| {task} | {LABELS[m]} | {lr} | {r['psnr_rgb']:.2f} | {r['ssim_rgb']:.4f} | {r['psnr_y']:.2f} "
                f"| {r['ssim_y']:.4f} | {params} | {pct} | {_size(r.get('file_bytes'))} | {step} | {mem} |"
            )
    mean = averages(best, methods)
    rows += ["", "| method | mean PSNR RGB | mean SSIM RGB | mean PSNR Y | mean SSIM Y |", "|---|---:|---:|---:|---:|"]
    for m in methods:
        a = mean[m]
        rows.append(
            f"| {LABELS[m]} | {a['psnr_rgb']:.2f} | {a['ssim_rgb']:.4f} | {a['psnr_y']:.2f} | {a['ssim_y']:.4f} |"
        )
    return "\n".join(rows) + "\n"


def psnr_plot(best: dict[str, dict[str, dict]], methods: list[str], path: Path, title: str) -> None:
    """One panel per task: a bar per method, PSNR RGB (dB) on held-out photos, the value written on top."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(best)
    fig, axes = plt.subplots(1, len(tasks), figsize=(3.6 * len(tasks), 3.8), squeeze=False)
    colors = plt.get_cmap("tab10").colors
    for ax, task in zip(axes[0], tasks):
        values = [best[task][m]["psnr_rgb"] for m in methods]
        bars = ax.bar(range(len(methods)), values, color=[colors[i % 10] for i in range(len(methods))])
        low, high = min(values), max(values)
        ax.set_ylim(low - 0.15 * (high - low + 0.1), high + 0.15 * (high - low + 0.1))
        for bar, value in zip(bars, values):
            ax.text(bar.get_x() + bar.get_width() / 2, value, f"{value:.2f}", ha="center", va="bottom", fontsize=7)
        ax.set_xticks(range(len(methods)), [LABELS[m] for m in methods], rotation=60, ha="right", fontsize=8)
        ax.set_title(task, fontsize=10)
        ax.set_ylabel("PSNR RGB (dB)" if task == tasks[0] else "")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def image_grid(
    previews: dict[str, dict[str, torch.Tensor]], scores: dict[str, dict[str, float]], columns: list[str], path: Path
) -> None:
    """Rows: tasks; columns: ``columns`` (input, methods, clean). ``previews[task][column]``: (3, H, W) uint8."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(previews)
    fig, axes = plt.subplots(len(tasks), len(columns), figsize=(1.9 * len(columns), 2.05 * len(tasks)), squeeze=False)
    for row, task in zip(axes, tasks):
        for ax, column in zip(row, columns):
            ax.imshow(previews[task][column].permute(1, 2, 0).numpy())
            ax.set_xticks([])
            ax.set_yticks([])
            score = scores[task].get(column)
            label = LABELS.get(column, column)
            ax.set_title(label if score is None else f"{label}\n{score:.2f} dB", fontsize=7)
        row[0].set_ylabel(task, fontsize=8)
    fig.suptitle("one held-out photo; dB: mean PSNR RGB over all held-out photos", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    shrink_png(path)


def shrink_png(path: Path) -> None:
    """Rewrite a PNG with a 256-colour palette (about 4x smaller; fine for a figure kept in git)."""
    from PIL import Image

    with Image.open(path) as image:
        small = image.convert("RGB").quantize(256, method=Image.Quantize.MEDIANCUT)
    small.save(path, optimize=True)
