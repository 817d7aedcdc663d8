"""Fixtures shared by the training tests: a tiny saved Swin2SR base and a fresh Accelerate state per test."""

from __future__ import annotations

import pytest
import torch
from tiny_models import tiny_swin2sr_config
from transformers import Swin2SRForImageSuperResolution


def tiny_training_base(seed: int = 0, **overrides) -> Swin2SRForImageSuperResolution:
    """A 2-layer tiny Swin2SR restorer (scale 1 unless ``overrides`` say otherwise), weights from ``seed``."""
    torch.manual_seed(seed)
    config = tiny_swin2sr_config(**{"depths": [2], "num_heads": [2], **overrides})
    return Swin2SRForImageSuperResolution(config).eval()


def new_process_state() -> None:
    """Forget Accelerate's process-wide singletons, as a fresh process (a restarted run) would."""
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(True)
    GradientState._reset_state()


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny_base")
    tiny_training_base().save_pretrained(path)
    return path


@pytest.fixture(autouse=True)
def fresh_accelerate_state():
    """One thread (2 shared cores) and a clean Accelerate singleton per test, as a new process would have."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
    new_process_state()
