import numpy as np
import pytest
import skimage.data
import torch

from peft_adaptir.data.degradations import (
    JPEG,
    BicubicDown,
    GaussianNoise,
    LowLight,
    RainStreaks,
    degrade,
    get_task,
    list_tasks,
)


@pytest.fixture(scope="module")
def photo() -> torch.Tensor:
    return torch.from_numpy(skimage.data.coffee()[:192, :256].copy()).permute(2, 0, 1).float() / 255.0  # (3, 192, 256)


@pytest.mark.parametrize("name", list_tasks())
def test_every_task_is_deterministic_per_seed(photo, name):
    first, again, other = degrade(photo, name, 3), degrade(photo, name, 3), degrade(photo, name, 4)
    assert first.shape == photo.shape and first.dtype == torch.float32
    assert torch.equal(first, again)
    assert not torch.equal(first, other) or name.startswith(("sr", "jpeg")) and "noise" not in name
    assert 0 <= first.min() and first.max() <= 1
    assert not torch.equal(first, photo)


def test_required_presets_exist_and_unknown_name_lists_valid_ones():
    names = list_tasks()
    for required in ["denoise-15", "denoise-25", "derain-light", "sr2", "pretrain", "sr2-noise30", "derain-heavy"]:
        assert required in names
    assert {"low-light", "denoise-50", "sr3", "sr4", "jpeg-q20"} <= set(names)
    assert set(list_tasks("transfer")) == {"sr2-noise30", "derain-heavy", "low-light", "denoise-50"}
    with pytest.raises(ValueError, match="denoise-50.*sr2"):
        get_task("denoise-500")
    with pytest.raises(ValueError, match="kind"):
        list_tasks("bogus")


@pytest.mark.parametrize("sigma", [15, 25, 50])
def test_gaussian_noise_has_the_requested_sigma(sigma):
    gray = torch.full((3, 128, 128), 0.5)
    noisy = GaussianNoise(sigma)(gray, torch.Generator().manual_seed(0))
    measured = ((noisy - gray).std() * 255).item()
    assert measured == pytest.approx(sigma, rel=0.03 if sigma < 50 else 0.06)  # sigma 50 loses a little to clamping
    assert abs((noisy - gray).mean().item()) < 0.003


def test_noise_range_draws_sigma_within_range():
    gray = torch.full((3, 64, 64), 0.5)
    sigmas = [
        ((GaussianNoise((5, 10))(gray, torch.Generator().manual_seed(s)) - gray).std() * 255).item() for s in range(8)
    ]
    assert all(4.5 < s < 10.5 for s in sigmas) and max(sigmas) - min(sigmas) > 1


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_bicubic_down_sizes_and_content(photo, scale):
    low = BicubicDown(scale)(photo, torch.Generator())
    assert low.shape == (3, 192 // scale, 256 // scale)
    assert low.mean().item() == pytest.approx(photo.mean().item(), abs=0.01)
    back = BicubicDown(scale, upsample=True)(photo, torch.Generator())
    assert back.shape == photo.shape
    error = ((back - photo) ** 2).mean().sqrt().item() * 255
    assert 2 < error < 20  # blurred, and more so for larger scales
    odd = BicubicDown(2, upsample=True)(photo[:, :101, :77], torch.Generator())
    assert odd.shape == (3, 101, 77)


def test_sr2_noise30_noises_the_low_resolution_image(photo):
    clean_sr = degrade(photo, "sr2", 0)
    noisy_sr = degrade(photo, "sr2-noise30", 0)
    # noise sigma 30 on the LR image, then bicubic x2 up (which averages neighbours): clearly noisier than sr2
    residual = ((noisy_sr - clean_sr).std() * 255).item()
    assert 12 < residual < 30


def test_batch_input_matches_per_image_with_same_generator(photo):
    batch = torch.stack([photo, photo.flip(-1)])
    out = GaussianNoise(25)(batch, torch.Generator().manual_seed(1))
    g = torch.Generator().manual_seed(1)
    assert torch.equal(out, torch.stack([GaussianNoise(25)(photo, g), GaussianNoise(25)(photo.flip(-1), g)]))


def test_jpeg_is_a_real_codec_and_stronger_at_low_quality(photo):
    out10 = JPEG(10)(photo, torch.Generator())
    out40 = JPEG(40)(photo, torch.Generator())
    assert torch.equal(out10 * 255, (out10 * 255).round())  # 8-bit output
    err10, err40 = ((out10 - photo).abs().mean().item(), (out40 - photo).abs().mean().item())
    assert err10 > err40 > 0.002


def test_rain_adds_bright_slanted_streaks(photo):
    light = RainStreaks.light()(photo, torch.Generator().manual_seed(0)) - photo
    heavy = RainStreaks.heavy()(photo, torch.Generator().manual_seed(0)) - photo
    assert light.min() >= 0 and heavy.min() >= 0  # rain only brightens
    assert 0.01 < (light > 0.1).float().mean() < (heavy > 0.1).float().mean()  # heavy: more streak pixels
    assert heavy.max() > light.max() > 0.2  # heavy: brighter
    # streaks are elongated: the rain layer is correlated far along the streak, not across
    layer = RainStreaks(density=0.003, length=21, brightness=1.0, angle=0.0)(
        torch.zeros(1, 128, 128), torch.Generator()
    )
    layer = layer[0] - layer[0].mean()
    along = (layer[:-8] * layer[8:]).mean() / layer.var()
    across = (layer[:, :-8] * layer[:, 8:]).mean() / layer.var()
    assert along > 0.4 and across < 0.05


def test_low_light_darkens_by_scale_and_gamma_and_adds_signal_dependent_noise(photo):
    plain = LowLight(scale=0.3, gamma=1.5, photons=0, read_sigma=0)(photo, torch.Generator())
    torch.testing.assert_close(plain, 0.3 * photo**1.5)
    noisy = LowLight(scale=0.3, gamma=1.5, photons=300, read_sigma=2)(photo, torch.Generator().manual_seed(0))
    assert noisy.mean().item() == pytest.approx(plain.mean().item(), rel=0.03)
    assert noisy.mean().item() / photo.mean().item() < 0.3
    residual = noisy - plain
    bright, dark = plain > 0.15, plain < 0.03
    assert residual[bright].std() > 1.5 * residual[dark].std()  # shot noise grows with the signal
    preset = degrade(photo, "low-light", 0)
    assert 0.05 < preset.mean().item() / photo.mean().item() < 0.3


def test_pretrain_mixture_picks_different_tasks(photo):
    outputs = [degrade(photo, "pretrain", s) for s in range(12)]
    kinds = {round(((o - photo).std() * 255).item()) for o in outputs}
    assert len(kinds) >= 3


def test_bad_input_is_refused():
    with pytest.raises(TypeError, match="float tensor"):
        GaussianNoise(15)(np.zeros((3, 8, 8)), torch.Generator())
    with pytest.raises(ValueError, match="sigma"):
        GaussianNoise(-1)
    with pytest.raises(ValueError, match="scale must be 2, 3 or 4"):
        BicubicDown(5)
