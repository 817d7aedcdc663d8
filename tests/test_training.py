"""Training with Accelerate on CPU: a tiny run learns, resume is exact, NaN stops cleanly, bad input is named."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from training_fixtures import base_dir, fresh_accelerate_state  # noqa: F401 (fixtures)
from training_fixtures import new_process_state as _new_process_state
from training_fixtures import tiny_training_base as _tiny_swin2sr

import peft_adaptir  # noqa: F401 - registers AdaptIR with peft
from peft_adaptir.backbones.loading import load_base_model
from peft_adaptir.cli.train import add_train_arguments, run_train
from peft_adaptir.training import loop as training
from peft_adaptir.training.checkpoints import latest_checkpoint, read_trainer_state
from peft_adaptir.training.datasets import check_batch, check_model_fits
from peft_adaptir.training.loop import TrainingConfig, TrainingDivergedError, train


def _small_config(output_dir, **overrides) -> TrainingConfig:
    settings = dict(output_dir=str(output_dir), task="denoise-25", patch_size=16, batch_size=2, steps=6, lr=5e-3)
    settings.update(val_every=0, val_crop=16, checkpoint_every=2, progress=False)
    settings.update(overrides)
    return TrainingConfig(**settings)


def _adapter_weights(adapter_dir) -> dict[str, torch.Tensor]:
    return load_file(str(adapter_dir / "adapter_model.safetensors"))


def test_cli_tiny_run_lowers_validation_loss_and_writes_adapter_log_and_plots(base_dir, tmp_path):
    out = tmp_path / "run"
    parser = add_train_arguments(__import__("argparse").ArgumentParser())
    args = parser.parse_args(
        ["--base", str(base_dir), "--task", "denoise-25", "--output", str(out), "--steps", "30", "--batch-size", "4",
         "--patch-size", "16", "--lr", "1e-2", "--val-every", "0", "--val-crop", "32", "--checkpoint-every", "0",
         "--no-progress"]
    )  # fmt: skip
    assert run_train(args) == 0

    adapter_dir = out / "adapter"
    log = json.loads((adapter_dir / "training_log.json").read_text())
    before, after = log["validation"][0], log["validation"][-1]
    assert (before["step"], after["step"]) == (0, 30)
    assert after["val_loss"] < before["val_loss"] - 1e-3
    assert after["psnr"] > before["psnr"]
    assert len(log["losses"]) == 30 and all(0 < v < 1 for v in log["losses"])
    assert log["final"] == after and log["config"]["lr"] == 1e-2
    assert json.loads((adapter_dir / "adapter_config.json").read_text())["peft_type"] == "ADAPTIR"
    assert not (out / "checkpoints").exists()
    for name in ("training_curve.png", "preview.png"):
        with Image.open(adapter_dir / name) as image:
            assert image.format == "PNG" and min(image.size) > 200

    # the saved adapter alone (no base weights) reproduces the logged final validation on a fresh base
    from peft import PeftModel

    from peft_adaptir.data.pairs import EvalPairs
    from peft_adaptir.data.sources import load_image_dataset

    weights = _adapter_weights(adapter_dir)
    assert weights and all("adaptir_branch" in key for key in weights)
    model = PeftModel.from_pretrained(load_base_model(str(base_dir)), str(adapter_dir))
    val_set = EvalPairs(load_image_dataset(None, "validation"), "denoise-25", seed=0, crop=32, multiple=4)
    metrics, _ = training._validate(model, val_set, torch.device("cpu"), training.LOSS_FUNCTIONS["l1"])
    assert metrics["psnr"] == pytest.approx(after["psnr"], abs=1e-6)
    assert metrics["val_loss"] == pytest.approx(after["val_loss"], abs=1e-7)


def test_killed_run_resumes_to_the_same_adapter_as_an_uninterrupted_run(base_dir, tmp_path, monkeypatch):
    full = train(load_base_model(str(base_dir)), _small_config(tmp_path / "full", grad_accum=2))

    def killed_at_step_4(degraded, clean, step):
        if step == 4:
            raise KeyboardInterrupt("simulated kill")

    _new_process_state()
    with monkeypatch.context() as patch:
        patch.setattr(training, "check_batch", killed_at_step_4)
        with pytest.raises(KeyboardInterrupt):
            train(load_base_model(str(base_dir)), _small_config(tmp_path / "resumed", grad_accum=2))
    assert latest_checkpoint(tmp_path / "resumed").name == "step-2"
    assert not (tmp_path / "resumed" / "adapter").exists()

    _new_process_state()
    resumed = train(load_base_model(str(base_dir)), _small_config(tmp_path / "resumed", grad_accum=2))
    expected, got = _adapter_weights(full.adapter_dir), _adapter_weights(resumed.adapter_dir)
    assert expected.keys() == got.keys()
    assert all(torch.equal(expected[key], got[key]) for key in expected)
    assert resumed.losses == full.losses  # the same batches, step for step
    assert any(not torch.equal(v, torch.zeros_like(v)) for k, v in got.items() if "up" in k)  # it did train

    with pytest.raises(ValueError, match=r"Cannot resume .*steps: 6 -> 8"):
        train(load_base_model(str(base_dir)), _small_config(tmp_path / "resumed", grad_accum=2, steps=8))


def test_nan_loss_stops_with_the_step_and_keeps_the_last_good_checkpoint(base_dir, tmp_path, monkeypatch):
    calls = []

    def l1_then_nan(pred, target):
        loss = torch.nn.functional.l1_loss(pred, target)
        if torch.is_grad_enabled():  # training, not validation
            calls.append(1)
            if len(calls) == 5:
                return loss * float("nan")
        return loss

    monkeypatch.setitem(training.LOSS_FUNCTIONS, "l1", l1_then_nan)
    out = tmp_path / "nan"
    with pytest.raises(TrainingDivergedError, match=r"at step 5.*last good checkpoint is .*step-4"):
        train(load_base_model(str(base_dir)), _small_config(out))
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-2", "step-4"]
    assert not (out / "adapter").exists()
    assert read_trainer_state(out / "checkpoints" / "step-4")["step"] == 4
    assert all(torch.isfinite(v).all() for v in _adapter_weights(out / "checkpoints" / "step-4").values())
    assert "at step 5" in json.loads((out / "training_log.json").read_text())["stopped"]


def test_non_finite_input_batch_is_a_clear_error():
    clean = torch.rand(2, 3, 8, 8)
    degraded = clean.clone()
    degraded[1, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"NaN or inf.*degraded input batch of step 7 \(1 of 2 patches\)"):
        check_batch(degraded, clean, 7)
    check_batch(clean, clean, 7)


def test_models_and_settings_that_cannot_train_are_refused_by_name(base_dir, tmp_path):
    with pytest.raises(ValueError, match="scale-1"):
        check_model_fits(_tiny_swin2sr(upscale=2, upsampler="pixelshuffle"), 16)
    with pytest.raises(ValueError, match="multiple of the model's window size 4"):
        check_model_fits(_tiny_swin2sr(), 18)
    assert check_model_fits(_tiny_swin2sr(), 16) == 4
    with pytest.raises(ValueError, match="valid tasks: .*denoise-50"):
        _small_config(tmp_path, task="denoise-99").validate()
    with pytest.raises(ValueError, match="task .* or degraded_data"):
        _small_config(tmp_path, task=None).validate()
    with pytest.raises(ValueError, match="mixed_precision='fp8' is not one of"):
        _small_config(tmp_path, mixed_precision="fp8").validate()
    with pytest.raises(FileNotFoundError, match="no such folder"):
        load_base_model(str(tmp_path / "missing"))
