"""Speed and cost of AdaptIR against its baselines, in one run (issue 9 and issue 4's benchmark).

For the ~1M "lightweight" and ~12M "classical" Swin2SR shapes (random weights): training step time and memory of
AdaptIR ``sum`` / ``gated`` against the plain bottleneck adapter, peft LoRA at a matched parameter count (FFN Linear
layers) and full fine-tuning; inference latency of each adapted model against the base; ``set_adapter`` time, adapter
load time from disk, and a mixed batch of 4 tasks against the same batch single-task. The straightforward AdaptIR
computation (``peft_adaptir.tuner.reference``) is timed too, so the optimisation's gain is measured in the same run.

Every timing is interleaved: each repeat runs every method once, in turn, and a ratio is the median of the per-repeat
ratios against the baseline of the same repeat. This machine is shared and noisy; ratios are what to read.

    python benchmarks/speed.py --out benchmarks/results            # CPU (and CUDA when available)
    python benchmarks/speed.py --quick --out /tmp/speed            # seconds-scale smoke run on tiny shapes
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import Swin2SRConfig, Swin2SRForImageSuperResolution

import peft_adaptir
from peft_adaptir import AdaptIRConfig
from peft_adaptir.training.optim import adapter_optimizer
from peft_adaptir.tuner.branch import AdaptIRBranch
from peft_adaptir.tuner.reference import reference_branch_forward

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling op_count module
from op_count import count_ops  # noqa: E402

SHAPES: dict[str, dict[str, Any]] = {
    "lightweight": dict(
        embed_dim=60, depths=[6, 6, 6, 6], num_heads=[6, 6, 6, 6], window_size=8, mlp_ratio=2.0, upscale=2,
        upsampler="pixelshuffledirect",
    ),
    "classical": dict(
        embed_dim=180, depths=[6] * 6, num_heads=[6] * 6, window_size=8, mlp_ratio=2.0, upscale=2,
        upsampler="pixelshuffle",
    ),
    "tiny": dict(
        embed_dim=16, depths=[2], num_heads=[2], window_size=4, mlp_ratio=2.0, upscale=2,
        upsampler="pixelshuffledirect",
    ),
}  # fmt: skip

ADAPTER_METHODS = {
    "bottleneck": dict(fusion="sum", branches=[]),
    "sum": dict(fusion="sum"),
    "gated": dict(fusion="gated"),
}


class reference_forward:  # noqa: N801 - used like a function
    """Context: every AdaptIRBranch runs the straightforward reference computation (the 'before' of issue 9)."""

    def __enter__(self) -> None:
        self.saved = AdaptIRBranch.forward
        AdaptIRBranch.forward = reference_branch_forward

    def __exit__(self, *exc: object) -> None:
        AdaptIRBranch.forward = self.saved


def build_base(shape: str, device: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return Swin2SRForImageSuperResolution(Swin2SRConfig(image_size=64, **SHAPES[shape])).to(device)


def trainable(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def lora_config_matching(base: torch.nn.Module, target_params: int) -> tuple[LoraConfig, int]:
    """LoRA on the FFN Linear layers with the rank whose trainable count is closest to ``target_params``."""
    best = None
    for rank in range(1, 65):
        cfg = LoraConfig(r=rank, lora_alpha=rank, target_modules=["intermediate.dense", "output.dense"])
        count = trainable(get_peft_model(copy.deepcopy(base), cfg))
        if best is None or abs(count - target_params) < abs(best[1] - target_params):
            best = (cfg, count)
        if count > target_params:
            break
    return best


def build_methods(
    base: torch.nn.Module, with_reference: bool, compiled: bool = False
) -> tuple[dict[str, torch.nn.Module], dict[str, Any]]:
    """Models to compare (each a deep copy of ``base``) and their trainable-parameter counts.

    With ``compiled``, ``torch.compile`` wrappers of the bottleneck and AdaptIR models are added (``*_compiled``, same
    weights); they compile on their first call, inside the warm-up repeats.
    """
    models: dict[str, torch.nn.Module] = {"full": copy.deepcopy(base)}
    for name, kwargs in ADAPTER_METHODS.items():
        models[name] = get_peft_model(copy.deepcopy(base), AdaptIRConfig(**kwargs))
    lora_cfg, _ = lora_config_matching(base, trainable(models["gated"]))
    models["lora"] = get_peft_model(copy.deepcopy(base), lora_cfg)
    info = {name: {"trainable_params": trainable(m)} for name, m in models.items()}
    info["lora"]["rank"] = lora_cfg.r
    if with_reference:
        for name in ("bottleneck", "gated"):
            models[f"{name}_reference"] = models[name]  # same weights, run under reference_forward()
            info[f"{name}_reference"] = dict(info[name])
    if compiled:
        for name in ("bottleneck", "sum", "gated"):
            models[f"{name}_compiled"] = torch.compile(models[name], dynamic=False)  # static: see compile_speed.py
            info[f"{name}_compiled"] = dict(info[name])
    return models, info


def run_context(name: str):
    return reference_forward() if name.endswith("_reference") else nullcontext()


def autocast(device: str, precision: str):
    return torch.autocast(device_type=device, dtype=torch.bfloat16) if precision == "bf16" else nullcontext()


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def timed(fn: Callable[[], object], device: str) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) of one call of ``fn``."""
    sync(device)
    start, start_cpu = time.perf_counter(), time.process_time()
    fn()
    sync(device)
    return time.perf_counter() - start, time.process_time() - start_cpu


