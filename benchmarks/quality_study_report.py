"""Tables, intervals and plots of a quality study (``runs.jsonl`` of ``quality_study.py``).

    python -m benchmarks.quality_study_report                       # the cpu study's folder
    python -m benchmarks.quality_study_report --input DIR           # any study folder

Writes ``summary.json`` (every number below), ``summary.md`` (the tables), ``psnr_ci.png`` (mean evaluation PSNR per
task and arm with 95% intervals), ``budget.png`` (PSNR against training steps, seed 0) and ``budget_seeds.png`` (the
same over every seed, with intervals, where a budget ran with all seeds) into the study folder. Only the
runs whose settings match the newest ``settings-*.json`` are read. Each (task, arm) uses the learning rate with the
best mean *validation* PSNR at the main step count; its samples are seed 0 of that search plus the later seeds.
"""

from __future__ import annotations

import argparse
import functools
import json
import shutil
import statistics
from pathlib import Path

try:
    from .quality_methods import LABELS
    from .quality_stats import bootstrap, paired, table_of
    from .quality_study import DEFAULT_OUTPUT, PROFILES, Spec, chosen_lr, curve_seeds, load_rows
except ImportError:  # pragma: no cover
    from quality_methods import LABELS
    from quality_stats import bootstrap, paired, table_of
    from quality_study import DEFAULT_OUTPUT, PROFILES, Spec, chosen_lr, curve_seeds, load_rows

ARM_LABELS = {
    **LABELS,
    "sum-w3-lastconv": "AdaptIR sum w3 + last conv",
    "sum-w3-firstconv": "AdaptIR sum w3 + first conv",
    "bottleneck-w3-lastconv": "bottleneck w3 + last conv",
    "lora-r1-lastconv": "LoRA r1 + last conv",
    "sum-w8": "AdaptIR sum w8",
    "sum-w2-attention": "AdaptIR sum w2, attention + FFN",
    "sum-w1-attention-lastconv": "AdaptIR sum w1, attention + FFN + last conv",
    "sum-w2-attention-lastconv": "AdaptIR sum w2, attention + FFN + last conv",
    "sum-scale2": "AdaptIR sum scale 2",
    "sum-warmup25": "AdaptIR sum, 25% warm-up",
}
CHALLENGERS = ("adaptir-sum", "sum-w3-lastconv")  # compared with every other trained arm
OTHERS = ("full", "lora", "bottleneck", "adaptir-sum", "adaptir-gated", "sum-w3-lastconv")


def samples(rows: dict[str, dict], settings: dict, arm: str, task: str, steps: int, metric: str = "psnr_rgb"):
    """``{seed: {image: value}}`` of ``arm`` on ``task`` at ``steps`` (validation-chosen lr), or {} if not run."""
    if arm in ("input", "base"):
        row = rows.get(Spec(arm, task, 0, 0, 0.0).key())
        return {} if row is None else {0: row["eval"][metric]}
    lr = chosen_lr(arm, task, settings["steps"], rows, settings)
    if lr is None:
        return {}
    out = {}
    if steps == settings["steps"]:
        out[0] = rows[Spec(arm, task, steps, 0, lr).key()]
    for row in rows.values():
        if row["arm"] == arm and row["task"] == task and row["steps"] == steps and row["lr_source"] == "validation":
            out[row["seed"]] = row
    return {s: r["eval"][metric] for s, r in out.items() if r.get("eval")}


def _fmt(iv, digits: int = 2) -> str:
    return f"{iv.mean:.{digits}f} [{iv.low:.{digits}f}, {iv.high:.{digits}f}]"


