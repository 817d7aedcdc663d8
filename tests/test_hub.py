"""Adapters on the Hub, tested with the real ``huggingface_hub`` client over HTTP against a loopback Hub
(``tests/hub_server.py``): push, pull by id in a fresh process, cards, revisions, subfolders, errors, offline."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from hub_fixtures import (
    TOKEN,
    hub,  # noqa: F401 - fixture
    hub_client,  # noqa: F401 - fixture
    make_adapters,
    outputs,
    point_client_at,
    run_fresh,
    test_input,
    tiny_base,
)
from huggingface_hub import ModelCard, hf_hub_download, snapshot_download

from peft_adaptir import peft_patches
from peft_adaptir.hub import AdapterHubError, load_adapters, push_adapter

BASE_ID = "caidas/swin2SR-classical-sr-x2-64"
TRAIN_CMD = "peft-adaptir train --task derain-heavy --steps 2000"
NAMES = ["derain", "denoise"]


@pytest.fixture(scope="module")
def pushed(hub, tmp_path_factory):  # noqa: F811
    """Push the repos every test reads; return the base weights path and the reference outputs."""
    mp = pytest.MonkeyPatch()
    tmp = tmp_path_factory.mktemp("pushed")
    try:
        point_client_at(mp, hub.endpoint, tmp / "hf_home")
        base = tiny_base()
        torch.save(base.state_dict(), tmp / "base.pt")
        model = make_adapters(base, NAMES)
        push_adapter(
            model,
            "alice/derain",
            "derain",
            task="derain-heavy",
            base_model=BASE_ID,
            training_command=TRAIN_CMD,
            metrics={"PSNR (dB)": 28.5, "SSIM": 0.81},
            token=TOKEN,
        )
        # main holds the derain weights, branch v2 the denoise ones: a revision must pick the right one.
        push_adapter(model, "alice/denoise", "derain", token=TOKEN)
        push_adapter(model, "alice/denoise", "denoise", task="denoise-50", revision="v2", token=TOKEN)
        push_adapter(model, "alice/multi", "denoise", subfolder="denoise", token=TOKEN)
        push_adapter(model, "alice/private", "derain", private=True, token=TOKEN)
        x = test_input()
        reference = outputs(model, NAMES, x)
        with torch.no_grad(), model.disable_adapter():
            reference["__base__"] = model(pixel_values=x).reconstruction
        torch.save({"x": x, **reference}, tmp / "reference.pt")
    finally:
        mp.undo()
    return tmp


def test_reference_adapters_are_not_trivial(pushed):
    ref = torch.load(pushed / "reference.pt")
    assert (ref["derain"] - ref["__base__"]).abs().max() > 1e-3
    assert (ref["denoise"] - ref["derain"]).abs().max() > 1e-3


PULL_SCRIPT = """
import json, sys, torch
import peft_adaptir
from peft import PeftModel
from hub_fixtures import tiny_base
from peft_adaptir.hub import load_adapters

tmp = sys.argv[1] if len(sys.argv) > 1 else {tmp!r}
ref = torch.load(tmp + "/reference.pt")
spec = {{
    "derain": "alice/derain",
    "denoise": "alice/denoise@v2",
    "sub": {{"repo_id": "alice/multi", "subfolder": "denoise"}},
    "private": "alice/private",
    "denoise_main": "alice/denoise",
}}
model = load_adapters(tiny_base(tmp + "/base.pt"), spec)
got = {{}}
with torch.no_grad():
    for name in spec:
        model.set_adapter(name)
        got[name] = model(pixel_values=ref["x"]).reconstruction
    direct = PeftModel.from_pretrained(tiny_base(tmp + "/base.pt"), "alice/derain").eval()
    got["direct"] = direct(pixel_values=ref["x"]).reconstruction
