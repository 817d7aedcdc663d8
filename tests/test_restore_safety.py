"""Restore loses nothing: no silent overwrites, faithful 16-bit and EXIF image I/O, thread-safe restore(), clear
errors for bad files, adapters, devices and output folders (issue 16, the restore side)."""

from __future__ import annotations

import json
import shutil
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import png
import pytest
import torch
from PIL import Image, ImageOps
from skimage import data as skimage_data
from tiny_models import save_base_and_adapters

import peft_adaptir  # noqa: F401
from peft_adaptir import restore
from peft_adaptir.cli import build_parser, main
from peft_adaptir.cli import restore as cli_restore
from peft_adaptir.data.sources import pil_to_tensor
from peft_adaptir.hub import load_adapters
from peft_adaptir.image_files import _orient, read_image, write_image

PHOTO = skimage_data.chelsea()  # a real photo, 300 x 451 x 3


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    root = tmp_path_factory.mktemp("safety")
    save_base_and_adapters(root, ("derain", "denoise"))
    return root


@pytest.fixture(scope="module")
def model(saved):
    from transformers import Swin2SRForImageSuperResolution

    base = Swin2SRForImageSuperResolution.from_pretrained(saved / "base")
    return load_adapters(base, {"derain": str(saved / "derain"), "denoise": str(saved / "denoise")}).eval()


def _cli(saved, inputs, output, *extra):
    return main([
        "restore", "--base", str(saved / "base"), "--adapter", f"derain={saved / 'derain'}", *map(str, inputs),
        "--output", str(output), *extra,
    ])  # fmt: skip


# ---- 1. never overwrite silently ----


def test_existing_output_is_skipped_and_listed_unless_overwrite(saved, tmp_path, capsys):
    Image.fromarray(PHOTO[:20, :28]).save(tmp_path / "a.png")
    out = tmp_path / "out"
    out.mkdir()
    (out / "a-derain.png").write_bytes(b"the user's own file")
    assert _cli(saved, [tmp_path / "a.png"], out) == 0
    assert (out / "a-derain.png").read_bytes() == b"the user's own file"
    assert "skipped" in capsys.readouterr().err
    assert _cli(saved, [tmp_path / "a.png"], out, "--overwrite") == 0
    assert read_image(out / "a-derain.png").shape == (20, 28, 3)


