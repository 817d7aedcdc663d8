"""AdaptIR on spandrel-loaded restorers: presets per architecture, grids, identity at init, save/load, safe loading.

Tiny random models are built with spandrel's own classes, saved to a .pth and loaded back through
``load_spandrel_base`` (spandrel detects the architecture from the state dict); nothing is downloaded.
"""

from __future__ import annotations

import copy
import os
import pickle

import pytest
import torch
from torch import nn

spandrel = pytest.importorskip(
    "spandrel", reason="spandrel is optional (pip install 'peft-adaptir[spandrel]'); CI runs these in its own venv"
)

from peft import PeftModel, get_peft_model  # noqa: E402
from spandrel.architectures.Compact import Compact  # noqa: E402
from spandrel.architectures.DAT import DAT  # noqa: E402
from spandrel.architectures.HAT import HAT  # noqa: E402
from spandrel.architectures.IPT import IPT  # noqa: E402
from spandrel.architectures.NAFNet import NAFNet  # noqa: E402
from spandrel.architectures.SCUNet import SCUNet  # noqa: E402
from spandrel.architectures.SwinIR import SwinIR  # noqa: E402

from peft_adaptir import AdaptIRLayer  # noqa: E402
from peft_adaptir.backbones.safe_load import UnsafeCheckpointError  # noqa: E402
from peft_adaptir.backbones.spandrel_loader import (  # noqa: E402
    adaptir_config_for,
    architecture_name,
    base_model_from_checkpoint,
    load_spandrel_base,
    size_multiple_for,
)


def _swinir() -> nn.Module:
    return SwinIR(img_size=16, embed_dim=12, depths=[2, 2], num_heads=[2, 2], window_size=4, mlp_ratio=2.0, upscale=1)


def _hat() -> nn.Module:
    return HAT(
        img_size=16, embed_dim=12, depths=[2], num_heads=[2], window_size=4, mlp_ratio=2.0, upscale=2,
        compress_ratio=3, squeeze_factor=4, num_feat=16,
    )  # fmt: skip


def _dat() -> nn.Module:
    return DAT(img_size=64, embed_dim=32, split_size=[2, 4], depth=[2, 2], num_heads=[2, 2], expansion_factor=2.0,
               upscale=1, upsampler="pixelshuffledirect")  # fmt: skip


def _nafnet() -> nn.Module:
    model = NAFNet(width=8, middle_blk_num=1, enc_blk_nums=[1, 1], dec_blk_nums=[1, 1])
    with torch.no_grad():  # NAFNet's residual scales start at zero, which would hide every block's FFN
        for name, param in model.named_parameters():
            if name.endswith(("beta", "gamma")):
                param.fill_(0.5)
    return model


def _scunet() -> nn.Module:
    return SCUNet(config=[1, 1, 1, 1, 1, 1, 1], dim=64)


def _ipt() -> nn.Module:
    # spandrel cannot read the head count from a state dict and assumes IPT's 12
    return IPT(patch_size=12, patch_dim=3, n_feats=8, num_heads=12, num_layers=2, scale=[1])


# name, builder, spandrel architecture id, AdaptIR spans, input (H, W), grid of the first span for that input
CASES = [
    ("swinir", _swinir, "SwinIR", 4, (18, 26), (20, 28)),  # padded inside the model to multiples of the window (4)
    ("hat", _hat, "HAT", 3, (18, 26), (20, 28)),  # 2 HAB blocks + the group's overlapping-cross-attention block
    ("dat", _dat, "DAT", 4, (18, 26), (18, 26)),  # DAT pads inside its attention only; blocks see the image size
    ("nafnet", _nafnet, "NAFNet", 5, (18, 26), (20, 28)),  # padded to multiples of 2 ** len(encoders)
    ("scunet", _scunet, "SCUNet", 7, (40, 72), (64, 128)),  # padded to multiples of 64; (B, H, W, C) maps
]


def _saved_and_loaded(build, tmp_path) -> tuple[nn.Module, nn.Module, object]:
    torch.manual_seed(0)
    original = build().eval()
    path = tmp_path / "model.pth"
    torch.save(original.state_dict(), path)
    model, descriptor = load_spandrel_base(path)
    return original, model, descriptor


