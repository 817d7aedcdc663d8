"""What each optimisation of the AdaptIR branch bought: each part, before (reference code) and after, forward+backward.

One AdaptIR block at the Swin2SR "lightweight" width (C = 60, h = 4), input handed over like a token model does (a
channels-last (B, C, H, W) view of (B, N, C) tokens), interleaved repeats, median per-repeat ratio after / before.

    python benchmarks/branch_parts.py --out benchmarks/results
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from peft_adaptir.tuner.branch import AdaptIRBranch
from peft_adaptir.tuner.reference import reference_branch_forward, reference_frequency_affine

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling op_count module
from op_count import count_ops  # noqa: E402

WHOLE_BRANCH_ROWS = ("whole branch, gated", "whole branch, sum", "whole branch, bottleneck")


def parts(batch: int, size: int) -> dict[str, tuple]:
    torch.manual_seed(0)
    channels, width = 60, 4
    gated = AdaptIRBranch(channels, width, fusion="gated", init_weights=False).train()
    summed = AdaptIRBranch(channels, width, fusion="sum", init_weights=False).train()
    bottleneck = AdaptIRBranch(channels, width, fusion="sum", branches=[], init_weights=False).train()
    tokens = torch.randn(batch, size * size, channels, requires_grad=True)
    view = tokens.transpose(1, 2).reshape(batch, channels, size, size)  # channels-last view, as Swin2SR hands it
    narrow = torch.randn(batch, width, size, size, requires_grad=True)
    local, freq = torch.randn_like(narrow, requires_grad=True), torch.randn_like(narrow, requires_grad=True)
    csm, gates, fam = gated.channel, gated.gates, gated.frequency

    def csm_before(x: torch.Tensor) -> torch.Tensor:
        weights = csm.compress(x).flatten(2).softmax(dim=-1)
        return csm.proj((x.flatten(2) * weights).sum(dim=-1))

    def gates_before(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(gates.channel_interaction(b)) * a + torch.sigmoid(gates.spatial_interaction(a)) * b

    channel = torch.randn(batch, width, 1, 1, requires_grad=True)
    return {
        "whole branch, gated": (lambda: reference_branch_forward(gated, view), lambda: gated(view)),
        "whole branch, sum": (lambda: reference_branch_forward(summed, view), lambda: summed(view)),
        "whole branch, bottleneck": (lambda: reference_branch_forward(bottleneck, view), lambda: bottleneck(view)),
        "down+up 1x1 projections": (
            lambda: F.conv2d(F.conv2d(view, gated.down.weight, gated.down.bias), gated.up.weight),
            lambda: gated._up(
                F.linear(view.permute(0, 2, 3, 1), gated.down.weight.flatten(1), gated.down.bias)
                .permute(0, 3, 1, 2)
                .contiguous(),
                True,
            ),
        ),
        "channel shift (pooling)": (lambda: csm_before(narrow), lambda: csm(narrow)),
        "cross gates": (lambda: gates_before(local, freq), lambda: gates(local, freq)),
        "frequency affine": (lambda: reference_frequency_affine(fam, narrow), lambda: fam(narrow)),
        "sum fusion (stack vs add)": (
            lambda: torch.stack([local, freq, channel * narrow]).sum(0),
            lambda: torch.addcmul(local + freq, channel, narrow),
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    torch.set_num_threads(1)
    results = {}
    for name, (before, after) in parts(args.batch, args.size).items():
        times = {"before": [], "after": []}
        for r in range(args.repeats + 2):
            order = (("before", before), ("after", after))
            for label, fn in order if r % 2 else order[::-1]:  # alternate who goes first
                start = time.perf_counter()
                out = fn()
                out.backward(torch.ones_like(out))
                if r >= 2:
                    times[label].append(time.perf_counter() - start)
        results[name] = {
            "before_ms": 1e3 * statistics.median(times["before"]),
            "after_ms": 1e3 * statistics.median(times["after"]),
            "ratio_after_over_before": statistics.median(a / b for a, b in zip(times["after"], times["before"])),
        }
        print(f"{name:<28} {results[name]}", flush=True)
    ops = operator_counts(args.batch, args.size)
    args.out.mkdir(parents=True, exist_ok=True)
    meta = {"batch": args.batch, "size": args.size, "repeats": args.repeats, "torch": torch.__version__}
    (args.out / "branch_parts.json").write_text(json.dumps({"meta": meta, "parts": results, "ops": ops}, indent=1))


def operator_counts(batch: int, size: int) -> dict[str, dict[str, int]]:
    """Operators (kernels, views excluded) of one whole branch's forward + backward, before and after, in float32 and
    under bfloat16 autocast: deterministic, and what a GPU pays launch overhead for."""
    counts: dict[str, dict[str, int]] = {}
    for name in WHOLE_BRANCH_ROWS:
        for precision in ("fp32", "bf16"):
            for index, label in enumerate(("before", "after")):
                fn = parts(batch, size)[name][index]  # fresh modules and inputs: no gradient to accumulate into

                def work(fn=fn, precision=precision) -> None:
                    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
                        out = fn()
                    out.float().sum().backward()

                counts.setdefault(name, {})[f"{label}_{precision}"] = sum(count_ops(work).values())
        print(f"{name:<28} operators {counts[name]}", flush=True)
    return counts


if __name__ == "__main__":
    main()
