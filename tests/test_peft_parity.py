"""AdaptIR through the checks peft runs for its built-in methods (in the spirit of peft's TEST_CASES).

Tiny models x placements x checks: base and adapter dtype with and without ``autocast_adapter_dtype``,
``low_cpu_mem_usage`` on every load path, save/load, every adapter parameter learning, disable/delete/unload, mixed
batches, peft's layer conventions; and the refusals, each asserting its message.
"""

from __future__ import annotations

import pytest
import torch
from peft import PeftModel, get_peft_model, get_peft_model_state_dict, set_peft_model_state_dict
from safetensors.torch import load_file, save_file
from tiny_models import build, output_of, perturb
from torch import nn

import peft_adaptir  # noqa: F401  (registers the method)
from peft_adaptir import AdaptIRConfig, AdaptIRLayer
from peft_adaptir.tuner.branch import ChannelShift

# name -> (tiny model kind, AdaptIRConfig keyword arguments)
CASES = {
    "token-ffn": ("token", dict(preset="swinir")),
    "conv-ffn-pair": ("conv", dict(target_modules=["conv4"], span_end="conv5", layout="BCHW")),
    "swin2sr": ("swin2sr", dict()),
    "linear-16-to-32": ("swin2sr", dict(target_modules=["intermediate.dense"])),  # no span_end: C_in 16 -> C_out 32
    "conv-16-to-32": ("conv", dict(target_modules=["conv4"], layout="BCHW")),  # NAFNet's conv4 alone
    "gated-conv-pair": ("conv", dict(target_modules=["conv4"], span_end="conv5", layout="BCHW", fusion="gated")),
}
# tolerance against the float32 model, per base dtype (half precision carries 8 or 11 mantissa bits)
TOLERANCE = {torch.bfloat16: 6e-2, torch.float16: 1e-2}


def make(case: str, dtype=torch.float32, seed: int = 0, **peft_kwargs):
    kind, config = CASES[case]
    base, x = build(kind, seed)
    return get_peft_model(base.to(dtype), AdaptIRConfig(**config), **peft_kwargs), x.to(dtype)


def layers(model) -> list[AdaptIRLayer]:
    return [m for m in model.modules() if isinstance(m, AdaptIRLayer)]


def frozen_output(model, x) -> torch.Tensor:
    """The output with every weight frozen: CPU kernels may differ in the last bit when weights require grad."""
    model.requires_grad_(False)
    return output_of(model, x)