def _meta(rows: dict[str, dict], settings: dict, arm: str, task: str) -> dict:
    lr = chosen_lr(arm, task, settings["steps"], rows, settings) if arm not in ("input", "base") else None
    row = (
        rows.get(Spec(arm, task, settings["steps"], 0, lr).key()) if lr else rows.get(Spec(arm, task, 0, 0, 0.0).key())
    )
    best_eval = None
    if lr is not None:  # the lr the evaluation photos would have picked (reported, never used)
        grid = settings["full_lrs"] if arm == "full" else settings["peft_lrs"]
        best_eval = max(
            grid, key=lambda g: rows[Spec(arm, task, settings["steps"], 0, g).key()].get("eval_mean") or -1e9
        )
    return (
        {
            "lr": lr,
            "lr_if_chosen_on_eval": best_eval,
            **{
                k: row.get(k)
                for k in ("trainable", "trainable_pct", "file_bytes", "step_time_s", "peak_mem_mb", "wall_s")
            },
        }
        if row
        else {}
    )


def summarize(rows: dict[str, dict], settings: dict) -> dict:
    """Every interval and comparison of the study (see the module docstring)."""
    names, groups = settings["eval_items"], settings["eval_groups"]
    steps, tasks = settings["steps"], settings["tasks"]
    arms = ["input", "base", *settings["arms"], *[a for extra, _ in settings["extra"] for a in extra]]
    arms = list(dict.fromkeys(arms))
    out: dict = {"per_task": {}, "mean_over_tasks": {}, "comparisons": {}, "budget": {}, "timing": {}}
    out["comparisons_by_steps"] = {}  # {steps: {"A - B | task": ...}} at the other budgets run with several seeds

    @functools.cache
    def interval(arm: str, task: str, at: int) -> dict | None:
        """Mean PSNR RGB of ``arm`` on ``task`` at ``at`` steps over its seeds and images, with its 95% interval."""
        s = samples(rows, settings, arm, task, at)
        return bootstrap(table_of(s, names), groups).as_dict() if s else None

    for task in tasks:
        out["per_task"][task] = {}
        for arm in arms:
            if (iv := interval(arm, task, steps)) is None:
                continue
            entry = {"psnr_rgb": iv, **_meta(rows, settings, arm, task)}
            for metric in ("psnr_y", "ssim_rgb"):
                entry[metric] = statistics.fmean(
                    v for per in samples(rows, settings, arm, task, steps, metric).values() for v in per.values()
                )
            out["per_task"][task][arm] = entry

    # the mean over tasks: an arm's per-(seed, image) average over the four tasks (only where all four have run)
    def over_tasks(arm: str, metric: str = "psnr_rgb", at: int = steps) -> dict[int, dict[str, float]]:
        per = [samples(rows, settings, arm, t, at, metric) for t in tasks]
        seeds = set.intersection(*(set(p) for p in per)) if all(per) else set()
        if arm in ("input", "base"):
            return {s: {n: statistics.fmean(p[0][n] for p in per) for n in names} for s in seeds}
        return {s: {n: statistics.fmean(p[s][n] for p in per) for n in names} for s in seeds}

    for arm in arms:
        s = over_tasks(arm)
        if s:
            out["mean_over_tasks"][arm] = bootstrap(table_of(s, names), groups).as_dict()

    def compare(a: str, b: str, task: str, at: int = steps) -> None:
        """``A - B`` on ``task`` (or the mean over tasks) at ``at`` steps, PSNR RGB and, under ``y``, PSNR Y."""
        result = {}
        for metric in ("psnr_rgb", "psnr_y"):
            if task == "mean":
                sa, sb = over_tasks(a, metric, at), over_tasks(b, metric, at)
            else:
                sa, sb = (
                    samples(rows, settings, a, task, at, metric),
                    samples(rows, settings, b, task, at, metric),
                )
            iv = paired(sa, sb, names, groups) if sa and sb else None
            if iv is None:
                return
            result[metric] = iv.as_dict()
        target = out["comparisons"] if at == steps else out["comparisons_by_steps"].setdefault(str(at), {})
        target[f"{a} - {b} | {task}"] = {**result["psnr_rgb"], "y": result["psnr_y"]}

    for a in CHALLENGERS:
        for b in OTHERS:
            if a == b or (b in CHALLENGERS and CHALLENGERS.index(b) > CHALLENGERS.index(a)):
                continue  # each pair once, the later challenger first
            for task in [*tasks, "mean"]:
                compare(a, b, task)
    for task in tasks:  # low-light investigation and extra arms: against full fine-tuning and AdaptIR sum
        for extra, extra_tasks in settings["extra"]:
            if task in extra_tasks:
                for a in extra:
                    for b in ("full", "adaptir-sum", "sum-w3-lastconv"):
                        compare(a, b, task)
    for extra, extra_tasks in settings["extra"]:  # extra arms run on every task: over the tasks too
        if set(tasks) <= set(extra_tasks):
            for a in extra:
                for b in ("full", "adaptir-sum", "sum-w3-lastconv"):
                    compare(a, b, "mean")
    # the other budgets run with several seeds: means ({steps: {task or "mean": {arm: interval}}}) and the
    # challengers' paired differences there
    out["means_by_steps"] = {}
    for entry in settings["curve"]:
        if curve_seeds(entry) < 2 or entry[0] == steps:
            continue
        at, arm_list, task_list = entry[:3]
        every_task = set(tasks) <= set(task_list)
        by_task = out["means_by_steps"].setdefault(str(at), {})
        for arm in arm_list:
            for task in task_list:
                if (iv := interval(arm, task, at)) is not None:
                    by_task.setdefault(task, {})[arm] = iv
            s = over_tasks(arm, at=at) if every_task else {}
            if s:
                by_task.setdefault("mean", {})[arm] = bootstrap(table_of(s, names), groups).as_dict()
        for a in CHALLENGERS:
            for b in arm_list:
                if a != b and a in arm_list and not (b in CHALLENGERS and CHALLENGERS.index(b) > CHALLENGERS.index(a)):
                    for task in [*task_list, *(["mean"] if every_task else [])]:
                        compare(a, b, task, at)
    curve_steps = sorted({steps, *(c[0] for c in settings["curve"])})
    for task in tasks:
        for arm in settings["arms"]:
            points = {}
            for n in curve_steps:
                s = samples(rows, settings, arm, task, n)
                if s:
                    s0 = {0: s[0]} if 0 in s else s  # the curve compares seed 0 at every budget
                    points[str(n)] = bootstrap(table_of(s0, names), groups).as_dict()
            if len(points) > 1:
                out["budget"].setdefault(task, {})[arm] = points
    # the same curve over every seed, where a point has as many seeds as the main budget (with its interval)
    curve_arms = list(dict.fromkeys([*settings["arms"], *(a for entry in settings["curve"] for a in entry[1])]))
    out["budget_seeds"] = {}
    for task in tasks:
        for arm in curve_arms:
            points = {str(n): interval(arm, task, n) for n in curve_steps}
            points = {n: iv for n, iv in points.items() if iv is not None and iv["seeds"] >= settings["seeds"]}
            if len(points) > 1:
                out["budget_seeds"].setdefault(task, {})[arm] = points
    by_steps: dict[int, list[float]] = {}
    for row in rows.values():
        by_steps.setdefault(row["steps"], []).append(row["wall_s"])
    out["timing"] = {
        str(k): {"runs": len(v), "mean_wall_s": statistics.fmean(v), "total_s": sum(v)}
        for k, v in sorted(by_steps.items())
    }
    return out