Timings = dict[str, dict[str, list[float]]]  # {"wall": {name: seconds per repeat}, "cpu": {...}}


def interleaved(fns: dict[str, Callable[[], object]], device: str, repeats: int, warmup: int) -> Timings:
    """Run every fn once per repeat, in turn; wall and process-CPU seconds of each repeat per name (warmup dropped).

    On CPU with one thread, the process CPU time does not count the time the scheduler gave to other jobs, so its
    ratios are far steadier than wall-clock ratios on a shared machine; both are reported.
    """
    times: Timings = {"wall": {name: [] for name in fns}, "cpu": {name: [] for name in fns}}
    for r in range(warmup + repeats):
        for name, fn in fns.items():
            wall, cpu = timed(fn, device)
            if r >= warmup:
                times["wall"][name].append(wall)
                times["cpu"][name].append(cpu)
    return times


def summarise(times: Timings, baselines: list[str]) -> dict[str, dict[str, float]]:
    """Median seconds and median per-repeat ratios against each baseline, plus the spread (min/max seconds).

    Keys without prefix are wall clock (``median_s``, ``ratio_vs_bottleneck``); ``cpu_``-prefixed ones are the same
    statistics of the process CPU time.
    """
    out: dict[str, dict[str, float]] = {}
    for clock, prefix in (("wall", ""), ("cpu", "cpu_")):
        series = times[clock]
        for name, values in series.items():
            row = out.setdefault(name, {})
            row.update({f"{prefix}median_s": statistics.median(values), f"{prefix}min_s": min(values),
                        f"{prefix}max_s": max(values)})  # fmt: skip
            for base in baselines:
                if base in series and base != name:
                    ratios = [v / b for v, b in zip(values, series[base])]
                    row[f"{prefix}ratio_vs_{base}"] = statistics.median(ratios)
    return out