def _branch_grids(model: nn.Module) -> tuple[list, list[torch.utils.hooks.RemovableHandle]]:
    """Record the (H, W) of the feature map reaching every AdaptIR branch."""
    grids, handles = [], []
    for module in model.modules():
        if isinstance(module, AdaptIRLayer):
            for branch in module.adaptir_branch.values():
                hook = branch.register_forward_pre_hook(lambda mod, args: grids.append(tuple(args[0].shape[-2:])))
                handles.append(hook)
    return grids, handles


def _randomise_adapters(model: nn.Module) -> None:
    """Give every adapter weight a non-trivial value (the up-projection starts at zero)."""
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "adaptir_branch" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.1)


@pytest.mark.parametrize(("name", "build", "arch", "spans", "size", "grid"), CASES, ids=[c[0] for c in CASES])
def test_architecture(name, build, arch, spans, size, grid, tmp_path):
    original, model, descriptor = _saved_and_loaded(build, tmp_path)
    assert architecture_name(descriptor) == arch and type(model).__name__ == arch
    image = torch.rand(1, 3, *size, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected = original(image)
        assert torch.equal(model(image), expected)  # spandrel rebuilt the same model from the file

    config = adaptir_config_for(descriptor, width=4)
    assert config.preset == name if name != "hat" else config.preset == "swinir"
    peft_model = get_peft_model(model, config).eval()
    layers = [m for m in peft_model.modules() if isinstance(m, AdaptIRLayer)]
    assert len(layers) == spans

    grids, handles = _branch_grids(peft_model)
    with torch.no_grad():
        assert torch.equal(peft_model(image), expected)  # identity at init, bit for bit
    for handle in handles:
        handle.remove()
    assert len(grids) == spans and grids[0] == grid

    _randomise_adapters(peft_model)
    with torch.no_grad():
        adapted = peft_model(image)
    assert adapted.shape == expected.shape and torch.isfinite(adapted).all()
    assert (adapted - expected).abs().max() > 1e-4  # the adapters now change the output
    peft_model.save_pretrained(tmp_path / "adapter")
    fresh = copy.deepcopy(original).eval()
    reloaded = PeftModel.from_pretrained(fresh, tmp_path / "adapter").eval()
    with torch.no_grad():
        assert torch.equal(reloaded(image), adapted)


def test_ipt_grid_is_fixed_by_patch_size_for_any_image(tmp_path):
    original, model, descriptor = _saved_and_loaded(_ipt, tmp_path)
    assert architecture_name(descriptor) == "IPT"
    config = adaptir_config_for(model, width=8)
    assert (config.layout, config.span_end, config.grid_size) == ("NBC", "linear2", [4, 4])  # 12 px / 3 px patches
    patch = torch.rand(1, 3, 12, 12, generator=torch.Generator().manual_seed(3)) * 255
    with torch.no_grad():
        expected = original(patch)
    peft_model = get_peft_model(model, config).eval()
    assert len([m for m in peft_model.modules() if isinstance(m, AdaptIRLayer)]) == 4  # 2 encoder + 2 decoder
    with torch.no_grad():
        assert torch.equal(peft_model(patch), expected)

    grids, handles = _branch_grids(peft_model)
    image = torch.rand(1, 3, 18, 30, generator=torch.Generator().manual_seed(4))  # non-square: cut into 12 x 12 crops
    restored = descriptor(image)  # spandrel's IPT call: overlapping crops, [0, 255] scaling
    for handle in handles:
        handle.remove()
    assert restored.shape == (1, 3, 18, 30)
    assert grids and set(grids) == {(4, 4)}


def test_size_multiple_comes_from_the_descriptor(tmp_path):
    _, model, descriptor = _saved_and_loaded(_swinir, tmp_path)
    descriptor.size_requirements.multiple_of = 8  # as for architectures that need it (e.g. DRUNet, SAFMN)
    assert size_multiple_for(descriptor) == 8
    with pytest.raises(TypeError, match="ModelDescriptor"):
        size_multiple_for(model)
    base = base_model_from_checkpoint(tmp_path / "model.pth")
    assert isinstance(base, SwinIR) and not base.training and size_multiple_for(base) == 1


def test_ipt_is_refused_as_a_cli_base(tmp_path):
    _saved_and_loaded(_ipt, tmp_path)
    with pytest.raises(ValueError, match="IPT model.*12 x 12"):
        base_model_from_checkpoint(tmp_path / "model.pth")


def test_architecture_without_preset_needs_explicit_targets(tmp_path):
    torch.manual_seed(0)
    compact = Compact(num_in_ch=3, num_out_ch=3, num_feat=8, num_conv=2, upscale=1).eval()
    torch.save(compact.state_dict(), tmp_path / "compact.pth")
    model, descriptor = load_spandrel_base(tmp_path / "compact.pth")
    with pytest.raises(ValueError, match=r"no preset for the Compact architecture \(SRVGGNetCompact\).*target_"):
        adaptir_config_for(descriptor)
    config = adaptir_config_for(descriptor, target_modules=r"body\.(2|4)", layout="BCHW", width=4)
    peft_model = get_peft_model(model, config).eval()
    assert len([m for m in peft_model.modules() if isinstance(m, AdaptIRLayer)]) == 2
    image = torch.rand(1, 3, 9, 13)
    with torch.no_grad():
        assert torch.equal(peft_model(image), compact(image))


class _RunsCode:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('ran')",))


def test_a_pth_that_runs_code_is_refused_and_runs_nothing(tmp_path):
    original = _swinir().state_dict()
    marker = tmp_path / "pwned"
    original["payload"] = _RunsCode(str(marker))
    path = tmp_path / "evil.pth"
    torch.save(original, path)
    with pytest.raises(UnsafeCheckpointError, match="evil.pth"):
        load_spandrel_base(path)
    assert not marker.exists()
    # spandrel's own loader refuses it too (its allow-list unpickler), also without running it
    with pytest.raises(pickle.UnpicklingError, match="exec. is forbidden"):
        spandrel.ModelLoader().load_from_file(path)
    assert not marker.exists()
    # the file really does run code under an unrestricted load
    torch.load(path, weights_only=False)
    assert marker.read_text() == "ran"
    os.remove(marker)


def test_cli_base_from_a_pth_file_restores_whole_images(tmp_path):
    """`--base model.pth` goes through load_base_model; restore() pads to the model's size multiple."""
    from peft_adaptir import restore
    from peft_adaptir.backbones.loading import load_base_model

    _saved_and_loaded(_swinir, tmp_path)
    base = load_base_model(tmp_path / "model.pth")
    base.adaptir_size_multiple = 4  # as a descriptor with multiple_of=4 would set it
    reference = restore(base, torch.rand(3, 10, 14, generator=torch.Generator().manual_seed(0)))
    model = get_peft_model(base, adaptir_config_for(base))
    image = torch.rand(3, 10, 14, generator=torch.Generator().manual_seed(0))
    out = restore(model, image)
    assert out.shape == reference.shape and torch.equal(out, reference)


def test_spandrel_example_adapts_a_pth_checkpoint(tmp_path):
    """examples/adapt_spandrel_checkpoint.py on a tiny SwinIR .pth: trains, saves a loadable adapter, writes images."""
    import importlib.util
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "examples" / "adapt_spandrel_checkpoint.py"
    spec = importlib.util.spec_from_file_location("adapt_spandrel_checkpoint", script)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    _saved_and_loaded(_swinir, tmp_path)
    out = tmp_path / "run"
    args = ["--checkpoint", str(tmp_path / "model.pth"), "--steps", "2", "--batch-size", "2", "--patch-size", "16"]
    assert example.main([*args, "--output", str(out)]) == 0
    assert (out / "before.png").is_file() and (out / "after.png").is_file()
    base, _ = load_spandrel_base(tmp_path / "model.pth")
    loaded = PeftModel.from_pretrained(base, out / "adapter")
    assert any(isinstance(m, AdaptIRLayer) for m in loaded.modules())
