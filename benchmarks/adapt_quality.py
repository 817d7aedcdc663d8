"""Quality benchmark: AdaptIR against LoRA, the bottleneck adapter and full fine-tuning on unseen degradations.

The protocol (docs/benchmarks.md): one pretrained scale-1 Swin2SR base (by default the package's embedded base),
the four transfer tasks the base never saw, and these methods on the same data, steps, seeds and learning-rate search:
the pretrained base (no training), full fine-tuning, peft LoRA with its rank matched to AdaptIR gated's trainable
count, the plain bottleneck adapter (AdaptFormer) at AdaptIR's width, AdaptIR ``sum`` and AdaptIR ``gated``.
Training is a lean plain-torch loop, the same for every method (see ``quality_run.py``); each method gets the same
number of learning-rate candidates (full fine-tuning its own, lower grid) and the best by mean held-out PSNR (RGB) is
reported. Evaluation: scikit-image's held-out photos (astronaut, chelsea, coffee), fixed centre crops, fixed seeds.

    python benchmarks/adapt_quality.py --profile quick     # ~20 min on a 2-core CPU (2 worker processes)
    python benchmarks/adapt_quality.py --profile full      # longer runs, bigger patches (meant for a GPU)
    python benchmarks/adapt_quality.py --profile smoke --output /tmp/q   # seconds, tiny random base (the test)

Writes ``results.json`` (every run, the best per task and method, settings, command), ``results.md`` (table),
``psnr.png`` (bar plot per task) and ``grid.png`` (degraded / each method / clean for one held-out photo).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import shlex
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # sibling quality_* modules, also in worker processes

from quality_methods import METHODS, TRAINED, load_base, matched_lora_rank, trainable_count, wrap  # noqa: E402
from quality_report import averages, image_grid, markdown_table, psnr_plot  # noqa: E402
from quality_run import Job, run_job  # noqa: E402

TASKS = ("sr2-noise30", "derain-heavy", "low-light", "denoise-50")
PROFILES = {
    "smoke": dict(steps=2, batch_size=2, patch_size=16, eval_crop=32, peft_lrs=[2e-3], full_lrs=[2e-4],
                  workers=0, threads=1, base="tiny-random"),
    "quick": dict(steps=64, batch_size=4, patch_size=32, eval_crop=160, peft_lrs=[2e-3, 6e-3],
                  full_lrs=[2e-4, 6e-4], workers=2, threads=1, base="default"),
    "full": dict(steps=1000, batch_size=8, patch_size=48, eval_crop=256, peft_lrs=[5e-4, 1e-3, 2e-3],
                 full_lrs=[5e-5, 1e-4, 2e-4], workers=0, threads=None, base="default"),
}  # fmt: skip
DEFAULT_OUTPUT = Path(__file__).resolve().parent / "results" / "quality"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", choices=sorted(PROFILES), default="quick")
    parser.add_argument("--base", help="'default' (embedded base), 'tiny-random', or a Swin2SR save_pretrained folder")
    parser.add_argument("--output", type=Path, help=f"output folder (default: {DEFAULT_OUTPUT}/<profile>)")
    parser.add_argument("--tasks", nargs="+", default=list(TASKS))
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--steps", type=int)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--patch-size", type=int)
    parser.add_argument("--eval-crop", type=int, help="centre crop of each held-out photo (0: whole photo)")
    parser.add_argument("--peft-lrs", type=float, nargs="+", help="learning-rate grid of LoRA and the adapters")
    parser.add_argument("--full-lrs", type=float, nargs="+", help="learning-rate grid of full fine-tuning")
    parser.add_argument("--lora-targets", choices=("ffn", "all"), default="ffn")
    parser.add_argument(
        "--adapter", type=json.loads, default={}, help='AdaptIRConfig overrides as JSON, e.g. {"width": 8}'
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, help="parallel worker processes (0: run in this process)")
    parser.add_argument("--threads", type=int, help="torch threads per run")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    for key, value in PROFILES[args.profile].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.output = args.output or DEFAULT_OUTPUT / args.profile
    args.eval_crop = args.eval_crop or None
    if len(args.peft_lrs) != len(args.full_lrs):
        parser.error("--peft-lrs and --full-lrs must have the same number of candidates (the same search for all).")
    unknown = sorted(set(args.tasks) - set(TASKS))
    if unknown:
        from peft_adaptir.data.degradations import get_task_spec

        for task in unknown:
            get_task_spec(task)  # raises, listing the known tasks
    return args


def resolve_base(spec: str, output: Path) -> tuple[str, str]:
    """``(folder, description)`` of the base model: the embedded default, a tiny random Swin2SR, or a folder."""
    if spec == "default":
        from peft_adaptir.backbones.default_base import default_base_path

        return str(default_base_path()), "embedded default base (peft_adaptir/assets/default_base)"
    if spec == "tiny-random":
        from transformers import Swin2SRConfig, Swin2SRForImageSuperResolution

        torch.manual_seed(0)
        config = Swin2SRConfig(image_size=16, patch_size=1, num_channels=3, embed_dim=16, depths=[2], num_heads=[2],
                               window_size=4, mlp_ratio=2.0, upscale=1, upsampler="", img_range=1.0)  # fmt: skip
        folder = output / "tiny_random_base"
        Swin2SRForImageSuperResolution(config).save_pretrained(folder)
        return str(folder), "tiny random Swin2SR (embed 16, depths [2], window 4; smoke test only)"
    if not Path(spec, "config.json").is_file():
        raise FileNotFoundError(f"--base {spec}: no config.json there; give 'default', 'tiny-random' or a folder "
                                "written by Swin2SRForImageSuperResolution.save_pretrained.")  # fmt: skip
    return spec, spec


def build_jobs(args: argparse.Namespace, base_path: str, lora_rank: int) -> list[Job]:
    """Every run: the degraded input and each method x task x learning rate."""
    template = Job(task="", method="", lr=0.0, base_path=base_path, steps=args.steps, batch_size=args.batch_size,
                   patch_size=args.patch_size, seed=args.seed, eval_crop=args.eval_crop, lora_rank=lora_rank,
                   lora_targets=args.lora_targets, adapter=args.adapter, device=args.device,
                   threads=args.threads)  # fmt: skip
    jobs = []
    for task in args.tasks:
        for method in [m for m in args.methods if m in TRAINED]:
            for lr in args.full_lrs if method == "full" else args.peft_lrs:
                jobs.append(replace(template, task=task, method=method, lr=lr))
        jobs.append(replace(template, task=task, method="input"))
        if "base" in args.methods:
            jobs.append(replace(template, task=task, method="base"))
    return jobs


def run_all(jobs: list[Job], workers: int) -> list[dict]:
    """Run the jobs (in ``workers`` spawned processes, or here when 0), printing one line per finished run."""
    results, start = [], time.perf_counter()

    def report(result: dict) -> None:
        results.append(result)
        lr = f" lr {result['lr']:.1e}" if result["method"] in TRAINED else ""
        extra = f", {1000 * result['step_time_s']:.0f} ms/step" if "step_time_s" in result else ""
        print(f"[{len(results)}/{len(jobs)} {time.perf_counter() - start:6.0f}s] {result['task']:<13} "
              f"{result['method']:<14}{lr}: PSNR {result['psnr_rgb']:.2f} dB{extra}", flush=True)  # fmt: skip

    if workers <= 0:
        for job in jobs:
            report(run_job(job))
        return results
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        for future in as_completed([pool.submit(run_job, job) for job in jobs]):
            report(future.result())
    return results


def select_best(results: list[dict], tasks: list[str], methods: list[str]) -> dict[str, dict[str, dict]]:
    """``best[task][method]``: the run with the highest mean held-out PSNR (RGB) over the learning-rate grid."""
    best: dict[str, dict[str, dict]] = {task: {} for task in tasks}
    for r in results:
        current = best[r["task"]].get(r["method"])
        if current is None or r["psnr_rgb"] > current["psnr_rgb"]:
            best[r["task"]][r["method"]] = r
    return {task: {m: best[task][m] for m in methods} for task in tasks}


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    args.output.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    base_path, base_desc = resolve_base(args.base, args.output)
    base = load_base(base_path)
    base_params = sum(p.numel() for p in base.parameters())
    torch.manual_seed(args.seed)
    gated = trainable_count(wrap(base, "adaptir-gated", args.adapter))
    lora_rank, lora_count = matched_lora_rank(base_path, gated, args.lora_targets)
    print(f"base: {base_desc}, {base_params:,} parameters; AdaptIR gated trains {gated:,}; "
          f"LoRA rank {lora_rank} ({args.lora_targets}) trains {lora_count:,}", flush=True)  # fmt: skip
    jobs = build_jobs(args, base_path, lora_rank)
    results = run_all(jobs, args.workers)
    methods = ["input", *[m for m in METHODS if m in args.methods]]
    best = select_best(results, args.tasks, methods)
    previews = {t: {m: best[t][m].pop("preview") for m in methods} for t in args.tasks}
    for t in args.tasks:
        previews[t]["clean"] = best[t]["input"].pop("clean_preview")
    for r in results:
        r.pop("preview", None)
        r.pop("clean_preview", None)
    mean = averages(best, methods)
    command = "python benchmarks/adapt_quality.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    report = {
        "profile": args.profile,
        "command": command,
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "base": {"path": base_path, "description": base_desc, "params": base_params},
        "matching": {
            "adaptir_gated_trainable": gated,
            "lora_rank": lora_rank,
            "lora_trainable": lora_count,
            "lora_targets": args.lora_targets,
            "lora_alpha": 2 * lora_rank,
        },  # fmt: skip
        "machine": {
            "torch": torch.__version__,
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "device": args.device,
            "platform": platform.platform(),
        },  # fmt: skip
        "wall_time_s": time.perf_counter() - started,
        "best": best,
        "average": mean,
        "runs": results,
    }
    (args.output / "results.json").write_text(json.dumps(report, indent=1, allow_nan=False))
    title = f"{args.profile} profile: {args.steps} steps x batch {args.batch_size} x {args.patch_size} px"
    (args.output / "results.md").write_text(f"{title}\n\n{markdown_table(best, methods)}")
    psnr_plot(best, methods[1:], args.output / "psnr.png", title + " (held-out photos, best lr)")
    scores = {t: {m: best[t][m]["psnr_rgb"] for m in methods} for t in args.tasks}
    image_grid(previews, scores, [*methods, "clean"], args.output / "grid.png")
    print(markdown_table(best, methods))
    print(f"wrote {args.output} in {report['wall_time_s']:.0f} s", flush=True)
    return report


if __name__ == "__main__":
    main()
