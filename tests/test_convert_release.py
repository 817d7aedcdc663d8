"""The release converter: adapters in the authors' naming -> a peft-adaptir adapter that reproduces their outputs.

``ReleaseAdaptIR`` below re-implements the released module from the method as docs/method.md states it
(independently of the package's branch), with the release's parameter names, as an independent reference.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

pytest.importorskip(
    "spandrel", reason="spandrel is optional (pip install 'peft-adaptir[spandrel]'); CI runs these in its own venv"
)

from peft import PeftConfig, PeftModel  # noqa: E402
from spandrel.architectures.IPT import IPT  # noqa: E402

from peft_adaptir.backbones.convert_release import convert_release_checkpoint  # noqa: E402


class ReleaseAdaptIR(nn.Module):
    """The released adapter: sequence-first tokens (L, B, C) on a square grid -> (L, B, C)."""

    def __init__(self, channels: int, hidden: int, rank: int) -> None:
        super().__init__()
        self.hidden = hidden
        self.head = nn.Conv2d(channels, hidden, 1)
        self.BN = nn.BatchNorm2d(hidden)
        self.conv_weight_A = nn.Parameter(torch.randn(hidden, rank))
        self.conv_weight_B = nn.Parameter(torch.randn(rank, 9))
        self.conv_bias = nn.Parameter(torch.randn(hidden))
        self.amp_fuse = nn.Conv2d(hidden, hidden, 1, groups=hidden)
        self.pha_fuse = nn.Conv2d(hidden, hidden, 1, groups=hidden)
        self.compress = nn.Conv2d(hidden, 1, 1)
        self.proj = nn.Sequential(nn.Linear(hidden, hidden // 2), nn.GELU(), nn.Linear(hidden // 2, hidden))
        self.channel_interaction = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Conv2d(hidden, hidden // 8, 1), nn.GELU(), nn.Conv2d(hidden // 8, hidden, 1)
        )
        self.spatial_interaction = nn.Conv2d(hidden, 1, 1)
        self.tail = nn.Conv2d(hidden, channels, 1, bias=False)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        length, batch, channels = tokens.shape
        side = math.isqrt(length)
        x = tokens.view(side, side, batch, channels).permute(2, 3, 0, 1)  # (B, C, H, W), token index = row * W + col
        x = self.BN(self.head(x))
        spectrum = torch.fft.rfft2(x, norm="ortho")
        amplitude, phase = self.amp_fuse(spectrum.abs()), self.pha_fuse(spectrum.angle())
        spectrum = torch.complex(amplitude * torch.cos(phase), amplitude * torch.sin(phase))
        global_x = torch.fft.irfft2(spectrum, s=(side, side), norm="ortho").abs()
        kernel = (self.conv_weight_A @ self.conv_weight_B).view(self.hidden, 1, 3, 3)
        local_x = F.conv2d(x, kernel, self.conv_bias, padding=1, groups=self.hidden)
        weights = F.softmax(self.compress(x).flatten(2), dim=-1)  # (B, 1, HW)
        pooled = (x.flatten(2) * weights).sum(-1)  # (B, h)
        channel = self.proj(pooled)[:, :, None, None]
        channel_gate = torch.sigmoid(self.channel_interaction(global_x))
        spatial_gate = torch.sigmoid(self.spatial_interaction(local_x))
        out = self.tail(channel * (channel_gate * local_x + spatial_gate * global_x))
        return out.flatten(2).permute(2, 0, 1)  # (L, B, C)


LAYERS = [f"body.{stack}.layers.{i}" for stack in ("encoder", "decoder") for i in range(2)]


def _ipt() -> nn.Module:
    torch.manual_seed(0)
    model = IPT(patch_size=12, patch_dim=3, n_feats=8, num_heads=12, num_layers=2, scale=[1])  # C = 72, 4 x 4 grid
    return model.double().eval()


def _release_modules(hidden: int = 9, rank: int = 4) -> dict[str, ReleaseAdaptIR]:
    torch.manual_seed(1)
    modules = {}
    for path in LAYERS:
        module = ReleaseAdaptIR(72, hidden, rank).double()
        with torch.no_grad():
            for param in module.parameters():
                param.copy_(torch.randn_like(param) * 0.3)  # trained-looking values; tail and gates non-zero
            module.BN.running_mean.copy_(torch.randn(hidden) * 0.1)
            module.BN.running_var.copy_(torch.rand(hidden) + 0.5)
        modules[path] = module.eval()
    return modules


def _release_state_dict(ipt: nn.Module, modules: dict[str, ReleaseAdaptIR]) -> dict[str, torch.Tensor]:
    state = dict(ipt.state_dict())  # the release saves the whole model: frozen IPT weights plus the adapters
    for path, module in modules.items():
        state.update({f"{path}.adaptir.{name}": value for name, value in module.state_dict().items()})
    return state


def _with_release_adapters(ipt: nn.Module, modules: dict[str, ReleaseAdaptIR]) -> nn.Module:
    """The release's IPT: linear2's output plus the adapter applied to linear1's input."""
    model = copy.deepcopy(ipt)
    for path, module in modules.items():
        layer, seen = model.get_submodule(path), {}
        layer.linear1.register_forward_pre_hook(lambda mod, args, seen=seen: seen.update(x=args[0]))
        layer.linear2.register_forward_hook(lambda mod, args, out, seen=seen, m=module: out + m(seen["x"]))
    return model