torch.save(got, tmp + "/pulled.pt")
print(json.dumps({{"adapters": sorted(model.peft_config)}}))
"""


def test_pull_by_id_in_fresh_process(hub, pushed, tmp_path):  # noqa: F811
    """A new process that only has HF_ENDPOINT and HF_TOKEN loads every adapter by id; outputs match exactly."""
    env = {"HF_ENDPOINT": hub.endpoint, "HF_HOME": str(tmp_path / "hf_home"), "HF_TOKEN": TOKEN}
    result = run_fresh(PULL_SCRIPT.format(tmp=str(pushed)), env)
    assert result["adapters"] == sorted(["derain", "denoise", "sub", "private", "denoise_main"])
    ref, got = torch.load(pushed / "reference.pt"), torch.load(pushed / "pulled.pt")
    torch.testing.assert_close(got["derain"], ref["derain"], rtol=0, atol=0)
    torch.testing.assert_close(got["direct"], ref["derain"], rtol=0, atol=0)
    torch.testing.assert_close(got["private"], ref["derain"], rtol=0, atol=0)
    torch.testing.assert_close(got["denoise"], ref["denoise"], rtol=0, atol=0)  # @v2
    torch.testing.assert_close(got["sub"], ref["denoise"], rtol=0, atol=0)  # subfolder
    torch.testing.assert_close(got["denoise_main"], ref["derain"], rtol=0, atol=0)  # main is not v2


def test_card_after_push(hub_client, pushed):  # noqa: F811
    card = ModelCard.load("alice/derain")
    data = card.data.to_dict()
    assert data["library_name"] == "peft"
    assert data["tags"] == ["adaptir", "image-to-image", "peft", "derain-heavy"]
    assert data["base_model"] == BASE_ID
    assert data["pipeline_tag"] == "image-to-image"
    assert "dense, long, bright rain streaks" in card.text  # the preset's degradation
    assert TRAIN_CMD in card.text
    assert "| PSNR (dB) | 28.5 |" in card.text
    usage = card.text.split("```python\n", 1)[1]
    assert usage.startswith("import peft_adaptir")
    assert "KeyError: 'ADAPTIR'" in card.text
    assert 'PeftModel.from_pretrained(base, "alice/derain")' in usage
    files = sorted(p.name for p in Path(snapshot_download("alice/derain")).iterdir())
    assert files == ["README.md", "adapter_config.json", "adapter_model.safetensors"]
    v2 = open(hf_hub_download("alice/denoise", "README.md", revision="v2")).read()
    assert "- denoise-50" in v2 and "Gaussian noise sigma 50" in v2


def test_missing_repo_file_revision_and_token_errors(hub_client, pushed):  # noqa: F811
    base = tiny_base(pushed / "base.pt")
    with pytest.raises(AdapterHubError, match=r"'ghost'.*alice/nope.*repository was not found.*repo id"):
        load_adapters(base, {"ghost": "alice/nope"})
    with pytest.raises(AdapterHubError, match=r"alice/multi \(subfolder 'nothere'\).*Check the subfolder"):
        load_adapters(base, {"x": {"repo_id": "alice/multi", "subfolder": "nothere"}})
    with pytest.raises(AdapterHubError, match=r"alice/derain at revision 'v9'.*revision does not exist"):
        load_adapters(base, {"x": "alice/derain@v9"})
    with pytest.raises(AdapterHubError, match=r"alice/private.*HF_TOKEN"):  # no token in this process
        load_adapters(base, {"x": "alice/private"})
    assert load_adapters(base, {"x": "alice/private"}, token=TOKEN).peft_config["x"] is not None
    with pytest.raises(ValueError, match="unknown keys.*branch"):
        load_adapters(base, {"x": {"repo_id": "alice/derain", "branch": "v2"}})
    with pytest.raises(AdapterHubError, match=r"(?s)alice/other.*401.*token"):
        push_adapter(make_adapters(tiny_base(), ["derain"]), "alice/other", "derain", token="wrong")
    with pytest.raises(ValueError, match="No adapter named 'nope'; the model has: derain"):
        push_adapter(make_adapters(tiny_base(), ["derain"]), "alice/other", "nope", token=TOKEN)


OFFLINE_SCRIPT = """
import json, torch
import peft_adaptir
from hub_fixtures import tiny_base
from peft_adaptir.hub import AdapterHubError, load_adapters

