"""Blind restoration: the shipped zoo, the degradation router, and restore(..., adapter="auto")."""

from __future__ import annotations

import math

import pytest
import torch
from PIL import Image

from peft_adaptir.backbones.default_base import load_default_base
from peft_adaptir.cli import main as cli_main
from peft_adaptir.data.degradations import degrade
from peft_adaptir.data.sources import SKIMAGE_HELDOUT
from peft_adaptir.inference.pipeline import restore
from peft_adaptir.metrics import psnr_batch
from peft_adaptir.routing.auto import decide
from peft_adaptir.routing.features import DegradationStatistics, base_fingerprint
from peft_adaptir.routing.router import DegradationRouter, RouterConfig
from peft_adaptir.routing.train import evaluate_router, router_photos, train_router
from peft_adaptir.routing.zoo import ZOO_TASKS, load_zoo, shipped_tasks

PAIR = ["denoise-50", "low-light"]


@pytest.fixture(scope="module")
def zoo_pair():
    if not set(PAIR) <= set(shipped_tasks()):
        pytest.fail(f"The package must ship adapters for {PAIR}; it ships {shipped_tasks()}.")
    return load_zoo(PAIR)


@pytest.fixture(scope="module")
def photo() -> torch.Tensor:
    """A held-out photo crop, (3, 48, 48) float in [0, 1]."""
    return router_photos(SKIMAGE_HELDOUT[:1])[0][:, 180:228, 200:248].contiguous()


def forced_router(model, probabilities: list[float], classes: list[str]) -> DegradationRouter:
    """A router that gives every image ``probabilities`` (zero weights, log-probabilities as the output bias)."""
    extractor = DegradationStatistics()
    router = DegradationRouter(
        RouterConfig(classes=classes, in_features=extractor.dim, base_fingerprint=base_fingerprint(model))
    )
    with torch.no_grad():
        for param in router.parameters():
            param.zero_()
        router.out.bias.copy_(torch.tensor(probabilities).log())
    return router.eval()


def test_router_trains_on_a_tiny_budget_and_beats_chance_on_held_out_crops():
    base = load_default_base()
    classes = ["denoise-50", "low-light", "derain-heavy", "__base__"]
    router, report = train_router(
        base, classes, photos=router_photos(("rocket", "camera")), crops_per_photo=6, steps=150, crop_sizes=(96,)
    )
    assert report["parameters"] < 0.01 * sum(p.numel() for p in base.parameters())  # at most 1% of the base
    accuracy, matrix = evaluate_router(base, router, router_photos(SKIMAGE_HELDOUT[:1]), 4, crop_sizes=(96,))
    assert matrix.sum() == 16 and accuracy >= 0.6, matrix  # chance is 0.25


def test_auto_equals_explicit_routing_when_the_router_is_forced_to_one_class(zoo_pair, photo):
    router = forced_router(zoo_pair, [0.001, 0.998, 0.001], [*PAIR, "__base__"])
    images = [photo, photo.flip(-1)]
    restored, decisions = restore(zoo_pair, images, adapter="auto", router=router)
    explicit = restore(zoo_pair, images, adapter_names=["low-light", "low-light"])
    assert [d.task for d in decisions] == ["low-light", "low-light"] and decisions[0].mode == "hard"
    assert math.isclose(decisions[0].probability, 0.998, rel_tol=1e-4)
    for got, want in zip(restored, explicit):
        assert torch.equal(got, want)
    assert not torch.equal(restored[0], restore(zoo_pair, images, adapter="denoise-50")[0])
    # "auto" per image next to named adapters, with tiling: one decision per image, none for the named one
    tiles = {"tile_size": 32, "tile_overlap": 8}
    mixed, decisions = restore(zoo_pair, images, adapter_names=["auto", "__base__"], router=router, **tiles)
    assert decisions[1] is None and decisions[0].task == "low-light"
    assert torch.allclose(mixed[0], restore(zoo_pair, [photo], adapter="low-light", **tiles)[0], atol=1e-6)


def test_soft_mode_equals_the_manual_weighted_blend(zoo_pair, photo):
    router = forced_router(zoo_pair, [0.45, 0.35, 0.2], [*PAIR, "__base__"])
    # hard with low confidence falls back to soft: the top 2 renormalised, the blend of both adapters
    for mode in ("soft", "hard"):
        (restored,), (decision,) = restore(zoo_pair, [photo], adapter="auto", router=router, routing=mode)
        assert decision.mode == "soft" and decision.task == "denoise-50"
        assert decision.weights == pytest.approx({"denoise-50": 0.5625, "low-light": 0.4375}, abs=1e-5)
        with torch.no_grad():
            manual = zoo_pair(photo[None], adapter_weights=[decision.weights]).reconstruction[0].clamp(0, 1)
        assert torch.allclose(restored, manual, atol=1e-6)
    # confident hard decisions stay hard; min_confidence=1 sends everything soft
    confident = forced_router(zoo_pair, [0.8, 0.15, 0.05], [*PAIR, "__base__"])
    assert decide(zoo_pair, confident, [photo])[0].mode == "hard"
    assert decide(zoo_pair, confident, [photo], min_confidence=1.0)[0].weights == pytest.approx(
        {"denoise-50": 0.8 / 0.95, "low-light": 0.15 / 0.95}, abs=1e-5
    )


