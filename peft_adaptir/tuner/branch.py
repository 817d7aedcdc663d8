"""The AdaptIR branch as a plain ``nn.Module`` (no peft inside).

Reads a feature map (B, C, H, W) and returns the adapter's contribution (B, C, H, W). Inside, the work happens at the
adapter width h: (B, h, H, W). The method is AdaptIR, arXiv 2312.08881 (Guo et al.); docs/method.md states it
step by step. Two fusions exist: ``"sum"`` (paper v1) and ``"gated"`` (the authors' released code).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn

BRANCH_NAMES: tuple[str, ...] = ("local", "frequency", "channel")
FUSIONS: tuple[str, ...] = ("sum", "gated")


def resolve_width(in_channels: int, width: int | None, reduction: int, min_width: int) -> int:
    """Adapter width h: ``width`` if given, else ``in_channels // reduction`` but at least ``min_width``."""
    if width is not None:
        return width
    return max(min_width, in_channels // reduction)


def resolve_rank(width: int, rank: int | None) -> int:
    """Rank of the local branch's kernel bank: ``rank`` if given, else ``width // 2`` (at least 1)."""
    return rank if rank is not None else max(1, width // 2)


class LocalInteraction(nn.Module):
    """LIM: depthwise k x k convolution whose (h, k*k) kernel bank is the low-rank product A (h, r) @ B (r, k*k).

    (B, h, H, W) -> (B, h, H, W), zero padding, with bias, no activation.
    """

    def __init__(self, width: int, rank: int, kernel_size: int = 3) -> None:
        super().__init__()
        self.kernel_size = kernel_size
        self.conv_weight_A = nn.Parameter(torch.empty(width, rank))
        self.conv_weight_B = nn.Parameter(torch.empty(rank, kernel_size * kernel_size))
        self.conv_bias = nn.Parameter(torch.zeros(width))
        # A and B start like a Linear layer's weight (Kaiming-uniform, a = sqrt(5)), as in the reference code.
        nn.init.kaiming_uniform_(self.conv_weight_A, a=math.sqrt(5))
        nn.init.kaiming_uniform_(self.conv_weight_B, a=math.sqrt(5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        width, k = x.shape[1], self.kernel_size
        kernel = (self.conv_weight_A @ self.conv_weight_B).view(width, 1, k, k)  # (h, 1, k, k)
        return F.conv2d(x, kernel.to(x.dtype), self.conv_bias.to(x.dtype), padding=k // 2, groups=width)


class FrequencyAffine(nn.Module):
    """FAM: per-channel affine maps on the amplitude and the phase of rfft2(x), then |irfft2(.)|.

    (B, h, H, W) -> (B, h, H, W). Always computed in float32 (FFTs in half precision are limited to powers of two on
    CUDA and barely exist in bfloat16), also under autocast; the result is cast back to the input dtype.
    At initialisation (scale 1, shift 0) the output is |x|.
    """

    def __init__(self, width: int) -> None:
        super().__init__()
        # Depthwise 1x1 convolutions in the reference code: one scale (weight) and one shift (bias) per channel.
        self.amp_fuse = nn.Conv2d(width, width, 1, groups=width)
        self.pha_fuse = nn.Conv2d(width, width, 1, groups=width)
        for conv in (self.amp_fuse, self.pha_fuse):
            nn.init.ones_(conv.weight)
            nn.init.zeros_(conv.bias)

    # Runs eagerly under torch.compile (a graph break; the rest of the model still compiles): Inductor has no
    # complex-number code generation, and compiling this step made torch.compile(model) fail in the backward.
    @torch.compiler.disable
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        shape = (1, -1, 1, 1)
        with torch.autocast(device_type=x.device.type, enabled=False):
            spectrum = torch.fft.rfft2(x.float(), norm="ortho")  # (B, h, H, W//2+1) complex64
            amp_w, amp_b = self.amp_fuse.weight.float().view(shape), self.amp_fuse.bias.float().view(shape)
            pha_w, pha_b = self.pha_fuse.weight.float().view(shape), self.pha_fuse.bias.float().view(shape)
            amplitude = torch.addcmul(amp_b, spectrum.abs(), amp_w)  # a |F| + c, one kernel
            phase = torch.addcmul(pha_b, _real_bin_angle(spectrum, height, width), pha_w)  # s angle(F) + b
            # not torch.polar: its backward assumes a non-negative amplitude, and a + c|F| can go negative
            spectrum = torch.complex(amplitude * torch.cos(phase), amplitude * torch.sin(phase))
            out = torch.fft.irfft2(spectrum, s=(height, width), norm="ortho").abs()  # (B, h, H, W)
        return out.to(x.dtype)


def _real_bin_angle(spectrum: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """angle(F) of rfft2 output (B, h, H, W//2+1), with the phase of the real bins fixed to 0 or pi.

    The bins at rows {0, H/2} x columns {0, W/2} (halves only for even sizes) are real for a real input: their angle
    is 0 or +-pi, and which of +pi and -pi depends on the sign of a rounding-level (or signed zero) imaginary part,
    so the same input batched differently could get s * pi or -s * pi. Here a negative real bin always gets +pi
    (what an exactly zero imaginary part gives), so equal inputs give equal outputs. Those imaginary parts are zero
    for every real input, so the gradient is unchanged.
    """
    angle = spectrum.angle()
    rows = [0] + ([height // 2] if height % 2 == 0 and height > 1 else [])
    cols = [0] + ([width // 2] if width % 2 == 0 and width > 1 else [])
    mask = torch.zeros(angle.shape[-2:], dtype=torch.bool, device=angle.device)
    mask[torch.tensor(rows, device=angle.device)[:, None], torch.tensor(cols, device=angle.device)] = True
    fixed = torch.where(spectrum.real < 0, torch.pi, 0.0).to(angle.dtype)
    return torch.where(mask, fixed, angle)


class ChannelShift(nn.Module):
    """CSM: softmax-weighted spatial pooling then a small MLP: (B, h, H, W) -> channel vector (B, h).

    The position scores have no bias (the released code has one): a softmax over positions is shift-invariant, so a
    bias there changes nothing and its gradient is exactly zero. Adapters saved with it still load (it is dropped).
    """

    def __init__(self, width: int) -> None:
        super().__init__()
        hidden = max(1, width // 2)
        self.compress = nn.Conv2d(width, 1, 1, bias=False)  # one score per position
        self.proj = nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = x.flatten(2)  # (B, h, H*W)
        weights = _pointwise_to_one(self.compress, tokens).softmax(dim=-1)  # (B, 1, H*W)
        # the softmax-weighted sum over positions as one batched matmul: (B, h, H*W) @ (B, H*W, 1)
        pooled = torch.matmul(tokens, weights.to(tokens.dtype).transpose(1, 2)).squeeze(-1)  # (B, h)
        return self.proj(pooled)  # (B, h)


def _pointwise_to_one(conv: nn.Conv2d, tokens: torch.Tensor) -> torch.Tensor:
    """A 1x1 conv h -> 1 applied to tokens (B, h, N) as a matmul: (B, 1, N). Avoids the slow CPU conv path."""
    weight, bias = conv.weight.view(1, 1, -1), conv.bias
    if torch.is_autocast_enabled(tokens.device.type):
        scores = torch.matmul(weight, tokens)
        return scores if bias is None else scores + bias.to(torch.get_autocast_dtype(tokens.device.type))
    scores = torch.matmul(weight.to(tokens.dtype), tokens)
    return scores if bias is None else scores + bias.to(tokens.dtype)


class CrossGates(nn.Module):
    """The released code's two gates: a channel gate from the frequency branch, a spatial gate from the local one.

    Both last convolutions start at zero weight and bias, so both gates start at 0.5.
    """

    def __init__(self, width: int) -> None:
        super().__init__()
        hidden = max(1, width // 8)
        self.channel_interaction = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Conv2d(width, hidden, 1), nn.GELU(), nn.Conv2d(hidden, width, 1)
        )
        self.spatial_interaction = nn.Conv2d(width, 1, 1)
        for conv in (self.channel_interaction[3], self.spatial_interaction):
            nn.init.zeros_(conv.weight)
            nn.init.zeros_(conv.bias)

    def forward(self, local: torch.Tensor, frequency: torch.Tensor) -> torch.Tensor:
        _, squeeze, act, excite = self.channel_interaction
        hidden = F.linear(frequency.mean(dim=(2, 3)), squeeze.weight.flatten(1), squeeze.bias)  # (B, h//8)
        channel_gate = torch.sigmoid(F.linear(act(hidden), excite.weight.flatten(1), excite.bias))  # (B, h)
        spatial_gate = torch.sigmoid(_pointwise_to_one(self.spatial_interaction, local.flatten(2)))  # (B, 1, H*W)
        spatial_gate = spatial_gate.view(local.shape[0], 1, *local.shape[2:])  # (B, 1, H, W)
        return torch.addcmul(spatial_gate * frequency, channel_gate[:, :, None, None], local)  # (B, h, H, W)


class AdaptIRBranch(nn.Module):
    """One AdaptIR adapter: (B, C, H, W) -> (B, C_out, H, W), exactly zero at initialisation.

    down (1x1 conv C->h) -> BatchNorm -> {local, frequency, channel} -> fusion -> up (1x1 conv h->C_out, zero-init).
    C_out is ``out_channels`` (default C): a span that changes the channel count gets an adapter that does too.
    With ``fusion="sum"`` and no branches it is the plain parallel bottleneck adapter (AdaptFormer):
    down -> ReLU -> up.
    """

    def __init__(
        self,
        in_channels: int,
        width: int,
        rank: int | None = None,
        kernel_size: int = 3,
        fusion: str = "sum",
        branches: Iterable[str] = BRANCH_NAMES,
        init_weights: bool = True,
        out_channels: int | None = None,
    ) -> None:
        super().__init__()
        branches = (branches,) if isinstance(branches, str) else tuple(branches)
        validate_branch_options(fusion, branches, width=width, rank=rank, kernel_size=kernel_size)
        self.fusion = fusion
        self.branches = branches
        rank = resolve_rank(width, rank)

        self.down = nn.Conv2d(in_channels, width, 1)
        self.norm = nn.BatchNorm2d(width) if branches else None
        self.local = LocalInteraction(width, rank, kernel_size) if "local" in branches else None
        self.frequency = FrequencyAffine(width) if "frequency" in branches else None
        self.channel = ChannelShift(width) if "channel" in branches else None
        self.gates = CrossGates(width) if fusion == "gated" else None
        self.up = nn.Conv2d(width, in_channels if out_channels is None else out_channels, 1, bias=False)
        if init_weights:
            nn.init.zeros_(self.up.weight)  # the adapted model starts as the base model, bit for bit

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Token models hand over a channels-last view (B, C, H, W) of (B, N, C) tokens: there the 1x1 projections
        # run as Linear layers on the (B, H, W, C) view, with no copy of the wide input and no slow strided conv.
        channels_last = x.dim() == 4 and not x.is_contiguous() and x.permute(0, 2, 3, 1).is_contiguous()
        if channels_last:
            x = F.linear(x.permute(0, 2, 3, 1), self.down.weight.flatten(1), self.down.bias)  # (B, H, W, h)
            x = x.permute(0, 3, 1, 2).contiguous()  # (B, h, H, W): the narrow branch works channels-first
        else:
            x = self.down(x)  # (B, h, H, W)
        if self.norm is None:
            return self._up(F.relu(x), channels_last)  # plain bottleneck
        x = self.norm(x)
        local = self.local(x) if self.local is not None else None
        frequency = self.frequency(x) if self.frequency is not None else None
        channel = self.channel(x)[:, :, None, None] if self.channel is not None else None  # (B, h, 1, 1)
        if self.gates is not None:
            fused = channel * self.gates(local, frequency)
        else:
            fused = local if local is not None else frequency
            if local is not None and frequency is not None:
                fused = local + frequency
            if channel is not None:
                fused = channel * x if fused is None else torch.addcmul(fused, channel, x)
        return self._up(fused, channels_last)  # (B, C, H, W)

    def _up(self, fused: torch.Tensor, channels_last: bool) -> torch.Tensor:
        """(B, h, H, W) -> (B, C_out, H, W); a channels-last view (from a Linear) when the input was one."""
        if channels_last:
            return F.linear(fused.permute(0, 2, 3, 1), self.up.weight.flatten(1)).permute(0, 3, 1, 2)
        return self.up(fused)


def validate_branch_options(
    fusion: str, branches: tuple[str, ...], width: int | None, rank: int | None, kernel_size: int
) -> None:
    """Raise ValueError, naming the bad value and what is allowed, for an impossible branch configuration."""
    if fusion not in FUSIONS:
        raise ValueError(f"fusion={fusion!r} is not supported; choose one of {list(FUSIONS)}.")
    unknown = [b for b in branches if b not in BRANCH_NAMES]
    if unknown:
        raise ValueError(f"Unknown branch name(s) {unknown}; allowed: {list(BRANCH_NAMES)}.")
    if len(set(branches)) != len(branches):
        raise ValueError(f"branches={list(branches)} lists a branch twice.")
    if fusion == "gated" and set(branches) != set(BRANCH_NAMES):
        raise ValueError(
            f"fusion='gated' combines all three branches {list(BRANCH_NAMES)} (got {list(branches)}); "
            "use fusion='sum' to switch branches off."
        )
    if width is not None and width < 1:
        raise ValueError(f"width={width} must be a positive number of channels.")
    if rank is not None and rank < 1:
        raise ValueError(f"rank={rank} must be at least 1.")
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size={kernel_size} must be a positive odd number (3 in the paper).")
