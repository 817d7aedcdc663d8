"""The core matrix: every tiny model kind x both fusions through the same peft checks."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from contextlib import redirect_stdout
from pathlib import Path

import pytest
import torch
from peft import PeftModel, get_peft_model
from safetensors.torch import load_file
from tiny_models import PLACEMENT, build, output_of, perturb

import peft_adaptir  # noqa: F401  (registers the method)
from peft_adaptir import AdaptIRConfig, AdaptIRLayer

KINDS = ["token", "conv", "sequence", "swin2sr", "swin2sr-attention"]
LAYER_COUNTS = {"swin2sr": 4, "swin2sr-attention": 8}  # 2 stages x 2 layers x (FFN[, attention]); others: 2
FUSIONS = ["gated", "sum"]
CASES = [(kind, fusion) for kind in KINDS for fusion in FUSIONS]


def adapted(kind: str, fusion: str, seed: int = 0, **config_kwargs):
    base, x = build(kind, seed)
    reference = output_of(base, x).detach()
    config = AdaptIRConfig(fusion=fusion, **PLACEMENT[kind], **config_kwargs)
    return get_peft_model(base, config), x, reference


def train_steps(model, x, steps: int = 2) -> None:
    model.train()
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(steps):
        optimizer.zero_grad()
        output_of(model, x).square().mean().backward()
        optimizer.step()
    model.eval()


def adaptir_layers(model) -> list[AdaptIRLayer]:
    return [m for m in model.modules() if isinstance(m, AdaptIRLayer)]


@pytest.mark.parametrize("kind,fusion", CASES)
def test_identical_output_at_init(kind, fusion):
    model, x, reference = adapted(kind, fusion)
    assert len(adaptir_layers(model)) == LAYER_COUNTS.get(kind, 2)
    model.eval()
    assert torch.equal(output_of(model, x), reference)
    model.train()  # BatchNorm on batch statistics: still exactly the base output
    assert torch.equal(output_of(model, x), reference)


@pytest.mark.parametrize("kind,fusion", CASES)
def test_only_adapter_parameters_train_and_output_moves(kind, fusion):
    model, x, reference = adapted(kind, fusion)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(".adaptir_branch.default." in n for n in trainable)
    model.train()
    output_of(model, x).square().mean().backward()
    with_grad = {n for n, p in model.named_parameters() if p.grad is not None}
    assert with_grad == trainable
    train_steps(model, x)
    assert not torch.allclose(output_of(model, x), reference, atol=1e-6)


SUBPROCESS_LOAD = """
import sys, torch
torch.set_num_threads({threads})  # as in this process, so float reductions run in the same order
sys.path.insert(0, {tests_dir!r})
import peft_adaptir
from peft import PeftModel
from tiny_models import build, output_of
for kind, fusion in {cases!r}:
    base, x = build(kind)
    model = PeftModel.from_pretrained(base, f"{root}/{{kind}}-{{fusion}}").eval()
    with torch.no_grad():
        torch.save((output_of(model, x), model.state_dict()), f"{root}/{{kind}}-{{fusion}}.pt")
