"""Training never loses work: no silent overwrite of a finished run, resume only with the same settings, --no-resume
moves the old run aside, unwritable folders refused before the first step, a failed final save rescued, Ctrl-C
explained in one line, cards without local paths, clear refusals, a quiet command line."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from training_fixtures import base_dir, fresh_accelerate_state, new_process_state  # noqa: F401 (fixtures)
from training_fixtures import tiny_training_base as _tiny_swin2sr

import peft_adaptir  # noqa: F401 - registers AdaptIR with peft
from peft_adaptir.backbones.loading import load_base_model
from peft_adaptir.cli.train import add_train_arguments, config_from_args, run_train
from peft_adaptir.cli.train import main as train_main
from peft_adaptir.training import loop as training
from peft_adaptir.training.checkpoints import latest_checkpoint, read_trainer_state
from peft_adaptir.training.loop import TrainingConfig, train

REPO_ROOT = Path(__file__).resolve().parents[1]


def _config(output_dir, **overrides) -> TrainingConfig:
    settings = dict(output_dir=str(output_dir), task="denoise-25", patch_size=16, batch_size=2, steps=2, lr=5e-3)
    settings.update(val_every=0, val_crop=16, checkpoint_every=2, progress=False)
    settings.update(overrides)
    return TrainingConfig(**settings)


def _weights(folder) -> dict[str, torch.Tensor]:
    return load_file(str(Path(folder) / "adapter_model.safetensors"))


def _train(base_dir, config):
    new_process_state()
    return train(load_base_model(str(base_dir)), config)


# ---- item 5: an existing run is never silently replaced or mixed ----


def test_a_finished_run_without_checkpoints_is_not_replaced(base_dir, tmp_path):
    out = tmp_path / "run"
    _train(base_dir, _config(out, checkpoint_every=0))
    before = (out / "adapter" / "adapter_model.safetensors").read_bytes()
    with pytest.raises(ValueError, match=r"already holds a trained adapter .* --no-resume"):
        _train(base_dir, _config(out, checkpoint_every=0, lr=1e-2))
    assert (out / "adapter" / "adapter_model.safetensors").read_bytes() == before


_CHANGES = [
    ({"loss": "l2"}, "--loss: 'l1' -> 'l2'"),
    ({"schedule": "constant"}, "--schedule: 'cosine' -> 'constant'"),
    ({"weight_decay": 0.1}, "--weight-decay: 0.0 -> 0.1"),
    ({"grad_clip": 0.5}, "--grad-clip: 1.0 -> 0.5"),
    ({"warmup_steps": 1}, "--warmup-steps: 0 -> 1"),
    ({"lr": 1e-2}, "--lr: 0.005 -> 0.01"),
    ({"val_crop": 32}, "--val-crop: 16 -> 32"),
    ({"holdout_fraction": 0.3}, "--holdout-fraction: 0.1 -> 0.3"),
    ({"mixed_precision": "bf16"}, "--mixed-precision: 'no' -> 'bf16'"),
    ({"adapter": {"fusion": "gated"}}, "--fusion (adapter): 'sum' -> 'gated'"),
    ({"adapter": {"width": 4}}, "--width (adapter)"),
]


@pytest.fixture(scope="module")
def resumable(base_dir, tmp_path_factory):
    """A finished 2-step run with its checkpoint."""
    out = tmp_path_factory.mktemp("resumable")
    _train(base_dir, _config(out))
    return out


@pytest.mark.parametrize(("change", "named"), [_CHANGES[0], _CHANGES[3], _CHANGES[9]])
def test_resume_with_a_changed_setting_is_refused_naming_its_option(base_dir, resumable, change, named):
    before = read_trainer_state(latest_checkpoint(resumable))
    with pytest.raises(ValueError, match="Cannot resume") as caught:
        _train(base_dir, _config(resumable, **change))
    assert named in str(caught.value) and "--no-resume" in str(caught.value)
    assert "does not fit this base" not in str(caught.value)
    assert read_trainer_state(latest_checkpoint(resumable)) == before  # nothing was written


def test_every_setting_that_changes_the_result_is_compared(base_dir, resumable):
    from peft import get_peft_model

    from peft_adaptir import AdaptIRConfig
    from peft_adaptir.training.run_folder import RESULT_NEUTRAL, adapter_settings, base_fingerprint, changed_settings

    state = read_trainer_state(latest_checkpoint(resumable))

    def changes(**change):
        config = _config(change.pop("output_dir", resumable), **change)
        model = get_peft_model(load_base_model(str(base_dir)), AdaptIRConfig(**config.adapter))
        run = {"adapter_config": adapter_settings(model), "base": base_fingerprint(model)}
        return changed_settings(state, config, run, num_processes=1)

    assert changes() == []
    for change, named in _CHANGES:
        found = changes(**change)
        assert len(found) == 1 and found[0].startswith(named), (change, found)
    neutral = dict(val_every=3, checkpoint_every=1, keep_checkpoints=9, num_workers=2, progress=True, cpu=True)
    assert changes(**neutral, output_dir="elsewhere", resume=False) == []
    assert set(neutral) | {"output_dir", "resume"} == RESULT_NEUTRAL
    assert changes(grad_clip=1.0, warmup_steps=0, data="skimage") == []  # the same values, spelled differently


def test_resume_refuses_another_base_and_accepts_reporting_changes(base_dir, tmp_path):
    out = tmp_path / "run"
    first = _train(base_dir, _config(out))
    other = tmp_path / "other_base"
    _tiny_swin2sr(seed=1).save_pretrained(other)
    with pytest.raises(ValueError, match=r"--base: .*other weights"):
        _train(other, _config(out))
    # where and how often it reports or saves does not change the result: the finished run resumes as it was
    again = _train(base_dir, _config(out, val_every=1, keep_checkpoints=5, num_workers=0, progress=False))
    assert again.losses == first.losses
    assert _weights(out / "adapter").keys() == _weights(first.adapter_dir).keys()


def test_no_resume_moves_the_old_run_aside_and_the_next_rerun_continues_the_new_one(base_dir, tmp_path, capsys):
    out = tmp_path / "run"
    _train(base_dir, _config(out, steps=4))
    old_adapter = (out / "adapter" / "adapter_model.safetensors").read_bytes()
    (out / "notes.txt").write_text("mine")  # not a run file: stays where it is
    capsys.readouterr()

    _train(base_dir, _config(out, steps=2, lr=1e-2, resume=False))
    said = capsys.readouterr().out
    moved = [p for p in (out / "previous-runs").iterdir()]
    assert len(moved) == 1 and f"Moved the earlier run in {out} to {moved[0]}" in said
    assert sorted(p.name for p in (moved[0] / "checkpoints").iterdir()) == ["step-2", "step-4"]
    assert (moved[0] / "adapter" / "adapter_model.safetensors").read_bytes() == old_adapter
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-2"]
    assert (out / "notes.txt").read_text() == "mine"

    # the plain rerun of the new settings resumes the NEW run (not the old step-4)
    state = read_trainer_state(latest_checkpoint(out))
    assert state["config"]["lr"] == 1e-2 and state["step"] == 2
    _train(base_dir, _config(out, steps=2, lr=1e-2))
    assert json.loads((out / "adapter" / "training_log.json").read_text())["config"]["lr"] == 1e-2


def test_leftovers_of_a_run_without_a_checkpoint_are_moved_aside_not_mixed_in(base_dir, tmp_path, capsys):
    out = tmp_path / "run"
    (out / "checkpoints" / "step-4").mkdir(parents=True)  # killed while saving: no trainer_state.json
    (out / "training_log.json").write_text('{"stopped": "Loss became [nan] at step 5"}')
    _train(base_dir, _config(out, checkpoint_every=0))
    moved = next((out / "previous-runs").iterdir())
    assert f"Moved the earlier run in {out} to {moved}" in capsys.readouterr().out
    assert "nan" in (moved / "training_log.json").read_text() and (moved / "checkpoints" / "step-4").is_dir()
    assert not (out / "training_log.json").exists() and not (out / "checkpoints").exists()


# ---- item 6: writability before the first step, a rescue folder after the last ----


def test_an_unwritable_output_folder_is_refused_before_any_step(base_dir, tmp_path, monkeypatch):
    steps = []
    monkeypatch.setattr(training, "check_batch", lambda degraded, clean, step: steps.append(step))
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    with pytest.raises(training.OutputNotWritableError, match=r"Cannot write to the output folder .*a_file/run"):
        _train(base_dir, _config(blocker / "run", checkpoint_every=0))

    from peft_adaptir.training import run_folder

    monkeypatch.setattr(run_folder.shutil, "disk_usage", lambda path: SimpleNamespace(total=1, used=1, free=0))
    with pytest.raises(training.OutputNotWritableError, match=r"has 0.0 MiB free; .* need about"):
        _train(base_dir, _config(tmp_path / "full"))
    assert steps == []


def test_a_failed_final_save_keeps_the_adapter_in_a_named_rescue_folder(base_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    out = tmp_path / "run"

    def block_the_adapter_folder(degraded, clean, step):
        if step == 2:
            (out / "adapter").write_text("a file where the adapter folder should go")

    monkeypatch.setattr(training, "check_batch", block_the_adapter_folder)
    with pytest.raises(training.OutputNotWritableError, match="Could not save the adapter to") as caught:
        _train(base_dir, _config(out, checkpoint_every=0))
    rescued = caught.value.saved_to
    assert rescued is not None and str(rescued) in str(caught.value)
    assert rescued.is_relative_to(tmp_path / "home" / ".cache" / "peft-adaptir" / "rescued-adapters")
    log = json.loads((rescued / "training_log.json").read_text())
    assert len(log["losses"]) == 2
    from peft import PeftModel

    model = PeftModel.from_pretrained(load_base_model(str(base_dir)), str(rescued))
    up = [v for k, v in model.state_dict().items() if "adaptir_branch" in k and "up" in k]
    assert up and any(bool(v.abs().sum() > 0) for v in up)  # the trained adapter, not a fresh one


# ---- Ctrl-C ----


def _args(*argv: str) -> argparse.Namespace:
    return add_train_arguments(argparse.ArgumentParser()).parse_args(list(argv))


def test_ctrl_c_prints_one_line_naming_the_last_checkpoint_and_exits_130(base_dir, tmp_path, monkeypatch, capsys):
    def interrupt_at_step_4(degraded, clean, step):
        if step == 4:
            raise KeyboardInterrupt

    monkeypatch.setattr(training, "check_batch", interrupt_at_step_4)
    out = tmp_path / "run"
    argv = ["--base", str(base_dir), "--task", "denoise-25", "--output", str(out), "--steps", "6", "--batch-size",
            "2", "--patch-size", "16", "--val-crop", "16", "--val-every", "0", "--checkpoint-every", "2",
            "--no-progress"]  # fmt: skip
    try:
        code = train_main(argv)  # as on the command line: quiet output
    except KeyboardInterrupt:
        code = "KeyboardInterrupt escaped"
    assert code == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert f"Interrupted at step 4 of 6: the last checkpoint is {out / 'checkpoints' / 'step-2'}" in err[0]
    assert "the same command resumes" in err[0]


# ---- item 7 and the import hint: cards without local paths ----


def test_adapters_on_the_embedded_base_publish_a_stable_name_and_a_working_snippet(tmp_path, monkeypatch):
    from peft import PeftModel, get_peft_model

    from peft_adaptir import AdaptIRConfig, hub
    from peft_adaptir.backbones.default_base import default_base_path, load_default_base
    from peft_adaptir.hub import _card_for
    from peft_adaptir.model_card import build_model_card

    model = get_peft_model(load_default_base(), AdaptIRConfig())
    card = str(_card_for(model, "user/adaptir-denoise", "default", None, task="denoise-50"))
    local = str(default_base_path())
    assert local not in card and "load_default_base()" in card and "peft-adaptir:default-base" in card
    assert "base_model:" not in card.split("---")[1]  # the Hub's base_model metadata takes Hub ids only
    # an adapter saved by an older version elsewhere recorded that machine's package folder: still the stable name
    elsewhere = "/opt/venv/lib/python3.11/site-packages/peft_adaptir/assets/default_base"
    old = build_model_card("user/x", base_model=elsewhere)
    assert "site-packages" not in str(old) and "load_default_base()" in str(old)

    # what push_adapter uploads (the adapter config included) names the stable name, and the card's snippet runs as
    # written (the repo id pointed at a local copy of the upload)
    uploaded = {}

    def fake_upload(folder, repo_id, **kwargs):
        shutil.copytree(folder, tmp_path / "repo")
        uploaded["files"] = sorted(p.name for p in (tmp_path / "repo").iterdir())
        return "https://hub/commit"

    monkeypatch.setattr(hub, "_upload", fake_upload)
    assert hub.push_adapter(model, "user/adaptir-denoise", task="denoise-50") == "https://hub/commit"
    assert uploaded["files"] == ["README.md", "adapter_config.json", "adapter_model.safetensors"]
    saved = json.loads((tmp_path / "repo" / "adapter_config.json").read_text())
    assert saved["base_model_name_or_path"] == "peft-adaptir:default-base"
    assert (tmp_path / "repo" / "README.md").read_text() == card
    snippet = card.split("```python\n")[1].split("```")[0]
    snippet = snippet.replace('"user/adaptir-denoise"', repr(str(tmp_path / "repo")))
    scope = {"pixel_values": torch.rand(1, 3, 16, 16)}
    exec(snippet, scope)
    assert isinstance(scope["model"], PeftModel) and scope["restored"].reconstruction.shape == (1, 3, 16, 16)


def test_a_trained_adapter_folder_carries_a_card_with_the_import_hint_and_no_local_path(base_dir, tmp_path):
    result = _train(base_dir, _config(tmp_path / "run", checkpoint_every=0))
    card = (result.adapter_dir / "README.md").read_text()
    assert "KeyError: 'ADAPTIR'" in card and "import peft_adaptir" in card
    assert str(base_dir) not in card and str(tmp_path) not in card
    assert "peft-adaptir train --base path/to/" in card and "--task denoise-25" in card
    assert "Validation PSNR" in card


# ---- item 8 ----


def test_push_adapter_refuses_a_lora_model():
    from peft import LoraConfig, get_peft_model

    from peft_adaptir.hub import push_adapter

    lora = get_peft_model(torch.nn.Sequential(torch.nn.Linear(4, 4)), LoraConfig(target_modules=["0"]))
    with pytest.raises(ValueError, match=r"is a LORA adapter, not AdaptIR.*model.push_to_hub"):
        push_adapter(lora, "user/some-lora")


# ---- poor messages ----


def test_a_mistyped_data_folder_is_reported_as_not_found(base_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "photos").mkdir()
    common = ["--base", str(base_dir), "--task", "denoise-25", "--output", "run", "--patch-size", "16"]
    for typo, hint in (("photos/trian", ""), ("./fotos", ""), ("photso", "Did you mean photos")):
        assert run_train(_args(*common, "--data", typo)) == 2
        err = capsys.readouterr().err
        assert f"--data {typo}: folder not found" in err and hint in err, err
    assert not (tmp_path / "run").exists()


def test_a_training_data_warning_is_given_once(tmp_path):
    from peft_adaptir.training.datasets import build_datasets

    for index in range(3):
        Image.new("RGB", (24, 24), (index * 60, 100, 50)).save(tmp_path / f"photo{index}.png")
    (tmp_path / "broken.png").write_bytes(b"not a png")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        build_datasets(_config(tmp_path / "out", data=str(tmp_path)), 4, 0, 1)
    unreadable = [w for w in caught if "unreadable" in str(w.message)]
    assert len(unreadable) == 1 and "broken.png" in str(unreadable[0].message)


# ---- the command line: options by dest, quiet by default, python -m ----


def test_every_training_setting_has_a_cli_option_mapped_by_dest(tmp_path):
    from dataclasses import fields

    parser = add_train_arguments(argparse.ArgumentParser())
    dests = {action.dest for action in parser._actions}
    missing = {item.name for item in fields(TrainingConfig)} - {"adapter"} - dests
    assert not missing, f"TrainingConfig fields without a CLI option: {missing}"
    from peft_adaptir.training.run_folder import CLI_ADAPTER_OPTIONS

    assert {d.removeprefix("adapter.") for d in dests if d.startswith("adapter.")} == CLI_ADAPTER_OPTIONS
    args = parser.parse_args(
        ["--output", "o", "--task", "denoise-50", "--holdout-fraction", "0.2", "--weight-decay", "0.01",
         "--grad-clip", "none", "--val-crop", "0", "--no-resume", "--no-progress", "--fusion", "gated", "--width", "6"]
    )  # fmt: skip
    config = config_from_args(args)
    assert (config.output_dir, config.holdout_fraction, config.weight_decay) == ("o", 0.2, 0.01)
    assert (config.grad_clip, config.val_crop, config.resume, config.progress) == (None, None, False, False)
    assert config.adapter == {"fusion": "gated", "width": 6}


def test_python_m_cli_runs_quietly_by_default(base_dir, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "peft_adaptir.cli", "train", "--base", str(base_dir), "--task", "denoise-25",
               "--output", str(tmp_path / "run"), "--steps", "1", "--batch-size", "1", "--patch-size", "16",
               "--val-crop", "16", "--checkpoint-every", "0", "--no-progress"]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stderr == "", done.stderr  # no "Loading weights" bar, no FutureWarning, no library chatter
    lines = done.stdout.strip().splitlines()
    assert lines[-1].startswith(f"Adapter saved to {tmp_path / 'run' / 'adapter'} after 1 steps")
    assert len(lines) == 3  # the two validation lines and where the adapter went


def test_a_checkpoint_that_cannot_be_written_does_not_stop_training(base_dir, tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"

    def block_the_first_checkpoint(degraded, clean, step):
        if step == 1:  # a file where checkpoints/step-2 should go: writing it fails with an OSError
            (out / "checkpoints").mkdir(parents=True, exist_ok=True)
            (out / "checkpoints" / "step-2").write_text("in the way")

    monkeypatch.setattr(training, "check_batch", block_the_first_checkpoint)
    result = _train(base_dir, _config(out, steps=4, checkpoint_every=2))
    assert "Could not write the checkpoint of step 2" in capsys.readouterr().err
    assert len(result.losses) == 4 and (out / "adapter" / "adapter_model.safetensors").is_file()
    assert (out / "checkpoints" / "step-4" / "trainer_state.json").is_file()  # the next checkpoint was written
    log = json.loads((out / "adapter" / "training_log.json").read_text())
    assert log["failed_checkpoints"] == [2]