def test_inputs_with_the_same_stem_get_distinct_outputs(saved, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    Image.fromarray(PHOTO[:20, :28]).save(folder / "photo.png")
    Image.fromarray(PHOTO[100:120, 200:228]).save(folder / "photo.jpg", quality=95)
    assert _cli(saved, [folder], tmp_path / "out") == 0
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert written == ["photo-jpg-derain.png", "photo-png-derain.png"]
    a, b = (read_image(tmp_path / "out" / name).astype(int) for name in written)
    assert np.abs(a - b).max() > 10  # two different photos, both kept


def test_output_folder_equal_to_input_folder_never_overwrites_an_input(saved, tmp_path, capsys):
    Image.fromarray(PHOTO[:20, :28]).save(tmp_path / "a.png")
    Image.fromarray(PHOTO[50:70, :28]).save(tmp_path / "a-derain.png")  # an input whose name a result would take
    before = (tmp_path / "a-derain.png").read_bytes()
    assert _cli(saved, [tmp_path], tmp_path, "--overwrite") == 0
    assert (tmp_path / "a-derain.png").read_bytes() == before
    assert "never overwritten" in capsys.readouterr().err
    assert (tmp_path / "a-derain-derain.png").exists()


# ---- 2. 16-bit images ----


def _expected_16bit(model, pixels: np.ndarray) -> np.ndarray:
    restored = restore(model, pixels.astype(np.float32) / 65535.0, adapter="derain")
    return np.round(restored * 65535.0).astype(np.int64)


def test_16bit_grey_png_is_restored_at_16_bits_not_saturated(saved, model, tmp_path):
    grey = (PHOTO[:24, :32].mean(axis=-1) * 200).astype(np.uint16)  # 0..51000, spread over 16 bits
    Image.fromarray(grey).save(tmp_path / "g.png")
    assert Image.open(tmp_path / "g.png").mode == "I;16"
    assert _cli(saved, [tmp_path / "g.png"], tmp_path / "out") == 0
    written = Image.open(tmp_path / "out" / "g-derain.png")
    assert written.mode == "I;16"
    values = np.asarray(written).astype(np.int64)
    assert (values >= 65535).mean() < 0.01  # before: almost all white
    assert np.abs(values - _expected_16bit(model, grey[..., None])[..., 0]).max() <= 1


def test_16bit_rgb_png_is_read_exactly_and_written_back_at_16_bits(saved, model, tmp_path):
    rgb = PHOTO[:24, :32].astype(np.uint16) * 257 + np.arange(32, dtype=np.uint16)[None, :, None]
    with open(tmp_path / "c.png", "wb") as file:
        png.Writer(32, 24, greyscale=False, bitdepth=16).write(file, rgb.reshape(24, -1))
    np.testing.assert_array_equal(read_image(tmp_path / "c.png"), rgb)
    assert _cli(saved, [tmp_path / "c.png"], tmp_path / "out") == 0
    written = read_image(tmp_path / "out" / "c-derain.png")
    assert written.dtype == np.uint16 and written.shape == (24, 32, 3)
    assert np.abs(written.astype(np.int64) - _expected_16bit(model, rgb)).max() <= 1


def test_16bit_pil_image_through_the_api_keeps_its_bits(model):
    grey = (PHOTO[:24, :32, 1].astype(np.uint16) * 250) + 7
    out = restore(model, Image.fromarray(grey), adapter="derain")
    assert out.mode == "I;16"
    np.testing.assert_array_equal(np.asarray(out).astype(np.int64), _expected_16bit(model, grey[..., None])[..., 0])


def test_training_reader_scales_16bit_by_65535(tmp_path):
    grey = np.array([[0, 1000, 30000, 65535]], dtype=np.uint16)
    Image.fromarray(grey).save(tmp_path / "t.png")
    tensor = pil_to_tensor(Image.open(tmp_path / "t.png"))
    assert tensor.shape == (3, 1, 4)
    torch.testing.assert_close(tensor[0, 0], torch.tensor(grey[0] / 65535.0, dtype=torch.float32))


def test_write_image_round_trips_every_depth_and_channel_count(tmp_path):
    rng = np.random.default_rng(0)
    for dtype, high in ((np.uint8, 255), (np.uint16, 65535)):
        for channels in (1, 2, 3, 4):
            pixels = rng.integers(0, high + 1, size=(5, 7, channels)).astype(dtype)
            write_image(tmp_path / "x.png", pixels)
            np.testing.assert_array_equal(read_image(tmp_path / "x.png"), pixels)


# ---- 3. EXIF orientation ----


def test_exif_orientation_6_jpeg_comes_back_upright(saved, tmp_path):
    stored = PHOTO[:24, :40]  # as the camera stored it: landscape, to be shown rotated 90 degrees
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(stored).save(tmp_path / "phone.jpg", exif=exif, quality=95)
    upright = np.asarray(ImageOps.exif_transpose(Image.open(tmp_path / "phone.jpg")))
    assert upright.shape == (40, 24, 3)
    np.testing.assert_array_equal(read_image(tmp_path / "phone.jpg"), upright)
    assert _cli(saved, [tmp_path / "phone.jpg"], tmp_path / "out") == 0
    assert read_image(tmp_path / "out" / "phone-derain.png").shape == (40, 24, 3)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_orientation_table_matches_pillow(tmp_path, orientation):
    """The numpy table used for 16-bit files equals Pillow's exif_transpose for all eight orientations."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(PHOTO[:6, :9]).save(tmp_path / "o.png", exif=exif)
    expected = np.asarray(ImageOps.exif_transpose(Image.open(tmp_path / "o.png")))
    np.testing.assert_array_equal(_orient(PHOTO[:6, :9], orientation), expected)


# ---- 4. threads ----


def _photos(count: int) -> list[torch.Tensor]:
    """Different crops (and sizes, so the token grids differ) of a real photo, (3, H, W) in [0, 1]."""
    image = torch.from_numpy(PHOTO).permute(2, 0, 1).float() / 255
    return [image[:, 10 * i : 10 * i + 20 + 4 * i, 7 * i : 7 * i + 28] for i in range(count)]


def test_concurrent_restore_with_different_adapters_equals_sequential(model):
    photos = _photos(4)
    jobs = [("derain", photos), ("denoise", photos), ("derain", photos[::-1]), ("denoise", photos[::-1])] * 3
    expected = [restore(model, images, adapter=name) for name, images in jobs]
    mixed = ["derain", "denoise", "__base__", "denoise"]
    expected_mixed = restore(model, photos, adapter_names=mixed)
    assert not torch.equal(expected[0][0], expected[1][0])  # the adapters really differ
    active = model.active_adapter
    start = threading.Barrier(4)

    def run(index: int):
        start.wait() if index < 4 else None
        if index % 5 == 4:
            return restore(model, photos, adapter_names=mixed)
        name, images = jobs[index]
        return restore(model, images, adapter=name)

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(run, range(len(jobs))))
    for index, result in enumerate(results):
        want = expected_mixed if index % 5 == 4 else expected[index]
        for got, ref in zip(result, want):
            assert torch.equal(got, ref), index
    assert model.active_adapter == active


def test_restore_in_threads_puts_a_training_model_back_in_training_mode(model):
    model.train()
    try:
        with ThreadPoolExecutor(max_workers=3) as pool:
            list(pool.map(lambda name: restore(model, _photos(2), adapter=name), ["derain", "denoise"] * 3))
        assert model.training and all(m.training for m in model.modules())
    finally:
        model.eval()


def test_lora_model_calls_take_turns_and_match_sequential(saved):
    """Other peft methods switch the adapter globally: restore() serialises their calls on the model's lock."""
    from peft import LoraConfig, get_peft_model
    from transformers import Swin2SRForImageSuperResolution

    base = Swin2SRForImageSuperResolution.from_pretrained(saved / "base")
    lora = LoraConfig(r=2, target_modules=["intermediate.dense"], init_lora_weights=False)
    model = get_peft_model(base, lora, adapter_name="a")
    model.add_adapter("b", LoraConfig(r=2, target_modules=["intermediate.dense"], init_lora_weights=False))
    model.set_adapter("a")
    photos = _photos(2)
    expected = {name: restore(model, photos, adapter=name) for name in ("a", "b")}
    assert not torch.equal(expected["a"][0], expected["b"][0])
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda name: (name, restore(model, photos, adapter=name)), ["a", "b"] * 4))
    for name, result in results:
        assert all(torch.equal(got, ref) for got, ref in zip(result, expected[name])), name
    assert model.active_adapter == "a"