def saved_activation_bytes(step: Callable[[], object]) -> int:
    """Bytes of the distinct tensors autograd saves for backward during ``step`` (the activation memory)."""
    seen: dict[tuple[int, int], int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        seen[(storage.data_ptr(), t.device.index or 0)] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        step()
    return sum(seen.values())


def train_step_fn(model: torch.nn.Module, name: str, x: torch.Tensor, precision: str, device: str):
    # the optimizer the package trains with (fused AdamW), for every method alike
    opt = adapter_optimizer([p for p in model.parameters() if p.requires_grad], lr=1e-5)

    def forward_backward() -> None:
        with run_context(name), autocast(device, precision):
            out = model(pixel_values=x).reconstruction
        out.float().square().mean().backward()

    def step() -> None:
        forward_backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step, forward_backward


def bench_training(models, x, precision, device, repeats, warmup) -> dict[str, Any]:
    steps, memory = {}, {}
    for name, model in models.items():
        model.train()
        step, forward_backward = train_step_fn(model, name, x, precision, device)
        steps[name] = step
        # saved-tensor hooks and dispatch modes do not see inside compiled graphs: no counts for the compiled rows
        compiled = name.endswith("_compiled")
        saved = float("nan") if compiled else saved_activation_bytes(forward_backward) / 2**20
        ops = float("nan") if compiled else sum(count_ops(step).values())  # step enters run_context itself
        memory[name] = {"saved_activations_mib": saved, "ops_per_step": ops}
        for p in model.parameters():
            p.grad = None
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
            base_alloc = torch.cuda.memory_allocated()
            step()
            step()
            memory[name]["cuda_peak_over_weights_mib"] = (torch.cuda.max_memory_allocated() - base_alloc) / 2**20
    result = summarise(
        interleaved(steps, device, repeats, warmup),
        ["bottleneck", "full", "lora", "bottleneck_reference", "bottleneck_compiled"],
    )
    for name in result:
        result[name].update(memory[name])
    return result


def bench_inference(base, models, x, precision, device, repeats, warmup) -> dict[str, Any]:
    fns = {}
    for name, model in {"base": base, **models}.items():
        if name == "full":
            continue  # same architecture as the base

        model.eval()

        def fn(model=model, name=name) -> None:
            with torch.inference_mode(), run_context(name), autocast(device, precision):
                model(pixel_values=x)

        fns[name] = fn
    return summarise(interleaved(fns, device, repeats, warmup), ["base"])


def bench_multi_adapter(base, x1, device, repeats, warmup, tmp: Path) -> dict[str, Any]:
    """set_adapter, load from disk, and a mixed batch of 4 tasks against the same batch single-task (fp32)."""
    tasks = ["t0", "t1", "t2", "t3"]
    model = get_peft_model(copy.deepcopy(base), AdaptIRConfig(), adapter_name=tasks[0])
    for task in tasks[1:]:
        model.add_adapter(task, AdaptIRConfig())
    for n, p in model.named_parameters():
        if "adaptir_branch" in n and n.endswith("up.weight"):
            torch.nn.init.normal_(p, std=1e-3)  # non-zero adapters, so every task really computes
    model.eval()
    model.save_pretrained(tmp / "adapters", selected_adapters=tasks)

    switches = []
    for i in range(50):
        start = time.perf_counter()
        model.set_adapter(tasks[i % 4])
        switches.append(time.perf_counter() - start)

    loads = []
    loaded = PeftModel.from_pretrained(copy.deepcopy(base), tmp / "adapters" / "t1", adapter_name="probe")
    for i in range(5):
        start = time.perf_counter()
        loaded.load_adapter(tmp / "adapters" / "t1", adapter_name=f"extra{i}")
        loads.append(time.perf_counter() - start)

    batch = x1.repeat(4, 1, 1, 1)
    model.set_adapter("t0")

    def mixed() -> None:
        with torch.inference_mode():
            model(pixel_values=batch, adapter_names=tasks)

    def single() -> None:
        with torch.inference_mode():
            model(pixel_values=batch)

    def task_by_task() -> None:
        with torch.inference_mode():
            for i, task in enumerate(tasks):
                model.set_adapter(task)
                model(pixel_values=batch[i : i + 1])
            model.set_adapter("t0")

    fns = {"single_task_batch": single, "mixed_4_tasks": mixed, "task_by_task": task_by_task}
    times = summarise(interleaved(fns, device, repeats, warmup), ["single_task_batch"])
    files = list((tmp / "adapters" / "t1").glob("*.safetensors"))
    return {
        "set_adapter_ms": 1e3 * statistics.median(switches),
        "load_adapter_ms": 1e3 * statistics.median(loads),
        "adapter_file_kib": files[0].stat().st_size / 1024 if files else None,
        "batch": times,
    }


def profile_extra(models, x, device, out_dir: Path, tag: str) -> str:
    """torch.profiler tables (self CPU time) of one gated and one bottleneck training step, and their difference."""
    from torch.profiler import ProfilerActivity, profile  # noqa: PLC0415

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    totals = {}
    text = []
    for name in ("gated", "bottleneck"):
        step, _ = train_step_fn(models[name].train(), name, x, "fp32", device)
        step()
        with profile(activities=activities) as prof:
            step()
        averages = prof.key_averages()
        totals[name] = {e.key: (e.self_cpu_time_total, e.count) for e in averages}
        text.append(f"## {name} training step: top ops by self CPU time\n")
        text.append(averages.table(sort_by="self_cpu_time_total", row_limit=25))
    text.append("\n## AdaptIR (gated) extra time over the bottleneck adapter, by op (self CPU ms, calls)\n")
    diff = []
    for key in set(totals["gated"]) | set(totals["bottleneck"]):
        g, b = totals["gated"].get(key, (0, 0)), totals["bottleneck"].get(key, (0, 0))
        diff.append((g[0] - b[0], key, g[1] - b[1]))
    for delta, key, calls in sorted(diff, reverse=True)[:25]:
        text.append(f"{key:<50} {delta / 1e3:>10.2f} ms {calls:>+6d} calls")
    path = out_dir / f"profile_{tag}.txt"
    path.write_text("\n".join(text) + "\n")
    return str(path)


def plan(args: argparse.Namespace, device: str) -> list[dict[str, Any]]:
    """What to run: (shape, device, sizes, precisions, repeats). CPU sizes are small so the run stays ~10 minutes."""
    if args.quick:
        return [dict(shape="tiny", train_size=16, infer_size=16, precisions=["fp32", "bf16"], repeats=1, warmup=1,
                     batch=1, extras=True, reference=True)]  # fmt: skip
    if device == "cpu":
        return [
            # training: batch 4 of 48 x 48, the CPU setting issue 9 states its measurements in
            dict(shape="lightweight", train_size=48, infer_size=128, precisions=["fp32", "bf16"], repeats=args.repeats,
                 warmup=1, batch=1, train_batch=4, extras=True, reference=True),
            dict(shape="classical", train_size=32, infer_size=64, precisions=["fp32"], repeats=args.repeats,
                 warmup=1, batch=1, extras=False, reference=True),
        ]  # fmt: skip
    return [
        dict(shape=shape, train_size=64, infer_size=256, precisions=["fp32", "bf16"], repeats=10, warmup=3,
             batch=16 if shape == "lightweight" else 4, extras=True, reference=True)
        for shape in ("lightweight", "classical")
    ]  # fmt: skip


def markdown(results: dict[str, Any]) -> str:
    lines = []
    for run in results["runs"]:
        head = f"### {run['shape']} on {run['device']}"
        lines += [head, "", f"train {run['train_size']}x{run['train_size']}, inference {run['infer_size']}x"
                  f"{run['infer_size']}, batch {run.get('train_batch', run['batch'])} (training) / {run['batch']} "
                  f"(inference), {run['repeats']} interleaved repeats", ""]  # fmt: skip
        cpu = run["device"] == "cpu"  # CPU-time ratios (steadier on a shared machine) only mean something there
        lines += ["| method | params | " + " | ".join(
            f"train {p} s | x bottleneck | x full | x lora" + (" | CPU-time x bottleneck" if cpu else "")
            + f" | infer {p} s | x base" + (" | CPU-time x base" if cpu else "") for p in run["precisions"]
        ) + " | saved activations MiB | ops per step |"]  # fmt: skip
        lines += ["|---" * (4 + (8 if cpu else 6) * len(run["precisions"])) + "|"]
        for name, info in run["methods"].items():
            cells = [name, str(info["trainable_params"])]
            for p in run["precisions"]:
                t = run["training"].get(p, {}).get(name, {})
                i = run["inference"].get(p, {}).get(name, {})
                cells += [f"{t.get('median_s', float('nan')):.3f}"] + [
                    f"{t.get(f'ratio_vs_{b}', float('nan')):.3f}" for b in ("bottleneck", "full", "lora")
                ]
                cells += [f"{t.get('cpu_ratio_vs_bottleneck', float('nan')):.3f}"] if cpu else []
                cells += [f"{i.get('median_s', float('nan')):.3f}", f"{i.get('ratio_vs_base', float('nan')):.3f}"]
                cells += [f"{i.get('cpu_ratio_vs_base', float('nan')):.3f}"] if cpu else []
            t = run["training"].get(run["precisions"][0], {}).get(name, {})
            cells.append(f"{t.get('saved_activations_mib', float('nan')):.1f}")
            cells.append(f"{t.get('ops_per_step', float('nan')):.0f}")
            lines.append("| " + " | ".join(cells) + " |")
        if "multi_adapter" in run:
            m = run["multi_adapter"]
            b = m["batch"]
            mixed, by_task = b["mixed_4_tasks"], b["task_by_task"]
            lines += ["", f"set_adapter {m['set_adapter_ms']:.3f} ms; load adapter from disk "
                      f"{m['load_adapter_ms']:.1f} ms ({m['adapter_file_kib']:.1f} KiB); batch of 4: single-task "
                      f"{b['single_task_batch']['median_s']:.3f} s, mixed 4 tasks "
                      f"{mixed['median_s']:.3f} s (x{mixed['ratio_vs_single_task_batch']:.3f}),"
                      f" task by task {by_task['median_s']:.3f} s "
                      f"(x{by_task['ratio_vs_single_task_batch']:.3f})"]  # fmt: skip
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny shapes, seconds-scale (smoke test)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"), help="folder for JSON, table, profile")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--repeats", type=int, default=2, help="interleaved repeats on CPU (median is reported)")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (1: robust on a shared machine)")
    parser.add_argument("--shapes", nargs="*", default=None, help="restrict to these shapes")
    parser.add_argument("--precisions", nargs="*", default=None, help="restrict to these precisions (fp32, bf16)")
    parser.add_argument("--train-batch", type=int, default=None, help="training batch size (overrides the plan's)")
    parser.add_argument(
        "--methods", nargs="*", default=None, help="time only these rows (e.g. bottleneck sum sum_compiled); no extras"
    )
    parser.add_argument(
        "--compile", action="store_true", help="also time torch.compile'd bottleneck / sum / gated models (*_compiled)"
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    devices = ["cpu"] if args.device == "cpu" else ["cuda"] if args.device == "cuda" else ["cpu"]
    if args.device == "auto" and torch.cuda.is_available():
        devices.append("cuda")
    results: dict[str, Any] = {
        "meta": {"torch": torch.__version__, "peft_adaptir": peft_adaptir.__version__, "threads": args.threads,
                 "machine": platform.processor() or platform.machine(), "quick": args.quick, "compile": args.compile,
                 "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
                 "memory_note": "saved_activations_mib: distinct storages autograd saves for backward (saved-tensor "
                                "hooks), deterministic; cuda_peak_over_weights_mib: torch.cuda.max_memory_allocated "
                                "over two steps minus the memory allocated before."},
        "runs": [],
    }  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        for device in devices:
            for item in plan(args, device):
                if args.shapes and item["shape"] not in args.shapes:
                    continue
                if args.precisions:
                    item["precisions"] = [p for p in item["precisions"] if p in args.precisions]
                if args.compile:  # compiled wrappers of several models share code objects: the first rounds recompile
                    item["warmup"] = max(item["warmup"], 3)
                started = time.perf_counter()
                base = build_base(item["shape"], device)
                models, info = build_methods(base, item["reference"], compiled=args.compile)
                if args.methods:
                    models = {k: v for k, v in models.items() if k in args.methods}
                    info = {k: v for k, v in info.items() if k in args.methods}
                torch.manual_seed(1)
                item["train_batch"] = args.train_batch or item.get("train_batch", item["batch"])
                x_train = torch.rand(item["train_batch"], 3, item["train_size"], item["train_size"], device=device)
                x_infer = torch.rand(item["batch"], 3, item["infer_size"], item["infer_size"], device=device)
                run = {**item, "device": device, "methods": info, "training": {}, "inference": {}}
                for precision in item["precisions"]:
                    run["training"][precision] = bench_training(
                        models, x_train, precision, device, item["repeats"], item["warmup"]
                    )
                    run["inference"][precision] = bench_inference(
                        base, models, x_infer, precision, device, item["repeats"], item["warmup"]
                    )
                    save(args.out, results, run)
                    print(f"[{item['shape']}/{device}/{precision}] done at {time.perf_counter() - started:.0f} s",
                          flush=True)  # fmt: skip
                if item["extras"] and not args.methods:
                    run["multi_adapter"] = bench_multi_adapter(  # batches of 4 at inference size: at most 3 repeats
                        base, x_infer[:1], device, min(item["repeats"], 3), item["warmup"], Path(tmp)
                    )
                    run["profile_file"] = profile_extra(models, x_train, device, args.out, f"{item['shape']}_{device}")
                run["wall_s"] = time.perf_counter() - started
                results["runs"].append(run)
                save(args.out, results)
                print(f"[{item['shape']}/{device}] {run['wall_s']:.0f} s", flush=True)
    save(args.out, results)
    print(markdown(results))
    return results


def save(out_dir: Path, results: dict[str, Any], partial_run: dict[str, Any] | None = None) -> None:
    """Write the JSON and the markdown tables; with ``partial_run``, include a run still in progress."""
    snapshot = {**results, "runs": results["runs"] + ([partial_run] if partial_run else [])}
    tag = "quick" if results["meta"]["quick"] else "full"
    (out_dir / f"speed_{tag}.json").write_text(json.dumps(snapshot, indent=1, default=str))
    (out_dir / f"speed_{tag}.md").write_text(markdown(snapshot))


if __name__ == "__main__":
    main()
