"""The optimizer for adapter training: AdamW with a fused update where the platform has one.

An AdaptIR adapter is many small tensors (18 per block for ``sum``, 24 for ``gated``, against 3 for a plain bottleneck
adapter). AdamW's default per-tensor loop spends several small kernels on each of them every step, which on this CPU
was the largest share of AdaptIR's extra step time over the bottleneck adapter. The fused kernel updates every tensor
in one pass (measured against the alternatives by ``python -m benchmarks.optimizer_step``; figures in docs/speed.md).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import torch

logger = logging.getLogger(__name__)


def adapter_optimizer(params: Iterable[torch.nn.Parameter], lr: float, weight_decay: float = 0.0) -> torch.optim.AdamW:
    """AdamW over ``params`` with ``fused=True`` (one kernel for all tensors, CPU and CUDA since torch 2.4).

    Falls back to ``foreach=True`` (multi-tensor loop) where torch refuses the fused kernel for these parameters
    (another device or an older torch); the update rule is the same, results agree to float rounding.
    """
    params = list(params)
    try:
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=True)
    except RuntimeError as error:
        logger.info("Fused AdamW unavailable for these parameters (%s); using foreach=True.", error)
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, foreach=True)
