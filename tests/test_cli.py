"""The peft-adaptir command line: restore with several adapters chosen per file, and its errors."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from skimage import data as skimage_data
from tiny_models import save_base_and_adapters

import peft_adaptir  # noqa: F401
from peft_adaptir import restore
from peft_adaptir.cli import main


@pytest.fixture(scope="module")
def saved_models(tmp_path_factory):

    root = tmp_path_factory.mktemp("cli")
    save_base_and_adapters(root, ("derain", "denoise"))
    photo = skimage_data.chelsea()  # a real photo, 300 x 451
    Image.fromarray(photo[:30, :46]).save(root / "a.png")
    Image.fromarray(photo[100:124, 200:236]).save(root / "b.png")
    return root


def test_restore_chooses_the_adapter_per_file(saved_models, tmp_path):
    root = saved_models
    code = main([
        "restore", "--base", str(root / "base"), "--adapter", f"derain={root / 'derain'}",
        "--adapter", f"denoise={root / 'denoise'}", "--task", "derain", str(root / "a.png"),
        f"denoise={root / 'b.png'}", "--output", str(tmp_path),
    ])  # fmt: skip
    assert code == 0
    from peft import PeftModel
    from transformers import Swin2SRForImageSuperResolution

    model = PeftModel.from_pretrained(Swin2SRForImageSuperResolution.from_pretrained(root / "base"), root / "derain")
    model.load_adapter(root / "denoise", adapter_name="denoise")
    for name, task in (("a", "derain"), ("b", "denoise")):
        written = np.asarray(Image.open(tmp_path / f"{name}-{task}.png"))
        image = Image.open(root / f"{name}.png").convert("RGB")
        expected = np.asarray(restore(model, image, adapter="default" if task == "derain" else task))
        assert written.shape == np.asarray(image).shape
        assert np.abs(written.astype(int) - expected.astype(int)).max() <= 1
    # the two adapters really differ on this photo
    a_other = np.asarray(restore(model, Image.open(root / "a.png").convert("RGB"), adapter="denoise"))
    assert np.abs(a_other.astype(int) - np.asarray(Image.open(tmp_path / "a-derain.png")).astype(int)).max() > 1


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--adapter", "derain"], "must look like NAME=PATH_OR_HUB_ID"),
        (["--adapter", "x=y", "--task", "derain"], "--task 'derain' is not a loaded adapter"),
        (["--task", "derain"], "is not a loaded adapter"),  # shipped adapters load by default; none is "derain"
    ],
)
def test_restore_errors_are_explained(saved_models, tmp_path, capsys, extra, message):
    code = main(["restore", str(saved_models / "a.png"), "--output", str(tmp_path), *extra])
    assert code == 2
    assert message in capsys.readouterr().err