def step(model, x, steps: int = 3, optimizer_cls=torch.optim.Adam) -> None:
    model.train()
    optimizer = optimizer_cls([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(steps):
        optimizer.zero_grad()
        output_of(model, x).float().square().mean().backward()
        optimizer.step()
    model.eval()


@pytest.mark.parametrize("case", sorted(CASES))
def test_layer_conventions_and_every_parameter_learns(case):
    model, x = make(case)
    kind, config = CASES[case]
    for layer in layers(model):
        assert (layer.in_features, layer.out_features) == (layer.in_channels, layer.out_channels)
        assert layer.adaptir_branch["default"].up.out_channels == layer.out_features
    if case.endswith("16-to-32"):
        assert {(lay.in_features, lay.out_features) for lay in layers(model)} == {(16, 32)}
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    step(model, x)
    unchanged = [n for n, p in model.named_parameters() if p.requires_grad and torch.equal(p, before[n])]
    assert not unchanged, unchanged
    model.add_adapter("other", AdaptIRConfig(**config))
    model.set_adapter("other", inference_mode=True)
    assert not any(p.requires_grad for p in model.parameters())
    model.base_model.set_adapter("other")
    assert all(p.requires_grad for n, p in model.named_parameters() if ".other." in n)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("autocast", [True, False], ids=["autocast", "no-autocast"])
@pytest.mark.parametrize("case", ["token-ffn", "conv-ffn-pair", "linear-16-to-32", "conv-16-to-32"])
def test_half_precision_base(case, dtype, autocast, tmp_path):
    reference, x32 = make(case)
    perturb(reference)
    expected = output_of(reference.eval(), x32).detach()
    reference.save_pretrained(tmp_path)

    kind, _ = CASES[case]
    base, _ = build(kind)
    model = PeftModel.from_pretrained(base.to(dtype), tmp_path, autocast_adapter_dtype=autocast)
    adapter_dtypes = {p.dtype for n, p in model.named_parameters() if ".adaptir_branch." in n}
    adapter_dtypes |= {b.dtype for n, b in model.named_buffers() if n.endswith("running_mean")}
    assert adapter_dtypes == {torch.float32 if autocast else dtype}
    out = output_of(model, x32.to(dtype))
    assert out.dtype == dtype and torch.isfinite(out).all()
    torch.testing.assert_close(out.float(), expected, rtol=TOLERANCE[dtype], atol=TOLERANCE[dtype])

    mixed = output_of(model, x32.to(dtype), adapter_names=["default", "__base__", "default"])
    with model.disable_adapter():
        base_out = output_of(model, x32.to(dtype))
    for i, want in enumerate([out, base_out, out]):
        torch.testing.assert_close(mixed[i], want[i], rtol=TOLERANCE[dtype], atol=TOLERANCE[dtype])

    trainable, _ = make(case, dtype, autocast_adapter_dtype=autocast)
    # SGD: Adam's eps (1e-8) is zero in float16, so pure-fp16 Adam divides by zero (a property of fp16, not ours)
    step(trainable, x32.to(dtype), steps=2, optimizer_cls=torch.optim.SGD)
    assert all(torch.isfinite(p).all() for p in trainable.parameters())
    trainable.save_pretrained(tmp_path / "trained")
    again = PeftModel.from_pretrained(build(kind)[0].to(dtype), tmp_path / "trained", autocast_adapter_dtype=autocast)
    assert torch.equal(frozen_output(again.eval(), x32.to(dtype)), frozen_output(trainable, x32.to(dtype)))


@pytest.mark.parametrize("case", sorted(CASES))
def test_low_cpu_mem_usage_on_every_load_path(case, tmp_path):
    trained, x = make(case)
    perturb(trained)
    trained.eval()
    expected = frozen_output(trained, x)
    trained.save_pretrained(tmp_path)
    kind, config = CASES[case]

    empty, _ = make(case, low_cpu_mem_usage=True)  # adapter weights on the meta device until loaded
    assert any(p.is_meta for n, p in empty.named_parameters() if ".adaptir_branch." in n)
    set_peft_model_state_dict(empty, get_peft_model_state_dict(trained), low_cpu_mem_usage=True)
    assert torch.equal(frozen_output(empty.eval(), x), expected)

    loaded = PeftModel.from_pretrained(build(kind)[0], tmp_path, low_cpu_mem_usage=True)
    assert torch.equal(frozen_output(loaded, x), expected)

    loaded.load_adapter(tmp_path, adapter_name="again", low_cpu_mem_usage=True)
    loaded.set_adapter("again")
    assert not any(p.is_meta for p in loaded.parameters())
    assert torch.equal(frozen_output(loaded.eval(), x), expected)


@pytest.mark.parametrize("case", sorted(CASES))
def test_disable_delete_unload_give_the_base_back(case):
    kind, _ = CASES[case]
    base, x = build(kind)
    reference = output_of(base, x).detach()
    model, _ = make(case)
    perturb(model)
    model.eval()
    assert not torch.allclose(output_of(model, x), reference, atol=1e-4)
    with model.disable_adapter():
        assert torch.equal(output_of(model, x), reference)
    model.add_adapter("other", AdaptIRConfig(**CASES[case][1]))
    model.delete_adapter("default")
    assert torch.equal(output_of(model, x), reference)  # "other" is still at its zero init
    assert torch.equal(output_of(model.unload(), x), reference)


def test_legacy_compress_bias_is_dropped_and_changes_nothing(tmp_path):
    shift = ChannelShift(8)
    x = torch.randn(2, 8, 5, 7)
    with torch.no_grad():
        shift.compress.weight.normal_()
        with_bias = nn.Conv2d(8, 1, 1)
        with_bias.weight.copy_(shift.compress.weight)
        with_bias.bias.fill_(3.7)  # the released code's bias: a shift of every position score
        scores = with_bias(x).flatten(2).softmax(dim=-1)
        expected = shift.proj((x.flatten(2) * scores).sum(-1))
    torch.testing.assert_close(shift(x), expected, rtol=1e-5, atol=1e-6)

    model, x = make("token-ffn")
    perturb(model)
    model.eval()
    model.save_pretrained(tmp_path)
    weights = load_file(tmp_path / "adapter_model.safetensors")
    for key in [k for k in weights if k.endswith("channel.compress.weight")]:
        weights[key.replace(".weight", ".bias")] = torch.full((1,), 2.5)
    save_file(weights, tmp_path / "adapter_model.safetensors")
    loaded = PeftModel.from_pretrained(build("token")[0], tmp_path)
    assert torch.equal(output_of(loaded, x), output_of(model, x))


class _Odd(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.strided = nn.Conv2d(16, 32, 3, stride=2, padding=1)
        self.valid = nn.Conv2d(16, 16, 3)
        self.seq = nn.Conv1d(16, 32, 1)
        self.up = nn.ConvTranspose2d(16, 8, 2, stride=2)

    def forward(self, x):
        return self.strided(x)


@pytest.mark.parametrize(
    "target,message",
    [
        ("strided", r"Cannot adapt strided \(Conv2d 16 -> 32 channels.*stride \(2, 2\).*changes the spatial size"),
        ("valid", r"Cannot adapt valid \(Conv2d 16 -> 16 channels.*padding \(0, 0\)"),
        ("seq", r"Cannot adapt seq \(Conv1d, 16 -> 32 channels\).*2-D feature maps"),
        ("up", r"Cannot adapt up \(ConvTranspose2d, 16 -> 8 channels\)"),
    ],
)
def test_impossible_targets_are_refused_at_injection(target, message):
    with pytest.raises(ValueError, match=message):
        get_peft_model(_Odd(), AdaptIRConfig(target_modules=[target], layout="BCHW"))


def test_width_above_the_channels_read_is_refused_and_one_branch_may_be_a_string():
    with pytest.raises(ValueError, match=r"width=10000 is above the 16 channels the adapter reads at .*conv4"):
        get_peft_model(build("conv")[0], AdaptIRConfig(**CASES["conv-ffn-pair"][1], width=10000))
    config = AdaptIRConfig(**CASES["conv-ffn-pair"][1], branches="local")
    assert config.branches == ["local"]
    model = get_peft_model(build("conv")[0], config)
    branch = layers(model)[0].adaptir_branch["default"]
    assert branch.local is not None and branch.frequency is None and branch.channel is None
