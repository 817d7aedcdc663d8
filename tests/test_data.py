import warnings

import datasets
import numpy as np
import pytest
import torch
from PIL import Image

from peft_adaptir.data.pairs import EvalPairs, PairedFolderPatches, PatchPairs, dihedral
from peft_adaptir.data.sources import (
    SKIMAGE_HELDOUT,
    SKIMAGE_TRAIN,
    holdout_split,
    load_image_dataset,
    load_paired_folders,
    load_skimage_photos,
)


def _save(path, seed, size=(40, 56)):
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(path)


def test_skimage_split_is_fixed_and_disjoint():
    train, held = load_image_dataset(None, "train"), load_image_dataset("skimage", "validation")
    assert list(train["name"]) == list(SKIMAGE_TRAIN) and list(held["name"]) == list(SKIMAGE_HELDOUT)
    assert set(train["name"]).isdisjoint(held["name"])
    assert {"astronaut", "chelsea", "coffee"} == set(held["name"])
    assert {"motorcycle_left", "motorcycle_right"} <= set(train["name"])  # the stereo pair stays on one side
    first = train[0]["image"]
    assert isinstance(first, Image.Image) and first.mode == "RGB" and first.size == (640, 427)  # rocket
    assert len(load_skimage_photos("all")) == 8
    with pytest.raises(ValueError, match="train, validation, all"):
        load_skimage_photos("dev")


def test_imagefolder_with_corrupt_file_warns_by_name_and_holds_out_by_name(tmp_path):
    for i in range(6):
        _save(tmp_path / f"photo{i}.png", i)
    good = (tmp_path / "photo0.png").read_bytes()
    (tmp_path / "broken.png").write_bytes(good[: len(good) // 2])  # truncated PNG
    with pytest.warns(UserWarning, match="broken.png"):
        train = load_image_dataset(str(tmp_path), "train", holdout_fraction=0.3, cache_dir=str(tmp_path / ".c1"))
    with pytest.warns(UserWarning, match="broken.png"):
        held = load_image_dataset(str(tmp_path), "validation", holdout_fraction=0.3, cache_dir=str(tmp_path / ".c2"))
    assert "broken.png" not in list(train["name"]) + list(held["name"])
    assert len(held) == 2 and set(train["name"]).isdisjoint(held["name"])
    assert np.array_equal(np.asarray(train[0]["image"]).shape, (40, 56, 3))
    reordered = holdout_split(held.select([1, 0]), "validation", 0.5)
    assert list(reordered["name"]) == list(holdout_split(held, "validation", 0.5)["name"])


def test_folder_of_only_corrupt_files_is_refused(tmp_path):
    (tmp_path / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(ValueError, match="No readable image"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        load_image_dataset(str(tmp_path), "train", cache_dir=str(tmp_path / ".cache"))


def test_paired_folders_match_by_name_and_report_unmatched(tmp_path):
    (tmp_path / "degraded").mkdir(), (tmp_path / "clean").mkdir()
    for name in ["a.png", "b.png"]:
        _save(tmp_path / "degraded" / name, 1)
        _save(tmp_path / "clean" / name, 2)
    pairs = load_paired_folders(tmp_path / "degraded", tmp_path / "clean")
    assert list(pairs["name"]) == ["a.png", "b.png"] and pairs.column_names == ["degraded", "clean", "name"]
    patches = PairedFolderPatches(pairs, patch_size=16, seed=1, length=4)
    d0, c0 = patches[0]
    assert d0.shape == c0.shape == (3, 16, 16) and torch.equal(patches[0][0], d0)
    _save(tmp_path / "degraded" / "c.png", 3)
    _save(tmp_path / "clean" / "d.png", 4)
    with pytest.raises(ValueError, match=r"only: \['c.png'\].*only: \['d.png'\]"):
        load_paired_folders(tmp_path / "degraded", tmp_path / "clean")


def test_patch_pairs_are_deterministic_per_seed_epoch_index():
    photos = load_image_dataset(None, "train")
    data = PatchPairs(photos, "denoise-25", patch_size=32, seed=7, length=10)
    degraded, clean = data[3]
    assert degraded.shape == clean.shape == (3, 32, 32) and degraded.dtype == torch.float32
    assert 12 < ((degraded - clean).std() * 255).item() < 27  # sigma 25, less where clamped at black
    again = PatchPairs(photos, "denoise-25", patch_size=32, seed=7, length=10)
    assert all(torch.equal(a, b) for a, b in zip(again[3], data[3]))
    assert not torch.equal(data[4][1], data[3][1])
    data.set_epoch(1)
    assert not torch.equal(data[3][1], clean)
    data.set_epoch(0)
    assert torch.equal(data[3][0], degraded)
    loader = torch.utils.data.DataLoader(data, batch_size=5)
    assert next(iter(loader))[0].shape == (5, 3, 32, 32)


def test_patch_is_a_crop_of_its_image_and_too_small_images_are_named():
    image = torch.stack([torch.arange(12 * 16).reshape(12, 16) / 255.0] * 3)  # unique 8-bit values per pixel
    _, clean = PatchPairs([image], "sr2", patch_size=8, seed=0, augment=False)[0]
    top, left = torch.nonzero(image[0] == clean[0, 0, 0])[0].tolist()
    assert torch.equal(clean, image[:, top : top + 8, left : left + 8])
    with pytest.raises(ValueError, match=r"patch_size=32: 0 \(12x16\)"):
        PatchPairs([image], "sr2", patch_size=32)


def test_dihedral_gives_eight_distinct_transforms():
    x = torch.arange(9.0).reshape(1, 3, 3)
    outs = {tuple(dihedral(x, k).flatten().tolist()) for k in range(8)}
    assert len(outs) == 8 and torch.equal(dihedral(x, 0), x)


def test_eval_pairs_are_fixed_and_multiples_of_eight():
    held = load_image_dataset(None, "validation")
    evals = EvalPairs(held, "derain-heavy", seed=0, crop=100)
    degraded, clean, name = evals[0]
    assert name == "astronaut" and clean.shape == (3, 96, 96) and degraded.shape == clean.shape
    assert torch.equal(EvalPairs(held, "derain-heavy", seed=0, crop=100)[2][0], evals[2][0])
    full = EvalPairs(held.select([1]), "denoise-50")
    assert full[0][1].shape == (3, 296, 448)  # chelsea 300 x 451, trimmed to multiples of 8
    with pytest.raises(ValueError, match="task=None"):
        EvalPairs(held, None)


def test_hub_source_goes_through_load_dataset(monkeypatch):
    images = [Image.new("RGB", (16, 16), (i, 0, 0)) for i in range(10)]
    fake = datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_dict({"img": images, "label": list(range(10))}).cast_column(
                "img", datasets.Image()
            )
        }
    )
    calls = []
    monkeypatch.setattr(datasets, "load_dataset", lambda source, **kw: calls.append(source) or fake)
    train = load_image_dataset("someone/photos", "train", holdout_fraction=0.2)
    held = load_image_dataset("someone/photos", "validation", holdout_fraction=0.2)
    assert calls == ["someone/photos"] * 2 and len(train) == 8 and len(held) == 2
    assert train.column_names == ["image", "name"]
    with pytest.raises(ValueError, match="No column 'photo'"):
        load_image_dataset("someone/photos", "train", image_column="photo")
