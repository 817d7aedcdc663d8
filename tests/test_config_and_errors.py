"""AdaptIRConfig validation, registration, presets, grid sources and the errors users meet."""

from __future__ import annotations

import pytest
import torch
from peft import PeftConfig, PeftType, get_peft_model
from peft.mapping import PEFT_TYPE_TO_PREFIX_MAPPING
from tiny_models import PLACEMENT, TinySequenceNet, TinyTokenNet, build, output_of, tiny_swin2sr_config

import peft_adaptir
from peft_adaptir import AdaptIRBranch, AdaptIRConfig, AdaptIRLayer, peft_patches


def test_parameter_count_matches_the_method_page():
    # C = 576, h = 24, r = 12, k = 3 (the paper's IPT setting)
    gated = AdaptIRBranch(576, 24, rank=12, fusion="gated")
    summed = AdaptIRBranch(576, 24, rank=12, fusion="sum")
    assert sum(p.numel() for p in gated.parameters()) == 29_068
    assert sum(p.numel() for p in summed.parameters()) == 28_872
    bottleneck = AdaptIRBranch(576, 24, fusion="sum", branches=[])
    assert sum(p.numel() for p in bottleneck.parameters()) == 576 * 24 + 24 + 24 * 576


@pytest.mark.parametrize(
    "fusion,branches",
    [("gated", ["local", "frequency", "channel"])]
    + [("sum", b) for b in ([], ["local"], ["frequency"], ["channel"], ["local", "channel"])],
)
def test_branch_is_exactly_zero_at_init(fusion, branches):
    branch = AdaptIRBranch(16, 4, fusion=fusion, branches=branches).train()
    out = branch(torch.randn(2, 16, 5, 7))
    assert out.shape == (2, 16, 5, 7) and torch.count_nonzero(out) == 0


def test_frequency_branch_computes_in_float32_under_autocast(monkeypatch):
    seen = []
    original = torch.fft.rfft2

    def spy(x, *args, **kwargs):
        seen.append(x.dtype)
        return original(x, *args, **kwargs)

    monkeypatch.setattr(torch.fft, "rfft2", spy)
    branch = AdaptIRBranch(16, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = branch.frequency(torch.randn(2, 4, 6, 6, dtype=torch.bfloat16))
    assert seen == [torch.float32] and out.dtype == torch.bfloat16


def test_frequency_branch_is_abs_at_init():
    x = torch.randn(2, 4, 6, 9)
    torch.testing.assert_close(AdaptIRBranch(16, 4).frequency(x), x.abs(), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(fusion="mean"), "fusion='mean' is not supported"),
        (dict(fusion="gated", branches=["local"]), "use fusion='sum'"),
        (dict(fusion="sum", branches=["local", "wavelet"]), "Unknown branch"),
        (dict(width=0), "width=0"),
        (dict(rank=0), "rank=0"),
        (dict(kernel_size=4), "positive odd"),
        (dict(layout="NCHW"), "layout='NCHW' is not supported"),
        (dict(target_modules=["mlp"], layout="BNC"), "grid cannot be known"),
        (dict(target_modules=["mlp"], layout="BCHW", grid_size=[4, 4]), "only applies to token layouts"),
        (dict(target_modules=["mlp"], layout="BNC", grid_size=[4, 4], grid_argument="x_size"), "one source"),
        (dict(grid_size=[4]), "two positive integers"),
        (dict(preset="restormer"), "Unknown AdaptIR preset 'restormer'"),
        (dict(layers_pattern="layers"), "layers_pattern only applies"),
        (dict(target_modules=".*mlp", layers_to_transform=[0]), "regex"),
        (dict(span_end="block.output"), "no dots"),
        (dict(scale=float("nan")), "finite"),
    ],
)
def test_invalid_configs_fail_at_construction(kwargs, message):
    with pytest.raises(ValueError, match=message):
        AdaptIRConfig(**kwargs)


def test_registration_is_idempotent_and_public():
    peft_patches.apply()
    peft_patches.apply()
    assert PeftType("ADAPTIR") is peft_adaptir.ADAPTIR_PEFT_TYPE
    assert list(PeftType).count(PeftType.ADAPTIR) == 1
    assert PEFT_TYPE_TO_PREFIX_MAPPING[PeftType.ADAPTIR] == "adaptir_"
    assert list(PEFT_TYPE_TO_PREFIX_MAPPING.values()).count("adaptir_") == 1


