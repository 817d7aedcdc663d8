"""Export of an adapted tiny Swin2SR: ONNX (FFT and DFT-free) and torch.export, checked on onnxruntime.

Every export is compared with PyTorch on real photos (skimage); the DFT-free graph must hold no DFT node; tiled
restoration through onnxruntime must match the PyTorch path; bad requests are refused with a message.
"""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest
import torch
from skimage import data as skimage_data
from tiny_models import max_relative_error as _rel
from tiny_models import save_base_and_adapters

pytest.importorskip("onnxruntime", reason="pip install 'peft-adaptir[export]'")
pytest.importorskip("onnxscript", reason="pip install 'peft-adaptir[export]'")


from peft_adaptir import load_adapters, load_base_model, restore  # noqa: E402
from peft_adaptir.cli import main  # noqa: E402
from peft_adaptir.export.check import run_onnxruntime  # noqa: E402
from peft_adaptir.export.dependencies import require  # noqa: E402
from peft_adaptir.export.exporter import export_model  # noqa: E402
from peft_adaptir.export.frequency import ExportFrequencyAffine  # noqa: E402
from peft_adaptir.export.graph import dft_node_count, op_counts, read_metadata  # noqa: E402
from peft_adaptir.export.onnx_restorer import OnnxRestorer, restore_onnx  # noqa: E402
from peft_adaptir.tuner.branch import FrequencyAffine  # noqa: E402

