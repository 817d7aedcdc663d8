"""Blind-restoration benchmark: the shipped router and adapters on held-out photos the router never saw.

    python benchmarks/routing_eval.py                    # ~15 min on a shared 2-core CPU
    python benchmarks/routing_eval.py --crops 2 --size 64 --output /tmp/r   # a quick try

Measures (docs/blind.md): routing accuracy and the confusion matrix over the zoo's tasks plus clean; mean PSNR of
``auto`` (hard) against always choosing the right adapter (the oracle); on two composite degradations, ``soft``
against the best single adapter; the router's parameters against the base's; the latency of ``auto`` against running
the right adapter directly (ratio of medians in this run). Writes ``routing.json`` into --output and
``routing_confusion.png`` into --figures.
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import statistics
import sys
import time
from pathlib import Path

import torch

from peft_adaptir.data.degradations import JPEG, BicubicDown, Compose, GaussianNoise, RainStreaks, degrade
from peft_adaptir.data.pairs import mix_seed
from peft_adaptir.data.sources import SKIMAGE_HELDOUT
from peft_adaptir.inference.pipeline import restore
from peft_adaptir.metrics import psnr_batch
from peft_adaptir.routing.auto import decide, resolve_router
from peft_adaptir.routing.train import EVAL_CROP_SIZES, evaluate_router, router_photos
from peft_adaptir.routing.zoo import load_zoo
from peft_adaptir.tuner.constants import BASE_ADAPTER_NAME

ROOT = Path(__file__).resolve().parent.parent
COMPOSITES = {
    "noise30+jpeg20": lambda: Compose(GaussianNoise(30), JPEG(20)),
    "sr2-noise30+rain": lambda: Compose(BicubicDown(2, True, [GaussianNoise(30)]), RainStreaks.heavy()),
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--crops", type=int, default=8, help="Held-out crops per photo and class for accuracy.")
    parser.add_argument("--size", type=int, default=128, help="Centre crop side of the PSNR images.")
    parser.add_argument("--seed", type=int, default=2024)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--latency-reps", type=int, default=5)
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--figures", type=Path, default=ROOT / "docs" / "figures")
    return parser.parse_args(argv)


def centre(image: torch.Tensor, size: int) -> torch.Tensor:
    h, w = image.shape[-2:]
    top, left = (h - size) // 2 // 8 * 8, (w - size) // 2 // 8 * 8
    return image[:, top : top + size, left : left + size].contiguous()


def psnr(x: torch.Tensor, clean: torch.Tensor) -> float:
    return psnr_batch(x[None], clean[None], quantize=True).item()


def confusion_plot(matrix: torch.Tensor, classes: list[str], path: Path, accuracy: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rates = matrix.float() / matrix.sum(1, keepdim=True).clamp_min(1)
    fig, ax = plt.subplots(figsize=(6.4, 5.4))
    ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    for i in range(len(classes)):
        for j in range(len(classes)):
            color = "white" if rates[i, j] > 0.5 else "black"
            ax.text(j, i, f"{int(matrix[i, j])}", ha="center", va="center", color=color, fontsize=9)
    ax.set_xticks(range(len(classes)), classes, rotation=40, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("router's choice")
    ax.set_ylabel("true degradation")
    ax.set_title(f"Routing on held-out photos: {accuracy:.1%} correct")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def routing_accuracy(model, router, args) -> dict:
    photos = router_photos(SKIMAGE_HELDOUT)
    accuracy, matrix = evaluate_router(model, router, photos, args.crops, seed=args.seed, crop_sizes=EVAL_CROP_SIZES)
    return {
        "accuracy": accuracy,
        "confusion": matrix.tolist(),
        "classes": router.classes,
        "examples": int(matrix.sum()),
    }


def auto_vs_oracle(model, router, args) -> dict:
    """Per task and held-out photo: PSNR with the right adapter, with ``auto`` (hard), and of the base alone."""
    photos = [centre(p, args.size) for p in router_photos(SKIMAGE_HELDOUT)]
    rows = []
    for t, task in enumerate(router.classes):
        for i, (name, clean) in enumerate(zip(SKIMAGE_HELDOUT, photos)):
            degraded = clean if task == BASE_ADAPTER_NAME else degrade(clean, task, seed=mix_seed(args.seed, t, i))
            rows.append({"task": task, "photo": name, "clean": clean, "degraded": degraded})
    images = [row["degraded"] for row in rows]
    oracle = restore(model, images, adapter_names=[row["task"] for row in rows])
    auto, decisions = restore(model, images, adapter="auto", router=router)
    base = restore(model, images, adapter_names=[BASE_ADAPTER_NAME] * len(rows))
    result = []
    for row, o, a, b, d in zip(rows, oracle, auto, base, decisions):
        result.append({
            "task": row["task"], "photo": row["photo"], "input": psnr(row["degraded"], row["clean"]),
            "oracle": psnr(o, row["clean"]), "auto": psnr(a, row["clean"]), "base": psnr(b, row["clean"]),
            "chosen": d.task, "probability": d.probability, "mode": d.mode,
        })  # fmt: skip
    tasks = [r for r in result if r["task"] != BASE_ADAPTER_NAME]
    mean = lambda rs, key: sum(r[key] for r in rs) / len(rs)  # noqa: E731
    return {
        "rows": result, "size": args.size,
        "mean_over_tasks": {key: mean(tasks, key) for key in ("input", "base", "oracle", "auto")},
        "auto_minus_oracle_db": mean(tasks, "auto") - mean(tasks, "oracle"),
        "mean_with_clean": {key: mean(result, key) for key in ("input", "base", "oracle", "auto")},
    }  # fmt: skip


def composites(model, router, args) -> dict:
    """Soft (top-2 blend) against each single adapter and hard auto, on degradations no single adapter was made for."""
    photos = [centre(p, args.size) for p in router_photos(SKIMAGE_HELDOUT)]
    tasks = router.config.tasks
    out = {}
    for c, (name, build) in enumerate(COMPOSITES.items()):
        degraded = [build()(clean, torch.Generator().manual_seed(mix_seed(args.seed, 99, c, i))) for i, clean in
                    enumerate(photos)]  # fmt: skip
        scores = {"input": [psnr(d, p) for d, p in zip(degraded, photos)]}
        for task in [*tasks, BASE_ADAPTER_NAME]:
            restored = restore(model, degraded, adapter_names=[task] * len(degraded))
            scores[task] = [psnr(r, p) for r, p in zip(restored, photos)]
        for mode in ("soft", "hard"):
            restored, decisions = restore(model, degraded, adapter="auto", router=router, routing=mode)
            scores[f"auto-{mode}"] = [psnr(r, p) for r, p in zip(restored, photos)]
            scores[f"auto-{mode}-decisions"] = [d.describe() for d in decisions]
        means = {k: sum(v) / len(v) for k, v in scores.items() if not k.endswith("decisions")}
        best = max(tasks, key=lambda t: means[t])
        out[name] = {"scores": scores, "mean": means, "best_single": best,
                     "soft_minus_best_single_db": means["auto-soft"] - means[best],
                     "blend_grid": blend_grid(model, degraded, photos, tasks, means)}  # fmt: skip
    return out


BLEND_WEIGHTS = ((1.0, 1.0), (0.75, 0.75), (0.5, 0.5), (1.0, 0.5), (0.5, 1.0))


@torch.no_grad()
def blend_grid(model, degraded, photos, tasks, means) -> list[dict]:
    """Fixed blends of the two best single adapters (exact per-sample weights), mean PSNR minus the best single's:
    what soft mixing could reach on this composite if the router's probabilities gave these weights."""
    first, second = sorted(tasks, key=lambda t: -means[t])[:2]
    batch = torch.stack(degraded)
    rows = []
    for w1, w2 in BLEND_WEIGHTS:
        weights = [{first: w1, second: w2}] * len(degraded)
        restored = model(batch, adapter_weights=weights).reconstruction.clamp(0, 1)
        mean = sum(psnr(r, p) for r, p in zip(restored, photos)) / len(photos)
        rows.append({"weights": {first: w1, second: w2}, "psnr": mean, "minus_best_single_db": mean - means[first]})
    return rows


