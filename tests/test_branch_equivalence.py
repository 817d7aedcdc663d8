"""The optimised AdaptIR branch computes what the straightforward reference computes, gradients included."""

from __future__ import annotations

import pytest
import torch

from peft_adaptir.tuner.branch import AdaptIRBranch, FrequencyAffine
from peft_adaptir.tuner.reference import reference_branch_forward, reference_frequency_affine

C, H_WIDTH = 12, 6
CONFIGS = [
    ("gated", ("local", "frequency", "channel")),
    ("sum", ("local", "frequency", "channel")),
    ("sum", ("local", "frequency")),
    ("sum", ("frequency", "channel")),
    ("sum", ("local", "channel")),
    ("sum", ("frequency",)),
    ("sum", ("channel",)),
    ("sum", ()),
]
# (layout, size): token models hand over a channels-last view, convolutional ones a contiguous map; sizes are a power
# of two, even but not a power of two, and odd H and W (odd W changes the rfft2 length)
CASES = [("tokens", (7, 9)), ("contiguous", (6, 10)), ("tokens", (8, 8))]


def make_branch(fusion: str, branches: tuple[str, ...], seed: int = 0) -> AdaptIRBranch:
    """A branch with every parameter random (no zero up-projection, no identity affine) so each path matters."""
    torch.manual_seed(seed)
    branch = AdaptIRBranch(C, H_WIDTH, fusion=fusion, branches=branches, init_weights=False)
    with torch.no_grad():
        for param in branch.parameters():
            param.add_(0.3 * torch.randn_like(param))
    return branch.train()