def test_converted_adapter_reproduces_the_release(tmp_path):
    ipt, modules = _ipt(), _release_modules()
    converted = convert_release_checkpoint(_release_state_dict(ipt, modules), ipt, tmp_path / "adapter")
    config = PeftConfig.from_pretrained(converted)
    assert (config.width, config.rank, config.kernel_size, config.fusion) == (9, 4, 3, "gated")
    assert (config.layout, config.span_end, config.grid_size) == ("NBC", "linear2", [4, 4])

    patch = torch.rand(2, 3, 12, 12, generator=torch.Generator().manual_seed(2), dtype=torch.float64) * 255
    with torch.no_grad():
        expected = _with_release_adapters(ipt, modules)(patch)
        base = ipt(patch)
        adapted = PeftModel.from_pretrained(copy.deepcopy(ipt), converted).eval()(patch)
    assert (expected - base).abs().max() > 1.0  # the adapters matter
    # Same maths. Everything runs in float64 except our frequency branch, which always computes in float32 (the
    # method spec), so the outputs (scale 0..255) agree to float32 rounding in that branch, 1e-6 at most.
    torch.testing.assert_close(adapted, expected, rtol=0, atol=1e-6)

    # and one module on its own, in float32 as released
    from peft_adaptir.tuner.branch import AdaptIRBranch

    release = modules["body.decoder.layers.1"].float()
    ours = AdaptIRBranch(72, 9, rank=4, fusion="gated").eval()
    prefix = "base_model.model.body.decoder.layers.1.linear1.adaptir_branch."
    from safetensors.torch import load_file

    saved = load_file(converted / "adapter_model.safetensors")
    ours.load_state_dict({k[len(prefix) :]: v.float() for k, v in saved.items() if k.startswith(prefix)})
    tokens = torch.randn(16, 3, 72)  # (L, B, C) on the 4 x 4 grid
    with torch.no_grad():
        mine = ours(tokens.permute(1, 2, 0).reshape(3, 72, 4, 4)).flatten(2).permute(2, 0, 1)
        torch.testing.assert_close(mine, release(tokens), rtol=1e-5, atol=1e-6)


def test_converter_reads_a_wrapped_pth_file(tmp_path):
    ipt, modules = _ipt(), _release_modules()
    torch.save({"state_dict": _release_state_dict(ipt, modules), "epoch": 300}, tmp_path / "release.pth")
    converted = convert_release_checkpoint(tmp_path / "release.pth", ipt, tmp_path / "adapter")
    patch = torch.rand(1, 3, 12, 12, dtype=torch.float64) * 255
    with torch.no_grad():
        adapted = PeftModel.from_pretrained(copy.deepcopy(ipt), converted).eval()(patch)
        torch.testing.assert_close(adapted, _with_release_adapters(ipt, modules)(patch), rtol=0, atol=1e-6)


def test_mismatched_shapes_are_refused_naming_the_first(tmp_path):
    ipt, modules = _ipt(), _release_modules()
    state = _release_state_dict(ipt, modules)
    state["body.decoder.layers.1.adaptir.proj.2.weight"] = torch.zeros(9, 5)
    state["body.decoder.layers.1.adaptir.tail.weight"] = torch.zeros(64, 9, 1, 1)
    with pytest.raises(ValueError, match=r"body\.decoder\.layers\.1\.adaptir\.proj\.2\.weight.*\(9, 5\).*\(9, 4\)"):
        convert_release_checkpoint(state, ipt, tmp_path / "adapter")
    assert not (tmp_path / "adapter").exists()

    state = _release_state_dict(ipt, modules)
    state["body.encoder.layers.7.adaptir.head.weight"] = state["body.encoder.layers.0.adaptir.head.weight"]
    with pytest.raises(ValueError, match=r"no layer 'body\.encoder\.layers\.7'"):
        convert_release_checkpoint(state, ipt, tmp_path / "adapter")

    state = _release_state_dict(ipt, modules)
    state["body.encoder.layers.0.adaptir.extra.weight"] = torch.zeros(1)
    with pytest.raises(ValueError, match=r"adaptir\.extra\.weight is not a parameter of the released"):
        convert_release_checkpoint(state, ipt, tmp_path / "adapter")

    with pytest.raises(ValueError, match="holds no AdaptIR release modules"):
        convert_release_checkpoint(dict(ipt.state_dict()), ipt, tmp_path / "adapter")


def test_partial_coverage_targets_only_the_covered_layers(tmp_path):
    ipt, modules = _ipt(), _release_modules()
    del modules["body.decoder.layers.0"]
    converted = convert_release_checkpoint(_release_state_dict(ipt, modules), ipt, tmp_path / "adapter")
    config = PeftConfig.from_pretrained(converted)
    assert sorted(config.target_modules) == sorted(f"{p}.linear1" for p in modules)
    patch = torch.rand(1, 3, 12, 12, dtype=torch.float64) * 255
    with torch.no_grad():
        adapted = PeftModel.from_pretrained(copy.deepcopy(ipt), converted).eval()(patch)
        torch.testing.assert_close(adapted, _with_release_adapters(ipt, modules)(patch), rtol=0, atol=1e-6)
