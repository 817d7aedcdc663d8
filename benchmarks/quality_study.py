"""Quality study: seeds, budgets, a validation-chosen learning rate and paired intervals (issue 20).

Every run trains one *arm* (a method, possibly with AdaptIRConfig overrides) on one transfer task for ``steps``
steps from one seed, then scores it on the validation crops (which choose the learning rate) and on the held-out
evaluation set (which is reported); see ``quality_images.py`` for the three disjoint image sets. The plan, in order:

1. the degraded input and the pretrained base on every task (no training);
2. task by task, tier by tier of arms (the ``cpu`` profile runs full fine-tuning, AdaptIR sum and AdaptIR sum with
   the last convolution first, then LoRA and the bottleneck, then AdaptIR gated): the learning-rate search (seed 0,
   every candidate), then seeds 1, 2, ... at the candidate with the best mean *validation* PSNR (never the
   evaluation photos); after the second tier, the extra arms' search on that task (the low-light investigation);
3. the extra arms' later seeds;
4. the budget curve: seed 0 at other step counts, at the learning rate chosen for the main budget (with
   ``late_tiers``, the ``cpu`` profile's, the curve comes before the late tiers: gated runs after the main arms of
   every task and their curve).

A study stopped early therefore has whole tasks with every seed, rather than every task with one seed.

Each finished run is appended as one JSON line to ``runs.jsonl``; a restart skips the runs already there (runs
of other settings are ignored, never mixed), so the study can be stopped and resumed at any time. Two runs go in
parallel by default (``--workers``), one thread each. ``python -m benchmarks.quality_study_report`` turns the file
into tables, intervals and plots.

    python -m benchmarks.quality_study --profile cpu      # the committed CPU study (many hours here; resumable)
    python -m benchmarks.quality_study --profile gpu      # 3 lrs x 3 seeds, batch 16 x 48 px, 64/256/1024 steps
    python -m benchmarks.quality_study --profile smoke --output /tmp/s   # seconds, tiny random base (the test)
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import multiprocessing
import os
import shutil
import statistics
import sys
import tempfile
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

try:  # python -m benchmarks.quality_study (from the repository root)
    from . import quality_images as images
    from .adapt_quality import resolve_base
    from .quality_methods import load_base, saved_size, trainable_count, wrap
    from .quality_run import Y_CROP, Job, train
except ImportError:  # pragma: no cover - benchmarks/ itself on sys.path
    import quality_images as images
    from adapt_quality import resolve_base
    from quality_methods import load_base, saved_size, trainable_count, wrap
    from quality_run import Y_CROP, Job, train

from peft_adaptir.data.pairs import EvalPairs
from peft_adaptir.metrics import psnr_batch, ssim_batch
from peft_adaptir.training.datasets import reconstruction

TASKS = ("low-light", "sr2-noise30", "derain-heavy", "denoise-50")
MAIN_ARMS = ("full", "lora", "bottleneck", "adaptir-sum", "adaptir-gated")
LASTCONV_ONLY = {"modules_to_save": ["final_convolution"]}
LASTCONV = {"width": 3, **LASTCONV_ONLY}
ARMS: dict[str, tuple[str, dict]] = {  # arm -> (method of quality_methods.wrap, AdaptIRConfig overrides)
    "input": ("input", {}),
    "base": ("base", {}),
    **{arm: (arm, {}) for arm in MAIN_ARMS},
    "sum-w3-lastconv": ("adaptir-sum", LASTCONV),
    "sum-w3-firstconv": ("adaptir-sum", {"width": 3, "modules_to_save": ["first_convolution"]}),
    "bottleneck-w3-lastconv": ("bottleneck", LASTCONV),
    "lora-r1-lastconv": ("lora", {"r": 1, "modules_to_save": ["final_convolution"]}),
    "sum-w8": ("adaptir-sum", {"width": 8}),
    "sum-w2-attention": ("adaptir-sum", {"preset": "swin2sr-attention", "width": 2}),  # beside attention and FFN
    "sum-w1-attention-lastconv": ("adaptir-sum", {"preset": "swin2sr-attention", "width": 1, **LASTCONV_ONLY}),
    "sum-w2-attention-lastconv": ("adaptir-sum", {"preset": "swin2sr-attention", "width": 2, **LASTCONV_ONLY}),
    "sum-scale2": ("adaptir-sum", {"scale": 2.0}),
    "sum-warmup25": ("adaptir-sum", {}),
}
TRAINING = {"sum-warmup25": {"warmup": 0.25}}  # arms that change the training loop (quality_run.Job fields)
CPU_TIERS = [["full", "adaptir-sum", "sum-w3-lastconv"], ["lora", "bottleneck"], ["adaptir-gated"]]  # run in order
CPU_ARMS = [arm for tier in CPU_TIERS for arm in tier]
CHOSEN = None  # a spec's lr: the validation-chosen one
PEFT_LRS, FULL_LRS = [2e-3, 6e-3], [2e-4, 6e-4]
PROFILES = {
    "smoke": dict(base="tiny-random", tasks=["low-light"], arms=["full", "adaptir-sum", "sum-w3-lastconv"], steps=2,
                  batch_size=2, patch_size=16, peft_lrs=[2e-3, 6e-3], full_lrs=[2e-4, 6e-4], seeds=2,
                  extra=[(["sum-w3-firstconv"], ["low-light"])],
                  curve=[(4, ["full", "adaptir-sum"], ["low-light"], 2)],
                  workers=0, threads=1, use_opencv=False, crop=32, val_crop=32),
    "cpu": dict(base="default", tasks=list(TASKS), arms=CPU_ARMS, tiers=CPU_TIERS, late_tiers=2, steps=64,
                batch_size=4, patch_size=32, peft_lrs=PEFT_LRS, full_lrs=FULL_LRS, seeds=3,
                extra=[(["sum-w3-firstconv", "bottleneck-w3-lastconv", "sum-scale2", "sum-warmup25"], ["low-light"]),
                       (["bottleneck-w3-lastconv", "lora-r1-lastconv", "sum-w8", "sum-w2-attention",
                         "sum-w1-attention-lastconv", "sum-w2-attention-lastconv"], list(TASKS))],
                curve=[(256, ["full", "lora", "adaptir-sum", "sum-w3-lastconv"], ["low-light", "sr2-noise30"]),
                       (256, ["full", "lora", "adaptir-sum", "sum-w3-lastconv"], ["derain-heavy", "denoise-50"]),
                       (1024, ["full", "sum-w3-lastconv"], ["low-light"]),
                       (256, ["bottleneck"], list(TASKS)),
                       (1024, ["lora", "adaptir-sum", "bottleneck"], ["low-light"]),
                       (1024, ["full", "sum-w3-lastconv"], ["derain-heavy"]),
                       (256, ["full", "lora", "bottleneck", "adaptir-sum", "sum-w3-lastconv"], list(TASKS), 3),
                       (256, ["sum-w3-lastconv", "lora-r1-lastconv", "bottleneck-w3-lastconv"], list(TASKS), 3),
                       (1024, ["full", "adaptir-sum", "sum-w3-lastconv", "lora-r1-lastconv"],
                        ["low-light", "derain-heavy"], 3)],
                workers=2, threads=1, use_opencv=True, crop=96, val_crop=64),
    "gpu": dict(base="default", tasks=list(TASKS), arms=[*MAIN_ARMS, "sum-w3-lastconv"], steps=256, batch_size=16,
                patch_size=48, peft_lrs=[1e-3, 3e-3, 9e-3], full_lrs=[1e-4, 3e-4, 9e-4], seeds=3,
                extra=[(["lora-r1-lastconv", "bottleneck-w3-lastconv"], list(TASKS)),
                       (["sum-w3-firstconv", "sum-w8"], ["low-light"])],
                curve=[(64, [*MAIN_ARMS, "sum-w3-lastconv"], list(TASKS)),
                       (1024, ["full", "lora", "bottleneck", "adaptir-sum", "sum-w3-lastconv"], list(TASKS))],
                workers=8, threads=2, use_opencv=True, crop=128, val_crop=128),
}  # fmt: skip
DEFAULT_OUTPUT = Path(__file__).resolve().parent / "results" / "quality"
EVAL_SEED = 1234


@dataclass(frozen=True)
class Spec:
    """One planned run; ``lr=None`` means the learning rate chosen on validation (seed 0, main steps)."""

    arm: str
    task: str
    steps: int
    seed: int
    lr: float | None

    def key(self) -> str:
        lr = "chosen" if self.lr is None else f"{self.lr:.3g}"
        return f"{self.arm}|{self.task}|{self.steps}|{self.seed}|{lr}"


def grid(arm: str, settings: dict) -> list[float]:
    """The learning-rate candidates of ``arm`` (full fine-tuning has its own, lower grid of the same size)."""
    return settings["full_lrs"] if arm == "full" else settings["peft_lrs"]


def plan(settings: dict) -> list[Spec]:
    """Every run of the study, in the order they should run (module docstring)."""
    tasks, arms, steps, seeds = settings["tasks"], settings["arms"], settings["steps"], settings["seeds"]
    specs = [Spec(arm, task, 0, 0, 0.0) for task in tasks for arm in ("input", "base")]

    def search(arm_list: list[str], task_list: list[str]) -> list[Spec]:
        return [Spec(a, t, steps, 0, lr) for t in task_list for a in arm_list for lr in grid(a, settings)]

    def seed(s: int, arm_list: list[str], task_list: list[str]) -> list[Spec]:
        return [Spec(a, t, steps, s, CHOSEN) for t in task_list for a in arm_list]

    # task by task (in the profile's order), tier by tier of arms (``tiers``; default: one tier of all arms): the
    # search, then seed 1, seed 2...; the extra arms' search for that task after the second tier. Tiers from
    # ``late_tiers`` on run only after every task's earlier tiers. The extra arms' later seeds come at the end. A
    # study stopped early has whole tasks, each tier with every seed.
    tiers = settings.get("tiers") or [arms]
    late = settings.get("late_tiers", len(tiers))

    def tier_runs(first: int, last: int) -> list[Spec]:
        runs = []
        for task in tasks:
            for i in range(first, last):
                runs += search(tiers[i], [task])
                runs += [spec for s in range(1, seeds) for spec in seed(s, tiers[i], [task])]
                if i == min(1, len(tiers) - 1):  # the extra arms after the second tier
                    runs += [spec for extra, ts in settings["extra"] if task in ts for spec in search(extra, [task])]
        return runs

    specs += tier_runs(0, late)
    curve = [
        Spec(a, t, entry[0], s, CHOSEN) for entry in settings["curve"]
        for s in range(curve_seeds(entry)) for t in entry[2] for a in entry[1]
    ]  # fmt: skip
    curve_first = late < len(tiers)  # with late tiers: the budget curve of the main arms before them
    if curve_first:
        specs += curve
    specs += tier_runs(late, len(tiers))
    specs += [
        spec
        for s in range(1, seeds)
        for arm_list, task_list in settings["extra"]
        for spec in seed(s, arm_list, task_list)
    ]
    if not curve_first:
        specs += curve
    return list(dict.fromkeys(specs))


def curve_seeds(entry: tuple) -> int:
    """Seeds a budget-curve entry ``(steps, arms, tasks[, seeds])`` runs: seed 0 only unless it names a count."""
    return entry[3] if len(entry) > 3 else 1


def chosen_lr(arm: str, task: str, steps: int, rows: dict[str, dict], settings: dict) -> float | None:
    """The grid learning rate with the best mean validation PSNR (seed 0, ``steps``); None until all have run."""
    scored = []
    for lr in grid(arm, settings):
        row = rows.get(Spec(arm, task, steps, 0, lr).key())
        if row is None:
            return None
        scored.append((row["val_mean"] if row.get("val_mean") is not None else -float("inf"), lr))
    return max(scored)[1]


def base_fingerprint(base_path: str) -> str:
    """Hash of the base model's files (config and weights): the same base under another path (a new checkout, a
    worktree) keeps its results, another base does not."""
    digest = hashlib.sha1()
    for file in sorted(Path(base_path).iterdir()):
        if file.is_file():
            digest.update(file.name.encode() + file.read_bytes())
    return digest.hexdigest()[:12]


def settings_id(settings: dict) -> str:
    """Fingerprint of what every run shares (not the plan): results of different settings are never mixed."""
    shared = {k: settings[k] for k in ("base_fingerprint", "batch_size", "patch_size", "lora_rank", "eval_set",
                                       "val_set")}  # fmt: skip
    return hashlib.sha1(json.dumps(shared, sort_keys=True).encode()).hexdigest()[:12]


@functools.cache
def _pairs(task: str, use_opencv: bool, crop: int, val_crop: int) -> dict[str, tuple[list, list[str]]]:
    """``{"val": ..., "eval": ...}``: the fixed ``(degraded, clean)`` pairs of each set and the item names."""
    out = {}
    sets = (("val", images.validation_items(val_crop)), ("eval", images.evaluation_items(use_opencv, crop)))
    for split, items in sets:
        pairs = EvalPairs([item.image for item in items], task, seed=EVAL_SEED).items
        out[split] = (pairs, [item.name for item in items])
    return out


@torch.no_grad()
def score(model, task: str, use_opencv: bool, crop: int, val_crop: int, device: torch.device) -> dict:
    """Per-image PSNR RGB on validation; PSNR RGB, PSNR Y (border 4) and SSIM RGB on evaluation (8-bit rounded)."""
    if model is not None:
        model.eval()
    out = {}
    for split, (pairs, names) in _pairs(task, use_opencv, crop, val_crop).items():
        metrics = {"psnr_rgb": {}} if split == "val" else {"psnr_rgb": {}, "psnr_y": {}, "ssim_rgb": {}}
        for (degraded, clean), name in zip(pairs, names):
            x = degraded[None].to(device)
            restored = (x if model is None else reconstruction(model(x)).float()).clamp(0, 1).cpu()
            target = clean[None]
            metrics["psnr_rgb"][name] = round(psnr_batch(restored, target, quantize=True).item(), 4)
            if split == "eval":
                y = psnr_batch(restored, target, Y_CROP, test_y_channel=True, quantize=True)
                metrics["psnr_y"][name] = round(y.item(), 4)
                metrics["ssim_rgb"][name] = round(ssim_batch(restored, target, quantize=True).item(), 5)
        out[split] = metrics
    return out


def run_spec(spec: Spec, lr: float, settings: dict) -> dict:
    """Train (unless input/base) and score one spec at learning rate ``lr``; one JSON-ready row."""
    if settings["threads"]:
        torch.set_num_threads(settings["threads"])
    device = torch.device(settings["device"])
    started = time.perf_counter()
    method, overrides = ARMS[spec.arm]
    row = {**asdict(spec), "lr": lr, "lr_source": "grid" if spec.lr is not None else "validation", "key": spec.key()}
    model = None
    if method != "input":
        torch.manual_seed(spec.seed)
        base = load_base(settings["base_path"])
        base_params = sum(p.numel() for p in base.parameters())
        model = wrap(base, method, overrides, settings["lora_rank"], "ffn").to(device)
        trainable = trainable_count(model)
        row.update(trainable=trainable, base_params=base_params, trainable_pct=100 * trainable / base_params)
        if method != "base":
            job = Job(
                task=spec.task,
                method=method,
                lr=lr,
                base_path=settings["base_path"],
                steps=spec.steps,
                batch_size=settings["batch_size"],
                patch_size=settings["patch_size"],
                seed=spec.seed,
                adapter=overrides,
                device=settings["device"],
                **TRAINING.get(spec.arm, {}),
            )
            try:
                row.update(train(model, job, device, images=images.training_images()))
            except FloatingPointError as error:  # a diverged learning rate: recorded, never chosen
                return {**row, "error": str(error), "val_mean": None, "wall_s": time.perf_counter() - started}
            row["file_bytes"] = saved_size(model, method)
    scores = score(model, spec.task, settings["use_opencv"], settings["crop"], settings["val_crop"], device)
    row.update(val=scores["val"], eval=scores["eval"])
    row["val_mean"] = statistics.fmean(scores["val"]["psnr_rgb"].values())
    row["eval_mean"] = statistics.fmean(scores["eval"]["psnr_rgb"].values())
    row.update(wall_s=time.perf_counter() - started, pid=os.getpid(), finished=time.strftime("%Y-%m-%dT%H:%M:%S"))
    return row


def load_rows(path: Path, sid: str) -> dict[str, dict]:
    """The finished runs of ``path`` made with settings ``sid``, by key (a truncated last line is ignored)."""
    rows = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if row.get("settings_id") == sid:
                rows[row["key"]] = row
    return rows


def execute(specs: list[Spec], settings: dict, path: Path, workers: int) -> dict[str, dict]:
    """Run the specs not yet in ``path`` (at most ``workers`` at a time, in plan order as soon as their learning
    rate is known), appending each finished row to ``path``; returns every row of these settings by key."""
    sid = settings["settings_id"]
    rows = load_rows(path, sid)
    pending = [s for s in specs if s.key() not in rows]
    print(f"{len(specs) - len(pending)} of {len(specs)} runs already in {path}; {len(pending)} to go", flush=True)
    start, done_here = time.perf_counter(), 0
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) if workers > 0 else None
    in_flight: dict[Future, Spec] = {}
    try:
        while pending or in_flight:
            while len(in_flight) < max(1, workers):
                ready = None
                for spec in pending:
                    lr = (
                        spec.lr
                        if spec.lr is not None
                        else chosen_lr(spec.arm, spec.task, settings["steps"], rows, settings)
                    )
                    if lr is not None:
                        ready = spec
                        break
                if ready is None:
                    break
                pending.remove(ready)
                if pool is None:
                    future: Future = Future()
                    future.set_result(run_spec(ready, lr, settings))
                else:
                    future = pool.submit(run_spec, ready, lr, settings)
                in_flight[future] = ready
            if not in_flight:
                raise RuntimeError(f"No runnable spec among {len(pending)} pending ones: {pending[:3]}...")
            finished, _ = wait(in_flight, return_when=FIRST_COMPLETED)
            for future in finished:
                spec = in_flight.pop(future)
                row = {**future.result(), "settings_id": sid}
                with path.open("a") as file:
                    file.write(json.dumps(row, allow_nan=False) + "\n")
                rows[spec.key()] = row
                done_here += 1
                val = (
                    "diverged"
                    if row.get("val_mean") is None
                    else f"val {row['val_mean']:.2f} eval {row['eval_mean']:.2f}"
                )
                print(
                    f"[{done_here}/{len(specs)} {time.perf_counter() - start:6.0f}s] {spec.key()} lr {row['lr']:.1e}: "
                    f"{val} dB ({row['wall_s']:.0f} s)",
                    flush=True,
                )
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    return rows


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", choices=sorted(PROFILES), default="cpu")
    parser.add_argument(
        "--output", type=Path, help=f"folder of runs.jsonl (default: {DEFAULT_OUTPUT}/study-<profile>)"
    )
    parser.add_argument("--workers", type=int, help="parallel runs (0: in this process)")
    parser.add_argument("--threads", type=int, help="torch threads per run")
    parser.add_argument("--no-opencv", action="store_true", help="evaluate on the scikit-image crops only")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--only", nargs="+", metavar="ARM", choices=sorted(ARMS), help="run only these arms' specs")
    parser.add_argument("--dry-run", action="store_true", help="print the plan and exit (writes nothing)")
    return parser.parse_args(argv)


def prepare(args: argparse.Namespace) -> tuple[dict, list[Spec], Path]:
    """The settings (profile + command line + base + LoRA rank + image-set fingerprints), the plan, the output."""
    settings = dict(PROFILES[args.profile])
    for key in ("workers", "threads"):
        if getattr(args, key) is not None:
            settings[key] = getattr(args, key)
    output = args.output or DEFAULT_OUTPUT / f"study-{args.profile}"
    if args.dry_run and settings["base"] == "tiny-random":
        output = Path(tempfile.mkdtemp(prefix="quality-study-dry-run-"))  # its base is built there, then removed
    elif not args.dry_run:
        output.mkdir(parents=True, exist_ok=True)
    use_opencv = settings["use_opencv"] and not args.no_opencv
    if use_opencv and not images.opencv_available():
        print(images.OPENCV_HINT, flush=True)
        use_opencv = False
    base_path, base_desc = resolve_base(settings["base"], output)
    gated = trainable_count(wrap(load_base(base_path), "adaptir-gated"))
    per_rank = trainable_count(wrap(load_base(base_path), "lora", lora_rank=1))
    lora_rank = min((max(1, gated // per_rank), gated // per_rank + 1), key=lambda r: abs(r * per_rank - gated))
    eval_items = images.evaluation_items(use_opencv, settings["crop"])
    val_items = images.validation_items(settings["val_crop"])
    settings.update(
        base_path=base_path,
        base_fingerprint=base_fingerprint(base_path),
        base_description=base_desc,
        lora_rank=lora_rank,
        device=args.device,
        use_opencv=use_opencv,
        eval_set=images.set_id(eval_items),
        val_set=images.set_id(val_items),
    )
    settings["eval_set_names"] = [i.name for i in eval_items]
    settings["settings_id"] = settings_id(settings) if settings["base"] != "tiny-random" else "smoke"
    header = {k: v for k, v in settings.items() if k not in ("extra", "curve")}
    header.update(
        profile=args.profile,
        eval_items=[i.name for i in eval_items],
        eval_groups=[i.group for i in eval_items],
        val_items=[i.name for i in val_items],
        plan=[s.key() for s in plan(settings)],
        torch=torch.__version__,
        cpus=os.cpu_count(),
    )
    specs = [s for s in plan(settings) if not args.only or s.arm in args.only]
    if not args.dry_run:
        (output / f"settings-{settings['settings_id']}.json").write_text(json.dumps(header, indent=1))
    return settings, specs, output


def main(argv: list[str] | None = None) -> dict[str, dict]:
    args = parse_args(argv)
    settings, specs, output = prepare(args)
    print(
        f"profile {args.profile}: {len(specs)} runs, {settings['steps']} steps x batch {settings['batch_size']} x "
        f"{settings['patch_size']} px, LoRA rank {settings['lora_rank']}, {len(settings['eval_set_names'])} "
        f"evaluation images, settings {settings['settings_id']}",
        flush=True,
    )
    if args.dry_run:
        print("\n".join(s.key() for s in specs))
        if settings["base"] == "tiny-random":
            shutil.rmtree(output, ignore_errors=True)
        return {}
    return execute(specs, settings, output / "runs.jsonl", settings["workers"])


if __name__ == "__main__":
    sys.exit(0 if main() is not None else 1)
