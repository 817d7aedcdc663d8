"""Export of a spandrel-loaded backbone (NAFNet, a U-Net: its frequency branches run at three feature sizes).

Runs in the spandrel CI environment (torch 2.14.1 + torchvision + spandrel + the export extra).
"""

from __future__ import annotations

import contextlib
import io
import json

import pytest
import torch
from skimage import data as skimage_data

pytest.importorskip("spandrel", reason="spandrel is optional; CI runs this file in its own venv")
pytest.importorskip("onnxruntime", reason="pip install 'peft-adaptir[export]'")
pytest.importorskip("onnxscript", reason="pip install 'peft-adaptir[export]'")

from peft import get_peft_model  # noqa: E402
from spandrel.architectures.NAFNet import NAFNet  # noqa: E402
from tiny_models import max_relative_error as _rel  # noqa: E402

from peft_adaptir import restore  # noqa: E402
from peft_adaptir.backbones.spandrel_loader import adaptir_config_for, base_model_from_checkpoint  # noqa: E402
from peft_adaptir.cli import main  # noqa: E402
from peft_adaptir.export.check import run_onnxruntime  # noqa: E402
from peft_adaptir.export.exporter import export_model  # noqa: E402
from peft_adaptir.export.graph import dft_node_count  # noqa: E402
from peft_adaptir.export.onnx_restorer import restore_onnx  # noqa: E402
from peft_adaptir.tuner.branch import FrequencyAffine  # noqa: E402

TILE = 16


@pytest.fixture(scope="module")
def nafnet(tmp_path_factory):
    """A tiny NAFNet saved as .pth, loaded back through spandrel, with one randomised AdaptIR adapter saved too."""
    root = tmp_path_factory.mktemp("nafnet")
    torch.manual_seed(0)
    original = NAFNet(width=8, middle_blk_num=1, enc_blk_nums=[1, 1], dec_blk_nums=[1, 1])
    with torch.no_grad():  # NAFNet's residual scales start at zero, which would hide every block's FFN
        for name, param in original.named_parameters():
            if name.endswith(("beta", "gamma")):
                param.fill_(0.5)
    torch.save(original.state_dict(), root / "nafnet.pth")
    base = base_model_from_checkpoint(root / "nafnet.pth")
    model = get_peft_model(base, adaptir_config_for(base, width=4), adapter_name="denoise").eval()
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "adaptir_branch" in name:
                param.add_(0.5 * torch.randn(param.shape, generator=generator))
    model.save_pretrained(root / "adapter")  # a non-default adapter name is saved in adapter/denoise
    return root, model


@pytest.fixture(scope="module")
def photo() -> torch.Tensor:
    """A real photo (skimage's coffee, 1/8 size): (3, 50, 75) float in [0, 1]."""
    return torch.from_numpy(skimage_data.coffee()[::8, ::8].copy()).permute(2, 0, 1).float() / 255


def test_nafnet_exports_with_and_without_dft(nafnet, photo):
    root, model = nafnet
    sizes = set()
    hooks = [
        m.register_forward_pre_hook(lambda mod, args: sizes.add(tuple(args[0].shape[-2:])))
        for m in model.modules()
        if isinstance(m, FrequencyAffine)
    ]
    with torch.no_grad():
        model(torch.zeros(1, 3, TILE, TILE))
    for hook in hooks:
        hook.remove()
    assert sizes == {(16, 16), (8, 8), (4, 4)}  # every U-Net level has its own DFT size

    fft = export_model(model, root / "fft.onnx", tile=TILE)
    assert fft.check["passed"] and fft.check["max_rel_error"] <= 1e-3 and fft.dft_nodes > 0
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        args = ["export", "--base", str(root / "nafnet.pth"), "--adapter", f"denoise={root / 'adapter' / 'denoise'}"]
        assert main([*args, "--tile", str(TILE), "--no-dft", str(root / "matmul.onnx")]) == 0
    report = json.loads((root / "matmul.onnx.check.json").read_text())
    assert report["passed"] and report["max_rel_error"] <= 1e-4 and report["dft_nodes"] == 0
    assert dft_node_count(root / "matmul.onnx") == 0

    tile = photo[None, :, 20 : 20 + TILE, 30 : 30 + TILE].contiguous()
    with torch.no_grad():
        expected = model(tile)
    for name in ("fft.onnx", "matmul.onnx"):
        assert _rel(run_onnxruntime(root / name, tile), expected) <= 1e-3

    image = photo[:, :40, :44]  # 40 x 44 (multiples of 4): 3 x 3 tiles of 16
    reference = restore(model, image, tile_size=TILE, tile_overlap=4)
    got = restore_onnx(root / "matmul.onnx", image, tile_overlap=4)
    assert got.shape == image.shape and _rel(got, reference) <= 1e-3