TILE = 16


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A tiny Swin2SR (window 4) saved with two perturbed adapters, "derain" and "denoise"."""
    root = tmp_path_factory.mktemp("export")
    save_base_and_adapters(root, ("derain", "denoise"))
    return root


@pytest.fixture(scope="module")
def adapted(saved):
    """The saved model loaded with both adapters, "derain" active."""
    model = load_adapters(load_base_model(saved / "base"), {"derain": str(saved / "derain")})
    model.load_adapter(str(saved / "denoise"), adapter_name="denoise")
    return model.eval()


@pytest.fixture(scope="module")
def photo() -> torch.Tensor:
    """A real photo (skimage's chelsea, 1/4 size): (1, 3, 75, 113) float in [0, 1]."""
    return torch.from_numpy(skimage_data.chelsea()[::4, ::4].copy()).permute(2, 0, 1)[None].float() / 255


def _eager(model, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x).reconstruction


@pytest.fixture(scope="module")
def exports(adapted, saved):
    """ "derain" exported at tile 16: with the FFT branch through the API, DFT-free through the command line."""
    before = _eager(adapted, torch.rand(1, 3, TILE, TILE, generator=torch.Generator().manual_seed(0)))
    fft = export_model(adapted, saved / "fft.onnx", tile=TILE)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = main([*_cli_args(saved), "--no-dft", str(saved / "matmul.onnx")])
    assert code == 0
    return {"fft": fft.path, "fft_result": fft, "matmul": saved / "matmul.onnx", "before": before, "cli": printed}


def _cli_args(root) -> list[str]:
    return ["export", "--base", str(root / "base"), "--adapter", f"derain={root / 'derain'}", "--tile", str(TILE)]


@pytest.mark.parametrize(("height", "width"), [(16, 16), (15, 10), (8, 12)])
@pytest.mark.parametrize("mode", ["fft", "matmul"])
def test_frequency_rewrite_matches_pytorch(height, width, mode):
    torch.manual_seed(0)
    source = FrequencyAffine(6)
    with torch.no_grad():
        for conv in (source.amp_fuse, source.pha_fuse):
            conv.weight.copy_(torch.randn_like(conv.weight))
            conv.bias.copy_(torch.randn_like(conv.bias))
    x = torch.randn(2, 6, height, width)
    expected = source(x)
    got = ExportFrequencyAffine(source, height, width, mode=mode)(x)
    assert _rel(got, expected) < 1e-5
    with pytest.raises(ValueError, match=f"fixed to {height}x{width}"):
        ExportFrequencyAffine(source, height, width, mode=mode)(torch.randn(1, 6, height + 2, width))


def test_phase_of_real_bins_is_plus_pi():
    """A constant negative map: its DC bin is real and negative, so its phase is +pi (PyTorch's FFT convention)."""
    source = FrequencyAffine(1)
    with torch.no_grad():
        source.pha_fuse.weight.fill_(0.5)  # phase -> phase / 2: +pi and -pi would give +i and -i
    x = -torch.ones(1, 1, 4, 4)
    expected = source(x)
    for mode in ("fft", "matmul"):
        torch.testing.assert_close(ExportFrequencyAffine(source, 4, 4, mode=mode)(x), expected, atol=1e-6, rtol=0)


def test_onnx_export_matches_pytorch_and_reports_it(exports, adapted, photo):
    fft = exports["fft_result"]
    report = json.loads((fft.path.parent / "fft.onnx.check.json").read_text())
    assert report["passed"] and report["max_rel_error"] <= 1e-3
    assert report["max_rel_error"] == fft.check["max_rel_error"]
    assert fft.dft_nodes > 0 and dft_node_count(fft.path) == fft.dft_nodes
    meta = read_metadata(fft.path)
    assert meta["tile_size"] == str(TILE) and meta["adapter"] == "derain" and meta["size_multiple"] == "4"
    # independently of the exporter's own check: another photo tile, onnxruntime against eager PyTorch
    tile = photo[:, :, 30 : 30 + TILE, 50 : 50 + TILE].contiguous()
    expected = _eager(adapted, tile)
    assert _rel(run_onnxruntime(fft.path, tile), expected) <= 1e-3
    # the adapter is really in the graph: the base model alone is far from it
    with adapted.disable_adapter():
        base = _eager(adapted, tile)
    assert _rel(base, expected) > 1e-2


def test_dft_free_graph_has_no_dft_and_matches_fft_path(exports, adapted, photo):
    counts = op_counts(exports["matmul"])
    assert counts.get("DFT", 0) == 0 and counts["MatMul"] > 0
    report = json.loads(exports["matmul"].with_name("matmul.onnx.check.json").read_text())
    assert report["passed"] and report["dft_nodes"] == 0 and report["max_rel_error"] <= 1e-4  # against FFT PyTorch
    assert "0 DFT nodes" in exports["cli"].getvalue() and "adapter derain" in exports["cli"].getvalue()
    tile = photo[:, :, 10 : 10 + TILE, 80 : 80 + TILE].contiguous()
    assert _rel(run_onnxruntime(exports["matmul"], tile), _eager(adapted, tile)) <= 1e-4
    assert _rel(run_onnxruntime(exports["matmul"], tile), run_onnxruntime(exports["fft"], tile)) <= 1e-4


def test_export_leaves_the_model_as_it_was(exports, adapted):
    after = _eager(adapted, torch.rand(1, 3, TILE, TILE, generator=torch.Generator().manual_seed(0)))
    assert torch.equal(after, exports["before"])
    assert adapted.active_adapter == "derain" and not adapted.training
    assert all(type(m.frequency) is FrequencyAffine for m in adapted.modules() if hasattr(m, "frequency"))


def test_restore_onnx_tiles_like_the_pytorch_path(exports, adapted, photo):
    image = photo[0, :, :40, :52]  # 40 x 52: padded to 40 x 52 (multiples of 4), 3 x 4 tiles of 16
    expected = restore(adapted, image, tile_size=TILE, tile_overlap=4)
    got = restore_onnx(exports["fft"], image, tile_overlap=4)
    assert got.shape == expected.shape == image.shape
    assert _rel(got, expected) <= 1e-3
    small = photo[0, :, :10, :14]  # smaller than a tile: padded up to the graph's 16 x 16 inside the restorer
    assert restore_onnx(exports["matmul"], small).shape == small.shape


def test_wrong_tile_size_is_refused(exports):
    restorer = OnnxRestorer(exports["fft"])
    assert restorer.tile_size == TILE and restorer.size_multiple == 4
    with pytest.raises(ValueError, match="exported for tile size 16; got tile_size=32"):
        restore_onnx(restorer, torch.rand(3, 40, 40), tile_size=32)
    with pytest.raises(ValueError, match="exported for 16x16 tiles; got a 32x32 input"):
        restorer(torch.rand(1, 3, 32, 32))
    with pytest.raises(ValueError, match="baked"):
        restore_onnx(restorer, torch.rand(3, 16, 16), adapter="denoise")


def test_two_active_adapters_or_a_mixed_batch_are_refused(adapted, tmp_path):
    adapted.base_model.set_adapter(["derain", "denoise"])
    try:
        with pytest.raises(ValueError, match=r"2 active adapters \['derain', 'denoise'\]"):
            export_model(adapted, tmp_path / "two.onnx", tile=TILE, check=False)
    finally:
        adapted.set_adapter("derain")
    with pytest.raises(ValueError, match="mixed batch"):
        export_model(adapted, tmp_path / "mixed.onnx", tile=TILE, adapter=["derain", "denoise"], check=False)
    with pytest.raises(ValueError, match="multiple of the model's size requirement \\(4\\)"):
        export_model(adapted, tmp_path / "odd.onnx", tile=18)
    assert not any(tmp_path.iterdir())


def test_torch_export_of_another_adapter(adapted, photo, tmp_path):
    result = export_model(adapted, tmp_path / "denoise.pt2", tile=TILE, adapter="denoise", fmt="torch-export")
    assert result.check["passed"] and result.check["max_rel_error"] <= 1e-5
    assert adapted.active_adapter == "derain"
    program = torch.export.load(tmp_path / "denoise.pt2")
    tile = photo[:, :, :TILE, :TILE].contiguous()
    adapted.set_adapter("denoise")
    try:
        expected = _eager(adapted, tile)
    finally:
        adapted.set_adapter("derain")
    assert _rel(program.module()(tile), expected) <= 1e-5


def test_cli_refuses_overwrite_and_two_adapters(exports, saved, capsys):
    out = exports["matmul"]
    stamp = out.stat().st_mtime_ns
    assert main([*_cli_args(saved), str(out)]) == 2  # an existing file is not overwritten unasked
    assert "exists" in capsys.readouterr().err and out.stat().st_mtime_ns == stamp
    two = [*_cli_args(saved), "--adapter", f"denoise={saved / 'denoise'}", str(saved / "two.onnx")]
    assert main(two) == 2
    assert "holds one adapter" in capsys.readouterr().err and not (saved / "two.onnx").exists()


def test_missing_dependency_names_the_extra(monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "onnxruntime", None)
    with pytest.raises(ImportError, match=r"pip install 'peft-adaptir\[export\]'"):
        require("onnxruntime")


def test_graph_input_is_float_photo_range(exports):
    session = require("onnxruntime").InferenceSession(str(exports["fft"]), providers=["CPUExecutionProvider"])
    (graph_input,) = session.get_inputs()
    assert graph_input.shape == ["batch", 3, TILE, TILE] and graph_input.type == "tensor(float)"
    assert np.isfinite(session.run(None, {graph_input.name: np.zeros((1, 3, TILE, TILE), np.float32)})[0]).all()


def test_fp16_onnx_export_keeps_the_model_in_fp32(adapted, tmp_path):
    probe = torch.rand(1, 3, TILE, TILE, generator=torch.Generator().manual_seed(2))
    before = _eager(adapted, probe)
    result = export_model(adapted, tmp_path / "half.onnx", tile=TILE, dtype="fp16", dft_free=True)
    assert result.check["passed"] and 0 < result.check["max_rel_error"] <= 2e-2 and result.dft_nodes == 0
    restorer = OnnxRestorer(tmp_path / "half.onnx")
    assert restorer.input_dtype == np.float16 and restorer.metadata["dtype"] == "fp16"
    assert _rel(restorer(probe), before) <= 2e-2
    assert all(p.dtype == torch.float32 for p in adapted.parameters())
    assert torch.equal(_eager(adapted, probe), before)


def test_graphs_take_a_dynamic_batch(exports, adapted, photo):
    """One onnxruntime call restores several tiles, each as it would alone; the restorer sends the whole batch."""
    tiles = torch.cat([photo[:, :, r : r + TILE, c : c + TILE] for r, c in ((0, 0), (20, 40), (50, 90))])
    for name in ("fft", "matmul"):
        together = run_onnxruntime(exports[name], tiles)
        alone = torch.cat([run_onnxruntime(exports[name], tile[None]) for tile in tiles])
        assert _rel(together, alone) <= 1e-5 and _rel(together, _eager(adapted, tiles)) <= 1e-3
    restorer = OnnxRestorer(exports["fft"])
    calls = []
    run = restorer.session.run
    restorer.session = type("Counting", (), {"run": lambda self, *a: calls.append(a[1]) or run(*a)})()
    assert _rel(restorer(tiles), _eager(adapted, tiles)) <= 1e-3
    assert len(calls) == 1 and next(iter(calls[0].values())).shape[0] == 3
