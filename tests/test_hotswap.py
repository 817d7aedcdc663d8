"""Hot-swap under torch.compile: padded adapters swapped in place, zero recompiles, outputs equal to eager loads."""

from __future__ import annotations

import os
import shutil

import pytest
import torch
from peft import PeftModel, get_peft_model
from tiny_models import PLACEMENT, build, output_of, perturb
from torch._dynamo.testing import CompileCounterWithBackend

from peft_adaptir import AdaptIRConfig, HotswapError, hotswap_adapter, prepare_hotswap

CXX = os.environ.get("CXX") or shutil.which("g++") or shutil.which("clang++")
KIND = "token"
# three adapters of different widths, ranks and scales; the same branches, fusion, kernel size and placement
SHAPES = {"small": dict(width=4, rank=2, scale=1.0), "mid": dict(width=8, rank=3, scale=0.5), "big": dict(width=12)}
MAX_WIDTH, MAX_RANK = 12, 6


def _save(root, name: str, seed: int, **config) -> str:
    base, _ = build(KIND)
    options = {**PLACEMENT[KIND], "fusion": "gated", **config}
    model = get_peft_model(base, AdaptIRConfig(**options))
    perturb(model, seed=seed, scale=0.3)
    model.save_pretrained(root / name)
    return str(root / name)


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("hotswap")
    return {name: _save(root, name, seed, **shape) for seed, (name, shape) in enumerate(SHAPES.items(), start=1)}


def _eager(folder: str) -> torch.nn.Module:
    base, _ = build(KIND)
    return PeftModel.from_pretrained(base, folder).eval()


@torch.no_grad()
def _run(model, x):
    return output_of(model, x).detach()


def test_prepare_pads_without_changing_outputs(folders) -> None:
    # float64: padding is exact up to the summation order of wider matmuls (and the float32 FFTs of the frequency
    # step, which round alike here); float32 shows ~2e-6 rounding noise
    model = _eager(folders["small"]).double()
    x = build(KIND)[1].double()
    before = _run(model, x)
    prepare_hotswap(model, max_width=MAX_WIDTH, max_rank=MAX_RANK)
    after = _run(model, x)
    layer = model.base_model.adaptir_layers()[0]
    branch = layer.adaptir_branch["default"]
    assert branch.down.out_channels == MAX_WIDTH and branch.local.conv_weight_A.shape == (MAX_WIDTH, MAX_RANK)
    assert isinstance(layer.adaptir_scale["default"], torch.Tensor)
    torch.testing.assert_close(after, before, rtol=0, atol=1e-12)
    assert not torch.allclose(
        before, output_of(build(KIND)[0].double(), x), atol=1e-3
    )  # the adapter does change the output


def _swap_all(compiled, counter, folders, x, order) -> list[float]:
    """Swap through ``order`` with recompiles as errors; the max |compiled - eager| per swap."""
    errors = []
    frames = counter.frame_count
    with torch._dynamo.config.patch(error_on_recompile=True):
        for name in order:
            hotswap_adapter(compiled, folders[name])
            out = _run(compiled, x)
            expected = _run(_eager(folders[name]), x)
            errors.append((out - expected).abs().max().item())
            torch.testing.assert_close(out, expected, rtol=0, atol=1e-5)
    assert counter.frame_count == frames  # zero recompiles, counted
    return errors


def _compiled(folder: str, backend: str):
    """The eager model of ``folder``, prepared for hot-swap and compiled with a counting ``backend``, run once."""
    model = _eager(folder)
    x = build(KIND)[1]
    prepare_hotswap(model, max_width=MAX_WIDTH, max_rank=MAX_RANK)
    counter = CompileCounterWithBackend(backend)
    compiled = torch.compile(model, backend=counter)
    first = _run(compiled, x)
    return model, compiled, counter, x, first


def test_compiled_hotswap_has_zero_recompiles_and_matches_eager(folders) -> None:
    model, compiled, counter, x, first = _compiled(folders["small"], "aot_eager")
    torch.testing.assert_close(first, _run(_eager(folders["small"]), x), rtol=0, atol=1e-5)
    assert counter.frame_count > 0
    outs = {}
    errors = _swap_all(compiled, counter, folders, x, ["mid", "big", "small", "big", "mid"])
    assert max(errors) <= 1e-5
    for name in SHAPES:  # the adapters really differ: a swap that did nothing would fail above
        outs[name] = _run(_eager(folders[name]), x)
    assert not torch.allclose(outs["mid"], outs["big"], atol=1e-3)
    assert model.peft_config["default"].scale == SHAPES["mid"]["scale"]


def test_hotswap_from_a_state_dict(folders) -> None:
    from peft.utils.save_and_load import load_peft_weights

    _, compiled, counter, x, _ = _compiled(folders["big"], "aot_eager")
    frames = counter.frame_count
    with torch._dynamo.config.patch(error_on_recompile=True):
        hotswap_adapter(compiled, load_peft_weights(folders["mid"], device="cpu"), scale=SHAPES["mid"]["scale"])
        out = _run(compiled, x)
    assert counter.frame_count == frames
    torch.testing.assert_close(out, _run(_eager(folders["mid"]), x), rtol=0, atol=1e-5)


