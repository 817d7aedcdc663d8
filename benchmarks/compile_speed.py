"""What ``torch.compile`` buys a model carrying an adapter: eager against compiled, one method at a time.

For the plain bottleneck adapter and AdaptIR ``sum`` / ``gated`` on the lightweight Swin2SR shape: the training step
(forward, backward, fused AdamW) and inference, eager and ``torch.compile``'d, interleaved repeats after the compiled
model has warmed up (compile time reported separately). One method at a time, with Dynamo's caches reset in between,
so no compiled model recompiles because of another. The frequency step of AdaptIR runs eagerly inside the compiled
model (a graph break, see ``peft_adaptir.tuner.branch.FrequencyAffine``).

    python benchmarks/compile_speed.py --out benchmarks/results                  # CPU, batch 4 of 48 x 48
    python benchmarks/compile_speed.py --device cuda --precision bf16 --out DIR   # GPU
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import torch
from peft import get_peft_model

from peft_adaptir import AdaptIRConfig

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling speed module
from speed import ADAPTER_METHODS, autocast, build_base, interleaved, summarise, sync, train_step_fn  # noqa: E402


def bench_method(base, method: str, args: argparse.Namespace, device: str) -> dict:
    """Eager vs compiled training step and inference of one adapted model; compile times of the first calls."""
    torch._dynamo.reset()
    model = get_peft_model(copy.deepcopy(base), AdaptIRConfig(**ADAPTER_METHODS[method])).to(device)
    compiled = torch.compile(model, dynamic=False)  # static shapes: symbolic ones took minutes to compile here
    torch.manual_seed(1)
    x_train = torch.rand(args.train_batch, 3, args.train_size, args.train_size, device=device)
    x_infer = torch.rand(1, 3, args.infer_size, args.infer_size, device=device)
    model.train()
    steps = {name: train_step_fn(m, method, x_train, args.precision, device)[0] for name, m in
             (("eager", model), ("compiled", compiled))}  # fmt: skip
    first = time.perf_counter()
    steps["compiled"]()
    sync(device)
    compile_train_s = time.perf_counter() - first
    training = summarise(interleaved(steps, device, args.repeats, warmup=2), ["eager"])

    model.eval()

    def infer(m) -> None:
        with torch.inference_mode(), autocast(device, args.precision):
            m(pixel_values=x_infer)

    first = time.perf_counter()
    infer(compiled)
    sync(device)
    compile_infer_s = time.perf_counter() - first
    inference = summarise(
        interleaved({"eager": lambda: infer(model), "compiled": lambda: infer(compiled)}, device, args.repeats, 2),
        ["eager"],
    )
    torch._dynamo.reset()
    return {"compile_train_s": compile_train_s, "compile_infer_s": compile_infer_s, "training": training,
            "inference": inference}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--repeats", type=int, default=6)
    parser.add_argument("--train-batch", type=int, default=4)
    parser.add_argument("--train-size", type=int, default=48)
    parser.add_argument("--infer-size", type=int, default=128)
    parser.add_argument("--methods", nargs="*", default=list(ADAPTER_METHODS))
    args = parser.parse_args()
    torch.set_num_threads(1)
    base = build_base("lightweight", args.device)
    results = {"meta": {**{k: str(v) for k, v in vars(args).items()}, "torch": torch.__version__}, "methods": {}}
    for method in args.methods:
        results["methods"][method] = row = bench_method(base, method, args, args.device)
        print(f"{method}: compile {row['compile_train_s']:.0f} s (train) + {row['compile_infer_s']:.0f} s (infer); "
              f"compiled/eager training {row['training']['compiled']['ratio_vs_eager']:.3f}, "
              f"inference {row['inference']['compiled']['ratio_vs_eager']:.3f}", flush=True)  # fmt: skip
        args.out.mkdir(parents=True, exist_ok=True)
        name = f"compile_speed_{args.device}_{args.precision}.json"
        (args.out / name).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
