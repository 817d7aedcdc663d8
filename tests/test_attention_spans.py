"""AdaptIR beside window attention (preset 'swin2sr-attention'): what is specific to window targets.

The generic checks (identity at init, training, save/load, switching, mixed batches, autocast, unload) run for this
placement in test_core's matrix (kind 'swin2sr-attention'); these cover the window grid, routing per window, fast
loading and the errors.
"""

from __future__ import annotations

import pytest
import torch
from peft import get_peft_model
from tiny_models import TinyTokenNet, build, output_of, perturb

import peft_adaptir  # noqa: F401  (registers the method)
from peft_adaptir import AdaptIRConfig, AdaptIRLayer
from peft_adaptir.tuner.fast_load import load_adapter_fast


def attention_model(seed: int = 0, **config_kwargs):
    base, x = build("swin2sr-attention", seed)
    reference = output_of(base, x).detach()
    return get_peft_model(base, AdaptIRConfig(preset="swin2sr-attention", **config_kwargs)), x, reference


def window_layers(model) -> dict[str, AdaptIRLayer]:
    return {n: m for n, m in model.named_modules() if isinstance(m, AdaptIRLayer) and m.windowed}


def test_branch_sees_each_window_as_a_map_and_reads_the_attention_width():
    model, x, _ = attention_model()
    layers = window_layers(model)
    assert len(layers) == 4 and all(n.endswith("attention.self") for n in layers)
    # 16 channels, the query's input: not the 2 inputs of the position-bias MLP registered before it
    assert {(m.in_channels, m.out_channels, m.grid_size) for m in layers.values()} == {(16, 16, (4, 4))}
    seen = []
    hooks = [m.adaptir_branch["default"].register_forward_pre_hook(lambda _, a: seen.append(a[0].shape))
             for m in layers.values()]  # fmt: skip
    output_of(model, x)
    for hook in hooks:
        hook.remove()
    # x: 3 images of 8 x 12 -> 2 x 3 windows of 4 x 4 each, in every layer (shifted or not)
    assert seen == [torch.Size([3 * 6, 16, 4, 4])] * 4


def test_per_sample_blend_over_windows_matches_whole_batch_blends():
    model, x, _ = attention_model()
    model.double()
    x = x.double()
    perturb(model, "default", seed=1)
    model.add_adapter("other", AdaptIRConfig(preset="swin2sr-attention"))
    perturb(model, "other", seed=2)
    model.double().eval()
    rows = [{"default": 1.0}, {"default": 0.25, "other": 0.75}, {"other": -0.5}]  # exact in float32
    mixed = output_of(model, x, adapter_weights=rows)
    for i, weights in enumerate(rows):
        model.set_adapter_weights(weights)
        torch.testing.assert_close(mixed[i], output_of(model, x)[i], rtol=0, atol=1e-10)


def test_fast_load_of_a_window_adapter_gives_the_saved_outputs(tmp_path):
    model, x, _ = attention_model()
    perturb(model, "default", seed=3)
    model.eval()
    saved = output_of(model, x).detach()
    model.save_pretrained(tmp_path / "attn")
    load_adapter_fast(model, tmp_path / "attn", "again")
    model.set_adapter("again")
    assert torch.equal(output_of(model, x), saved)


def test_routing_length_is_checked_per_sample_not_per_window():
    model, x, _ = attention_model()
    model.add_adapter("other", AdaptIRConfig(preset="swin2sr-attention"))
    model.eval()
    # 2 images, 6 windows each: 12 rows, which 4 names divide; still refused: one name per image
    with pytest.raises(ValueError, match="4 entries but the batch holds 2 samples"):
        output_of(model, x[:2], adapter_names=["default", "other", "default", "other"])


def test_routing_length_is_checked_when_every_target_is_a_window_target():
    """No FFN span to catch it: 4 names for 2 images divide the 12 window rows, and are still refused."""
    base, x = build("swin2sr-attention")
    config = dict(target_modules=["self"], span_end="output", layout="BNC", grid_argument="input_dimensions",
                  window_targets=["self"], width=2)  # fmt: skip
    model = get_peft_model(base, AdaptIRConfig(**config))
    model.add_adapter("other", AdaptIRConfig(**config))
    model.eval()
    with pytest.raises(ValueError, match="adapter_names has 4 entries but the batch holds 2 samples"):
        output_of(model, x[:2], adapter_names=["default", "other", "default", "other"])
    with pytest.raises(ValueError, match="adapter_weights has 4 entries but the batch holds 2 samples"):
        output_of(model, x[:2], adapter_weights=[{"default": 1.0}] * 4)
    assert output_of(model, x[:2], adapter_names=["default", "other"]).shape[0] == 2


def test_window_size_errors_name_the_fix():
    base, x = build("swin2sr-attention")
    model = get_peft_model(base, AdaptIRConfig(preset="swin2sr-attention", window_size=2))
    with pytest.raises(ValueError, match=r"one 2 x 2 attention window \(4 tokens\).*has 16.*window_size"):
        output_of(model, x)
    token_net = TinyTokenNet()  # a model whose config states no window size
    with pytest.raises(ValueError, match="states no window_size.*Set window_size="):
        get_peft_model(token_net, AdaptIRConfig(preset="swinir", window_targets=["mlp"]))
    with pytest.raises(ValueError, match="window_targets only applies to token layouts"):
        AdaptIRConfig(target_modules=["conv4"], layout="BCHW", window_targets=["conv4"])
    with pytest.raises(ValueError, match="window_size=0 must be a positive integer"):
        AdaptIRConfig(preset="swin2sr-attention", window_size=0)


def test_explicit_window_size_on_a_plain_model():
    """A model without a config: the stated window size makes its windowed target work."""
    torch.manual_seed(0)
    net = TinyTokenNet().eval()
    x = torch.rand(2, 3, 4, 4)
    reference = net(x)
    # TinyTokenNet's MLP sees whole 4 x 4 images: one "window" per image of 16 tokens
    model = get_peft_model(net, AdaptIRConfig(preset="swinir", window_targets=["mlp"], window_size=4))
    assert torch.equal(model(x), reference)
    assert {m.grid_size for m in window_layers(model).values()} == {(4, 4)}


def test_window_adapter_exports_without_dft_and_matches_pytorch(tmp_path):
    """The DFT-free graph builds its bases for the window's grid (4 x 4), not the feature map's (16 x 16)."""
    pytest.importorskip("onnxruntime", reason="pip install 'peft-adaptir[export]'")
    pytest.importorskip("onnxscript", reason="pip install 'peft-adaptir[export]'")
    from peft_adaptir.export.check import run_onnxruntime
    from peft_adaptir.export.exporter import export_model

    model, _, _ = attention_model()
    perturb(model, "default", seed=4)
    model.eval()
    result = export_model(model, tmp_path / "attention.onnx", tile=16, dft_free=True)
    assert result.dft_nodes == 0 and result.check["passed"]
    tiles = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        eager = model(pixel_values=tiles).reconstruction
        with model.disable_adapter():
            base_only = model(pixel_values=tiles).reconstruction
    exported = run_onnxruntime(tmp_path / "attention.onnx", tiles)
    assert (eager - base_only).abs().max() > 1e-3  # the adapter changes the output: the comparison means something
    assert (exported - eager).abs().max() <= 1e-4 * eager.abs().max()