@pytest.mark.parametrize(
    ("config", "field"),
    [
        (dict(fusion="sum"), "fusion"),
        (dict(kernel_size=5), "kernel_size"),
        (dict(fusion="sum", branches=["local", "channel"]), "fusion"),  # the config check names the first field
        (
            dict(
                preset=None,
                target_modules=r".*layers\.1\.mlp\.fc1",
                span_end="fc2",
                layout="BNC",
                grid_argument="x_size",
            ),
            "target_modules",
        ),
    ],
)
def test_control_flow_changes_are_refused_with_the_field(folders, tmp_path, config, field) -> None:
    model = _eager(folders["small"])
    prepare_hotswap(model, max_width=MAX_WIDTH, max_rank=MAX_RANK)
    before = {k: v.clone() for k, v in model.state_dict().items() if "adaptir_branch" in k}
    other = _save(tmp_path, "other", seed=7, width=4, **config)
    with pytest.raises(HotswapError, match=field):
        hotswap_adapter(model, other)
    after = {k: v for k, v in model.state_dict().items() if "adaptir_branch" in k}
    assert all(torch.equal(before[k], after[k]) for k in before)  # nothing written


def test_state_dict_with_other_branches_or_too_wide_is_refused(folders, tmp_path) -> None:
    from peft.utils.save_and_load import load_peft_weights

    model = _eager(folders["small"])
    prepare_hotswap(model, max_width=8, max_rank=MAX_RANK)
    sum_local = _save(tmp_path, "sum_local", seed=8, width=4, fusion="sum", branches=["local", "channel"])
    with pytest.raises(HotswapError, match="branches differ"):
        hotswap_adapter(model, load_peft_weights(sum_local, device="cpu"))
    with pytest.raises(HotswapError, match="max_width 8"):
        hotswap_adapter(model, folders["big"])
    with pytest.raises(HotswapError, match="not prepared"):
        hotswap_adapter(_eager(folders["small"]), folders["mid"])


@pytest.mark.skipif(CXX is None, reason="torch.compile's default backend (Inductor) needs a C++ compiler; none found")
def test_inductor_hotswap_has_zero_recompiles(folders) -> None:
    _, compiled, counter, x, _ = _compiled(folders["small"], "inductor")
    errors = _swap_all(compiled, counter, folders, x, ["big"])
    assert max(errors) <= 1e-5


@pytest.mark.parametrize(
    ("kind", "options"),
    [
        ("token", dict(fusion="sum")),
        ("token", dict(fusion="sum", branches=["frequency"])),
        ("token", dict(fusion="sum", branches=[])),  # the plain bottleneck
        ("conv", dict(fusion="gated")),  # channels-first feature maps, a span across a gate
    ],
)
def test_padding_is_exact_for_every_branch_set_and_layout(kind, options, tmp_path) -> None:
    base, x = build(kind)
    model = get_peft_model(base.double(), AdaptIRConfig(**PLACEMENT[kind], width=4, rank=2, **options)).eval()
    perturb(model, scale=0.3)
    x = x.double()
    before = _run(model, x)
    prepare_hotswap(model, max_width=10, max_rank=5)
    # the frequency step always runs in float32 (its FFTs), so a wider FFT batch rounds differently there: ~1e-7
    atol = 1e-6 if "frequency" in options.get("branches", ["frequency"]) else 1e-12
    torch.testing.assert_close(_run(model, x), before, rtol=0, atol=atol)
    model.save_pretrained(tmp_path / "padded")  # the config records the padded width: it reloads as it is
    reloaded = PeftModel.from_pretrained(build(kind)[0].double(), tmp_path / "padded").eval()
    torch.testing.assert_close(_run(reloaded, x), before, rtol=0, atol=atol)


@torch.no_grad()
def test_a_hot_swapped_adapter_blends_and_routes_per_sample_like_an_eager_one(folders) -> None:
    """After prepare + hotswap, the padded adapter takes part in exact blends and mixed batches (eager model)."""
    x = build(KIND)[1].double()
    names = (["default", "other", "__base__"] * x.shape[0])[: x.shape[0]]
    served = _eager(folders["small"]).double()
    served.load_adapter(folders["mid"], adapter_name="other")
    prepare_hotswap(served, max_width=MAX_WIDTH, max_rank=MAX_RANK)
    hotswap_adapter(served, folders["big"], adapter_name="default")
    reference = _eager(folders["big"]).double()
    reference.load_adapter(folders["mid"], adapter_name="other")

    for model in (served, reference):
        model.set_adapter_weights({"default": 0.7, "other": 0.3})
    torch.testing.assert_close(_run(served, x), _run(reference, x), rtol=0, atol=1e-10)
    routed = output_of(served, x, adapter_names=names).detach()
    expected = output_of(reference, x, adapter_names=names).detach()
    torch.testing.assert_close(routed, expected, rtol=0, atol=1e-10)
    reference.set_adapter("default")
    torch.testing.assert_close(routed[:1], _run(reference, x)[:1], rtol=0, atol=1e-10)
