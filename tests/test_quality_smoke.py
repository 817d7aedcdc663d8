"""The quality benchmark's smoke profile end to end: every task x method scored with finite numbers."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _load_benchmark(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    spec = importlib.util.spec_from_file_location("adapt_quality", BENCHMARKS / "adapt_quality.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "adapt_quality", module)
    spec.loader.exec_module(module)
    return module


def test_smoke_profile_writes_every_task_and_method(tmp_path, monkeypatch):
    bench = _load_benchmark(monkeypatch)
    bench.main(["--profile", "smoke", "--output", str(tmp_path)])

    for name in ("results.json", "results.md", "psnr.png", "grid.png"):
        assert (tmp_path / name).stat().st_size > 0, name
    report = json.loads((tmp_path / "results.json").read_text())
    methods = ["input", *bench.METHODS]
    assert set(report["best"]) == set(bench.TASKS)
    metric_keys = ("psnr_rgb", "ssim_rgb", "psnr_y", "ssim_y")
    for task in bench.TASKS:
        assert set(report["best"][task]) == set(methods)
        for method in methods:
            result = report["best"][task][method]
            for key in metric_keys:
                assert math.isfinite(result[key]), (task, method, key)
            assert 0 < result["ssim_rgb"] <= 1 and 0 < result["psnr_rgb"] < 100
        for method in bench.TRAINED:
            result = report["best"][task][method]
            assert math.isfinite(result["final_loss"]) and result["step_time_s"] > 0 and result["file_bytes"] > 0
        # the untrained base and the degraded input need no learning rate; the base trains nothing
        assert report["best"][task]["base"]["trainable"] == 0

    # the same patches and initialisation for every task: the parameter counts do not depend on the task
    gated = {report["best"][t]["adaptir-gated"]["trainable"] for t in bench.TASKS}
    assert gated == {report["matching"]["adaptir_gated_trainable"]}
    lora = report["best"][bench.TASKS[0]]["lora"]["trainable"]
    assert lora == report["matching"]["lora_trainable"]
    # the matched LoRA rank is the closest one: a rank step further would be farther from AdaptIR gated's count
    rank, target = report["matching"]["lora_rank"], gated.pop()
    per_rank = lora // rank
    for other in (r for r in (rank - 1, rank + 1) if r >= 1):
        assert abs(lora - target) <= abs(other * per_rank - target)
    full = report["best"][bench.TASKS[0]]["full"]
    assert full["trainable"] == report["base"]["params"] and full["trainable_pct"] == 100.0
    # every run of the grid is kept: 5 trained methods x 1 lr + input + base, per task
    assert len(report["runs"]) == len(bench.TASKS) * (len(bench.TRAINED) + 2)
    assert "| AdaptIR gated |" in (tmp_path / "results.md").read_text()


def test_study_smoke_resumes_chooses_lr_on_validation_and_reports(tmp_path, monkeypatch):
    monkeypatch.chdir(BENCHMARKS.parent)
    monkeypatch.syspath_prepend(str(BENCHMARKS.parent))
    from benchmarks import quality_images, quality_study, quality_study_report

    rows = quality_study.main(["--profile", "smoke", "--output", str(tmp_path)])
    settings = quality_study.PROFILES["smoke"]
    planned = quality_study.plan({**settings})
    assert set(rows) == {s.key() for s in planned}
    lines = (tmp_path / "runs.jsonl").read_text().splitlines()
    assert len(lines) == len(planned)
    # evaluation and validation images are disjoint, and none comes from a training photo's trained region
    evaluation = quality_images.evaluation_items(False)
    validation = quality_images.validation_items()
    assert len(evaluation) >= 12 and not {i.name for i in evaluation} & {i.name for i in validation}
    assert not {i.group for i in evaluation} & {i.group for i in validation}
    for row in rows.values():
        assert set(row["eval"]["psnr_rgb"]) == {i.name for i in evaluation}
        assert set(row["val"]["psnr_rgb"]) == {i.name for i in validation}
    # later seeds use the learning rate with the best mean validation PSNR of the seed-0 search
    for row in rows.values():
        if row["lr_source"] == "validation":
            grid = settings["full_lrs"] if row["arm"] == "full" else settings["peft_lrs"]
            search = [rows[quality_study.Spec(row["arm"], row["task"], settings["steps"], 0, lr).key()] for lr in grid]
            assert row["lr"] == max(search, key=lambda r: r["val_mean"])["lr"]
    # the last-conv variant trains the final convolution too, and stays small
    lastconv = rows[quality_study.Spec("sum-w3-lastconv", "low-light", 2, 0, 2e-3).key()]
    plain = rows[quality_study.Spec("adaptir-sum", "low-light", 2, 0, 2e-3).key()]
    assert lastconv["trainable"] != plain["trainable"]
    # a second call finds everything done and appends nothing
    quality_study.main(["--profile", "smoke", "--output", str(tmp_path)])
    assert len((tmp_path / "runs.jsonl").read_text().splitlines()) == len(planned)

    summary = quality_study_report.main(["--input", str(tmp_path)])
    assert set(summary["per_task"]) == set(settings["tasks"])
    iv = summary["per_task"]["low-light"]["full"]["psnr_rgb"]
    assert iv["seeds"] == 2 and iv["low"] <= iv["mean"] <= iv["high"]
    assert "adaptir-sum - full | mean" in summary["comparisons"]
    # the curve's budget run with two seeds gets its own means and paired differences
    at_curve = summary["means_by_steps"]["4"]
    assert at_curve["low-light"]["full"]["seeds"] == 2 and set(at_curve["mean"]) == {"full", "adaptir-sum"}
    assert summary["comparisons_by_steps"]["4"]["adaptir-sum - full | low-light"]["seeds"] == 2
    assert "Mean PSNR RGB at 4 steps" in (tmp_path / "summary.md").read_text()
    assert set(summary["budget_seeds"]["low-light"]["full"]) == {"2", "4"}  # both budgets, both seeds
    assert summary["budget_seeds"]["low-light"]["full"]["4"] == at_curve["low-light"]["full"]
    for name in ("summary.md", "summary.json", "psnr_ci.png", "budget.png", "budget_seeds.png"):
        assert (tmp_path / name).stat().st_size > 0, name


def test_bootstrap_interval_separates_a_real_difference_from_noise(monkeypatch):
    import numpy as np

    monkeypatch.syspath_prepend(str(BENCHMARKS))
    from quality_stats import bootstrap

    rng = np.random.default_rng(0)
    groups = [f"photo{i // 2}" for i in range(16)]  # two crops per photo: photos are resampled whole
    shifted = bootstrap(0.5 + 0.1 * rng.standard_normal((3, 16)), groups)
    assert shifted.verdict == "better" and shifted.low > 0.3 and shifted.p < 0.01
    assert shifted.seeds == 3 and shifted.images == 16 and shifted.photos == 8
    noise = bootstrap(rng.standard_normal((3, 16)), groups)
    assert noise.verdict == "tie" and noise.low < 0 < noise.high
    assert bootstrap(-0.2 + 0.01 * rng.standard_normal((2, 16)), groups).verdict == "worse"