def tokens_view(batch: int, height: int, width: int, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Leaf tokens (B, N, C) and their (B, C, H, W) channels-last view, the way token models hand features over."""
    torch.manual_seed(seed)
    tokens = torch.randn(batch, height * width, C, requires_grad=True)
    return tokens, tokens.transpose(1, 2).reshape(batch, C, height, width)


def run(fn, branch: AdaptIRBranch, inputs: torch.Tensor, leaf: torch.Tensor, grad_out: torch.Tensor):
    """Output, input gradient and parameter gradients of ``fn(branch, inputs)`` against ``grad_out``."""
    branch.zero_grad(set_to_none=True)
    leaf.grad = None
    out = fn(branch, inputs)
    out.backward(grad_out.to(out.dtype))
    grads = {n: p.grad.clone() for n, p in branch.named_parameters() if p.grad is not None}
    return out.detach().float(), leaf.grad.clone(), grads


def optimised(branch: AdaptIRBranch, x: torch.Tensor) -> torch.Tensor:
    return branch(x)


def assert_same(got, want, rtol: float, atol: float) -> None:
    (out, dx, grads), (ref_out, ref_dx, ref_grads) = got, want
    torch.testing.assert_close(out, ref_out, rtol=rtol, atol=atol * ref_out.abs().max().clamp_min(1.0))
    torch.testing.assert_close(dx, ref_dx, rtol=rtol, atol=atol * ref_dx.abs().max().clamp_min(1.0))
    assert grads.keys() == ref_grads.keys()
    # parameter gradients are sums over many positions; some (down.bias before BatchNorm) cancel to ~0, so the
    # tolerance scales with the largest gradient rather than each one's own size
    scale = max(g.abs().max() for g in ref_grads.values()).clamp_min(1.0)
    for name in grads:
        torch.testing.assert_close(grads[name], ref_grads[name], rtol=rtol, atol=atol * scale, msg=name)


@pytest.mark.parametrize("fusion,branches", CONFIGS)
@pytest.mark.parametrize("layout,size", CASES[:2])
def test_float32_matches_reference(fusion: str, branches: tuple[str, ...], layout: str, size: tuple[int, int]) -> None:
    branch = make_branch(fusion, branches)
    leaf, view = tokens_view(2, *size)
    x = view if layout == "tokens" else view.contiguous()
    assert x.is_contiguous() == (layout == "contiguous")
    grad_out = torch.randn(2, C, *size)
    state = {k: v.clone() for k, v in branch.state_dict().items()}
    want = run(reference_branch_forward, branch, x, leaf, grad_out)
    ref_state = {k: v.clone() for k, v in branch.state_dict().items()}
    branch.load_state_dict(state)  # BatchNorm running statistics moved; start the optimised pass from the same state
    got = run(optimised, branch, x, leaf, grad_out)
    assert_same(got, want, rtol=1e-5, atol=1e-5)
    assert got[0].abs().max() > 1e-2  # the comparison is not between zeros
    for key, value in branch.state_dict().items():  # the same BatchNorm running statistics afterwards
        torch.testing.assert_close(value, ref_state[key], rtol=1e-6, atol=1e-6, msg=key)


@pytest.mark.parametrize("fusion,branches", CONFIGS[:3] + [CONFIGS[-1]])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_autocast_close_to_reference(fusion: str, branches: tuple[str, ...], dtype: torch.dtype) -> None:
    branch = make_branch(fusion, branches)
    leaf, x = tokens_view(2, 7, 10)
    grad_out = torch.randn(2, C, 7, 10)
    state = {k: v.clone() for k, v in branch.state_dict().items()}
    with torch.autocast("cpu", dtype=dtype):
        want = run(reference_branch_forward, branch, x, leaf, grad_out)
        branch.load_state_dict(state)
        got = run(optimised, branch, x, leaf, grad_out)
    exact = run(reference_branch_forward, branch, x, leaf, grad_out)
    # close to the reference under the same autocast, and within half-precision error of the float32 result
    assert_same(got, want, rtol=3e-2, atol=3e-2)
    scale = exact[0].abs().max()
    assert (got[0] - exact[0]).abs().max() <= 0.05 * scale


def test_frequency_affine_float32_under_autocast_and_matches_reference() -> None:
    torch.manual_seed(0)
    fam = FrequencyAffine(5)
    with torch.no_grad():
        fam.amp_fuse.weight.uniform_(0.5, 1.5)
        fam.amp_fuse.bias.normal_()
        fam.pha_fuse.weight.uniform_(0.5, 1.5)
        fam.pha_fuse.bias.normal_()
    x = torch.randn(3, 5, 9, 11, dtype=torch.bfloat16, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = fam(x)
    assert out.dtype == torch.bfloat16  # cast back to the input dtype
    want = reference_frequency_affine(fam, x.float())
    torch.testing.assert_close(out.float(), want, rtol=1e-2, atol=1e-2)  # bf16 rounding of the result only
    out32 = fam(x.detach().float())
    torch.testing.assert_close(out32, want, rtol=1e-6, atol=1e-6)


def test_identity_affine_gives_abs_of_input() -> None:
    x = torch.randn(2, 4, 6, 7)
    torch.testing.assert_close(FrequencyAffine(4)(x), x.abs(), rtol=1e-5, atol=1e-5)


def test_gradients_finite_where_the_spectrum_is_zero() -> None:
    """angle/abs at F = 0 (a constant-zero channel, or an all-zero input) must not produce NaN gradients."""
    branch = make_branch("gated", ("local", "frequency", "channel"))
    x = torch.randn(2, C, 8, 8)
    x[:, :3] = 0.0
    x = x.requires_grad_()
    branch(x).square().sum().backward()
    assert torch.isfinite(x.grad).all()
    assert all(torch.isfinite(p.grad).all() for p in branch.parameters() if p.grad is not None)
    fam = FrequencyAffine(3)
    zero = torch.zeros(1, 3, 5, 6, requires_grad=True)
    out = fam(zero)
    out.sum().backward()
    assert torch.isfinite(zero.grad).all() and torch.isfinite(fam.pha_fuse.weight.grad).all()
    ref_zero = zero.detach().clone().requires_grad_()
    reference_frequency_affine(fam, ref_zero).sum().backward()
    torch.testing.assert_close(zero.grad, ref_zero.grad)


@pytest.mark.parametrize("fusion", ["gated", "sum"])
def test_power_of_two_grid_matches_reference(fusion: str) -> None:
    branch = make_branch(fusion, ("local", "frequency", "channel"))
    leaf, x = tokens_view(2, *CASES[2][1])
    grad_out = torch.randn(2, C, *CASES[2][1])
    state = {k: v.clone() for k, v in branch.state_dict().items()}
    want = run(reference_branch_forward, branch, x, leaf, grad_out)
    branch.load_state_dict(state)
    assert_same(run(optimised, branch, x, leaf, grad_out), want, rtol=1e-5, atol=1e-5)


def test_eval_mode_matches_reference() -> None:
    branch = make_branch("gated", ("local", "frequency", "channel"))
    leaf, x = tokens_view(3, 6, 9)
    branch(x.detach())  # move the running statistics away from their initial values
    branch.eval()
    with torch.no_grad():
        torch.testing.assert_close(branch(x), reference_branch_forward(branch, x), rtol=1e-5, atol=1e-5)
