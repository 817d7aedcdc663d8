"""Fixtures and helpers for the Hub tests: the loopback Hub, a client pointed at it, tiny adapters.

The client reads ``HF_ENDPOINT`` and ``HF_HOME`` at import time, so in-process use patches the constants it copied
(``hub_client``), and the proof that a repo loads by id runs in a fresh subprocess with the environment set
(``run_fresh``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hub_server import LocalHub
from tiny_models import tiny_swin2sr_config

TESTS_DIR = Path(__file__).resolve().parent
REPO_ROOT = TESTS_DIR.parent
TOKEN = "hf_adaptir_test_token"


def tiny_base(state_dict_path: str | os.PathLike | None = None) -> torch.nn.Module:
    """The tiny scale-1 Swin2SR restorer; (B, 3, H, W) in, ``.reconstruction`` (B, 3, H, W) out."""
    from transformers import Swin2SRForImageSuperResolution

    cfg = tiny_swin2sr_config(image_size=16, depths=[2], num_heads=[2])
    torch.manual_seed(0)
    model = Swin2SRForImageSuperResolution(cfg).eval()
    if state_dict_path is not None:
        model.load_state_dict(torch.load(state_dict_path))
    return model


def make_adapters(base: torch.nn.Module, names: list[str]):
    """A PeftModel with AdaptIR adapters ``names``, each perturbed (seeded) so its output differs from the base."""
    from peft import get_peft_model

    from peft_adaptir import AdaptIRConfig

    model = get_peft_model(base, AdaptIRConfig(), adapter_name=names[0])
    for name in names[1:]:
        model.add_adapter(name, AdaptIRConfig())
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for param_name, param in model.named_parameters():
            if any(f".{name}." in param_name or param_name.endswith(f".{name}") for name in names):
                param.add_(0.2 * torch.randn(param.shape, generator=generator))
    return model.eval()


def test_input() -> torch.Tensor:
    """A real photo crop: (1, 3, 16, 16) float in [0, 1]."""
    from skimage.data import astronaut

    image = torch.from_numpy(astronaut()[200:216, 180:196].copy()).permute(2, 0, 1).float() / 255
    return image[None]


test_input.__test__ = False  # not a pytest test


def outputs(model, names: list[str], x: torch.Tensor) -> dict[str, torch.Tensor]:
    """The reconstruction of ``x`` under each adapter in ``names``."""
    result = {}
    with torch.no_grad():
        for name in names:
            model.set_adapter(name)
            result[name] = model(pixel_values=x).reconstruction
    return result


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    """A loopback Hub on a free port of 127.0.0.1; writes need ``TOKEN``."""
    server = LocalHub(tmp_path_factory.mktemp("hub_blobs"), token=TOKEN)
    server.endpoint = server.serve()
    yield server
    server.shutdown()


def point_client_at(monkeypatch: pytest.MonkeyPatch, endpoint: str, hf_home: Path) -> None:
    """Patch the constants this process's ``huggingface_hub`` copied at import: Hub, cache, token, online mode."""
    import huggingface_hub.constants as constants
    import huggingface_hub.hf_api as hf_api
    import transformers.utils.hub as transformers_hub

    monkeypatch.setattr(constants, "ENDPOINT", endpoint)
    template = endpoint + "/{repo_id}/resolve/{revision}/{filename}"
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", template)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # conftest.py sets HF_HUB_OFFLINE=1 for the suite
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hf_home / "hub"))
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(hf_home / "token"))
    monkeypatch.setattr(constants, "HF_STORED_TOKENS_PATH", str(hf_home / "stored_tokens"))
    monkeypatch.setattr(hf_api.api, "endpoint", endpoint)
    monkeypatch.setattr(transformers_hub, "_hf_api", None)
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_OFFLINE"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def hub_client(hub, tmp_path, monkeypatch):
    """Point this process's ``huggingface_hub`` at ``hub``, online, with an empty cache and no token."""
    point_client_at(monkeypatch, hub.endpoint, tmp_path / "hf_home")
    return hub


def run_fresh(script: str, env: dict[str, str], timeout: float = 120) -> dict:
    """Run ``script`` in a new Python process with ``env`` added; it must print one JSON line last."""
    full_env = {key: value for key, value in os.environ.items() if not key.startswith(("HF_", "HUGGING"))}
    full_env.update(env, PYTHONPATH=os.pathsep.join([str(REPO_ROOT), str(TESTS_DIR)]), HF_HUB_DISABLE_TELEMETRY="1")
    proc = subprocess.run(
        [sys.executable, "-c", script], env=full_env, capture_output=True, text=True, timeout=timeout, cwd=REPO_ROOT
    )
    assert proc.returncode == 0, f"subprocess failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return json.loads(proc.stdout.strip().splitlines()[-1])
