"""Loading errors that help, and that lose nothing: another base, a broken file, a missing import."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from peft import PeftModel, get_peft_model
from tiny_models import build, output_of, tiny_swin2sr_config

import peft_adaptir  # noqa: F401
from peft_adaptir import AdapterMismatchError, AdaptIRConfig, AdaptIRLayer


def swin2sr(seed: int = 0, **overrides):
    from transformers import Swin2SRForImageSuperResolution

    torch.manual_seed(seed)
    return Swin2SRForImageSuperResolution(tiny_swin2sr_config(**overrides)).eval()


@pytest.fixture
def saved_adapter(tmp_path):
    model = get_peft_model(swin2sr(), AdaptIRConfig(init_weights=False))
    model.save_pretrained(tmp_path / "adapter")
    return tmp_path / "adapter"


@pytest.mark.parametrize(
    "overrides,message",
    [
        (dict(embed_dim=24, num_heads=[2, 2]), r"shape mismatch.*the file holds \(4, 16, 1, 1\), this model needs"),
        (dict(depths=[2, 2, 2], num_heads=[2, 2, 2]), r"0 shape mismatch\(es\), \d+ missing"),
    ],
)
def test_adapter_for_another_base_is_refused_and_the_base_is_untouched(saved_adapter, overrides, message):
    base = swin2sr(**overrides)
    x = torch.rand(1, 3, 8, 8)
    reference = output_of(base, x)
    keys = set(base.state_dict())
    with pytest.raises(AdapterMismatchError, match=message) as info:
        PeftModel.from_pretrained(base, saved_adapter)
    assert "does not fit this base" in str(info.value) and "trained for base" in str(info.value)
    assert set(base.state_dict()) == keys and not any(isinstance(m, AdaptIRLayer) for m in base.modules())
    assert torch.equal(output_of(base, x), reference)


def test_failed_load_adapter_keeps_the_other_adapters(saved_adapter):
    fitting = get_peft_model(swin2sr(), AdaptIRConfig(init_weights=False)).eval()
    x = torch.rand(1, 3, 8, 8)
    before = output_of(fitting, x)
    other = get_peft_model(swin2sr(embed_dim=24, num_heads=[2, 2]), AdaptIRConfig())
    other.save_pretrained(saved_adapter.parent / "wide")
    with pytest.raises(AdapterMismatchError):
        fitting.load_adapter(saved_adapter.parent / "wide", adapter_name="wide")
    assert list(fitting.peft_config) == ["default"]
    assert not any(".wide." in n for n, _ in fitting.named_parameters())
    assert torch.equal(output_of(fitting, x), before)


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_broken_weights_file_is_named(saved_adapter, damage):
    weights = saved_adapter / "adapter_model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2] if damage == "truncate" else b"\x00" * 64)
    base = swin2sr()
    with pytest.raises(ValueError, match=r"adapter_model\.safetensors are truncated or corrupt"):
        PeftModel.from_pretrained(base, saved_adapter)
    assert not any(isinstance(m, AdaptIRLayer) for m in base.modules())


def test_missing_import_is_peft_keyerror_and_import_fixes_it(saved_adapter):
    """peft has no plugin discovery: without `import peft_adaptir` it cannot know the method (documented)."""
    base_dir = saved_adapter.parent / "base"
    swin2sr().save_pretrained(base_dir)
    load = (
        "from peft import PeftModel\nfrom transformers import Swin2SRForImageSuperResolution\n"
        f"PeftModel.from_pretrained(Swin2SRForImageSuperResolution.from_pretrained({str(base_dir)!r}), "
        f"{str(saved_adapter)!r})\nprint('loaded')\n"
    )
    without = subprocess.run([sys.executable, "-c", load], capture_output=True, text=True, timeout=120)
    assert without.returncode != 0 and "ADAPTIR" in without.stderr
    with_import = subprocess.run(
        [sys.executable, "-c", "import peft_adaptir\n" + load], capture_output=True, text=True, timeout=120
    )
    assert with_import.returncode == 0 and "loaded" in with_import.stdout


def test_adapter_for_a_deeper_model_is_refused(tmp_path):
    token_model, _ = build("token")
    get_peft_model(token_model, AdaptIRConfig(preset="swinir")).save_pretrained(tmp_path)
    other, _ = build("token", seed=1)
    other.layers = other.layers[:1]
    with pytest.raises(AdapterMismatchError, match=r"0 missing and \d+ unexpected.*layers\.1\.mlp"):
        PeftModel.from_pretrained(other, tmp_path)
