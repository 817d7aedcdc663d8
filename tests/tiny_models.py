"""Tiny local models of each FFN style AdaptIR must handle; built with a seed, no download.

Each builder returns ``(model, example_input, run)`` where ``run(model, x, **kw)`` gives the output tensor.
"""

from __future__ import annotations

import torch
from torch import nn


class Mlp(nn.Module):
    """timm/SwinIR-style FFN on tokens (B, N, C)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class TokenBlock(nn.Module):
    """A SwinIR-style block: ``forward(x, x_size)`` on tokens (B, N, C), with a grid-aware mixing step."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.mix = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        self.mlp = Mlp(dim, 2 * dim)

    def forward(self, x: torch.Tensor, x_size: tuple[int, int]) -> torch.Tensor:
        b, n, c = x.shape
        grid = self.norm1(x).transpose(1, 2).reshape(b, c, *x_size)
        x = x + self.mix(grid).flatten(2).transpose(1, 2)
        return x + self.mlp(self.norm2(x))


class TinyTokenNet(nn.Module):
    """Image (B, 3, H, W) -> image, through SwinIR-style token blocks."""

    def __init__(self, dim: int = 16, depth: int = 2) -> None:
        super().__init__()
        self.conv_first = nn.Conv2d(3, dim, 3, padding=1)
        self.layers = nn.ModuleList(TokenBlock(dim) for _ in range(depth))
        self.conv_last = nn.Conv2d(dim, 3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.conv_first(x)
        b, c, h, w = feats.shape
        tokens = feats.flatten(2).transpose(1, 2)
        for layer in self.layers:
            tokens = layer(tokens, (h, w))
        return x + self.conv_last(tokens.transpose(1, 2).reshape(b, c, h, w))


class SimpleGate(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = x.chunk(2, dim=1)
        return a * b


class ConvBlock(nn.Module):
    """NAFNet-style block: the FFN is split over conv4 -> gate -> conv5 on (B, C, H, W)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(1, dim)
        self.conv4 = nn.Conv2d(dim, 2 * dim, 1)
        self.sg = SimpleGate()
        self.conv5 = nn.Conv2d(dim, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv5(self.sg(self.conv4(self.norm(x))))


class TinyConvNet(nn.Module):
    def __init__(self, dim: int = 16, depth: int = 2) -> None:
        super().__init__()
        self.intro = nn.Conv2d(3, dim, 3, padding=1)
        self.blocks = nn.ModuleList(ConvBlock(dim) for _ in range(depth))
        self.ending = nn.Conv2d(dim, 3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.intro(x)
        for block in self.blocks:
            feats = block(feats)
        return x + self.ending(feats)


class SequenceFirstLayer(nn.Module):
    """IPT-style encoder layer on sequence-first tokens (N, B, C); FFN split over linear1 -> linear2."""

    def __init__(self, dim: int, heads: int = 2) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(dim, heads)
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.linear1, self.activation, self.linear2 = nn.Linear(dim, 2 * dim), nn.ReLU(), nn.Linear(2 * dim, dim)

    def forward(self, src: torch.Tensor) -> torch.Tensor:
        q = self.norm1(src)
        src = src + self.self_attn(q, q, q, need_weights=False)[0]
        return src + self.linear2(self.activation(self.linear1(self.norm2(src))))


class TinySequenceNet(nn.Module):
    """Image (B, 3, 16, 16) -> image via 4x4 patches: a fixed 4 x 4 token grid, sequence-first."""

    def __init__(self, dim: int = 16, depth: int = 2, patch: int = 4) -> None:
        super().__init__()
        self.embed = nn.Conv2d(3, dim, patch, stride=patch)
        self.layers = nn.ModuleList(SequenceFirstLayer(dim) for _ in range(depth))
        self.unembed = nn.ConvTranspose2d(dim, 3, patch, stride=patch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.embed(x)
        b, c, h, w = feats.shape
        tokens = feats.flatten(2).permute(2, 0, 1)  # (N, B, C)
        for layer in self.layers:
            tokens = layer(tokens)
        return x + self.unembed(tokens.permute(1, 2, 0).reshape(b, c, h, w))


def tiny_swin2sr_config(**overrides):
    from transformers import Swin2SRConfig

    kwargs = dict(
        image_size=32, patch_size=1, num_channels=3, embed_dim=16, depths=[2, 2], num_heads=[2, 2], window_size=4,
        mlp_ratio=2.0, upscale=1, upsampler="", img_range=1.0,
    )  # fmt: skip
    kwargs.update(overrides)
    return Swin2SRConfig(**kwargs)


def build(name: str, seed: int = 0) -> tuple[nn.Module, torch.Tensor]:
    """A seeded tiny model of kind ``name`` and an example input batch (B=3) for it."""
    torch.manual_seed(seed)
    if name == "token":
        model, shape = TinyTokenNet(), (3, 3, 6, 10)  # non-square grid
    elif name == "conv":
        model, shape = TinyConvNet(), (3, 3, 7, 9)
    elif name == "sequence":
        model, shape = TinySequenceNet(), (3, 3, 16, 16)
    elif name in ("swin2sr", "swin2sr-attention"):
        from transformers import Swin2SRForImageSuperResolution

        model, shape = Swin2SRForImageSuperResolution(tiny_swin2sr_config()), (3, 3, 8, 12)
    else:
        raise ValueError(name)
    generator = torch.Generator().manual_seed(seed + 1)
    return model.eval(), torch.rand(shape, generator=generator)


def output_of(model: nn.Module, x: torch.Tensor, **kwargs) -> torch.Tensor:
    out = model(x, **kwargs)
    return out.reconstruction if hasattr(out, "reconstruction") else out


# AdaptIRConfig keyword arguments that place AdaptIR in each tiny model
PLACEMENT = {
    "token": dict(preset="swinir"),
    "conv": dict(target_modules=["conv4"], span_end="conv5", layout="BCHW"),
    "sequence": dict(target_modules=["linear1"], span_end="linear2", layout="NBC", grid_size=[4, 4]),
    "swin2sr": dict(),
    "swin2sr-attention": dict(preset="swin2sr-attention"),  # beside attention (per window) and the FFN
}


def perturb(model: nn.Module, adapter_name: str = "default", seed: int = 1, scale: float = 0.05) -> None:
    """Give an adapter non-trivial weights (its up-projection starts at zero): add seeded noise to its parameters."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if f"adaptir_branch.{adapter_name}." in name:
                param.add_(scale * torch.randn(param.shape, generator=generator))


def save_base_and_adapters(root, tasks) -> None:
    """A tiny scale-1 Swin2SR saved to ``root/base`` and one perturbed AdaptIR adapter per task in ``root/<task>``."""
    from peft import get_peft_model
    from transformers import Swin2SRForImageSuperResolution

    from peft_adaptir import AdaptIRConfig

    torch.manual_seed(0)
    Swin2SRForImageSuperResolution(tiny_swin2sr_config()).save_pretrained(root / "base")
    for seed, task in enumerate(tasks, start=1):
        model = get_peft_model(Swin2SRForImageSuperResolution.from_pretrained(root / "base"), AdaptIRConfig())
        perturb(model, seed=seed, scale=0.5)
        model.save_pretrained(root / task)


def max_relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| / max |b|, in float64."""
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).abs().max() / b.abs().max())