def latency(model, router, args) -> dict:
    """Median seconds of restoring one 256 x 256 image: the right adapter named, against ``auto`` (hard)."""
    clean = centre(router_photos(SKIMAGE_HELDOUT[:1])[0], 256)
    image = degrade(clean, "denoise-50", seed=0)
    times = {"named": [], "auto": [], "decide": []}
    for _ in range(args.latency_reps):
        start = time.perf_counter()
        restore(model, [image], adapter_names=["denoise-50"])
        times["named"].append(time.perf_counter() - start)
        start = time.perf_counter()
        restore(model, [image], adapter="auto", router=router)
        times["auto"].append(time.perf_counter() - start)
        start = time.perf_counter()
        decide(model, router, [image])
        times["decide"].append(time.perf_counter() - start)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"median_s": med, "auto_over_named": med["auto"] / med["named"],
            "decide_over_named": med["decide"] / med["named"], "reps": args.latency_reps}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    model, router = load_zoo(), resolve_router(None)
    base_params = sum(p.numel() for n, p in model.get_base_model().named_parameters() if "adaptir_" not in n)
    result = {
        "command": shlex.join(["python", "benchmarks/routing_eval.py", *(sys.argv[1:] if argv is None else argv)]),
        "machine": {"platform": platform.platform(), "threads": args.threads, "torch": torch.__version__},
        "router": {"classes": router.classes, "parameters": router.num_parameters(), "base_parameters": base_params,
                   "share_of_base": router.num_parameters() / base_params, "config": router.config.training},
    }  # fmt: skip
    result["routing"] = routing_accuracy(model, router, args)
    print(f"routing accuracy {result['routing']['accuracy']:.1%}", flush=True)
    result["auto_vs_oracle"] = auto_vs_oracle(model, router, args)
    print(f"auto - oracle: {result['auto_vs_oracle']['auto_minus_oracle_db']:+.2f} dB", flush=True)
    result["composites"] = composites(model, router, args)
    for name, comp in result["composites"].items():
        print(f"{name}: soft - best single ({comp['best_single']}): {comp['soft_minus_best_single_db']:+.2f} dB")
    result["latency"] = latency(model, router, args)
    print(f"latency auto / named: {result['latency']['auto_over_named']:.3f}", flush=True)
    result["wall_s"] = time.perf_counter() - start
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "routing.json").write_text(json.dumps(result, indent=1))
    routing = result["routing"]
    confusion_plot(torch.tensor(routing["confusion"]), routing["classes"], args.figures / "routing_confusion.png",
                   routing["accuracy"])  # fmt: skip
    print(f"wrote {args.output / 'routing.json'} and {args.figures / 'routing_confusion.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
