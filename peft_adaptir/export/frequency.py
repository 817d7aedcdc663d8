"""The frequency branch (FAM) at a fixed feature-map size, rewritten for export.

Two forms of ``FrequencyAffine`` for a fixed (H, W), both mapping (B, h, H, W) -> (B, h, H, W) in float32:

- ``"fft"``: ``rfft2`` / ``irfft2`` as in PyTorch (exported as ONNX DFT nodes), the spectrum handled as real and
  imaginary parts (``view_as_real`` + ``atan2``), which exporters support better than complex ``abs``/``angle``.
- ``"matmul"`` (DFT-free): the ortho-normalised 2-D real DFT and its inverse written as matrix products with
  precomputed cos/sin bases. This is exact algebra (no approximation): rfft2 along W is ``x @ (C_W - i S_W)``
  with C_W, S_W of shape (W, W//2+1), then a full DFT along H is ``(C_H - i S_H) @ .`` with (H, H) bases; the
  inverse runs the conjugate bases and the C2R weights (1 at DC and Nyquist, 2 elsewhere) along W. No DFT node
  is left in the graph, so runtimes without FFT (TensorRT without plugins, NCNN, CoreML) can run it.

In both, the phase of a bin that is mathematically real (row 0 or H/2, column 0 or W/2) is fixed to +pi where its
real part is negative: there ``atan2(+-0, re)`` flips between +pi and -pi with the sign of a zero imaginary part,
which differs between runtimes; PyTorch's own FFT gives +0 there, hence +pi.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..tuner.branch import FrequencyAffine

MODES: tuple[str, ...] = ("fft", "matmul")


def _cos_sin(rows: int, cols: int, period: int) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of 2 pi r c / period for r < rows, c < cols, in float64, with exact 0 and +-1 where they belong."""
    phase = (torch.arange(rows, dtype=torch.int64)[:, None] * torch.arange(cols, dtype=torch.int64)[None, :]) % period
    angle = phase.double() * (2 * math.pi / period)
    cos, sin = torch.cos(angle), torch.sin(angle)
    # sin(2 pi k / period) is exactly 0 at k = 0 and k = period / 2; cos is exactly +1 / -1 there
    sin[(2 * phase) % period == 0] = 0.0
    cos[phase == 0] = 1.0
    if period % 2 == 0:
        cos[phase == period // 2] = -1.0
    return cos, sin


def real_bins(height: int, width: int) -> torch.Tensor:
    """(H, W//2+1) bool: bins of rfft2 of a real (H, W) input whose value is mathematically real."""
    mask = torch.zeros(height, width // 2 + 1, dtype=torch.bool)
    rows = [0] + ([height // 2] if height % 2 == 0 else [])
    cols = [0] + ([width // 2] if width % 2 == 0 else [])
    for r in rows:
        for c in cols:
            mask[r, c] = True
    return mask


class ExportFrequencyAffine(nn.Module):
    """A ``FrequencyAffine`` at a fixed (H, W): (B, h, H, W) -> (B, h, H, W), same parameters, same result."""

    def __init__(self, source: FrequencyAffine, height: int, width: int, mode: str = "fft") -> None:
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"mode={mode!r} is not supported; choose one of {list(MODES)}.")
        self.mode, self.height, self.width = mode, height, width
        shape = (1, -1, 1, 1)
        with torch.no_grad():
            for name, conv in (("amp", source.amp_fuse), ("pha", source.pha_fuse)):
                self.register_buffer(f"{name}_w", conv.weight.detach().float().reshape(shape).clone())
                self.register_buffer(f"{name}_b", conv.bias.detach().float().reshape(shape).clone())
        self.register_buffer("real_bin", real_bins(height, width))
        if mode == "matmul":
            cos_w, sin_w = _cos_sin(width, width // 2 + 1, width)  # (W, W//2+1)
            cos_h, sin_h = _cos_sin(height, height, height)  # (H, H), symmetric
            weights = torch.full((width // 2 + 1,), 2.0, dtype=torch.float64)
            weights[0] = 1.0
            if width % 2 == 0:
                weights[-1] = 1.0
            norm = 1.0 / math.sqrt(height * width)
            self.register_buffer("fw_cos", (cos_w * norm).float())  # forward along W, ortho scale folded in
            self.register_buffer("fw_sin", (sin_w * norm).float())
            self.register_buffer("h_cos", cos_h.float())
            self.register_buffer("h_sin", sin_h.float())
            self.register_buffer("iw_cos", (cos_w.T * weights[:, None] * norm).float())  # (W//2+1, W) inverse
            self.register_buffer("iw_sin", (sin_w.T * weights[:, None] * norm).float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[-2:]) != (self.height, self.width):
            raise ValueError(
                f"This exported frequency branch is fixed to {self.height}x{self.width} feature maps; got "
                f"{tuple(x.shape[-2:])}. Export again at the tile size you need."
            )
        xf = x.float()
        real, imag = self._rfft2(xf) if self.mode == "matmul" else self._rfft2_fft(xf)
        amplitude = torch.sqrt(real * real + imag * imag) * self.amp_w + self.amp_b
        angle = torch.atan2(imag, real)
        angle = torch.where(self.real_bin & (real < 0), torch.full_like(angle, math.pi), angle)
        phase = angle * self.pha_w + self.pha_b
        real, imag = amplitude * torch.cos(phase), amplitude * torch.sin(phase)
        out = self._irfft2(real, imag) if self.mode == "matmul" else self._irfft2_fft(real, imag)
        return out.abs().to(x.dtype)

    def _rfft2(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, h, H, W) -> real and imaginary parts (B, h, H, W//2+1) of rfft2(x, norm="ortho")."""
        row_re, row_im = x @ self.fw_cos, -(x @ self.fw_sin)  # along W
        real = self.h_cos @ row_re + self.h_sin @ row_im  # (C_H - i S_H)(re + i im) along H
        imag = self.h_cos @ row_im - self.h_sin @ row_re
        return real, imag

    def _irfft2(self, real: torch.Tensor, imag: torch.Tensor) -> torch.Tensor:
        """Inverse of ``_rfft2``: (B, h, H, W//2+1) parts -> (B, h, H, W) = irfft2(., s=(H, W), norm="ortho")."""
        col_re = self.h_cos @ real - self.h_sin @ imag  # (C_H + i S_H)(re + i im) along H
        col_im = self.h_cos @ imag + self.h_sin @ real
        return col_re @ self.iw_cos - col_im @ self.iw_sin  # C2R along W (imaginary parts at DC/Nyquist drop out)

    def _rfft2_fft(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        spectrum = torch.view_as_real(torch.fft.rfft2(x, norm="ortho"))  # (B, h, H, W//2+1, 2)
        return spectrum[..., 0], spectrum[..., 1]

    def _irfft2_fft(self, real: torch.Tensor, imag: torch.Tensor) -> torch.Tensor:
        spectrum = torch.view_as_complex(torch.stack((real, imag), dim=-1))
        return torch.fft.irfft2(spectrum, s=(self.height, self.width), norm="ortho")