def test_shipped_adapters_load_offline_and_improve_their_task(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert shipped_tasks() == list(ZOO_TASKS)
    model = load_zoo()
    clean = router_photos(SKIMAGE_HELDOUT[1:2])[0][:, 100:196, 150:246].contiguous()  # chelsea, 96 x 96
    degraded = [degrade(clean, task, seed=7) for task in ZOO_TASKS]
    base_out = restore(model, degraded, adapter_names=["__base__"] * len(ZOO_TASKS))
    adapted = restore(model, degraded, adapter_names=list(ZOO_TASKS))
    psnr = lambda x: psnr_batch(x[None], clean[None], quantize=True).item()  # noqa: E731
    gains = {task: psnr(a) - psnr(b) for task, a, b in zip(ZOO_TASKS, adapted, base_out)}
    assert all(gain > 0.05 for gain in gains.values()), sorted(gains.items())  # sr4 gains least (+0.09 dB)
    assert all(gains[task] > 0.2 for task in ZOO_TASKS[:5]), sorted(gains.items())


def test_cli_restores_with_a_shipped_adapter_and_lists_shipped_tasks(tmp_path, photo, capsys):
    path = tmp_path / "photo.png"
    Image.fromarray((photo.permute(1, 2, 0) * 255).round().byte().numpy()).save(path)
    assert cli_main(["restore", "--task", "denoise-50", str(path), "--output", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "photo-denoise-50.png").is_file()
    assert cli_main(["tasks"]) == 0
    listing = capsys.readouterr().out
    assert all(f"{task}" in line and "[adapter shipped]" in line for task in ZOO_TASKS for line in
               [next(row for row in listing.splitlines() if row.strip().startswith(task + " "))])  # fmt: skip
    assert cli_main(["restore", "--task", "nope", str(path), "--output", str(tmp_path / "out")]) == 2
    assert "'nope' is not a loaded adapter" in capsys.readouterr().err


def test_bad_inputs_get_clear_errors(zoo_pair, photo, tmp_path):
    router = forced_router(zoo_pair, [0.5, 0.3, 0.2], [*PAIR, "__base__"])
    with pytest.raises(ValueError, match=r"Unknown adapter names \['derain'\].*'auto' to let the router choose"):
        restore(zoo_pair, [photo, photo], adapter_names=["auto", "derain"], router=router)
    other = forced_router(zoo_pair, [0.5, 0.5], ["derain-heavy", "__base__"])
    with pytest.raises(ValueError, match=r"trained for adapters \['derain-heavy'\].*not loaded"):
        restore(zoo_pair, [photo], adapter="auto", router=other)
    foreign = forced_router(zoo_pair, [0.5, 0.3, 0.2], [*PAIR, "__base__"])
    foreign.config.base_fingerprint = "0" * 16
    with pytest.raises(ValueError, match="another base model"):
        restore(zoo_pair, [photo], adapter="auto", router=foreign)
    with pytest.raises(ValueError, match="routing mode 'blend'"):
        restore(zoo_pair, [photo], adapter="auto", router=router, routing="blend")
    with pytest.raises(FileNotFoundError, match="router_config.json"):
        DegradationRouter.from_pretrained(tmp_path)


def test_router_save_load_round_trip(zoo_pair, photo, tmp_path):
    router = forced_router(zoo_pair, [0.5, 0.3, 0.2], [*PAIR, "__base__"])
    with torch.no_grad():
        router.hidden.weight.normal_(generator=torch.Generator().manual_seed(0))
        router.out.weight.normal_(generator=torch.Generator().manual_seed(1))
    router.save_pretrained(tmp_path / "router")
    loaded = DegradationRouter.from_pretrained(tmp_path / "router")
    features = DegradationStatistics()([photo, photo.flip(-2)])
    assert loaded.classes == router.classes
    assert torch.equal(loaded.probabilities(features), router.probabilities(features))


def test_each_statistic_moves_with_the_degradation_it_measures(photo):
    """The statistics the router reads respond to their degradation, on a held-out photo (names: FEATURE_NAMES)."""
    from peft_adaptir.routing.features import FEATURE_NAMES, image_statistics

    clean = router_photos(SKIMAGE_HELDOUT[:1])[0][:, 64:320, 96:352].contiguous()  # (3, 256, 256)

    def stats(task: str | None) -> dict[str, float]:
        image = clean if task is None else degrade(clean, task, seed=0)
        return dict(zip(FEATURE_NAMES, image_statistics(image).tolist()))

    base = stats(None)
    assert stats("denoise-50")["log_noise_sigma"] > base["log_noise_sigma"] + 1.0
    assert stats("low-light")["mean"] < 0.5 * base["mean"]
    assert stats("sr4")["log_fine_coarse"] < base["log_fine_coarse"] - 0.1
    jpeg = stats("jpeg-q20")
    assert jpeg["log_block_columns"] > base["log_block_columns"] + 0.1
    assert jpeg["log_block_rows"] > base["log_block_rows"] + 0.1
    rain = stats("derain-heavy")
    assert rain["log_anisotropy"] > base["log_anisotropy"] + 0.2  # streaks run one way
    with pytest.raises(ValueError, match="at least 8 x 8"):
        image_statistics(torch.zeros(3, 4, 4))
