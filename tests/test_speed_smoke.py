"""The speed benchmark runs end to end (``--quick``, tiny shapes) and writes the report it promises."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "speed.py"
METHODS = {"full", "bottleneck", "sum", "gated", "lora", "bottleneck_reference", "gated_reference"}


def test_quick_speed_run_writes_expected_report(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--out", str(tmp_path)], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((tmp_path / "speed_quick.json").read_text())
    assert report["meta"]["quick"] is True
    (run,) = report["runs"]
    assert run["shape"] == "tiny" and run["device"] == "cpu"
    assert set(run["methods"]) == METHODS
    # LoRA's rank was chosen so its trainable count is the closest to AdaptIR's (gated)
    assert run["methods"]["lora"]["rank"] >= 1
    assert run["methods"]["bottleneck"]["trainable_params"] < run["methods"]["gated"]["trainable_params"]
    assert run["methods"]["full"]["trainable_params"] > 10 * run["methods"]["gated"]["trainable_params"]
    for precision in ("fp32", "bf16"):
        training, inference = run["training"][precision], run["inference"][precision]
        assert set(training) == METHODS
        for name in METHODS - {"bottleneck"}:
            assert training[name]["ratio_vs_bottleneck"] > 0
        assert training["gated"]["saved_activations_mib"] > training["bottleneck"]["saved_activations_mib"] > 0
        # operators per training step: deterministic, and each branch adds to the plain bottleneck's
        ops = {name: training[name]["ops_per_step"] for name in ("gated", "sum", "bottleneck", "full")}
        assert ops["gated"] > ops["sum"] > ops["bottleneck"] > 0 and ops["full"] > 0
        assert training["sum"]["cpu_ratio_vs_bottleneck"] > 0 and training["sum"]["cpu_median_s"] > 0
        assert set(inference) == (METHODS - {"full"}) | {"base"}
        assert all(inference[name]["ratio_vs_base"] > 0 for name in inference if name != "base")
    multi = run["multi_adapter"]
    assert multi["set_adapter_ms"] > 0 and multi["load_adapter_ms"] > 0 and multi["adapter_file_kib"] > 0
    assert set(multi["batch"]) == {"single_task_batch", "mixed_4_tasks", "task_by_task"}
    assert multi["batch"]["mixed_4_tasks"]["ratio_vs_single_task_batch"] > 0
    profile = Path(run["profile_file"]).read_text()
    assert "gated training step" in profile and "extra time over the bottleneck" in profile
    table = (tmp_path / "speed_quick.md").read_text()
    assert "| gated |" in table and "mixed 4 tasks" in table


def test_methods_option_times_only_the_named_rows(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--methods", "bottleneck", "sum", "--precisions", "fp32",
         "--train-batch", "2", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    (run,) = json.loads((tmp_path / "speed_quick.json").read_text())["runs"]
    assert set(run["methods"]) == {"bottleneck", "sum"} and list(run["training"]) == ["fp32"]
    assert run["train_batch"] == 2 and run["batch"] == 1
    assert set(run["training"]["fp32"]) == {"bottleneck", "sum"}
    assert set(run["inference"]["fp32"]) == {"base", "bottleneck", "sum"}
    assert "multi_adapter" not in run  # extras are skipped with --methods
