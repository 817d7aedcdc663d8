"""Padding to a size multiple, overlapping tiles, and seam-free blending of tile outputs.

A padded image (H, W multiples of ``multiple``) is cut into tiles of ``tile`` x ``tile`` pixels whose starts are
multiples of ``multiple`` too (so a windowed transformer sees the same window grid as on the whole image), the last
tile along each axis ending at the image edge. Neighbouring tiles overlap by at least ``overlap`` pixels; across an
overlap the two tiles' outputs are mixed with complementary linear ramps (weights summing to one), so no seam
is left. An axis no longer than ``tile`` is one tile, so an image that fits is run whole, exactly as untiled.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


def pad_to_multiple(image: torch.Tensor, multiple: int) -> torch.Tensor:
    """Pad (C, H, W) on the bottom/right up to multiples of ``multiple``: reflect, or replicate where too small."""
    height, width = image.shape[-2:]
    pad_h, pad_w = -height % multiple, -width % multiple
    out = image[None]
    if pad_w:
        out = F.pad(out, (0, pad_w, 0, 0), mode="reflect" if pad_w < width else "replicate")
    if pad_h:
        out = F.pad(out, (0, 0, 0, pad_h), mode="reflect" if pad_h < height else "replicate")
    return out[0]


@dataclass(frozen=True)
class Tile:
    """A tile's position in the padded input and its overlap (in input pixels) with each neighbour (0: none)."""

    top: int
    left: int
    height: int
    width: int
    overlap_top: int
    overlap_bottom: int
    overlap_left: int
    overlap_right: int


def _axis_spans(length: int, tile: int, overlap: int, multiple: int) -> list[tuple[int, int, int]]:
    """(start, overlap_before, overlap_after) of tiles covering ``length``; starts are multiples of ``multiple``."""
    if length <= tile:
        return [(0, 0, 0)]
    stride = max(multiple, (tile - overlap) // multiple * multiple)
    starts = list(range(0, length - tile, stride)) + [length - tile]
    spans = []
    for i, start in enumerate(starts):
        before = starts[i - 1] + tile - start if i > 0 else 0
        after = start + tile - starts[i + 1] if i + 1 < len(starts) else 0
        spans.append((start, before, after))
    return spans


def plan_tiles(height: int, width: int, tile: int, overlap: int, multiple: int) -> list[Tile]:
    """Tiles covering a padded (height, width) image; ``tile`` is a multiple of ``multiple``."""
    tile_h, tile_w = min(tile, height), min(tile, width)
    return [
        Tile(top, left, tile_h, tile_w, top_ov, bottom_ov, left_ov, right_ov)
        for top, top_ov, bottom_ov in _axis_spans(height, tile, overlap, multiple)
        for left, left_ov, right_ov in _axis_spans(width, tile, overlap, multiple)
    ]


def _ramp_weights(length: int, before: int, after: int) -> torch.Tensor:
    """1-D weights: linear ramps (k + 0.5) / n over each overlap, 1 elsewhere; min where ramps meet."""
    weights = torch.ones(length)
    if before:
        weights[:before] = torch.minimum(weights[:before], (torch.arange(before) + 0.5) / before)
    if after:
        weights[-after:] = torch.minimum(weights[-after:], (torch.arange(after - 1, -1, -1) + 0.5) / after)
    return weights


class Canvas:
    """Accumulates (3, h*s, w*s) tile outputs of one padded image into a blended (3, H*s, W*s) result."""

    def __init__(self, height: int, width: int, scale: int) -> None:
        self.scale = scale
        self.total = torch.zeros(3, height * scale, width * scale)
        self.weight = torch.zeros(1, height * scale, width * scale)

    def add(self, tile: Tile, output: torch.Tensor) -> None:
        s = self.scale
        w_y = _ramp_weights(tile.height * s, tile.overlap_top * s, tile.overlap_bottom * s)
        w_x = _ramp_weights(tile.width * s, tile.overlap_left * s, tile.overlap_right * s)
        weight = (w_y[:, None] * w_x[None, :])[None]  # (1, h*s, w*s)
        rows = slice(tile.top * s, (tile.top + tile.height) * s)
        cols = slice(tile.left * s, (tile.left + tile.width) * s)
        self.total[:, rows, cols] += output * weight
        self.weight[:, rows, cols] += weight

    def result(self) -> torch.Tensor:
        return self.total / self.weight
