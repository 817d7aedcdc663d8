"""Serving-side switching: exact weighted blends (model-wide and per sample)."""

from __future__ import annotations

import pytest
import torch
from peft import get_peft_model
from tiny_models import PLACEMENT, build, output_of, perturb

import peft_adaptir  # noqa: F401  (registers the method)
from peft_adaptir import AdaptIRConfig, AdaptIRLayer

# one adapted span, the last one: everything after it is affine, so the model's output moves by exactly the span's
# contribution and a blend of outputs is the blend of the models' outputs
NAMES = ("rain", "noise", "blur")
LAST_SPAN = {
    "token": dict(target_modules=r".*layers\.1\.mlp\.fc1", span_end="fc2", layout="BNC", grid_argument="x_size"),
    "conv": dict(target_modules=r".*blocks\.1\.conv4", span_end="conv5", layout="BCHW"),
}


def three_adapters(kind: str, fusion: str = "sum", placement: dict | None = None, dtype=torch.float32):
    """A tiny model with adapters rain, noise, blur (perturbed apart), in eval mode; its input; the base output."""
    base, x = build(kind)
    base, x = base.to(dtype), x.to(dtype)
    reference = output_of(base, x).detach()
    placement = PLACEMENT[kind] if placement is None else placement
    model = get_peft_model(base, AdaptIRConfig(fusion=fusion, **placement), adapter_name="rain")
    for seed, name in enumerate(NAMES, start=1):
        if name != "rain":
            model.add_adapter(name, AdaptIRConfig(fusion=fusion, **placement))
        perturb(model, name, seed=seed, scale=0.3)
    return model.eval(), x, reference


def each_alone(model, x) -> dict[str, torch.Tensor]:
    outputs = {}
    for name in NAMES:
        model.set_adapter(name)
        outputs[name] = output_of(model, x).detach()
    return outputs


WEIGHTS = [{"rain": 0.7, "noise": 0.3}, {"rain": 0.5, "noise": 0.8, "blur": -0.25}, {"blur": 0.4}]


@pytest.mark.parametrize("kind", sorted(LAST_SPAN))
@pytest.mark.parametrize("fusion", ["sum", "gated"])
@pytest.mark.parametrize("weights", WEIGHTS)
def test_blend_equals_the_weighted_sum_of_each_adapter(kind, fusion, weights):
    # float64 outside the branch: the comparison sees the blend, not float32 rounding in the layers after the span
    model, x, reference = three_adapters(kind, fusion, LAST_SPAN[kind], dtype=torch.float64)
    alone = each_alone(model, x)
    model.set_adapter_weights(weights)
    blended = output_of(model, x)
    manual = reference + sum(w * (alone[name] - reference) for name, w in weights.items())
    torch.testing.assert_close(blended, manual, rtol=0, atol=1e-6)
    assert not torch.allclose(blended, alone["rain"], atol=1e-3)  # the blend really differs from one adapter
    model.set_adapter("noise")  # set_adapter ends the blend
    assert torch.equal(output_of(model, x), alone["noise"])


@pytest.mark.parametrize("kind", ["token", "swin2sr"])
def test_blend_at_every_span_is_the_weighted_sum_of_the_contributions(kind):
    model, x, _ = three_adapters(kind)
    layers = [m for m in model.modules() if isinstance(m, AdaptIRLayer)]
    inputs = {}
    hooks = [layer.register_forward_pre_hook(lambda m, a: inputs.__setitem__(m, a[0])) for layer in layers]
    weights = {"rain": 0.6, "blur": 0.9}
    model.set_adapter_weights(weights)
    output_of(model, x)
    for hook in hooks:
        hook.remove()
    for layer in layers:
        blended = layer.adapter_delta(inputs[layer], None)
        manual = 0
        for name, weight in weights.items():
            layer.set_adapter(name)
            manual = manual + weight * layer.adapter_delta(inputs[layer], None)
        # float32 contributions reach 10 here: 1e-6 relative is a unit or two in the last place
        torch.testing.assert_close(blended, manual, rtol=1e-6, atol=1e-6)
        layer.blend_weights = None


@pytest.mark.parametrize("kind", ["token", "conv", "swin2sr"])
def test_per_sample_weights_equal_a_blend_per_sample(kind):
    model, x, reference = three_adapters(kind)
    rows = [{"rain": 0.7, "noise": 0.3}, {"blur": 1.0}, {"rain": 0.2, "noise": 0.2, "blur": 0.2}]
    mixed = output_of(model, x, adapter_weights=rows)
    for i, weights in enumerate(rows):
        model.set_adapter_weights(weights)
        torch.testing.assert_close(mixed[i], output_of(model, x)[i], rtol=0, atol=1e-6)
    # the same weights as columns of a (B, n) tensor
    table = torch.tensor([[row.get(name, 0.0) for name in NAMES] for row in rows])
    columns = output_of(model, x, adapter_weights=dict(zip(NAMES, table.T)))
    torch.testing.assert_close(columns, mixed, rtol=0, atol=1e-6)
    zero = output_of(model, x, adapter_weights=[{"rain": 0.0}] * 3)  # weight 0 everywhere: the base model
    torch.testing.assert_close(zero, reference, rtol=0, atol=1e-6)


