"""Checkpoint files are read without running code hidden in them (no spandrel needed)."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from peft_adaptir.backbones.safe_load import UnsafeCheckpointError, load_checkpoint


class _RunsCode:
    """Unpickling this calls exec(): it writes a marker file."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('ran')",))


def test_pickle_that_runs_code_is_refused_before_running(tmp_path):
    marker, path = tmp_path / "pwned", tmp_path / "evil.pth"
    torch.save({"weight": torch.ones(2), "payload": _RunsCode(str(marker))}, path)
    with pytest.raises(UnsafeCheckpointError, match=r"Refused to load 'evil.pth'.*exec"):
        load_checkpoint(path)
    assert not marker.exists()
    torch.load(path, weights_only=False)  # proof that the file does run code when unpickled without restriction
    assert marker.read_text() == "ran"


def test_weights_only_env_override_does_not_weaken_it(tmp_path, monkeypatch):
    marker, path = tmp_path / "pwned", tmp_path / "evil.pt"
    torch.save({"payload": _RunsCode(str(marker))}, path)
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    with pytest.raises(UnsafeCheckpointError):
        load_checkpoint(path)
    assert not marker.exists()


def test_state_dicts_load_from_pth_and_safetensors(tmp_path):
    state = {
        "conv.weight": torch.randn(4, 3, 3, 3),
        "conv.bias": torch.randn(4),
        "bn.num_batches_tracked": torch.tensor(7),
    }
    torch.save({"params_ema": state, "iter": 5}, tmp_path / "wrapped.pth")
    loaded = load_checkpoint(tmp_path / "wrapped.pth")
    assert loaded["iter"] == 5 and all(torch.equal(loaded["params_ema"][k], v) for k, v in state.items())
    save_file(state, tmp_path / "model.safetensors")
    loaded = load_checkpoint(tmp_path / "model.safetensors")
    assert loaded.keys() == state.keys() and all(torch.equal(loaded[k], v) for k, v in state.items())


def test_bad_files_get_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        load_checkpoint(tmp_path / "missing.pth")
    (tmp_path / "model.onnx").write_bytes(b"\0")
    with pytest.raises(ValueError, match=r"unknown extension '\.onnx'.*\.safetensors"):
        load_checkpoint(tmp_path / "model.onnx")
    torch.save([torch.ones(1)], tmp_path / "list.pth")
    with pytest.raises(ValueError, match="holds a list, not a state dict"):
        load_checkpoint(tmp_path / "list.pth")


def _lightning_checkpoint(path, extra=None):
    """What the AdaptIR authors' Lightning script saves: weights plus argparse options in hyper_parameters."""
    import argparse

    state = {"body.encoder.layers.0.adaptir.head.weight": torch.ones(2, 3, 1, 1)}
    hyper = argparse.Namespace(lr=2e-4, batch_size=8, save_dir="runs/derain")
    torch.save({"state_dict": state, "hyper_parameters": {"hparams": hyper}, "epoch": 3, **(extra or {})}, path)


def test_lightning_checkpoint_with_argparse_options_loads_only_for_the_converter(tmp_path):
    path = tmp_path / "last.ckpt"
    _lightning_checkpoint(path)
    with pytest.raises(UnsafeCheckpointError, match=r"argparse\.Namespace.*convert_release_checkpoint"):
        load_checkpoint(path)
    loaded = load_checkpoint(path, allow_argparse_namespace=True)
    assert loaded["hyper_parameters"]["hparams"].batch_size == 8
    assert torch.equal(loaded["state_dict"]["body.encoder.layers.0.adaptir.head.weight"], torch.ones(2, 3, 1, 1))


def test_allowing_argparse_namespace_still_refuses_code(tmp_path):
    marker, path = tmp_path / "pwned", tmp_path / "last.ckpt"
    _lightning_checkpoint(path, extra={"payload": _RunsCode(str(marker))})
    with pytest.raises(UnsafeCheckpointError, match="exec"):
        load_checkpoint(path, allow_argparse_namespace=True)
    assert not marker.exists()