# ---- poor: bad files, streaming, progress ----


def test_unreadable_file_is_named_and_skip_bad_skips_and_reports(saved, tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    Image.fromarray(PHOTO[:20, :28]).save(folder / "a.png")
    (folder / "b_empty.png").write_bytes(b"")
    Image.fromarray(PHOTO[:40, :48]).save(folder / "c_full.png")
    data = (folder / "c_full.png").read_bytes()
    (folder / "c_truncated.png").write_bytes(data[: len(data) // 2])
    (folder / "d_text.jpg").write_text("not an image")
    Image.fromarray(PHOTO[60:80, :28]).save(folder / "e.png")
    shutil.copy(folder / "c_full.png", tmp_path / "keep.png")
    (folder / "c_full.png").unlink()

    assert _cli(saved, [folder], tmp_path / "out", "--batch-size", "1") == 2
    err = capsys.readouterr().err
    assert "b_empty.png" in err and "--skip-bad" in err
    assert (tmp_path / "out" / "a-derain.png").exists()  # streamed: written before the bad file was reached

    assert _cli(saved, [folder], tmp_path / "out", "--skip-bad") == 1
    err = capsys.readouterr().err
    assert "3 unreadable file(s) skipped" in err
    assert all(name in err for name in ("b_empty.png", "c_truncated.png", "d_text.jpg"))
    assert (tmp_path / "out" / "e-derain.png").exists()


def test_one_large_tiled_image_shows_tile_progress(model, capsys):
    restore(model, _photos(1)[0], adapter="derain", tile_size=8, tile_overlap=4, batch_size=1)
    assert "restore" in capsys.readouterr().err


# ---- poor: adapters ----


def test_mistyped_local_adapter_folder_is_not_taken_for_a_hub_id(saved, tmp_path, capsys, no_model_loading):
    from transformers import Swin2SRForImageSuperResolution

    base = Swin2SRForImageSuperResolution.from_pretrained(saved / "base")
    with pytest.raises(FileNotFoundError, match=r"folder .*deriam not found.*Did you mean: .*derain"):
        load_adapters(base, {"x": str(saved / "deriam")})
    assert _cli(saved, [tmp_path], tmp_path / "o", "--adapter", "y=./adapters/derain", "--task", "y") == 2
    assert "folder ./adapters/derain not found" in capsys.readouterr().err


def test_hub_id_with_an_unreachable_hub_says_connection_refused(saved, tmp_path, monkeypatch):
    import socket

    from hub_fixtures import point_client_at
    from transformers import Swin2SRForImageSuperResolution

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        endpoint = f"http://127.0.0.1:{sock.getsockname()[1]}"
    point_client_at(monkeypatch, endpoint, tmp_path / "hf_home")
    base = Swin2SRForImageSuperResolution.from_pretrained(saved / "base")
    with pytest.raises(OSError, match=rf"connection refused at {endpoint}"):
        load_adapters(base, {"x": "alice/derain"})


@pytest.mark.parametrize("damage", ["no_weights", "bad_json", "lora", "no_config"])
def test_broken_adapter_folders_are_explained(saved, tmp_path, damage):
    from transformers import Swin2SRForImageSuperResolution

    folder = tmp_path / "adapter"
    shutil.copytree(saved / "derain", folder)
    if damage == "no_weights":
        (folder / "adapter_model.safetensors").unlink()
        message = "weights file .*adapter_model.safetensors is missing"
    elif damage == "bad_json":
        (folder / "adapter_config.json").write_text('{"peft_type": "ADAPTIR",')
        message = r"adapter_config.json is not valid JSON"
    elif damage == "lora":
        config = json.loads((folder / "adapter_config.json").read_text())
        (folder / "adapter_config.json").write_text(json.dumps({**config, "peft_type": "LORA"}))
        message = "is a LORA adapter .* not an AdaptIR adapter"
    else:
        (folder / "adapter_config.json").unlink()
        message = "has no adapter_config.json"
    base = Swin2SRForImageSuperResolution.from_pretrained(saved / "base")
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        load_adapters(base, {"derain": str(folder)})


# ---- poor: options checked before any work ----


@pytest.fixture
def no_model_loading(monkeypatch):
    """Fail the test if the command gets as far as loading the base model."""

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the options were checked")

    monkeypatch.setattr("peft_adaptir.backbones.loading.load_base_model", refuse)


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--device", "gpu"], "Unknown device 'gpu'"),
        (["--tile-size", "16"], "--tile-overlap 32 must be smaller than --tile-size 16"),
        (["--batch-size", "0"], "--batch-size must be at least 1"),
    ],
)
def test_bad_options_are_refused_before_any_work(saved, tmp_path, capsys, no_model_loading, extra, message):
    Image.fromarray(PHOTO[:20, :28]).save(tmp_path / "a.png")
    assert _cli(saved, [tmp_path / "a.png"], tmp_path / "out", *extra) == 2
    assert message in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_cuda_without_cuda_is_a_clear_error(saved, tmp_path, capsys, no_model_loading):
    Image.fromarray(PHOTO[:20, :28]).save(tmp_path / "a.png")
    assert _cli(saved, [tmp_path / "a.png"], tmp_path / "out", "--device", "cuda") == 2
    assert "Device 'cuda' is not available" in capsys.readouterr().err


def test_output_that_is_a_file_or_read_only_fails_before_any_work(
    saved, tmp_path, capsys, no_model_loading, monkeypatch
):
    Image.fromarray(PHOTO[:20, :28]).save(tmp_path / "a.png")
    (tmp_path / "out.png").write_bytes(b"x")
    assert _cli(saved, [tmp_path / "a.png"], tmp_path / "out.png") == 2
    assert "is a file" in capsys.readouterr().err

    def read_only(*args, **kwargs):  # a read-only folder (chmod has no effect for root, who runs CI)
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(cli_restore.tempfile, "TemporaryFile", read_only)
    assert _cli(saved, [tmp_path / "a.png"], tmp_path / "ro") == 2
    assert "cannot be written to (Permission denied)" in capsys.readouterr().err


def test_tile_overlap_option_reaches_restore(saved, model, tmp_path):
    Image.fromarray(PHOTO[:24, :40]).save(tmp_path / "a.png")
    args = ["--tile-size", "16", "--tile-overlap", "4"]
    assert _cli(saved, [tmp_path / "a.png"], tmp_path / "out", *args) == 0
    expected = restore(model, PHOTO[:24, :40], adapter="derain", tile_size=16, tile_overlap=4)
    written = read_image(tmp_path / "out" / "a-derain.png")
    assert np.abs(written.astype(int) - expected.astype(int)).max() <= 1


def test_size_multiple_that_breaks_the_window_is_refused(model):
    with pytest.raises(ValueError, match="size_multiple=3 is not a multiple of 4"):
        restore(model, _photos(1)[0], adapter="derain", size_multiple=3)


def test_restore_help_explains_names_overwriting_and_batch_size():
    parser = build_parser()
    restore_parser = parser._subparsers._group_actions[0].choices["restore"]
    text = restore_parser.format_help()
    assert "INPUT-TASK.png" in text and "--overwrite" in text and "never overwritten" in text
    assert "Images (or tiles) per forward pass" in text and "--skip-bad" in text
