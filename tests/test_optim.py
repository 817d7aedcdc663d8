"""The adapter optimizer: fused AdamW where torch has it, the same update as AdamW's reference loop, a fallback."""

from __future__ import annotations

import logging

import pytest
import torch

from peft_adaptir.training import optim
from peft_adaptir.training.optim import adapter_optimizer


def _params(seed: int = 0) -> list[torch.nn.Parameter]:
    """Many small tensors, like an adapter's, with fixed gradients."""
    torch.manual_seed(seed)
    params = [torch.nn.Parameter(torch.randn(shape)) for shape in [(4, 60), (4,), (4, 2), (2, 9), (60, 4)] * 6]
    for p in params:
        p.grad = torch.randn_like(p)
    return params


def _three_steps(optimizer: torch.optim.Optimizer, params: list[torch.nn.Parameter]) -> list[torch.Tensor]:
    grads = [p.grad.clone() for p in params]
    for _ in range(3):
        for p, g in zip(params, grads):
            p.grad = g.clone()
        optimizer.step()
    return [p.detach().clone() for p in params]


def test_fused_on_cpu_and_same_update_as_the_per_tensor_loop() -> None:
    fused_params, loop_params = _params(), _params()
    optimizer = adapter_optimizer(fused_params, lr=1e-2, weight_decay=1e-4)
    assert optimizer.defaults["fused"] is True
    reference = torch.optim.AdamW(loop_params, lr=1e-2, weight_decay=1e-4, foreach=False)
    after_fused, after_loop = _three_steps(optimizer, fused_params), _three_steps(reference, loop_params)
    for a, b, start in zip(after_fused, after_loop, _params()):
        assert not torch.equal(a, start)  # it moved
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_falls_back_to_foreach_where_fused_is_refused(monkeypatch, caplog) -> None:
    real_adamw = torch.optim.AdamW

    def adamw_without_fused(params, **kwargs):
        if kwargs.get("fused"):
            raise RuntimeError("`fused=True` requires floating point params on a supported device")
        return real_adamw(params, **kwargs)

    monkeypatch.setattr(optim.torch.optim, "AdamW", adamw_without_fused)
    params, loop_params = _params(), _params()
    with caplog.at_level(logging.INFO, logger="peft_adaptir.training.optim"):
        optimizer = adapter_optimizer(params, lr=1e-2)
    assert optimizer.defaults["foreach"] is True and not optimizer.defaults["fused"]
    assert "Fused AdamW unavailable" in caplog.text
    reference = real_adamw(loop_params, lr=1e-2, weight_decay=0.0, foreach=False)
    for a, b in zip(_three_steps(optimizer, params), _three_steps(reference, loop_params)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("bad", ["lr", "weight_decay"])
def test_invalid_hyperparameters_are_refused_by_torch(bad: str) -> None:
    kwargs = {"lr": 1e-3, "weight_decay": 0.0, bad: -1.0}
    with pytest.raises(ValueError, match="Invalid"):
        adapter_optimizer(_params(), **kwargs)
