"""The examples in examples/ run as written, on a tiny step budget and a tiny saved Swin2SR, so they cannot rot.

They run in this process (importing each script and calling its ``main``) to keep the suite fast; the Hub example
talks HTTP to the loopback Hub of ``tests/hub_server.py``.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hub_fixtures import TOKEN, hub, hub_client  # noqa: F401 - fixtures
from peft import PeftModel
from PIL import Image
from tiny_models import save_base_and_adapters

import peft_adaptir
from peft_adaptir import restore
from peft_adaptir.data.sources import load_skimage_photos
from peft_adaptir.metrics import calculate_psnr

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
TASKS = ("derain-heavy", "denoise-50")


def load_example(name: str):
    """Import ``examples/<name>.py`` as a module (its ``main`` is not run)."""
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A tiny saved scale-1 Swin2SR base and two perturbed (so not identity) adapters named after tasks."""

    root = tmp_path_factory.mktemp("examples")
    save_base_and_adapters(root, TASKS)
    return root


def base_of(root: Path):
    from transformers import Swin2SRForImageSuperResolution

    return Swin2SRForImageSuperResolution.from_pretrained(root / "base").eval()


def test_train_example(models, tmp_path, monkeypatch):
    out = tmp_path / "run"
    argv = ["--base", str(models / "base"), "--task", "denoise-50", "--steps", "2", "--batch-size", "2",
            "--patch-size", "16", "--val-crop", "32", "--val-every", "0", "--checkpoint-every", "0",
            "--no-progress", "--output", str(out)]  # fmt: skip
    monkeypatch.setattr(sys, "argv", ["train_adaptir.py", *argv])
    assert load_example("train_adaptir").main() == 0
    log = json.loads((out / "adapter" / "training_log.json").read_text())
    assert log["step"] == 2 and len(log["losses"]) == 2 and all(np.isfinite(log["losses"]))
    assert log["config"]["task"] == "denoise-50" and [v["step"] for v in log["validation"]] == [0, 2]
    trained = PeftModel.from_pretrained(base_of(models), out / "adapter")
    ups = [p for name, p in trained.named_parameters() if "adaptir_branch" in name and name.endswith("up.weight")]
    assert ups and all(p.abs().max() > 0 for p in ups)  # the zero-initialised up-projections moved


def test_serve_example(models, tmp_path):
    out = tmp_path / "serve"
    argv = ["--base", str(models / "base"), "--crop", "32", "--output", str(out)]
    argv += [f"--adapter={task}={models / task}" for task in TASKS]
    assert load_example("serve_tasks").main(argv) == 0
    model = PeftModel.from_pretrained(base_of(models), models / TASKS[0], adapter_name=TASKS[0])
    model.load_adapter(models / TASKS[1], adapter_name=TASKS[1])
    base = base_of(models)
    summary = {row["adapter"]: row for row in json.loads((out / "summary.json").read_text())}
    assert list(summary) == list(TASKS)
    photos = load_skimage_photos("validation")
    for index, task in enumerate(TASKS):
        label = summary[task]["image"]
        degraded = Image.open(out / f"{label}-input.png")
        assert degraded.size == (32, 32)
        restored = np.asarray(Image.open(out / f"{label}-restored.png")).astype(int)
        base_only = np.asarray(Image.open(out / f"{label}-base.png")).astype(int)
        # the mixed batch gives what each adapter (or the bare base) gives on its own
        assert np.abs(restored - np.asarray(restore(model, degraded, adapter=task)).astype(int)).max() <= 1
        assert np.abs(base_only - np.asarray(restore(base, degraded)).astype(int)).max() <= 1
        assert np.abs(restored - base_only).max() >= 3  # the adapter changes the result (beyond rounding)
        photo = photos[index]["image"]
        left, top = (photo.width - 32) // 2, (photo.height - 32) // 2
        clean = np.asarray(photo.crop((left, top, left + 32, top + 32))) / 255.0
        expected = calculate_psnr(np.asarray(degraded) / 255.0, clean)
        assert summary[task]["psnr_input"] == pytest.approx(expected, abs=1e-3)
        assert summary[task]["psnr_adapter"] == pytest.approx(calculate_psnr(restored / 255.0, clean), abs=1e-3)


def test_serve_example_errors(models, tmp_path, monkeypatch, capsys):
    serve = load_example("serve_tasks")
    adapter = f"--adapter=derain-heavy={models / 'derain-heavy'}"
    assert serve.main([adapter, "--image", f"denoise={tmp_path / 'x.png'}", "--output", str(tmp_path)]) == 2
    assert "not loaded adapters" in capsys.readouterr().err
    assert serve.main([f"--adapter=mine={models / 'derain-heavy'}", "--output", str(tmp_path)]) == 2
    assert "--image NAME=PATH" in capsys.readouterr().err
    # without --base the embedded default base is used; a missing one is a clear error, not a traceback
    monkeypatch.setattr("peft_adaptir.backbones.default_base._ASSET_DIR", tmp_path / "no-base")
    assert serve.main([adapter, "--output", str(tmp_path)]) == 2
    assert "embedded default base model is incomplete" in capsys.readouterr().err


def test_push_example(models, hub_client, tmp_path, monkeypatch, capsys):  # noqa: F811
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    adapter = tmp_path / "adapter"
    PeftModel.from_pretrained(base_of(models), models / "derain-heavy").save_pretrained(adapter)
    log = {"config": {"task": "derain-heavy"}, "final": {"psnr": 27.1234, "ssim": 0.81234}}
    (adapter / "training_log.json").write_text(json.dumps(log))
    argv = ["--adapter", str(adapter), "--repo-id", "alice/adaptir-derain", "--base", str(models / "base")]
    assert load_example("push_to_hub").main(argv) == 0  # 0: reloaded by id, outputs identical
    assert "max |difference| from the local adapter = 0" in capsys.readouterr().out
    from huggingface_hub import HfApi, ModelCard

    files = HfApi(token=TOKEN).list_repo_files("alice/adaptir-derain")
    assert sorted(files) == ["README.md", "adapter_config.json", "adapter_model.safetensors"]
    card = ModelCard.load("alice/adaptir-derain", token=TOKEN)
    assert card.data.library_name == "peft" and "derain-heavy" in card.data.tags
    assert "| PSNR (dB) | 27.12 |" in card.text and "| SSIM | 0.8123 |" in card.text
    assert card.data.base_model is None  # the base was a local folder: not named on the Hub
    # a different base model loaded from the pushed repo gives the same result as the local adapter
    pulled = PeftModel.from_pretrained(base_of(models), "alice/adaptir-derain").eval()
    local = PeftModel.from_pretrained(base_of(models), adapter).eval()
    x = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(pulled(x).reconstruction, local(x).reconstruction, rtol=0, atol=0)


def test_examples_import_peft_adaptir_first():
    """Every example imports peft_adaptir before loading adapters (peft cannot load 'ADAPTIR' otherwise)."""
    for path in EXAMPLES.glob("*.py"):
        text = path.read_text()
        if "PeftModel" in text or "load_adapters" in text:
            assert "import peft_adaptir" in text or "from peft_adaptir" in text, path.name
    assert peft_adaptir.ADAPTIR_PEFT_TYPE == "ADAPTIR"
