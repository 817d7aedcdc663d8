"""Count the compute operators a piece of work dispatches: a noise-free proxy for per-kernel overhead.

On a GPU, a small adapter's extra cost is mostly launch and dispatch overhead, one per operator, not arithmetic; the
number of operators in a training step (forward, backward, optimizer) is deterministic, so it can be compared on any
machine. View operators (``view``, ``permute``, ``transpose``, ``_unsafe_view``, ...) launch no kernel and are not
counted.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

from torch.utils._python_dispatch import TorchDispatchMode

# reshapes that produce a view but are not flagged as view operators: no kernel either
NOT_KERNELS = frozenset({"aten._unsafe_view", "aten._reshape_alias", "aten.lift_fresh"})


class _CountOps(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.counts: Counter[str] = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = str(func.overloadpacket)
        if not func.is_view and name not in NOT_KERNELS:
            self.counts[name] += 1
        return func(*args, **(kwargs or {}))


def count_ops(work: Callable[[], object]) -> Counter[str]:
    """Run ``work()`` once and return how often each non-view aten operator ran (backward included)."""
    with _CountOps() as mode:
        work()
    return mode.counts