def test_per_sample_weights_carry_gradients_to_a_router():
    model, x, _ = three_adapters("conv", placement=LAST_SPAN["conv"])
    logits = torch.zeros(3, 3, requires_grad=True)
    weights = logits.softmax(dim=1)
    output_of(model, x, adapter_weights=dict(zip(NAMES, weights.T))).square().mean().backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0


def test_blend_errors_name_the_problem():
    model, x, _ = three_adapters("conv")
    with pytest.raises(ValueError, match=r"Unknown adapter name\(s\) \['nope'\]"):
        model.set_adapter_weights({"rain": 0.5, "nope": 0.5})
    with pytest.raises(ValueError, match="base path always counts once"):
        model.set_adapter_weights({"__base__": 0.5, "rain": 0.5})
    with pytest.raises(ValueError, match="finite"):
        model.set_adapter_weights({"rain": float("nan")})
    with pytest.raises(ValueError, match="at least one adapter"):
        model.set_adapter_weights({})
    with pytest.raises(ValueError, match="set_adapter\\(name\\)"):
        model.set_adapter_weights("rain")
    with pytest.raises(ValueError, match="not both"):
        model(x, adapter_names=["rain"] * 3, adapter_weights=[{"rain": 1.0}] * 3)
    with pytest.raises(ValueError, match="adapter_weights has 2 entries but the batch holds 3"):
        model(x, adapter_weights=[{"rain": 1.0}] * 2)
    with pytest.raises(ValueError, match="one 1-D column"):
        model(x, adapter_weights={"rain": torch.ones(3), "noise": torch.ones(2)})
    with pytest.raises(ValueError, match="one dict"):
        model(x, adapter_weights=torch.ones(3, 3))


def test_blends_refuse_modules_to_save():
    base, x = build("conv")
    model = get_peft_model(base, AdaptIRConfig(**PLACEMENT["conv"], modules_to_save=["ending"]), adapter_name="rain")
    model.add_adapter("noise", AdaptIRConfig(**PLACEMENT["conv"]))
    with pytest.raises(ValueError, match=r"adapter\(s\) \['rain'\]: they carry modules_to_save"):
        model.set_adapter_weights({"rain": 0.5, "noise": 0.5})


def _saved_adapters(tmp_path, kind="swin2sr"):
    """A model with adapter 'rain'; adapters noise and blur of the same shape saved to tmp_path/<name>."""
    model, x, _ = three_adapters(kind)
    for name in ("noise", "blur"):
        model.save_pretrained(tmp_path, selected_adapters=[name])
    for name in ("noise", "blur"):
        model.delete_adapter(name)
    return model, x


def test_fast_load_equals_peft_load_and_keeps_the_checks(tmp_path):
    from peft import PeftModel
    from safetensors.torch import save_file

    from peft_adaptir import AdapterMismatchError
    from peft_adaptir.tuner.fast_load import AdapterBank, load_adapter_fast

    model, x = _saved_adapters(tmp_path)
    peft_path = PeftModel.from_pretrained(build("swin2sr")[0], tmp_path / "noise", adapter_name="noise").eval()
    expected = output_of(peft_path, x)
    load_adapter_fast(model, tmp_path / "noise", "noise")
    assert model.active_adapters == ["rain"]
    assert not any(p.requires_grad for n, p in model.named_parameters() if ".noise." in n)
    model.set_adapter("noise", inference_mode=True)  # frozen like peft's: CPU kernels differ in the last bit otherwise
    assert torch.equal(output_of(model, x), expected)

    bank = AdapterBank(model)
    bank.add("blur", tmp_path / "blur")
    mixed = bank(x, ["blur", "noise", "__base__"])
    torch.testing.assert_close(mixed[1], expected[1], rtol=0, atol=1e-5)  # one sample alone: other batch size
    assert sorted(bank.names) == ["blur", "noise", "rain"]

    wide = tmp_path / "wide"  # weights of another width under this config: peft's check names the misfit
    other = get_peft_model(build("swin2sr")[0], AdaptIRConfig(width=8))
    other.save_pretrained(wide)
    (wide / "adapter_config.json").write_text((tmp_path / "noise" / "adapter_config.json").read_text())
    with pytest.raises(AdapterMismatchError, match="shape mismatch"):
        load_adapter_fast(model, wide, "wide")
    assert "wide" not in model.peft_config
    save_file({"x": torch.ones(1)}, tmp_path / "noise" / "adapter_model.safetensors")
    (tmp_path / "noise" / "adapter_model.safetensors").write_bytes(b"\x00" * 10)
    with pytest.raises(ValueError, match="truncated or corrupt"):
        load_adapter_fast(model, tmp_path / "noise", "broken")
    assert "broken" not in model.peft_config


