"""Does ``torch.compile`` help the AdaptIR branch? Two checks, forward + backward, on CPU or CUDA.

1. ``torch.compile`` of a whole ``AdaptIRBranch`` (gated): does it compile, and does it match eager?
2. The frequency step (rfft2, affine on amplitude and phase, irfft2, abs) written with real arithmetic
   (``view_as_real``, ``atan2``, masks that keep the gradient at F = 0 finite), eager and compiled, against the
   package's complex-number ``FrequencyAffine``: equality, compile time, and interleaved timings (median of the
   repeats).

    python benchmarks/compile_check.py --out benchmarks/results            # CPU
    python benchmarks/compile_check.py --device cuda --out "$OUT"          # GPU (benchmarks/gpu_check.sh)

Findings are in docs/speed.md; nothing of the real-arithmetic version is in the package.
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from peft_adaptir.tuner.branch import AdaptIRBranch, FrequencyAffine

Step = Callable[[torch.Tensor], torch.Tensor]


def frequency_real(module: FrequencyAffine, x: torch.Tensor) -> torch.Tensor:
    """``module``'s computation with real tensors between the two FFTs, so that a compiler can fuse the elementwise
    chain: (B, h, H, W) -> (B, h, H, W), float32."""
    shape = (1, -1, 1, 1)
    amp_w, amp_b = module.amp_fuse.weight.view(shape), module.amp_fuse.bias.view(shape)
    pha_w, pha_b = module.pha_fuse.weight.view(shape), module.pha_fuse.bias.view(shape)
    parts = torch.view_as_real(torch.fft.rfft2(x, norm="ortho"))  # (B, h, H, W//2+1, 2)
    real, imag = parts[..., 0], parts[..., 1]
    square = real * real + imag * imag
    nonzero = square > 0  # |F| and angle(F) have no gradient at 0: keep it 0 there, as torch's complex abs does
    amplitude = torch.where(nonzero, torch.where(nonzero, square, 1.0).sqrt(), 0.0)
    angle = torch.atan2(torch.where(nonzero, imag, 0.0), torch.where(nonzero, real, 1.0))
    amplitude = torch.addcmul(amp_b, amplitude, amp_w)
    phase = torch.addcmul(pha_b, angle, pha_w)
    spectrum = torch.view_as_complex(torch.stack((amplitude * torch.cos(phase), amplitude * torch.sin(phase)), -1))
    return torch.fft.irfft2(spectrum, s=x.shape[-2:], norm="ortho").abs()


def forward_backward(step: Step, inputs: list[torch.Tensor]) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
    """``step(inputs[0])`` and the gradients of its squared sum with respect to every tensor in ``inputs``."""
    out = step(inputs[0])
    return out.detach(), torch.autograd.grad(out.square().sum(), inputs)


def max_error(a: tuple, b: tuple) -> float:
    return max(((x - y).abs().max() / y.abs().max().clamp_min(1e-12)).item() for x, y in zip(a, b, strict=True))


def timed(step: Step, inputs: list[torch.Tensor], device: str) -> float:
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    forward_backward(step, inputs)
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def whole_branch(device: str) -> dict:
    torch.manual_seed(0)
    branch = AdaptIRBranch(60, 4, fusion="gated", init_weights=False).to(device).train()
    x = torch.randn(4, 60, 48, 48, device=device)
    try:
        compiled = torch.compile(branch)
        start = time.perf_counter()
        compiled(x).square().sum().backward()
        return {"compiles": True, "compile_s": time.perf_counter() - start}
    except Exception as err:  # noqa: BLE001 - the point is to record why it failed
        return {"compiles": False, "error": f"{type(err).__name__}: {str(err).splitlines()[0][:300]}"}


def frequency_step(device: str, repeats: int) -> dict:
    torch.manual_seed(0)
    module = FrequencyAffine(4).to(device)
    with torch.no_grad():  # away from the identity init (scale 1, shift 0)
        for param in module.parameters():
            param.add_(0.3 * torch.randn_like(param))
    x = torch.randn(4, 4, 48, 48, device=device, requires_grad=True)
    inputs = [x, *module.parameters()]
    real = functools.partial(frequency_real, module)
    reference = forward_backward(module, inputs)
    result: dict = {"real_eager_max_rel_err": max_error(forward_backward(real, inputs)[1], reference[1])}
    steps: dict[str, Step] = {"complex_eager": module, "real_eager": real}
    try:
        compiled = torch.compile(real)
        start = time.perf_counter()
        out = forward_backward(compiled, inputs)
        result["compile_s"] = time.perf_counter() - start
        result["real_compiled_max_rel_err"] = max_error(out[1], reference[1])
        steps["real_compiled"] = compiled
    except Exception as err:  # noqa: BLE001
        result["compile_error"] = f"{type(err).__name__}: {str(err).splitlines()[0][:300]}"
    for step in steps.values():  # warm-up
        for _ in range(3):
            timed(step, inputs, device)
    samples: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(repeats):  # interleaved, so that load changes hit every variant alike
        for name, step in steps.items():
            samples[name].append(timed(step, inputs, device))
    result["median_ms"] = {name: 1e3 * statistics.median(values) for name, values in samples.items()}
    base = result["median_ms"]["complex_eager"]
    result["x_complex_eager"] = {name: ms / base for name, ms in result["median_ms"].items()}
    return result


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1, help="CPU threads")
    parser.add_argument("--out", type=Path, help="folder for compile_check_<device>.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    report = {
        "torch": torch.__version__,
        "device": args.device,
        "whole_branch": whole_branch(args.device),
        "frequency_step": frequency_step(args.device, args.repeats),
    }
    print(json.dumps(report, indent=1))
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / f"compile_check_{args.device}.json").write_text(json.dumps(report, indent=1))
    return report


if __name__ == "__main__":
    main()
