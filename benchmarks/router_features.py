"""Which features should the router read? The base's pooled shallow features against 14 degradation statistics.

Same training crops (the router's photos, ``crops`` per photo and class), same MLP and optimiser; accuracy on crops of
the held-out photos (astronaut, chelsea, coffee; 20 per photo and class, 128-192 px) and the confusion matrices.
The shallow recipe (``pooled-shallow-v2``, the first shipped router's) is kept here for this comparison only.

    python benchmarks/router_features.py                 # ~3 min on a shared 2-core CPU
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from peft_adaptir.data.sources import SKIMAGE_HELDOUT
from peft_adaptir.routing.features import DegradationStatistics, first_convolution
from peft_adaptir.routing.router import DegradationRouter, RouterConfig
from peft_adaptir.routing.train import EVAL_CROP_SIZES, router_classes, router_examples, router_photos
from peft_adaptir.routing.zoo import load_zoo

ROOT = Path(__file__).resolve().parent.parent


class PooledShallow:
    """``pooled-shallow-v2``: the base's first convolution on the image, pooled per channel (mean, log std, log
    median and log mean of absolute neighbour differences) plus two blockiness ratios: 4 C + 2 numbers."""

    def __init__(self, model: torch.nn.Module, max_side: int = 384) -> None:
        self.conv, self.max_side = first_convolution(model), max_side

    @torch.no_grad()
    def one(self, image: torch.Tensor) -> torch.Tensor:
        h, w = image.shape[-2:]
        top, left = max(0, (h - self.max_side) // 2) // 8 * 8, max(0, (w - self.max_side) // 2) // 8 * 8
        x = image[:, top : top + self.max_side, left : left + self.max_side]
        response = self.conv(x[None])[0].float()  # (C, h, w)
        dx, dy = response[:, :, 1:] - response[:, :, :-1], response[:, 1:, :] - response[:, :-1, :]
        abs_dx, abs_dy = dx.abs(), dy.abs()
        mean_abs = (abs_dx.sum(dim=(1, 2)) + abs_dy.sum(dim=(1, 2))) / (abs_dx[0].numel() + abs_dy[0].numel())
        sample = torch.cat([abs_dx[:, ::4].flatten(1), abs_dy[:, :, ::4].flatten(1)], dim=1)

        def log(v: torch.Tensor) -> torch.Tensor:
            return torch.log(v.clamp_min(1e-6))

        def blockiness(diff: torch.Tensor, dim: int) -> torch.Tensor:
            energy = diff.abs().mean(dim=(0, 1) if dim == -1 else (0, 2))
            border = (torch.arange(energy.numel()) % 8) == 7
            return energy[border].mean() / energy[~border].mean().clamp_min(1e-6)

        per_channel = [response.mean(dim=(1, 2)), log(response.std(dim=(1, 2))), log(sample.median(dim=1).values),
                       log(mean_abs)]  # fmt: skip
        block = log(torch.stack([blockiness(dx, -1), blockiness(dy, -2)]))
        return torch.cat([*per_channel, block])


def fit(feats: torch.Tensor, labels: torch.Tensor, classes: list[str], hidden: int, steps: int = 600):
    """The router's training (``train_router``): full-batch AdamW lr 1e-2, wd 1e-3, cosine, seed 0."""
    torch.manual_seed(0)
    router = DegradationRouter(RouterConfig(classes=classes, in_features=feats.shape[1], hidden=hidden))
    router.set_normalisation(feats)
    optimizer = torch.optim.AdamW(router.parameters(), lr=1e-2, weight_decay=1e-3)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    router.train()
    for _ in range(steps):
        loss = F.cross_entropy(router(feats), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
    return router.eval()


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--crops", type=int, default=12, help="Training crops per photo and class.")
    parser.add_argument("--eval-crops", type=int, default=20, help="Held-out crops per photo and class.")
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    model = load_zoo()
    classes = router_classes(model)
    train_photos, held_out = router_photos(), router_photos(SKIMAGE_HELDOUT)
    results = {"classes": classes, "training_crops_per_photo": args.crops, "eval_crops_per_photo": args.eval_crops}
    for name, extractor in (("pooled-shallow-v2", PooledShallow(model)), ("degradation-statistics-v3",
                                                                          DegradationStatistics())):  # fmt: skip
        start = time.perf_counter()
        feats, labels = router_examples(extractor, classes, train_photos, args.crops, 0)
        held_feats, held_labels = router_examples(extractor, classes, held_out, args.eval_crops, 1,
                                                  crop_sizes=EVAL_CROP_SIZES)  # fmt: skip
        for hidden in (12, 32):
            router = fit(feats, labels, classes, hidden)
            predicted = router.probabilities(held_feats).argmax(-1)
            matrix = torch.zeros(len(classes), len(classes), dtype=torch.long)
            matrix.index_put_((held_labels, predicted), torch.ones_like(predicted), accumulate=True)
            row = {
                "features": feats.shape[1], "hidden": hidden, "parameters": router.num_parameters(),
                "train_accuracy": (router.probabilities(feats).argmax(-1) == labels).float().mean().item(),
                "heldout_accuracy": (predicted == held_labels).float().mean().item(),
                "heldout_crops": len(held_labels), "confusion": matrix.tolist(),
                "seconds": time.perf_counter() - start,
            }  # fmt: skip
            results[f"{name} hidden {hidden}"] = row
            print(f"{name:28s} hidden {hidden:2d}: {row['features']:3d} features, {row['parameters']:5d} parameters,"
                  f" train {row['train_accuracy']:.1%}, held out {row['heldout_accuracy']:.1%} of "
                  f"{row['heldout_crops']}", flush=True)  # fmt: skip
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "router_features.json").write_text(json.dumps(results, indent=1))
    return results


if __name__ == "__main__":
    sys.exit(main() and 0)