def test_peft_config_from_pretrained_round_trip(tmp_path):
    config = AdaptIRConfig(fusion="sum", branches=["local"], width=6, **PLACEMENT["conv"])
    config.save_pretrained(tmp_path)
    loaded = PeftConfig.from_pretrained(tmp_path)
    assert isinstance(loaded, AdaptIRConfig)
    assert (loaded.fusion, loaded.branches, loaded.width, loaded.span_end) == ("sum", ["local"], 6, "conv5")


def test_swin2sr_preset_needs_no_arguments():
    base, _ = build("swin2sr")
    model = get_peft_model(base, AdaptIRConfig())
    config = model.peft_config["default"]
    assert config.preset == "swin2sr" and config.target_modules == {"intermediate"} and config.span_end == "output"
    assert len([m for m in model.modules() if isinstance(m, AdaptIRLayer)]) == 4


def test_explicit_targets_on_a_known_architecture_take_its_layout_and_grid():
    base, x = build("swin2sr")
    model = get_peft_model(base, AdaptIRConfig(target_modules=["intermediate"], span_end="output", init_weights=False))
    config = model.peft_config["default"]
    assert (config.layout, config.grid_argument) == ("BNC", "input_dimensions")
    assert output_of(model.eval(), x).shape == x.shape


def test_swin2sr_grid_is_the_padded_non_square_size():
    """Swin2SR pads inside its embeddings; the adapter must use the padded (H, W) from `input_dimensions`."""
    from transformers import Swin2SRModel

    torch.manual_seed(0)
    encoder_model = Swin2SRModel(tiny_swin2sr_config()).eval()
    x = torch.rand(1, 3, 10, 18)  # window 4 -> padded to 12 x 20
    padded = encoder_model.pad_and_normalize(x)
    embeddings, dims = encoder_model.embeddings(encoder_model.first_convolution(padded))
    reference = encoder_model.encoder(embeddings, dims).last_hidden_state
    model = get_peft_model(encoder_model, AdaptIRConfig()).eval()
    inner = model.get_base_model()
    out = inner.encoder(embeddings, dims).last_hidden_state
    assert tuple(dims) == (12, 20)
    assert torch.equal(out, reference)
    layers = [m for m in model.modules() if isinstance(m, AdaptIRLayer)]
    assert all(layer.grid_capture.size == (12, 20) for layer in layers)


def test_token_model_with_explicit_targets_and_grid_argument():
    base, x = build("token")
    config = AdaptIRConfig(target_modules=["mlp"], layout="BNC", grid_argument="x_size", init_weights=False)
    model = get_peft_model(base, config).eval()
    assert output_of(model, x).shape == x.shape


def test_plain_model_without_preset_or_targets_is_refused():
    with pytest.raises(ValueError, match="No AdaptIR preset knows TinyConvNet"):
        get_peft_model(build("conv")[0], AdaptIRConfig())


def test_wrong_target_module_is_named():
    with pytest.raises(ValueError, match="Target modules .*'feed_forward'.* not found"):
        get_peft_model(TinyTokenNet(), AdaptIRConfig(target_modules=["feed_forward"], preset="swinir"))


def test_missing_span_end_lists_siblings():
    with pytest.raises(ValueError, match=r"sibling 'conv6'.*siblings are \['norm', 'conv4', 'sg', 'conv5'\]"):
        get_peft_model(build("conv")[0], AdaptIRConfig(target_modules=["conv4"], span_end="conv6"))


def test_missing_grid_argument_is_explained():
    config = AdaptIRConfig(target_modules=["mlp"], layout="BNC", grid_argument="img_size")
    with pytest.raises(ValueError, match="forward argument named 'img_size'"):
        get_peft_model(build("token")[0], config)


def test_sequence_model_grid_inferred_from_input_size():
    base, x = build("sequence")
    config = AdaptIRConfig(
        target_modules=["linear1"], span_end="linear2", layout="NBC", infer_grid_from_input=True, init_weights=False
    )
    model = get_peft_model(base, config).eval()
    assert output_of(model, x).shape == x.shape  # 16 x 16 image, stride 4 -> 4 x 4 tokens


def test_grid_that_cannot_be_known_is_an_error():
    base = TinySequenceNet()
    # layout left open: only at run time does the tensor turn out to hold flat tokens
    model = get_peft_model(base, AdaptIRConfig(target_modules=["linear1"], span_end="linear2"))
    with pytest.raises(ValueError, match="no source for their \\(H, W\\) grid"):
        model(torch.rand(1, 3, 16, 16))


def test_grid_size_that_does_not_fit_the_tokens_is_an_error():
    base, x = build("sequence")
    config = AdaptIRConfig(target_modules=["linear1"], span_end="linear2", layout="NBC", grid_size=[2, 4])
    with pytest.raises(ValueError, match="sees 16 tokens but the grid \\(2, 4\\)"):
        get_peft_model(base, config)(x)


