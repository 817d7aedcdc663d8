"""Switching tasks at serving speed: AdaptIR against peft LoRA on the same model, in one run (issue 17).

Lightweight Swin2SR x2 shape (random weights, CPU): ``set_adapter`` between loaded adapters, loading a saved adapter
into a prepared model, and a server-like loop of 100 requests of mixed tasks (requests/s, p50/p95 latency).
AdaptIR is timed on its fast paths (cached layers, ``load_adapter_fast``, ``AdapterBank``) and on peft's generic
paths; LoRA (FFN Linear layers) on peft's. Medians of interleaved repeats; ratios are what to read on a shared machine.

    python benchmarks/switching.py --out benchmarks/results
    python benchmarks/switching.py --quick --out /tmp/switching
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from peft import LoraConfig, get_peft_model
from peft.tuners.tuners_utils import BaseTuner
from speed import SHAPES
from transformers import Swin2SRConfig, Swin2SRForImageSuperResolution

import peft_adaptir  # noqa: F401  (registers the method)
from peft_adaptir import AdaptIRConfig
from peft_adaptir.tuner.fast_load import AdapterBank, load_adapter_fast

TASKS = ("derain", "denoise", "deblur")


def base_model(shape: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return Swin2SRForImageSuperResolution(Swin2SRConfig(image_size=64, **SHAPES[shape])).eval()


def with_adapters(shape: str, config_of, root: Path, tag: str):
    """A PeftModel holding every task adapter (perturbed), each also saved to root/<tag>-<task>."""
    model = get_peft_model(base_model(shape), config_of(), adapter_name=TASKS[0])
    for task in TASKS[1:]:
        model.add_adapter(task, config_of())
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.requires_grad or any(f".{t}." in name for t in TASKS):
                param.add_(0.01 * torch.randn_like(param))
    for task in TASKS:
        model.save_pretrained(root / tag, selected_adapters=[task])
    return model.eval()


def median_ms(fn, repeats: int, after=None) -> float:
    """Median wall time of ``fn()`` in ms; ``after()`` (untimed) runs after each call."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
        if after is not None:
            after()
    return statistics.median(times)


def bench_set_adapter(adaptir, lora, repeats: int) -> dict[str, float]:
    state = {"i": 0}

    def switch(model, generic=False):
        def run():
            state["i"] += 1
            task = TASKS[state["i"] % 2]
            if generic:  # peft's own walk over every module
                BaseTuner.set_adapter(model.base_model, task, inference_mode=True)
            else:
                model.set_adapter(task, inference_mode=True)

        return run

    return {
        "AdaptIR (cached layers)": median_ms(switch(adaptir), repeats),
        "AdaptIR (peft's generic walk)": median_ms(switch(adaptir, generic=True), repeats),
        "LoRA (peft)": median_ms(switch(lora), repeats),
    }


def bench_load(adaptir, lora, root: Path, repeats: int) -> dict[str, float]:
    def load(model, source, fast):
        def run():
            if fast:
                load_adapter_fast(model, source, "loaded")
            else:
                model.load_adapter(source, "loaded")

        return run

    def deleter(model):
        return lambda: model.delete_adapter("loaded")  # not timed: only the load is

    return {
        "AdaptIR load_adapter_fast": median_ms(
            load(adaptir, root / "adaptir" / TASKS[1], True), repeats, deleter(adaptir)
        ),
        "AdaptIR peft load_adapter": median_ms(
            load(adaptir, root / "adaptir" / TASKS[1], False), repeats, deleter(adaptir)
        ),
        "LoRA peft load_adapter": median_ms(load(lora, root / "lora" / TASKS[1], False), repeats, deleter(lora)),
    }


def bench_server(adaptir, lora, requests: int, size: int) -> dict[str, dict[str, float]]:
    rng = random.Random(0)
    tasks = [rng.choice(TASKS) for _ in range(requests)]
    images = [torch.rand(1, 3, size, size) for _ in range(requests)]
    bank = AdapterBank(adaptir)

    def loop(serve):
        latencies = []
        start = time.perf_counter()
        for task, image in zip(tasks, images):
            t0 = time.perf_counter()
            serve(task, image)
            latencies.append((time.perf_counter() - t0) * 1e3)
        total = time.perf_counter() - start
        q = statistics.quantiles(latencies, n=20)
        return {"requests_per_s": requests / total, "p50_ms": statistics.median(latencies), "p95_ms": q[18]}

    @torch.inference_mode()
    def generic(task, image):
        BaseTuner.set_adapter(adaptir.base_model, task, inference_mode=True)
        adaptir(image)

    @torch.inference_mode()
    def with_lora(task, image):
        lora.set_adapter(task, inference_mode=True)
        lora(image)

    return {
        "AdaptIR AdapterBank": loop(lambda task, image: bank(image, task)),
        "AdaptIR set_adapter per request (peft's walk)": loop(generic),
        "LoRA set_adapter per request": loop(with_lora),
    }


def markdown(results: dict) -> str:
    lines = ["| operation | time (ms) |", "|---|---:|"]
    for section in ("set_adapter", "load"):
        for name, value in results[section].items():
            lines.append(f"| {section}: {name} | {value:.3f} |")
    lines += ["", "| server loop | requests/s | p50 (ms) | p95 (ms) |", "|---|---:|---:|---:|"]
    for name, row in results["server"].items():
        lines.append(f"| {name} | {row['requests_per_s']:.1f} | {row['p50_ms']:.2f} | {row['p95_ms']:.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--quick", action="store_true", help="tiny shape, few repeats")
    args = parser.parse_args(argv)
    shape, repeats, requests, size = ("tiny", 10, 20, 16) if args.quick else ("lightweight", 50, 100, 32)
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        adaptir = with_adapters(shape, AdaptIRConfig, root, "adaptir")
        lora = with_adapters(
            shape, lambda: LoraConfig(r=4, target_modules=["intermediate.dense", "output.dense"]), root, "lora"
        )
        results = {
            "shape": shape,
            "torch": torch.__version__,
            "set_adapter": bench_set_adapter(adaptir, lora, repeats * 4),
            "load": bench_load(adaptir, lora, root, max(3, repeats // 5)),
            "server": bench_server(adaptir, lora, requests, size),
        }
    s, load = results["set_adapter"], results["load"]
    results["ratios"] = {
        "set_adapter LoRA / AdaptIR": s["LoRA (peft)"] / s["AdaptIR (cached layers)"],
        "load LoRA / AdaptIR fast": load["LoRA peft load_adapter"] / load["AdaptIR load_adapter_fast"],
    }
    table = markdown(results)
    print(table)
    print(json.dumps(results["ratios"], indent=1))
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "switching.json").write_text(json.dumps(results, indent=1))
        (args.out / "switching.md").write_text(table + "\n")
    return results


if __name__ == "__main__":
    sys.exit(main() and 0)