"""


def test_save_load_round_trip_in_fresh_process(tmp_path):
    """Every case saved here, loaded here and in ONE fresh process (which must import peft_adaptir): the same
    tensors bit for bit, outputs equal within float rounding.

    The BLAS may pick another kernel for the same tiny GEMM (it depends on memory alignment, so on allocation
    history), so outputs of two bit-identical models can differ in the last bit (seen: 1.2e-7 on one CPU, 0 on
    another); the loaded state itself must be exactly the saved one.
    """
    expected, states = {}, {}
    for kind, fusion in CASES:
        model, x, _ = adapted(kind, fusion)
        train_steps(model, x)  # also moves the BatchNorm running statistics
        perturb(model)
        with torch.no_grad():  # as served: autograd recording can pick another kernel (1 ulp) for trainable params
            expected[kind, fusion] = output_of(model, x)
        adapter_dir = tmp_path / f"{kind}-{fusion}"
        model.save_pretrained(adapter_dir)
        saved = load_file(adapter_dir / "adapter_model.safetensors")
        assert all(".adaptir_branch." in k and ".default." not in k for k in saved)
        assert any(k.endswith("norm.running_mean") for k in saved)
        assert json.loads((adapter_dir / "adapter_config.json").read_text())["peft_type"] == "ADAPTIR"
        states[kind, fusion] = {k: v.clone() for k, v in model.state_dict().items()}
        reloaded = PeftModel.from_pretrained(build(kind)[0], adapter_dir).eval()
        with torch.no_grad():
            torch.testing.assert_close(output_of(reloaded, x), expected[kind, fusion], rtol=0, atol=1e-6)
        assert all(torch.equal(v, states[kind, fusion][k]) for k, v in reloaded.state_dict().items())

    script = SUBPROCESS_LOAD.format(
        tests_dir=str(Path(__file__).parent), cases=CASES, root=str(tmp_path), threads=torch.get_num_threads()
    )
    subprocess.run([sys.executable, "-c", script], check=True, capture_output=True, timeout=300)
    for kind, fusion in CASES:
        output, state = torch.load(tmp_path / f"{kind}-{fusion}.pt")
        assert state.keys() == states[kind, fusion].keys()
        assert all(torch.equal(state[k], states[kind, fusion][k]) for k in state), (kind, fusion)
        torch.testing.assert_close(output, expected[kind, fusion], rtol=0, atol=1e-6, msg=str((kind, fusion)))


@pytest.mark.parametrize("kind,fusion", CASES)
def test_second_adapter_switch_disable_delete(kind, fusion):
    model, x, reference = adapted(kind, fusion)
    perturb(model, "default", seed=1)
    model.add_adapter("second", AdaptIRConfig(fusion=fusion, **PLACEMENT[kind]))
    perturb(model, "second", seed=2)
    model.eval()
    out_default = output_of(model, x)
    model.set_adapter("second")
    out_second = output_of(model, x)
    assert not torch.allclose(out_default, out_second)
    assert all(not p.requires_grad for n, p in model.named_parameters() if ".default." in n)
    assert all(p.requires_grad for n, p in model.named_parameters() if ".second." in n)
    with model.disable_adapter():
        assert torch.equal(output_of(model, x), reference)
    assert torch.equal(output_of(model, x), out_second)
    model.delete_adapter("second")
    assert model.active_adapters == ["default"]
    assert torch.equal(output_of(model, x), out_default)
    assert not any(".second." in n for n, _ in model.named_parameters())


@pytest.mark.parametrize("kind,fusion", CASES)
def test_load_under_another_name_leaves_other_adapters_alone(kind, fusion, tmp_path):
    model, x, _ = adapted(kind, fusion)
    perturb(model, seed=3)
    model.eval()
    saved_output = output_of(model, x)
    model.save_pretrained(tmp_path)

    fresh, _, _ = adapted(kind, fusion)
    perturb(fresh, seed=4)
    fresh.eval()
    before = output_of(fresh, x)
    fresh.load_adapter(tmp_path, adapter_name="renamed")
    assert torch.equal(output_of(fresh, x), before)  # "default" untouched
    fresh.set_adapter("renamed")
    assert torch.equal(output_of(fresh, x), saved_output)


@pytest.mark.parametrize("kind,fusion", CASES)
def test_mixed_batch_matches_each_adapter_alone(kind, fusion):
    model, x, reference = adapted(kind, fusion)
    perturb(model, "default", seed=1)
    model.add_adapter("other", AdaptIRConfig(fusion=fusion, **PLACEMENT[kind]))
    perturb(model, "other", seed=2)
    model.eval()
    alone = {"__base__": reference, "default": output_of(model, x)}
    model.set_adapter("other")
    alone["other"] = output_of(model, x)
    names = ["other", "__base__", "default"]
    mixed = output_of(model, x, adapter_names=names)
    for i, name in enumerate(names):
        torch.testing.assert_close(mixed[i], alone[name][i], rtol=0, atol=1e-5)


@pytest.mark.parametrize("kind,fusion", CASES)
def test_autocast_forward_backward_finite(kind, fusion):
    model, x, _ = adapted(kind, fusion)
    perturb(model)
    model.train()
    for dtype in (torch.bfloat16, torch.float16):
        model.zero_grad()
        with torch.autocast("cpu", dtype=dtype):
            out = output_of(model, x)
            loss = out.float().square().mean()
        loss.backward()
        assert torch.isfinite(out).all(), dtype
        grads = [p.grad for p in model.parameters() if p.requires_grad]
        assert grads and all(g is not None and torch.isfinite(g).all() for g in grads), dtype


@pytest.mark.parametrize("kind", KINDS)
def test_unload_gives_back_the_unchanged_base(kind):
    base, x = build(kind)
    keys_before = set(base.state_dict())
    reference = output_of(base, x)
    model = get_peft_model(base, AdaptIRConfig(**PLACEMENT[kind]))
    perturb(model)
    unloaded = model.unload()
    assert set(unloaded.state_dict()) == keys_before
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in unloaded.modules())
    assert torch.equal(output_of(unloaded, x), reference)


def test_merge_is_refused_with_the_reason():
    model, _, _ = adapted("token", "gated")
    with pytest.raises(ValueError, match="nonlinear"):
        model.merge_and_unload()


def test_print_trainable_parameters_counts_adapters_only():
    model, _, _ = adapted("swin2sr", "gated")
    expected = sum(p.numel() for n, p in model.named_parameters() if "adaptir_branch" in n)
    buffer = io.StringIO()
    with redirect_stdout(buffer):
        model.print_trainable_parameters()
    assert f"trainable params: {expected:,}" in buffer.getvalue()