def markdown(summary: dict, settings: dict) -> str:
    """The summary as markdown tables."""
    lines = [
        f"Study `{settings['profile']}`: {settings['steps']} steps x batch {settings['batch_size']} x "
        f"{settings['patch_size']} px; {len(settings['eval_items'])} evaluation images from "
        f"{len(set(settings['eval_groups']))} photos; mean PSNR RGB (dB) with 95% bootstrap interval over "
        "photos x seeds.",
        "",
    ]
    lines += [
        "| task | method | seeds | PSNR RGB [95% CI] | PSNR Y | SSIM RGB | lr (validation) | lr if chosen on eval "
        "| trainable (% of base) | step time |",
        "|---|---|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for task, by_arm in summary["per_task"].items():
        for arm, e in by_arm.items():
            iv = e["psnr_rgb"]
            lr = f"{e['lr']:.0e}" if e.get("lr") else "-"
            lre = f"{e['lr_if_chosen_on_eval']:.0e}" if e.get("lr_if_chosen_on_eval") else "-"
            tr = f"{e['trainable']:,} ({e['trainable_pct']:.2f}%)" if e.get("trainable") is not None else "-"
            st = f"{1000 * e['step_time_s']:.0f} ms" if e.get("step_time_s") else "-"
            lines.append(
                f"| {task} | {ARM_LABELS.get(arm, arm)} | {iv['seeds']} | {iv['mean']:.2f} [{iv['low']:.2f}, "
                f"{iv['high']:.2f}] | {e['psnr_y']:.2f} | {e['ssim_rgb']:.4f} | {lr} | {lre} | {tr} | {st} |"
            )
    lines += [
        "",
        "Mean over the four tasks (per seed and image):",
        "",
        "| method | seeds | PSNR RGB [95% CI] |",
        "|---|---:|---|",
    ]
    for arm, iv in summary["mean_over_tasks"].items():
        lines.append(
            f"| {ARM_LABELS.get(arm, arm)} | {iv['seeds']} | {iv['mean']:.2f} [{iv['low']:.2f}, {iv['high']:.2f}] |"
        )
    lines += [
        "",
        "Paired differences A - B (same seed, same image), dB, 95% interval, bootstrap p; `tie` when the "
        "interval contains 0:",
        "",
        "| A - B | task | seeds | PSNR RGB diff. [95% CI] | p | verdict | PSNR Y diff. [95% CI] | Y verdict |",
        "|---|---|---:|---|---:|---|---|---|",
    ]
    for key, iv in summary["comparisons"].items():
        y = iv["y"]
        lines.append(
            _difference_row(key, iv) + f" {y['mean']:+.2f} [{y['low']:+.2f}, {y['high']:+.2f}] | {y['verdict']} |"
        )
    for at, by_task in summary.get("means_by_steps", {}).items():
        lines += _section(
            f"Mean PSNR RGB at {at} steps (seeds as listed; learning rate chosen at the main budget), 95% interval:",
            "| task | method | seeds | PSNR RGB [95% CI] |",
            "|---|---|---:|---|",
        )
        for task in [*(t for t in by_task if t != "mean"), *(["mean"] if "mean" in by_task else [])]:
            for arm, iv in by_task[task].items():
                lines.append(
                    f"| {task} | {ARM_LABELS.get(arm, arm)} | {iv['seeds']} | {iv['mean']:.2f} [{iv['low']:.2f}, "
                    f"{iv['high']:.2f}] |"
                )
    for at, comparisons in summary.get("comparisons_by_steps", {}).items():
        lines += _section(
            f"Paired differences at {at} steps (seeds as listed; learning rate chosen at the main budget):",
            "| A - B | task | seeds | PSNR RGB diff. [95% CI] | p | verdict |",
            "|---|---|---:|---|---:|---|",
        )
        lines += [_difference_row(key, iv) for key, iv in comparisons.items()]
    budget_header = "| task | method | " + " | ".join(f"{n} steps" for n in _curve_steps(summary)) + " |"
    if summary["budget"]:
        lines += _section(
            "Budget curve (seed 0, learning rate chosen on validation at the main budget), PSNR RGB:",
            budget_header,
            "|---|---|" + "---:|" * len(_curve_steps(summary)),
        )
        for task, by_arm in summary["budget"].items():
            for arm, points in by_arm.items():
                cells = [f"{points[str(n)]['mean']:.2f}" if str(n) in points else "-" for n in _curve_steps(summary)]
                lines.append(f"| {task} | {ARM_LABELS.get(arm, arm)} | " + " | ".join(cells) + " |")
    if summary.get("budget_seeds"):
        lines += _section(
            f"Budget curve over all {settings['seeds']} seeds (points run with every seed only), PSNR RGB [95% CI]:",
            budget_header,
            "|---|---|" + "---|" * len(_curve_steps(summary)),
        )
        for task, by_arm in summary["budget_seeds"].items():
            for arm, points in by_arm.items():
                cells = [
                    f"{points[str(n)]['mean']:.2f} [{points[str(n)]['low']:.2f}, {points[str(n)]['high']:.2f}]"
                    if str(n) in points
                    else "-"
                    for n in _curve_steps(summary)
                ]
                lines.append(f"| {task} | {ARM_LABELS.get(arm, arm)} | " + " | ".join(cells) + " |")
    lines += ["", "| steps | runs | mean wall time per run | total |", "|---:|---:|---:|---:|"]
    for n, t in summary["timing"].items():
        lines.append(f"| {n} | {t['runs']} | {t['mean_wall_s']:.0f} s | {t['total_s'] / 60:.0f} min |")
    return "\n".join(lines) + "\n"


def _difference_row(key: str, iv: dict) -> str:
    """A paired difference ``"A - B | task"`` as a table row: labels, seeds, PSNR RGB interval, p, verdict."""
    pair, task = key.split(" | ")
    a, b = pair.split(" - ")
    return (
        f"| {ARM_LABELS.get(a, a)} - {ARM_LABELS.get(b, b)} | {task} | {iv['seeds']} | {iv['mean']:+.2f} "
        f"[{iv['low']:+.2f}, {iv['high']:+.2f}] | {iv['p']:.3f} | {iv['verdict']} |"
    )


def _section(title: str, header: str, rule: str) -> list[str]:
    """The lines that open a markdown table under a one-line title."""
    return ["", title, "", header, rule]


def _curve_steps(summary: dict) -> list[int]:
    return sorted({int(n) for by_arm in summary["budget"].values() for p in by_arm.values() for n in p})


def plots(summary: dict, folder: Path) -> None:
    """``psnr_ci.png`` and (if the curve has points) ``budget.png``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = [t for t, by_arm in summary["per_task"].items() if set(by_arm) - {"input", "base"}]
    if not tasks:
        return
    every_arm = list(dict.fromkeys(a for t in tasks for a in summary["per_task"][t] if a not in ("input", "base")))
    palette = plt.get_cmap("tab20")
    colour = {arm: palette(i % 20) for i, arm in enumerate(every_arm)}  # one colour per method in every panel
    fig, axes = plt.subplots(1, len(tasks), figsize=(3.8 * len(tasks) + 1, 4.0), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        arms = [a for a in summary["per_task"][task] if a not in ("input", "base")]
        ivs = [summary["per_task"][task][a]["psnr_rgb"] for a in arms]
        means = [iv["mean"] for iv in ivs]
        err = [[m - iv["low"] for m, iv in zip(means, ivs)], [iv["high"] - m for m, iv in zip(means, ivs)]]
        ax.bar(
            range(len(arms)),
            means,
            yerr=err,
            capsize=3,
            color=[colour[a] for a in arms],
        )
        low, high = min(iv["low"] for iv in ivs), max(iv["high"] for iv in ivs)
        ax.set_ylim(low - 0.3 * (high - low), high + 0.1 * (high - low))
        ax.set_xticks(range(len(arms)), [ARM_LABELS.get(a, a) for a in arms], rotation=60, ha="right", fontsize=7)
        ax.set_title(task, fontsize=10)
    axes[0][0].set_ylabel("PSNR RGB (dB), evaluation photos")
    fig.suptitle("mean over photos x seeds, 95% bootstrap interval", fontsize=9)
    fig.tight_layout()
    fig.savefig(folder / "psnr_ci.png", dpi=100)
    plt.close(fig)
    if not summary["budget"]:
        return
    tasks = list(summary["budget"])
    fig, axes = plt.subplots(1, len(tasks), figsize=(3.8 * len(tasks), 3.6), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        for i, (arm, points) in enumerate(summary["budget"][task].items()):
            steps = sorted(int(n) for n in points)
            ax.plot(
                steps,
                [points[str(n)]["mean"] for n in steps],
                "o-",
                label=ARM_LABELS.get(arm, arm),
                color=plt.get_cmap("tab10")(i % 10),
            )
        ax.set_xscale("log", base=2)
        ax.set_xlabel("training steps")
        ax.set_title(task, fontsize=10)
    axes[0][0].set_ylabel("PSNR RGB (dB)")
    axes[0][-1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(folder / "budget.png", dpi=100)
    plt.close(fig)
    if summary.get("budget_seeds"):
        _budget_seeds_plot(summary["budget_seeds"], folder / "budget_seeds.png", plt)


def _budget_seeds_plot(budget: dict, path: Path, plt) -> None:
    """PSNR against steps, mean over seeds with its 95% interval as error bars: one panel per task."""
    every_arm = list(dict.fromkeys(a for by_arm in budget.values() for a in by_arm))
    colour = {arm: plt.get_cmap("tab10")(i % 10) for i, arm in enumerate(every_arm)}
    fig, axes = plt.subplots(1, len(budget), figsize=(3.8 * len(budget), 3.8), squeeze=False)
    for ax, (task, by_arm) in zip(axes[0], budget.items()):
        for k, (arm, points) in enumerate(by_arm.items()):
            steps = sorted(int(n) for n in points)
            ivs = [points[str(n)] for n in steps]
            dodge = 2 ** (0.04 * (k - (len(by_arm) - 1) / 2))  # side by side, so the intervals stay readable
            ax.errorbar(
                [n * dodge for n in steps],
                [iv["mean"] for iv in ivs],
                yerr=[[iv["mean"] - iv["low"] for iv in ivs], [iv["high"] - iv["mean"] for iv in ivs]],
                fmt="o-",
                capsize=2,
                elinewidth=0.8,
                label=ARM_LABELS.get(arm, arm),
                color=colour[arm],
            )
        ax.set_xscale("log", base=2)
        ax.set_xlabel("training steps")
        ax.set_title(task, fontsize=10)
    axes[0][0].set_ylabel("PSNR RGB (dB), mean over seeds")
    handles = {h.get_label(): h for ax in axes[0] for h in ax.get_legend_handles_labels()[0]}
    fig.legend(handles.values(), handles.keys(), fontsize=7, loc="lower center", ncol=4)
    fig.tight_layout(rect=(0, 0.14, 1, 1))
    fig.savefig(path, dpi=100)
    plt.close(fig)


def load_study(folder: Path) -> tuple[dict[str, dict], dict]:
    """The rows and settings of the newest settings file in ``folder``."""
    files = sorted(folder.glob("settings-*.json"), key=lambda p: p.stat().st_mtime)
    if not files:
        raise FileNotFoundError(f"No settings-*.json in {folder}; run `python -m benchmarks.quality_study` first.")
    settings = json.loads(files[-1].read_text())
    settings.update({k: PROFILES[settings_profile(settings)][k] for k in ("extra", "curve")})
    return load_rows(folder / "runs.jsonl", settings["settings_id"]), settings


def settings_profile(settings: dict) -> str:
    return settings.get("profile") or next(
        p for p, v in PROFILES.items() if v["base"] == settings["base"] and v["steps"] == settings["steps"]
    )


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--input", type=Path, default=DEFAULT_OUTPUT / "study-cpu", help="the study folder")
    parser.add_argument(
        "--figures", type=Path, default=None, help="also copy the plots here (docs/figures/quality for the docs)"
    )
    args = parser.parse_args(argv)
    rows, settings = load_study(args.input)
    settings["profile"] = settings_profile(settings)
    summary = summarize(rows, settings)
    (args.input / "summary.json").write_text(json.dumps(summary, indent=1))
    text = markdown(summary, settings)
    (args.input / "summary.md").write_text(text)
    plots(summary, args.input)
    if args.figures is not None:
        args.figures.mkdir(parents=True, exist_ok=True)
        for name in ("psnr_ci.png", "budget.png", "budget_seeds.png"):
            if (args.input / name).is_file():
                shutil.copyfile(args.input / name, args.figures / name)
    print(text)
    return summary


if __name__ == "__main__":
    main()
