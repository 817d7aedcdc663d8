import math

import numpy as np
import pytest
import skimage.data
import torch
from skimage.color import rgb2ycbcr
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from peft_adaptir.data.degradations import degrade
from peft_adaptir.metrics import calculate_psnr, calculate_ssim, psnr_batch, rgb_to_y, ssim_batch

PHOTOS = {"astronaut": skimage.data.astronaut, "chelsea": skimage.data.chelsea, "rocket": skimage.data.rocket}
TASKS = ["denoise-25", "jpeg-q20", "sr2"]


def _sk_ssim(a, b, channel_axis):
    return structural_similarity(
        a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255, channel_axis=channel_axis
    )


@pytest.fixture(scope="module")
def pairs():
    out = []
    for name, load in PHOTOS.items():
        clean = load()[64:192, 96:240] / 255.0  # (H, W, 3) float64 in [0, 1]
        tensor = torch.from_numpy(clean).permute(2, 0, 1).float()
        for i, task in enumerate(TASKS):
            degraded = degrade(tensor, task, i).permute(1, 2, 0).double().numpy()
            out.append((f"{name}/{task}", clean, degraded))
    return out


@pytest.mark.parametrize("crop_border", [0, 4])
def test_rgb_psnr_and_ssim_equal_scikit_image(pairs, crop_border):
    c = crop_border
    for label, clean, degraded in pairs:
        a, b = clean * 255, degraded * 255
        if c:
            a, b = a[c:-c, c:-c], b[c:-c, c:-c]
        assert calculate_psnr(degraded, clean, crop_border) == pytest.approx(
            peak_signal_noise_ratio(a, b, data_range=255), abs=1e-9
        ), label
        assert calculate_ssim(degraded, clean, crop_border) == pytest.approx(_sk_ssim(a, b, -1), abs=1e-9), label


def test_y_channel_metrics_equal_scikit_image(pairs):
    for label, clean, degraded in pairs:
        ya, yb = rgb2ycbcr(clean)[4:-4, 4:-4, 0], rgb2ycbcr(degraded)[4:-4, 4:-4, 0]
        psnr = calculate_psnr(degraded, clean, crop_border=4, test_y_channel=True)
        ssim = calculate_ssim(degraded, clean, crop_border=4, test_y_channel=True)
        assert psnr == pytest.approx(peak_signal_noise_ratio(ya, yb, data_range=255), abs=1e-9), label
        assert ssim == pytest.approx(_sk_ssim(ya, yb, None), abs=1e-9), label


def test_values_are_plausible_and_ordered(pairs):
    by_label = {label: calculate_psnr(d, c) for label, c, d in pairs}
    assert 19 < by_label["astronaut/denoise-25"] < 22  # 20 log10(255 / 25) = 20.2, a little more from clamping
    assert calculate_psnr(pairs[0][1], pairs[0][1]) == math.inf
    assert calculate_ssim(pairs[0][1], pairs[0][1]) == pytest.approx(1.0)


def test_y_conversion_matches_bt601():
    rgb = skimage.data.astronaut()[:64, :64] / 255.0
    y = rgb_to_y(torch.from_numpy(rgb).permute(2, 0, 1)[None])[0, 0].numpy()
    np.testing.assert_allclose(y, rgb2ycbcr(rgb)[..., 0], atol=1e-9)


def test_layouts_and_batch_helpers_agree(pairs):
    _, clean, degraded = pairs[1]
    chw_c, chw_d = (torch.from_numpy(x).permute(2, 0, 1).float() for x in (clean, degraded))
    expected = calculate_psnr(degraded.astype(np.float32), clean.astype(np.float32))
    assert calculate_psnr(chw_d, chw_c) == pytest.approx(expected, abs=1e-9)
    assert calculate_psnr(degraded.transpose(2, 0, 1), clean.transpose(2, 0, 1), input_order="CHW") == pytest.approx(
        calculate_psnr(degraded, clean), abs=1e-9
    )
    batch_d = torch.stack([chw_d, chw_c])
    batch_c = torch.stack([chw_c, chw_d.flip(-1)])
    psnr = psnr_batch(batch_d, batch_c, crop_border=2, test_y_channel=True)
    ssim = ssim_batch(batch_d, batch_c)
    assert psnr.shape == (2,) and ssim.shape == (2,)
    assert psnr[0].item() == pytest.approx(calculate_psnr(chw_d, chw_c, 2, True), abs=1e-9)
    assert ssim[1].item() == pytest.approx(calculate_ssim(chw_c, chw_d.flip(-1)), abs=1e-9)
    quantized = calculate_psnr(chw_d, chw_c, quantize=True)
    assert quantized == pytest.approx(expected, abs=0.05) and quantized != expected


def test_bad_inputs_are_refused():
    a = torch.rand(3, 32, 32)
    with pytest.raises(ValueError, match="shapes differ"):
        calculate_psnr(a, a[:, :16])
    with pytest.raises(ValueError, match="crop_border"):
        calculate_psnr(a, a, crop_border=16)
    with pytest.raises(ValueError, match="at least 11"):
        calculate_ssim(a[:, :8, :8], a[:, :8, :8])
    with pytest.raises(TypeError, match="tensor or numpy"):
        calculate_psnr([1.0], [1.0])
