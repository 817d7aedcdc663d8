"""The straightforward AdaptIR computation, step by step as the specification states it (no shortcuts).

Used by the tests (``tests/test_branch_equivalence.py``) and the speed benchmark as the yardstick the optimised
``peft_adaptir.branch`` must match: same parameters, same outputs to float tolerance, same gradients.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .branch import AdaptIRBranch, FrequencyAffine


def reference_frequency_affine(module: FrequencyAffine, x: torch.Tensor) -> torch.Tensor:
    """FAM as written: rfft2 -> |F|, angle(F) -> per-channel affine -> amp * (cos + i sin) -> irfft2 -> abs.

    ``x`` (B, h, H, W); returns (B, h, H, W) in ``x``'s dtype, computed in float32 with autocast off.
    """
    height, width = x.shape[-2:]
    shape = (1, -1, 1, 1)
    with torch.autocast(device_type=x.device.type, enabled=False):
        spectrum = torch.fft.rfft2(x.float(), norm="ortho")  # (B, h, H, W//2+1) complex64
        amplitude = spectrum.abs() * module.amp_fuse.weight.float().view(shape) + module.amp_fuse.bias.float().view(
            shape
        )
        phase = spectrum.angle() * module.pha_fuse.weight.float().view(shape) + module.pha_fuse.bias.float().view(
            shape
        )
        spectrum = torch.complex(amplitude * torch.cos(phase), amplitude * torch.sin(phase))
        out = torch.fft.irfft2(spectrum, s=(height, width), norm="ortho").abs()
    return out.to(x.dtype)


def reference_branch_forward(branch: AdaptIRBranch, x: torch.Tensor) -> torch.Tensor:
    """The whole branch as written, reusing ``branch``'s parameters: (B, C, H, W) -> (B, C, H, W)."""
    x = F.conv2d(x, branch.down.weight, branch.down.bias)
    if branch.norm is None:
        return F.conv2d(F.relu(x), branch.up.weight)
    x = branch.norm(x)
    local = None
    if branch.local is not None:
        lim = branch.local
        h, k = x.shape[1], lim.kernel_size
        kernel = (lim.conv_weight_A @ lim.conv_weight_B).view(h, 1, k, k)
        local = F.conv2d(x, kernel.to(x.dtype), lim.conv_bias.to(x.dtype), padding=k // 2, groups=h)
    frequency = reference_frequency_affine(branch.frequency, x) if branch.frequency is not None else None
    channel = None
    if branch.channel is not None:
        csm = branch.channel
        weights = csm.compress(x).flatten(2).softmax(dim=-1)  # (B, 1, H*W)
        pooled = (x.flatten(2) * weights.to(x.dtype)).sum(dim=-1)  # (B, h)
        channel = csm.proj(pooled)[:, :, None, None]
    if branch.gates is not None:
        gates = branch.gates
        channel_gate = torch.sigmoid(gates.channel_interaction(frequency))
        spatial_gate = torch.sigmoid(gates.spatial_interaction(local))
        fused = channel * (channel_gate * local + spatial_gate * frequency)
    else:
        parts = [p for p in (local, frequency, None if channel is None else channel * x) if p is not None]
        fused = torch.stack(parts).sum(0) if len(parts) > 1 else parts[0]
    return F.conv2d(fused, branch.up.weight)
