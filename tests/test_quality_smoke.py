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