def test_wrong_layout_is_explained():
    base, x = build("conv")
    config = AdaptIRConfig(target_modules=["conv4"], span_end="conv5", layout="BHWC")
    with pytest.raises(ValueError, match="channel dimension for layout='BHWC'"):
        get_peft_model(base, config)(x)


def test_reserved_adapter_names_are_refused():
    base, _ = build("token")
    with pytest.raises(ValueError, match="Adapter name 'up' is reserved"):
        get_peft_model(base, AdaptIRConfig(preset="swinir"), adapter_name="up")


def test_mixed_batch_errors():
    model, x = build("token")
    model = get_peft_model(model, AdaptIRConfig(preset="swinir"))
    with pytest.raises(ValueError, match="call model.eval"):
        model(x, adapter_names=["default"] * 3)
    model.eval()
    with pytest.raises(ValueError, match=r"Unknown adapter name\(s\) \['derain'\]"):
        model(x, adapter_names=["default", "derain", "__base__"])
    with pytest.raises(ValueError, match="adapter_names has 2 entries but the batch holds 3"):
        model(x, adapter_names=["default", "__base__"])
    # hooks never leak after an error
    assert not any(m._forward_pre_hooks for m in model.modules() if isinstance(m, AdaptIRLayer))
    assert torch.equal(output_of(model, x), output_of(model, x, adapter_names=["default"] * 3))


def test_mixed_batch_with_modules_to_save_routes_to_the_base_copy():
    base, x = build("token")
    model = get_peft_model(base, AdaptIRConfig(preset="swinir", modules_to_save=["conv_last"]))
    model.add_adapter("plain", AdaptIRConfig(preset="swinir", init_weights=False))
    with torch.no_grad():
        model.base_model.model.conv_last.modules_to_save["default"].bias.add_(0.1)
    model.eval()
    expected_default = output_of(model, x)
    model.set_adapter("plain")
    expected_plain = output_of(model, x)
    mixed = output_of(model, x, adapter_names=["default", "plain", "default"])
    torch.testing.assert_close(mixed[0], expected_default[0], rtol=0, atol=1e-5)
    torch.testing.assert_close(mixed[1], expected_plain[1], rtol=0, atol=1e-5)


def test_layers_to_transform_selects_blocks():
    base, _ = build("token")
    model = get_peft_model(base, AdaptIRConfig(preset="swinir", layers_to_transform=[1], layers_pattern="layers"))
    wrapped = [n for n, m in model.named_modules() if isinstance(m, AdaptIRLayer)]
    assert wrapped == ["base_model.model.layers.1.mlp"]


def test_default_width_has_a_minimum_and_reduction():
    assert AdaptIRBranch(16, 4).down.out_channels == 4
    base, _ = build("swin2sr")
    model = get_peft_model(base, AdaptIRConfig(min_width=3, reduction=4))  # C = 16 -> 16 // 4 = 4
    assert {m.adaptir_branch["default"].down.out_channels for m in model.modules() if isinstance(m, AdaptIRLayer)} == {
        4
    }


class ChannelsLastNet(torch.nn.Module):
    """SCUNet-style FFN on (B, H, W, C) feature maps."""

    def __init__(self, dim: int = 12) -> None:
        super().__init__()
        self.embed = torch.nn.Conv2d(3, dim, 3, padding=1)
        self.mlp = torch.nn.Sequential(torch.nn.Linear(dim, 2 * dim), torch.nn.GELU(), torch.nn.Linear(2 * dim, dim))
        self.out = torch.nn.Conv2d(dim, 3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.embed(x).permute(0, 2, 3, 1)  # (B, H, W, C)
        feats = feats + self.mlp(feats)
        return x + self.out(feats.permute(0, 3, 1, 2))


@pytest.mark.parametrize("layout", ["BHWC", None])
def test_channels_last_layout(layout):
    torch.manual_seed(0)
    base, x = ChannelsLastNet().eval(), torch.rand(2, 3, 5, 7)
    reference = base(x)
    model = get_peft_model(base, AdaptIRConfig(target_modules=["mlp"], layout=layout)).eval()
    assert torch.equal(model(x), reference)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "adaptir_branch" in name:
                param.add_(0.1)
    single = model(x)
    assert not torch.allclose(single, reference)
    mixed = model(x, adapter_names=["__base__", "default"])
    torch.testing.assert_close(mixed[0], reference[0], rtol=0, atol=1e-6)
    torch.testing.assert_close(mixed[1], single[1], rtol=0, atol=1e-6)