def test_set_adapter_uses_the_cached_layers_and_keeps_peft_semantics():
    model, x, _ = three_adapters("token")
    layers = model.base_model.adaptir_layers()
    assert layers is model.base_model.adaptir_layers()  # cached
    model.set_adapter("noise")  # trainable, as in peft
    assert all(p.requires_grad for n, p in model.named_parameters() if ".noise." in n)
    assert not any(p.requires_grad for n, p in model.named_parameters() if ".rain." in n)
    model.set_adapter("blur", inference_mode=True)
    assert not any(p.requires_grad for p in model.parameters())
    assert all(layer.active_adapters == ["blur"] for layer in layers)
    model.base_model.set_adapter(["rain", "blur"])  # several active adapters
    assert all(layer.active_adapters == ["rain", "blur"] for layer in layers)
    model.add_adapter("late", AdaptIRConfig(**PLACEMENT["token"]))
    assert model.base_model.adaptir_layers() == layers  # refreshed after an injection, same layers
    assert torch.equal(model.unload()(x), build("token")[0](x))


@pytest.mark.parametrize("dtype,autocast", [(torch.float32, True), (torch.bfloat16, True), (torch.bfloat16, False)])
def test_fast_load_gives_the_state_and_modes_of_peft_load(tmp_path, dtype, autocast):
    """Same tensors (value, dtype, device), same train/eval mode, trainable on request, saved back bit for bit."""
    from peft_adaptir.tuner.fast_load import load_adapter_fast

    _saved_adapters(tmp_path)

    def half_base_model():  # autocast_adapter_dtype: the adapter stays float32 on a half base; else in its dtype
        config = AdaptIRConfig(**PLACEMENT["swin2sr"])
        base = build("swin2sr")[0].to(dtype)
        return get_peft_model(base, config, "rain", autocast_adapter_dtype=autocast).train()

    model, peft_path = half_base_model(), half_base_model()  # training models: new branches follow their mode
    peft_path.load_adapter(tmp_path / "noise", "noise", autocast_adapter_dtype=autocast)
    expected_dtype = torch.float32 if autocast else dtype
    load_adapter_fast(model, tmp_path / "noise", "noise")
    fast = {n: t for n, t in model.state_dict().items() if ".noise." in n}
    slow = {n: t for n, t in peft_path.state_dict().items() if ".noise." in n}
    assert fast.keys() == slow.keys() and fast
    for name, tensor in fast.items():
        assert tensor.dtype == slow[name].dtype and torch.equal(tensor, slow[name]), name
        assert tensor.dtype == expected_dtype or not tensor.is_floating_point()
    layers = model.base_model.adaptir_layers()
    assert all(layer.adaptir_branch["noise"].training for layer in layers)
    assert all(m.training for layer in layers for m in layer.adaptir_branch["noise"].modules())
    model.set_adapter("noise")  # trainable, as after peft's load
    assert all(p.requires_grad for n, p in model.named_parameters() if ".noise." in n)
    model.save_pretrained(tmp_path / "again", selected_adapters=["noise"])
    from safetensors.torch import load_file

    again = load_file(tmp_path / "again" / "noise" / "adapter_model.safetensors")
    original = load_file(tmp_path / "noise" / "adapter_model.safetensors")
    assert again.keys() == original.keys()
    assert all(torch.equal(again[k], original[k].to(again[k].dtype)) for k in again)  # bf16: once rounded, as peft


def test_set_adapter_sees_a_parameter_replaced_in_place():
    """The cached module lists read parameters at each call: a replaced parameter still gets its flag."""
    model, _, _ = three_adapters("token")
    model.set_adapter("rain", inference_mode=True)
    branch = model.base_model.adaptir_layers()[0].adaptir_branch["noise"]
    branch.down.weight = torch.nn.Parameter(branch.down.weight.detach().clone(), requires_grad=False)
    model.set_adapter("noise")
    assert branch.down.weight.requires_grad
    model.set_adapter("rain")
    assert not branch.down.weight.requires_grad


def test_a_deleted_adapter_is_freed():
    """set_adapter's per-branch cache does not keep a deleted adapter's branches (and their weights) alive."""
    import gc
    import weakref

    model, _, _ = three_adapters("token")
    model.set_adapter("noise", inference_mode=True)  # fills the cache for every adapter
    branches = [weakref.ref(layer.adaptir_branch["noise"]) for layer in model.base_model.adaptir_layers()]
    model.set_adapter("rain")
    model.delete_adapter("noise")
    gc.collect()
    assert all(ref() is None for ref in branches)
