"""Tensor layouts an FFN may see, and the conversions to and from a (B, C, H, W) feature map."""

from __future__ import annotations

import torch

LAYOUTS: tuple[str, ...] = ("BNC", "NBC", "BHWC", "BCHW")
TOKEN_LAYOUTS: tuple[str, ...] = ("BNC", "NBC")


def resolve_layout(layout: str | None, x: torch.Tensor, channels: int, where: str) -> str:
    """The layout of ``x`` (given, or read from its shape), checked against its rank and channel count.

    Without a stated layout, a 4-D tensor is read by where its ``channels`` sit and a 3-D one as (B, N, C) tokens.
    """
    if layout is None:
        if x.dim() == 3:
            layout = "BNC"
        elif x.dim() == 4:
            first, last = x.shape[1] == channels, x.shape[-1] == channels
            if first == last:
                raise ValueError(
                    f"Cannot tell the layout of the input {tuple(x.shape)} of {where}: {channels} channels "
                    f"{'fit both' if first else 'fit neither'} (B, C, H, W) and (B, H, W, C). Set layout='BCHW' or "
                    "layout='BHWC' in AdaptIRConfig."
                )
            layout = "BCHW" if first else "BHWC"
    expected_rank = 3 if layout in TOKEN_LAYOUTS else 4
    if x.dim() != expected_rank:
        raise ValueError(
            f"{where} received a {x.dim()}-D input {tuple(x.shape)} but layout={layout!r} expects {expected_rank}-D. "
            f"Set `layout` in AdaptIRConfig to one of {list(LAYOUTS)}."
        )
    channel_dim = 1 if layout == "BCHW" else -1
    if x.shape[channel_dim] != channels:
        raise ValueError(
            f"{where} received {tuple(x.shape)}, whose channel dimension for layout={layout!r} is "
            f"{x.shape[channel_dim]}, not the {channels} channels the adapter was built for."
        )
    return layout


def to_feature_map(x: torch.Tensor, layout: str, grid: tuple[int, int] | None) -> torch.Tensor:
    """``x`` in ``layout`` -> (B, C, H, W). ``grid`` (H, W) is needed for token layouts."""
    if layout == "BCHW":
        return x
    if layout == "BHWC":
        return x.permute(0, 3, 1, 2)
    height, width = grid
    if layout == "BNC":
        return x.transpose(1, 2).reshape(x.shape[0], x.shape[2], height, width)
    return x.permute(1, 2, 0).reshape(x.shape[1], x.shape[2], height, width)  # NBC


def from_feature_map(y: torch.Tensor, layout: str) -> torch.Tensor:
    """(B, C, H, W) -> the same values in ``layout``."""
    if layout == "BCHW":
        return y
    if layout == "BHWC":
        return y.permute(0, 2, 3, 1)
    tokens = y.flatten(2)  # (B, C, N)
    return tokens.transpose(1, 2) if layout == "BNC" else tokens.permute(2, 0, 1)


def batch_size_of(x: torch.Tensor, layout: str) -> int:
    """Number of samples in ``x`` for ``layout`` (sequence-first layouts keep the batch in dim 1)."""
    return x.shape[1] if layout == "NBC" else x.shape[0]
