"""restore(): kinds in = kinds out, padding/cropping, tiling vs untiled, grey/RGBA, adapters, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from peft import get_peft_model
from PIL import Image
from skimage import data
from tiny_models import tiny_swin2sr_config
from torch import nn
from transformers import Swin2SRForImageSuperResolution

from peft_adaptir import AdaptIRConfig  # importing peft_adaptir registers AdaptIR with peft
from peft_adaptir.inference.pipeline import restore

# Tiled (tile 32, overlap 16) vs untiled on the chelsea photo (75 x 113), max |diff| measured on the tiny random
# Swin2SRs: 9.1e-4 at scale 1 (mean 6e-5; 1.3e-2 with no overlap); 1.35e-2 at x2, whose untrained head has a
# far larger gain (mean 7e-4; 1.3e-1 with no overlap).
TILED_ATOL = 2e-3
TILED_ATOL_X2 = 3e-2


class TinyConv(nn.Module):
    """A near-identity 3x3 conv restorer: (B, 3, H, W) -> (B, 3, H, W)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.dropout = nn.Dropout(0.5)  # must be off during restore()
        with torch.no_grad():
            self.conv.weight.mul_(0.1)
            self.conv.weight[:, :, 1, 1] += torch.eye(3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.conv(x))


class TinyUpsampler(nn.Module):
    """A x2 super-resolution conv: (B, 3, H, W) -> (B, 3, 2H, 2W)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 12, 3, padding=1)
        self.shuffle = nn.PixelShuffle(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.shuffle(self.conv(x)))


def tiny_swin2sr(upscale: int = 1) -> Swin2SRForImageSuperResolution:
    cfg = tiny_swin2sr_config(
        depths=[2], num_heads=[2], upscale=upscale, upsampler="" if upscale == 1 else "pixelshuffledirect"
    )
    torch.manual_seed(0)
    model = Swin2SRForImageSuperResolution(cfg).eval()
    if upscale == 1:
        # Keep the random restorer close to identity so outputs stay inside [0, 1]. Swin2SR's scale-1 head adds
        # the un-normalised input *and* the mean (reconstruction = x + conv(features) + mean): cancel the mean.
        with torch.no_grad():
            model.final_convolution.weight.mul_(0.1)
            model.final_convolution.bias.copy_(-model.swin2sr.mean.flatten())
    return model


@pytest.fixture(scope="module")
def swin() -> Swin2SRForImageSuperResolution:
    return tiny_swin2sr()


@pytest.fixture(scope="module")
def swin_x2() -> Swin2SRForImageSuperResolution:
    return tiny_swin2sr(upscale=2)


@pytest.fixture()
def conv() -> TinyConv:
    torch.manual_seed(0)
    return TinyConv().eval()


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    """A real photo (skimage's cat), downscaled to (75, 113, 3) uint8."""
    return data.chelsea()[::4, ::4].copy()


def as_tensor(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(array).permute(2, 0, 1).float() / 255


def direct(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """(3, H, W) -> the model's clamped output, no restore() machinery."""
    with torch.no_grad():
        out = model(x[None])
    out = out if isinstance(out, torch.Tensor) else out.reconstruction
    return out[0].clamp(0, 1)


# --- kinds in, kinds out -------------------------------------------------------------------------------------


def test_tensor_in_tensor_out_equals_model(conv, photo):
    x = as_tensor(photo)
    out = restore(conv, x)
    assert isinstance(out, torch.Tensor) and out.shape == x.shape and out.dtype == torch.float32
    torch.testing.assert_close(out, direct(conv, x), atol=1e-6, rtol=0)
    assert not out.is_inference()  # usable with autograd afterwards
    batch = restore(conv, torch.stack([x, x.flip(-1)]).double())
    assert batch.shape == (2, *x.shape) and batch.dtype == torch.float64
    torch.testing.assert_close(batch[1].float(), direct(conv, x.flip(-1)), atol=1e-6, rtol=0)


def test_numpy_and_pil_in_same_kind_out(conv, photo):
    expected = np.round(direct(conv, as_tensor(photo)).permute(1, 2, 0).numpy() * 255).astype(np.uint8)
    out = restore(conv, photo)
    assert isinstance(out, np.ndarray) and out.dtype == np.uint8 and out.shape == photo.shape
    np.testing.assert_array_equal(out, expected)
    pil = restore(conv, Image.fromarray(photo))
    assert isinstance(pil, Image.Image) and pil.mode == "RGB" and pil.size == (photo.shape[1], photo.shape[0])
    np.testing.assert_array_equal(np.asarray(pil), expected)
    floats = restore(conv, photo.astype(np.float32) / 255)
    assert floats.dtype == np.float32 and floats.shape == photo.shape
    np.testing.assert_allclose(floats * 255, expected, atol=0.51)


def test_list_of_mixed_kinds_and_sizes(conv, photo):
    small = photo[:20, :31]
    images = [photo, as_tensor(small), Image.fromarray(small)]
    out = restore(conv, images, batch_size=2)
    assert isinstance(out, list) and [type(o) for o in out] == [np.ndarray, torch.Tensor, Image.Image]
    np.testing.assert_array_equal(out[0], restore(conv, photo))
    torch.testing.assert_close(out[1], direct(conv, as_tensor(small)), atol=1e-6, rtol=0)
    assert out[2].size == (31, 20)
    assert restore(conv, []) == []


# --- padding and scale -----------------------------------------------------------------------------------------


def test_swin_pads_to_window_and_crops_back(swin, photo):
    x = as_tensor(photo)[:, :30, :45]  # not multiples of the window size 4
    out = restore(swin, x)
    assert out.shape == x.shape
    padded = F.pad(x[None], (0, 3, 0, 2), mode="reflect")[0]
    torch.testing.assert_close(out, direct(swin, padded)[:, :30, :45], atol=1e-5, rtol=0)
    assert (out - x).abs().mean() < 0.1  # the near-identity restorer really ran on the image


def test_tiny_image_falls_back_to_replicate_padding(swin):
    x = torch.rand(3, 2, 3)  # pads of 2 and 1 cannot reflect in 2 rows
    out = restore(swin, x)
    padded = F.pad(F.pad(x[None], (0, 1, 0, 0), mode="reflect"), (0, 0, 0, 2), mode="replicate")[0]
    torch.testing.assert_close(out, direct(swin, padded)[:, :2, :3], atol=1e-5, rtol=0)


def test_explicit_size_multiple_is_used(conv):
    seen = []
    conv.register_forward_pre_hook(lambda module, args: seen.append(tuple(args[0].shape[-2:])))
    restore(conv, torch.rand(3, 10, 13), size_multiple=8)
    assert seen == [(16, 16)]


def test_upscaling_model_output_is_scaled(swin_x2, photo):
    x = as_tensor(photo)[:, :30, :45]
    out = restore(swin_x2, x)
    assert out.shape == (3, 60, 90)
    padded = F.pad(x[None], (0, 3, 0, 2), mode="reflect")[0]
    torch.testing.assert_close(out, direct(swin_x2, padded)[:, :60, :90], atol=1e-5, rtol=0)
    pil = restore(TinyUpsampler(), Image.fromarray(photo))
    assert pil.size == (2 * photo.shape[1], 2 * photo.shape[0])


# --- tiling ------------------------------------------------------------------------------------------------------


def test_image_that_fits_one_tile_equals_untiled(swin, photo):
    x = as_tensor(photo)[:, :40, :46]
    untiled = restore(swin, x, tile_size=0)
    torch.testing.assert_close(restore(swin, x, tile_size=48, tile_overlap=8), untiled, atol=1e-6, rtol=0)
    torch.testing.assert_close(restore(swin, x), untiled, atol=1e-6, rtol=0)  # default 512 tile: one tile


def test_tiled_with_overlap_close_to_untiled(swin, photo):
    x = as_tensor(photo)
    untiled = restore(swin, x, tile_size=0)
    seen = []
    hook = swin.register_forward_pre_hook(lambda module, args: seen.append(tuple(args[0].shape)))
    tiled = restore(swin, x, tile_size=32, tile_overlap=16, batch_size=3)
    hook.remove()
    assert tiled.shape == x.shape
    assert all(shape[-2:] == (32, 32) and shape[0] <= 3 for shape in seen) and len(seen) > 3
    assert (tiled - untiled).abs().max() < TILED_ATOL
    hard = restore(swin, x, tile_size=32, tile_overlap=0)  # no overlap: visible seams, far larger error
    assert (hard - untiled).abs().max() > 5 * (tiled - untiled).abs().max()


def test_tiled_upscaling_close_to_untiled(swin_x2, photo):
    x = as_tensor(photo)
    untiled = restore(swin_x2, x, tile_size=0)
    tiled = restore(swin_x2, x, tile_size=32, tile_overlap=16)
    assert tiled.shape == (3, 150, 226)
    assert (tiled - untiled).abs().max() < TILED_ATOL_X2
    hard = restore(swin_x2, x, tile_size=32, tile_overlap=0)
    assert (hard - untiled).abs().max() > 5 * (tiled - untiled).abs().max()


# --- greyscale and alpha -------------------------------------------------------------------------------------------


def test_greyscale_replicated_and_averaged_back(conv, photo):
    grey = photo.mean(axis=2).astype(np.uint8)
    out = restore(conv, grey)
    assert out.shape == grey.shape and out.dtype == np.uint8
    rgb = direct(conv, torch.from_numpy(grey).float().div(255).expand(3, -1, -1))
    np.testing.assert_array_equal(out, np.round(rgb.mean(0).numpy() * 255).astype(np.uint8))
    pil = restore(conv, Image.fromarray(grey))
    assert pil.mode == "L"
    np.testing.assert_array_equal(np.asarray(pil), out)


def test_rgba_carries_alpha(conv, photo):
    alpha = np.linspace(0, 255, photo.shape[0] * photo.shape[1]).reshape(photo.shape[:2]).astype(np.uint8)
    rgba = np.dstack([photo, alpha])
    out = restore(conv, Image.fromarray(rgba))
    assert out.mode == "RGBA"
    np.testing.assert_array_equal(np.asarray(out)[..., 3], alpha)
    np.testing.assert_array_equal(np.asarray(out)[..., :3], restore(conv, photo))
    up = restore(TinyUpsampler(), torch.from_numpy(rgba).permute(2, 0, 1).float() / 255)
    assert up.shape == (4, 2 * photo.shape[0], 2 * photo.shape[1])
    assert abs(up[3].mean().item() - alpha.mean() / 255) < 1e-3  # resized, not altered


# --- model state, progress -----------------------------------------------------------------------------------------


def test_eval_mode_during_and_train_mode_restored(conv, photo):
    conv.train()
    x = as_tensor(photo)
    out = restore(conv, x)
    assert conv.training and conv.dropout.training
    conv.eval()
    torch.testing.assert_close(out, direct(conv, x), atol=1e-6, rtol=0)  # dropout was off


def test_progress_bar_auto_for_many_images(conv, capsys):
    restore(conv, [torch.rand(3, 8, 8)] * 9)
    assert "restore" in capsys.readouterr().err
    restore(conv, [torch.rand(3, 8, 8)] * 9, progress=False)
    restore(conv, [torch.rand(3, 8, 8)] * 2)
    assert capsys.readouterr().err == ""


# --- errors ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("images", "error", "message"),
    [
        ([torch.rand(3, 8, 8), torch.full((3, 8, 8), float("nan"))], ValueError, r"images\[1\] contains NaN"),
        (np.full((4, 8, 8, 3), np.inf, np.float32), ValueError, r"images\[0\] contains NaN or infinite"),
        (np.zeros((3, 8, 8), np.uint8), ValueError, r"channels-last.*transpose\(1, 2, 0\)"),
        (torch.zeros(8, 8, 3), ValueError, r"channels-first.*permute\(2, 0, 1\)"),
        (torch.zeros(3, 8, 8, dtype=torch.uint8), TypeError, r"torch.uint8 tensor.*float in \[0, 1\]"),
        (np.zeros((8, 8, 3), np.int32), TypeError, "dtype int32"),
        (np.full((8, 8, 3), 200.0), ValueError, r"\[200, 200\].*must be in \[0, 1\]"),
        ("cat.png", TypeError, "is a str; expected a PIL image"),
        ([[torch.rand(3, 8, 8)]], TypeError, "nested lists"),
    ],
)
def test_bad_images_are_refused(conv, images, error, message):
    with pytest.raises(error, match=message):
        restore(conv, images)


def test_bad_arguments_are_refused(conv):
    x = torch.rand(3, 8, 8)
    with pytest.raises(ValueError, match="model has no adapters"):
        restore(conv, x, adapter="derain")
    with pytest.raises(ValueError, match="model has no adapters"):
        restore(conv, x, adapter_names=["derain"])
    with pytest.raises(ValueError, match="tile_overlap .16. must be smaller than the tile size .16."):
        restore(conv, x, tile_size=16, tile_overlap=16)
    with pytest.raises(ValueError, match="batch_size"):
        restore(conv, x, batch_size=0)


def test_bad_model_outputs_are_refused():
    with pytest.raises(ValueError, match="integer scale"):
        restore(nn.Upsample(scale_factor=1.5), torch.rand(3, 8, 8))
    with pytest.raises(TypeError, match="returned a dict"):
        restore(_DictModel(), torch.rand(3, 8, 8))


class _DictModel(nn.Module):
    def forward(self, x: torch.Tensor) -> dict:
        return {"out": x}


# --- AdaptIR adapters ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def adapted():
    """The tiny Swin2SR with two AdaptIR adapters, "derain" (active) and "denoise", randomised to differ."""
    model = get_peft_model(tiny_swin2sr(), AdaptIRConfig(), adapter_name="derain")
    model.add_adapter("denoise", AdaptIRConfig())
    torch.manual_seed(1)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "adaptir" in name:
                param.add_(torch.randn_like(param))
    return model


def test_adapter_switches_and_restores_previous(adapted, photo):
    x = as_tensor(photo)[:, :30, :45]
    adapted.train()
    grads = {name: p.requires_grad for name, p in adapted.named_parameters()}
    denoised = restore(adapted, x, adapter="denoise")
    assert adapted.active_adapter == "derain" and adapted.training
    assert grads == {name: p.requires_grad for name, p in adapted.named_parameters()}
    adapted.set_adapter("denoise")
    adapted.eval()
    padded = F.pad(x[None], (0, 3, 0, 2), mode="reflect")[0]
    torch.testing.assert_close(denoised, direct(adapted, padded)[:, :30, :45], atol=1e-5, rtol=0)
    adapted.set_adapter("derain")
    derained = restore(adapted, x, adapter="derain")
    assert (derained - denoised).abs().max() > 1e-3  # the two adapters really differ


def test_adapter_names_route_each_image(adapted, photo):
    rgb = photo[:40, :60].astype(np.float32) / 255  # tiled 2 x 2 below; the other three fit one tile
    images = [rgb, rgb[:20, :30], rgb[::-1, :32].copy(), rgb[:20, :30][:, ::-1].copy()]
    names = ["derain", "denoise", "__base__", "derain"]
    mixed = restore(adapted, images, adapter_names=names, tile_size=32, tile_overlap=16, batch_size=3)
    alone = {
        "derain": restore(adapted, images, adapter="derain", tile_size=32, tile_overlap=16),
        "denoise": restore(adapted, images, adapter="denoise", tile_size=32, tile_overlap=16),
    }
    with adapted.disable_adapter():
        alone["__base__"] = restore(adapted, images, tile_size=32, tile_overlap=16)
    for i, name in enumerate(names):
        assert mixed[i].shape == images[i].shape
        np.testing.assert_allclose(mixed[i], alone[name][i], atol=1e-5, rtol=0)
    assert np.abs(alone["derain"][0] - alone["denoise"][0]).max() > 1e-3
    assert np.abs(alone["derain"][0] - alone["__base__"][0]).max() > 1e-3


def test_adapter_argument_errors(adapted):
    x = [torch.rand(3, 8, 8)] * 2
    with pytest.raises(ValueError, match=r"Unknown adapter 'deblur'; the model has \['derain', 'denoise'\]"):
        restore(adapted, x, adapter="deblur")
    with pytest.raises(ValueError, match=r"Unknown adapter names \['deblur'\]"):
        restore(adapted, x, adapter_names=["derain", "deblur"])
    with pytest.raises(ValueError, match="adapter_names has 1 names but 2 images"):
        restore(adapted, x, adapter_names=["derain"])
    with pytest.raises(ValueError, match="not both"):
        restore(adapted, x, adapter="derain", adapter_names=["derain", "derain"])
    with pytest.raises(TypeError, match="adapter='derain'"):
        restore(adapted, x, adapter_names="derain")
