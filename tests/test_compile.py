"""torch.compile of a model carrying AdaptIR adapters: it compiles, and matches eager, gradients included.

The frequency step runs eagerly inside the compiled model (a graph break): Inductor has no complex-number code
generation, and before that break ``torch.compile(model)`` failed in the backward.
"""

from __future__ import annotations

import os
import shutil

import pytest
import torch
from peft import get_peft_model
from transformers import Swin2SRConfig, Swin2SRForImageSuperResolution

from peft_adaptir import AdaptIRConfig

CXX = os.environ.get("CXX") or shutil.which("g++") or shutil.which("clang++")
pytestmark = pytest.mark.skipif(
    CXX is None, reason="torch.compile's CPU backend (Inductor) needs a C++ compiler; none found (set CXX)"
)


def _adapted_model() -> torch.nn.Module:
    torch.manual_seed(0)
    config = Swin2SRConfig(
        image_size=16, embed_dim=16, depths=[2], num_heads=[2], window_size=4, mlp_ratio=2.0, upscale=1, upsampler=""
    )
    model = get_peft_model(Swin2SRForImageSuperResolution(config), AdaptIRConfig(fusion="gated"))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "adaptir_branch" in name:
                param.add_(0.1 * torch.randn_like(param))  # move off the init, so every path of the branch matters
    return model.train()


def _forward_backward(
    run: torch.nn.Module, model: torch.nn.Module, x: torch.Tensor
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """``run`` (``model`` or its compiled wrapper) forward and backward; the output and ``model``'s gradients."""
    out = run(pixel_values=x).reconstruction
    out.square().mean().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    model.zero_grad(set_to_none=True)
    return out.detach(), grads


def test_compiled_adapted_model_matches_eager_outputs_and_adapter_gradients() -> None:
    model = _adapted_model()
    x = torch.rand(2, 3, 16, 16)
    eager_out, eager_grads = _forward_backward(model, model, x)
    torch._dynamo.reset()
    try:
        compiled_out, compiled_grads = _forward_backward(torch.compile(model), model, x)
    finally:
        torch._dynamo.reset()
    torch.testing.assert_close(compiled_out, eager_out, rtol=1e-4, atol=1e-5)
    assert eager_grads.keys() == compiled_grads.keys() and len(eager_grads) > 0
    for name, grad in eager_grads.items():
        assert grad.abs().max() > 0, name
        torch.testing.assert_close(compiled_grads[name], grad, rtol=1e-3, atol=1e-5, msg=name)