tmp = {tmp!r}
ref = torch.load(tmp + "/reference.pt")
model = load_adapters(tiny_base(tmp + "/base.pt"), {{"derain": "alice/derain"}})
with torch.no_grad():
    diff = (model(pixel_values=ref["x"]).reconstruction - ref["derain"]).abs().max().item()
try:
    load_adapters(tiny_base(tmp + "/base.pt"), {{"denoise": "alice/denoise@v2"}})
    error = None
except AdapterHubError as err:
    error = str(err)
print(json.dumps({{"diff": diff, "error": error}}))
"""


def test_offline_with_populated_cache(hub_client, pushed, tmp_path):  # noqa: F811
    """HF_HUB_OFFLINE=1: a cached repo loads without a single request; an uncached one says how to fix it."""
    snapshot_download("alice/derain", cache_dir=tmp_path / "hf_home" / "hub")
    before = len(hub_client.requests)
    env = {"HF_ENDPOINT": hub_client.endpoint, "HF_HOME": str(tmp_path / "hf_home"), "HF_HUB_OFFLINE": "1"}
    result = run_fresh(OFFLINE_SCRIPT.format(tmp=str(pushed)), env)
    assert result["diff"] == 0.0
    assert len(hub_client.requests) == before
    assert "alice/denoise at revision 'v2'" in result["error"] and "HF_HUB_OFFLINE=1" in result["error"]


def test_model_push_to_hub_keeps_our_card(hub_client, monkeypatch):  # noqa: F811
    monkeypatch.setenv("HF_TOKEN", TOKEN)  # the usual place: no token argument
    peft_patches.apply()
    peft_patches.apply()  # idempotent
    model = make_adapters(tiny_base(), ["derain"])
    url = model.push_to_hub("alice/pushed", tags=["demo"])
    assert "alice/pushed" in url
    card = ModelCard.load("alice/pushed")
    assert card.data.library_name == "peft"
    assert card.data.tags == ["adaptir", "image-to-image", "peft", "derain", "demo"]
    assert card.text.split("```python\n", 1)[1].startswith("import peft_adaptir")
    # peft's layout: a non-default adapter lives in a subfolder named after it
    config = json.load(open(hf_hub_download("alice/pushed", "adapter_config.json", subfolder="derain")))
    assert config["peft_type"] == "ADAPTIR"


def test_push_to_hub_of_other_peft_methods_is_unchanged(hub_client, monkeypatch):  # noqa: F811
    """The wrapper only handles AdaptIR; a LoRA model goes through transformers' push (and its card) as before."""
    from peft import LoraConfig, get_peft_model

    monkeypatch.setenv("HF_TOKEN", TOKEN)
    peft_patches.apply()
    model = get_peft_model(tiny_base(), LoraConfig(r=2, target_modules=["query"]))
    model.push_to_hub("alice/lora")
    assert ModelCard.load("alice/lora").data.library_name == "transformers"


def test_push_to_an_unreachable_hub_names_the_endpoint(tmp_path, monkeypatch):
    """No server listens on the port: the error names the endpoint and what to check, not a raw socket error."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        endpoint = f"http://127.0.0.1:{sock.getsockname()[1]}"
    point_client_at(monkeypatch, endpoint, tmp_path / "hf_home")
    model = make_adapters(tiny_base(), ["derain"])
    with pytest.raises(AdapterHubError, match=r"Could not reach the Hub at http://127\.0\.0\.1:\d+ to push 'alice/x'"):
        push_adapter(model, "alice/x", adapter_name="derain", token=TOKEN)
