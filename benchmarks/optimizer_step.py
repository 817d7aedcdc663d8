"""What the fused optimizer buys: one AdamW step over the adapter's tensors, per-tensor loop vs foreach vs fused.

The lightweight Swin2SR shape (24 blocks) with the plain bottleneck adapter, AdaptIR ``sum`` and ``gated``; random
gradients; interleaved repeats, median process CPU time (one thread). ``peft_adaptir.adapter_optimizer`` is the fused
one.

    python benchmarks/optimizer_step.py --out benchmarks/results
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from peft import get_peft_model

from peft_adaptir import AdaptIRConfig

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling speed module
from speed import ADAPTER_METHODS, build_base  # noqa: E402

VARIANTS = {"per_tensor_loop": dict(foreach=False), "foreach": dict(foreach=True), "fused": dict(fused=True)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    torch.set_num_threads(1)
    base = build_base("lightweight", "cpu")
    results = {}
    for method, kwargs in ADAPTER_METHODS.items():
        model = get_peft_model(copy.deepcopy(base), AdaptIRConfig(**kwargs))
        params = [p for p in model.parameters() if p.requires_grad]
        for p in params:
            p.grad = torch.randn_like(p)
        optimizers = {name: torch.optim.AdamW(params, lr=1e-5, **v) for name, v in VARIANTS.items()}
        times: dict[str, list[float]] = {name: [] for name in optimizers}
        for repeat in range(args.repeats + 1):
            for name, optimizer in optimizers.items():
                start = time.process_time()
                optimizer.step()
                if repeat:  # the first step creates the optimizer state
                    times[name].append(time.process_time() - start)
        results[method] = {"tensors": len(params), **{f"{n}_ms": 1e3 * statistics.median(t) for n, t in times.items()}}
        print(method, {k: round(v, 2) for k, v in results[method].items()}, flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    meta = {"shape": "lightweight", "repeats": args.repeats, "threads": 1, "torch": torch.__version__}
    (args.out / "optimizer_step.json").write_text(json.dumps({"meta": meta, "methods": results}, indent=1))


if __name__ == "__main__":
    main()
